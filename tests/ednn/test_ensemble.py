"""Tests of :class:`ednn.ensemble.ModelAverage`, an ensemble saved as one model."""

import re

import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.count_baseline import CountBaseline
from ednn.ensemble import ModelAverage
from ednn.model import build_ednn
from ednn.symmetry import SymmetryAverage

SMALL_NET = {"conv_layers": [(4, 3, 2, 1), (4, 3, 1, 1)], "dense_units": [8]}


def small_ednn(seed, n_targets=3, **metadata):
    keras.utils.set_random_seed(seed)
    return build_ednn(4, 3, n_channels=2, n_targets=n_targets, metadata=metadata or None,
                      **SMALL_NET)  # fmt: skip


def images(shape=(3, 12, 12, 2), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_weighted_mean_of_different_members_round_trips_with_plain_keras(tmp_path):
    plain = small_ednn(0)
    wrapped = SymmetryAverage(
        CountBaseline(small_ednn(1), [2, 4], [[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]], "channel", 1, 8.0),
        mirror_shift=1,
    )
    x = images()
    x[..., 1] = 3 / 8  # the count channel of the CountBaseline member: N = 3
    ensemble = ModelAverage([plain, wrapped], weights=[3.0, 1.0], name="pair")
    assert ensemble.member_weights == [0.75, 0.25]
    expected = 0.75 * plain.predict(x, verbose=0) + 0.25 * wrapped.predict(x, verbose=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    # It is not either member alone: a test that would see a member dropped.
    assert np.abs(expected - plain.predict(x, verbose=0)).max() > 1e-2
    ensemble.save(tmp_path / "pair.keras")
    loaded = keras.saving.load_model(tmp_path / "pair.keras")
    assert isinstance(loaded, ModelAverage) and loaded.member_weights == [0.75, 0.25]
    assert isinstance(loaded.members[1], SymmetryAverage)
    assert loaded.n_targets == 3 and loaded.metadata == plain.metadata
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_equal_weights_by_default_and_images_checked_by_the_members():
    (a, b) = (small_ednn(0), small_ednn(1))
    ensemble = ModelAverage([a, b])
    x = images()
    np.testing.assert_allclose(ensemble(x), (a(x).numpy() + b(x).numpy()) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=re.escape("EDNN expected images of shape")):
        ensemble.predict(images((3, 12, 12, 3)), verbose=0)


@pytest.mark.parametrize(
    ("members", "weights", "message"),
    [
        (1, None, "two or more models. Received: 1 member(s)"),
        (2, [1.0], "one weight per member (2). Received: 1 weights"),
        (2, [1.0, -0.5], "finite, non-negative and not all zero"),
        (2, [0.0, 0.0], "finite, non-negative and not all zero"),
        (2, [1.0, float("nan")], "finite, non-negative and not all zero"),
    ],
)
def test_bad_ensembles_are_refused(members, weights, message):
    models = [small_ednn(seed) for seed in range(members)]
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelAverage(models, weights)


def test_members_of_different_quantities_are_refused():
    with pytest.raises(ValueError, match="same n_targets"):
        ModelAverage([small_ednn(0, n_targets=3), small_ednn(1, n_targets=2)])
    with pytest.raises(ValueError, match="agree on 'units'"):
        ModelAverage([small_ednn(0, units="Ha"), small_ednn(1, units="eV")])
