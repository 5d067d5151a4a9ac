"""Tests of an EDNN averaged over the placements of its tile grid (`placement_step`)."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.fused import FusedTileNetwork
from ednn.model import build_ednn

FOCUS = 16
CONTEXT = 8
# Total stride 4 (as the ks2d energy networks): steps 4 and 8 take one pass of the trunk,
# 2 and 1 take 2 and 4 passes per axis.
NET = {
    "conv_layers": [(6, 3, 2, 1), (6, 3, 1, 2), (8, 3, 2, 1)],
    "dense_units": [12],
    "padding": "valid",
}
SCALE = [1.0, 2.0]
SHIFT = [0.1, -0.3]


def plain_and_placed(boundary: str, step=4):
    keras.utils.set_random_seed(0)
    plain = build_ednn(FOCUS, CONTEXT, 2, 2, boundary=boundary, energy_scale=SCALE,
                       energy_shift_per_tile=SHIFT, **NET)  # fmt: skip
    placed = build_ednn(FOCUS, CONTEXT, 2, 2, tile_network=plain.tile_network, boundary=boundary,
                        energy_scale=SCALE, energy_shift_per_tile=SHIFT,
                        placement_step=step)  # fmt: skip
    return plain, placed


def images(shape=(2, 32, 48, 2), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def shifted_grid_means(plain, x, step, boundary):
    """The mean over the grids shifted by multiples of `step` of the plain EDNN's tile sum,
    the energy shift counted once per focus region of `x`."""
    regions = (x.shape[1] // FOCUS) * (x.shape[2] // FOCUS)
    (step0, step1) = (step, step) if isinstance(step, int) else step
    sums = []
    for a in range(0, FOCUS, step0):
        for b in range(0, FOCUS, step1):
            if boundary == "periodic":
                sums.append(plain(np.roll(x, (-a, -b), axis=(1, 2))).numpy())
                continue
            # The grid shifted by (-a, -b): the image padded with zeros to whole regions.
            y = np.pad(x, ((0, 0), (a, -a % FOCUS), (b, -b % FOCUS), (0, 0)))
            extra = (y.shape[1] // FOCUS) * (y.shape[2] // FOCUS) - regions
            sums.append(plain(y).numpy() - extra * np.array(SHIFT))
    return np.mean(sums, axis=0)


@pytest.mark.parametrize("boundary", ["zero", "periodic"])
@pytest.mark.parametrize("step", [4, 8, 2, 1])
def test_placed_model_is_the_mean_over_shifted_tile_grids(boundary, step):
    (plain, placed) = plain_and_placed(boundary, step)
    x = images()
    expected = shifted_grid_means(plain, x, step, boundary)
    np.testing.assert_allclose(placed(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    # The plain model is not that mean: the test would see a placement left out.
    assert np.abs(plain(x).numpy() - expected).max() > 1e-3
    tile_map = placed.tile_outputs(x)
    per_axis = [(n + FOCUS) // step - 1 for n in x.shape[1:3]]
    if boundary == "periodic":
        per_axis = [n // step for n in x.shape[1:3]]
    assert tile_map.shape == (2, *per_axis, 2)
    np.testing.assert_allclose(tf.reduce_sum(tile_map, [1, 2]), placed(x), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_steps_below_the_trunk_stride_interleave_the_passes(boundary):
    """Every other placement of step 2 is one of step 4, in place; mixed steps per axis."""
    (plain, _) = plain_and_placed(boundary)
    x = images(seed=3)
    maps = {
        step: FusedTileNetwork(plain.tile_network, FOCUS, CONTEXT, boundary, step=step)(x)
        for step in (4, (2, 8), 2)
    }
    assert FusedTileNetwork(plain.tile_network, FOCUS, CONTEXT, step=2).phases == (2, 2)
    # Zero boundary: origins 2 q - 14 and 4 i - 12; periodic: 2 q and 4 i.
    odd = slice(1, None, 2) if boundary == "zero" else slice(0, None, 2)
    np.testing.assert_allclose(maps[2].numpy()[:, odd, odd], maps[4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        maps[2].numpy()[:, :, slice(0 if boundary == "periodic" else 3, None, 4)],
        maps[(2, 8)],
        rtol=1e-5,
        atol=1e-5,
    )
    (_, mixed) = plain_and_placed(boundary, (2, 8))
    np.testing.assert_allclose(
        mixed(x), shifted_grid_means(plain, x, (2, 8), boundary), rtol=1e-5, atol=1e-5
    )


def test_periodic_placed_model_is_invariant_under_rolls_by_the_step():
    (plain, placed) = plain_and_placed("periodic", 4)
    x = images(seed=1)
    rolled = np.roll(x, (4, -8), axis=(1, 2))
    np.testing.assert_allclose(placed(rolled), placed(x), rtol=1e-5, atol=1e-5)
    assert np.abs(plain(rolled).numpy() - plain(x).numpy()).max() > 1e-3


def test_zero_boundary_placed_model_does_not_see_where_an_isolated_feature_sits():
    (plain, placed) = plain_and_placed("zero", 4)
    feature = images((1, 6, 7, 2), seed=2)
    x = np.zeros((1, 48, 48, 2), np.float32)
    moved = x.copy()
    x[:, 20:26, 18:25] = feature
    moved[:, 24:30, 10:17] = feature  # moved by (4, -8) pixels, far from the edges
    np.testing.assert_allclose(placed(moved), placed(x), rtol=1e-5, atol=1e-5)
    assert np.abs(plain(moved).numpy() - plain(x).numpy()).max() > 1e-3


def test_placed_model_saves_loads_and_trains(tmp_path):
    (_, placed) = plain_and_placed("zero", 4)
    x = images()
    path = tmp_path / "placed.keras"
    placed.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.placement_step == (4, 4)
    np.testing.assert_allclose(loaded(x), placed(x), rtol=1e-6, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(placed(x, training=True) ** 2)
    gradients = tape.gradient(loss, placed.trainable_variables)
    assert gradients and all(g is not None and np.abs(g).max() > 0 for g in gradients)


def test_a_model_saved_without_placements_loads_as_one(tmp_path):
    (plain, _) = plain_and_placed("zero")
    config = plain.get_config()
    del config["placement_step"]  # as saved before the option existed
    assert type(plain).from_config(config).placement_step is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"placement_step": 6}, "`step` must divide the focus (16, 16)"),
        ({"placement_step": 4, "evaluation": "tiles"}, "evaluates the placements fused"),
    ],
)
def test_bad_placement_steps_are_refused(kwargs, message):
    (plain, _) = plain_and_placed("zero")
    with pytest.raises(ValueError, match=re.escape(message)):
        build_ednn(FOCUS, CONTEXT, tile_network=plain.tile_network, boundary="zero", **kwargs)


def test_steps_neither_dividing_nor_divided_by_the_trunk_stride_are_refused():
    (plain, _) = plain_and_placed("zero")  # total stride 4, tiles of 32 pixels
    with pytest.raises(ValueError, match=re.escape("must divide the placement step (6, 6) or be")):
        build_ednn(24, 4, tile_network=plain.tile_network, boundary="zero", placement_step=6)


def test_same_padding_networks_cannot_average_placements():
    keras.utils.set_random_seed(0)
    same = build_ednn(FOCUS, CONTEXT, 2, 1, **{**NET, "padding": "same"})
    with pytest.raises(ValueError, match=r'needs a tile network that can be fused.*padding="same"'):
        build_ednn(FOCUS, CONTEXT, tile_network=same.tile_network, placement_step=4)


def test_on_periodic_refuses_placements():
    (plain, _) = plain_and_placed("periodic")
    fused = FusedTileNetwork(plain.tile_network, FOCUS, CONTEXT, "periodic", step=4)
    with pytest.raises(ValueError, match="one tile per focus region"):
        fused.on_periodic(images())


def test_streamed_sheets_take_placements_only_at_steps_the_stride_divides():
    # Streaming itself is tested in test_stream.py.
    from ednn.stream import _BandNetwork

    assert _BandNetwork(plain_and_placed("periodic", 4)[1], None, None).path == "fused"
    with pytest.raises(ValueError, match="below its trunk's stride"):
        _BandNetwork(plain_and_placed("periodic", 2)[1], None, None)
