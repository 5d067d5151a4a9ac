"""Growing a tile network's dense head keeps its outputs and lets the new units learn."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ednn.head_growth import grown_head_weights, head_units
from ednn.model import default_tile_network

CONV = [(4, 3, 2, 1), (6, 3, 2, 1)]


def network(dense_units, seed):
    keras.utils.set_random_seed(seed)
    return default_tile_network(12, 2, 3, conv_layers=CONV, dense_units=dense_units)


def grow(old, new):
    paths = ([w.path for w in old.weights], [w.path for w in new.weights])
    new.set_weights(grown_head_weights(paths[0], old.get_weights(), paths[1], new.get_weights()))
    return new


@pytest.mark.parametrize(
    ("before", "after"), [((8,), (8,)), ((8,), (16,)), ((8,), (8, 8)), ((8,), (20, 12, 9)),
                          ((8, 5), (10, 7)), ((8, 5), (8, 6, 5))],
)  # fmt: skip
def test_the_grown_network_computes_what_the_trained_one_did(before, after):
    old = network(before, seed=1)
    # Random biases too, as after training (the initialiser sets them to zero).
    old.set_weights(
        [w + 0.1 * np.random.default_rng(2).normal(size=w.shape) for w in old.get_weights()]
    )
    new = grow(old, network(after, seed=3))
    tiles = np.random.default_rng(4).normal(size=(32, 12, 12, 2)).astype("float32")
    expected = old.predict(tiles, verbose=0)
    np.testing.assert_allclose(new.predict(tiles, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert head_units([w.path for w in new.weights], new.get_weights()) == list(after)
    assert np.ptp(expected) > 0.1  # a network that computes something


def test_the_new_units_get_gradients_at_once():
    new = grow(network((8,), seed=1), network((16, 16), seed=3))
    tiles = np.random.default_rng(4).normal(size=(32, 12, 12, 2)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(new(tiles) ** 2)
    grads = dict(zip([w.path for w in new.weights], tape.gradient(loss, new.weights), strict=True))
    output = grads[next(p for p in grads if p.endswith("output/kernel"))].numpy()
    # The added layer's new units (8:) feed the output through zero weights that now learn.
    assert np.abs(output[8:]).max() > 0


def test_a_head_that_does_not_fit_is_refused():
    old = network((8, 5), seed=1)
    with pytest.raises(ValueError, match=r"at least as wide .* trained \[8, 5\], grown \[6, 5\]"):
        grow(old, network((6, 5), seed=3))
    with pytest.raises(ValueError, match=r"trained \[8, 5\], grown \[8\]"):
        grow(old, network((8,), seed=3))
    keras.utils.set_random_seed(3)
    other = default_tile_network(12, 2, 3, conv_layers=[(4, 3, 2, 1)], dense_units=(8, 5))
    with pytest.raises(ValueError, match="same weight shapes"):
        grow(old, other)
