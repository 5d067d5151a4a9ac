import re

import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.count_baseline import CountBaseline
from ednn.dcign import DensityDCIGN
from ednn.model import build_ednn
from ednn.symmetry import SymmetryAverage
from ednn.translation import (
    ShiftAverage,
    TranslationAverage,
    safe_rolls,
    shift_extrapolated,
    tile_phases,
)

# 8 x 8 images in tiles of 4 + 2*2 pixels (2 x 2 focus regions); a tiny tile network.
SMALL_NET = {"conv_layers": [(4, 3, 2, 1), (4, 3, 1, 1)], "dense_units": [8]}


def small_ednn(n_channels=2, n_targets=3):
    keras.utils.set_random_seed(0)
    return build_ednn(4, 2, n_channels=n_channels, n_targets=n_targets, **SMALL_NET)


def images(shape=(3, 8, 8, 2), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def rolled(x, shift):
    return np.roll(x, shift, axis=(1, 2))


def test_tile_phases_are_the_rolls_within_one_focus_region():
    assert tile_phases(4) == [(dy, dx) for dy in range(4) for dx in range(4)]
    assert tile_phases(16, 8) == [(0, 0), (0, 8), (8, 0), (8, 8)]
    assert tile_phases((4, 6), (2, 3)) == [(0, 0), (0, 3), (2, 0), (2, 3)]
    assert tile_phases(16, 4, centred=True) == [
        (dy, dx) for dy in (-8, -4, 0, 4) for dx in (-8, -4, 0, 4)
    ]
    assert tile_phases(16, 16, centred=True) == [(0, 0)]
    with pytest.raises(ValueError, match="must divide the focus"):
        tile_phases(16, 5)
    with pytest.raises(ValueError, match="`stride` must be positive"):
        tile_phases(16, 0)
    with pytest.raises(ValueError, match="`focus` must be an int or two ints"):
        tile_phases(16.0)


def test_the_average_is_the_mean_over_the_rolled_images():
    model = small_ednn()
    shifts = [(0, 0), (1, 3), (2, 1)]
    averaged = TranslationAverage(model, shifts)
    x = images()
    expected = np.mean([model.predict(rolled(x, s), verbose=0) for s in shifts], axis=0)
    np.testing.assert_allclose(averaged.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_the_tile_phases_make_an_ednn_invariant_under_every_roll():
    model = small_ednn()
    x = images()
    plain = model.predict(x, verbose=0)
    # A roll by whole focus regions only permutes the tiles; one by part of a tile does not.
    np.testing.assert_allclose(model.predict(rolled(x, (4, 4)), verbose=0), plain, rtol=1e-5)
    assert np.abs(model.predict(rolled(x, (1, 0)), verbose=0) - plain).max() > 1e-3
    every = TranslationAverage(model, tile_phases(4))
    expected = every.predict(x, verbose=0)
    for shift in ((1, 0), (0, 3), (2, 5), (7, 7)):
        moved = every.predict(rolled(x, shift), verbose=0)
        np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-6)
    # Every second roll: invariant under rolls by 2, not by 1.
    half = TranslationAverage(model, tile_phases(4, 2))
    by_two = half.predict(x, verbose=0)
    np.testing.assert_allclose(half.predict(rolled(x, (2, 6)), verbose=0), by_two, rtol=1e-5)
    assert np.abs(half.predict(rolled(x, (1, 0)), verbose=0) - by_two).max() > 1e-4


def test_an_image_output_is_rolled_back_before_the_mean():
    keras.utils.set_random_seed(1)
    dcign = DensityDCIGN(focus=8, context=4, pixel_area=0.25, filters=(4, 8), electron_scale=0.1)
    shifts = [(0, 0), (4, 0), (3, 12)]
    averaged = TranslationAverage(dcign, shifts)
    v = 10 * images((2, 16, 16, 1))
    n = np.array([2.0, 4.0], "float32")
    density = np.asarray(averaged((v, n)))
    # mean over s of roll(f(roll(v, s)), -s): each output back on the input's grid
    expected = np.mean([rolled(np.asarray(dcign((rolled(v, s), n))), (-s[0], -s[1]))
                        for s in shifts], axis=0)  # fmt: skip
    np.testing.assert_allclose(density, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(density.sum(axis=(1, 2, 3)) * 0.25, n, rtol=1e-5)


def test_a_nested_average_round_trips_with_plain_keras(tmp_path):
    inner = CountBaseline(
        small_ednn(), [2, 4], [[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]], "channel", 1, 8.0
    )
    averaged = TranslationAverage(
        SymmetryAverage(inner, mirror_shift=1), tile_phases(4, 2), name="rolled"
    )
    x = images()
    x[..., 1] = 3 / 8  # the count channel
    averaged.save(tmp_path / "rolled.keras")  # before any call: built with its model
    before = averaged.predict(x, verbose=0)
    loaded = keras.saving.load_model(tmp_path / "rolled.keras")
    assert isinstance(loaded, TranslationAverage) and isinstance(loaded.model, SymmetryAverage)
    assert loaded.shifts == ((0, 0), (0, 2), (2, 0), (2, 2))
    assert loaded.n_targets == 3
    assert loaded.metadata["target_names"] == inner.model.metadata["target_names"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(rolled(x, (6, 2)), verbose=0), before, rtol=1e-5)


@pytest.mark.parametrize(
    "shifts", [[], [(0, 0), (0, 0)], [(0, 0.5)], [(1,)], [(0, True)], "ab", [("a", 0)], 3]
)
def test_bad_shifts_are_refused(shifts):
    with pytest.raises(ValueError, match="`shifts` must"):
        TranslationAverage(small_ednn(), shifts)


def test_wrong_images_get_an_error_naming_the_shape():
    averaged = TranslationAverage(small_ednn(), [(0, 0), (1, 1)])
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, height, width"):
        averaged.predict(np.zeros((2, 8, 8), "float32"), verbose=0)
    with pytest.raises(ValueError, match="EDNN expected images of shape"):
        averaged.predict(np.zeros((2, 8, 8, 3), "float32"), verbose=0)


def off_edges(field, shift, axis):
    """Whether ``field`` rolled by ``shift`` along ``axis`` is zero on that axis's edges."""
    moved = np.roll(field, shift, axis=axis)
    return np.abs(np.take(moved, [0, -1], axis=axis)).max() <= 1e-6


def test_safe_rolls_keep_the_field_off_the_edges():
    rng = np.random.default_rng(3)
    fields = np.zeros((5, 12, 12))
    for field in fields:  # a blob of random size and place inside the image
        (y, x, h, w) = (*rng.integers(1, 6, 2), *rng.integers(1, 5, 2))
        field[y : y + h, x : x + w] = rng.random((h, w)) + 0.1
    fields[4, 0, 5] = 1.0  # on the first row: a roll to smaller y wraps it to the last
    limits = safe_rolls(fields, 4, 1e-6)
    for field, field_limits in zip(fields, limits, strict=True):
        for axis, (lo, hi) in enumerate(field_limits):
            assert -4 <= lo <= 0 <= hi <= 4
            assert all(off_edges(field, s, axis) for s in range(lo, hi + 1) if s)
            # the range stops at the first roll that puts the field on an edge, or at 4
            assert lo == -4 or not off_edges(field, lo - 1, axis)
            assert hi == 4 or not off_edges(field, hi + 1, axis)
    assert limits[4, 0, 0] == 0
    with pytest.raises(ValueError, match=r"must be \(batch, H, W\)"):
        safe_rolls(fields[0], 4, 1e-6)
    with pytest.raises(ValueError, match="`max_shift` must be an int >= 0"):
        safe_rolls(fields, -1, 1e-6)


def harmonic_images(centres, n=16, omega=(0.7, 0.4)):
    """Two channels: a harmonic well about each (row, column) centre, and a constant."""
    (rows, cols) = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    wells = [
        0.5 * omega[0] ** 2 * (rows - cy) ** 2 + 0.5 * omega[1] ** 2 * (cols - cx) ** 2
        for (cy, cx) in centres
    ]
    return np.stack([np.stack([w, np.full_like(w, 0.25)], axis=-1) for w in wells]).astype(
        np.float32
    )


@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (3, -1), (-3, 2)])
def test_a_shifted_harmonic_well_is_the_moved_well(shift):
    x = harmonic_images([(7.3, 8.6)])
    moved = harmonic_images([(7.3 + shift[0], 8.6 + shift[1])])
    np.testing.assert_allclose(shift_extrapolated(x, shift), moved, rtol=1e-5, atol=1e-4)
    # A plain roll is not: its walls wrap round.
    assert np.abs(np.roll(x, shift, axis=(1, 2)) - moved).max() > 1.0


def test_shifts_larger_than_the_image_are_refused():
    with pytest.raises(ValueError, match="`shift` must be smaller than the image"):
        shift_extrapolated(np.zeros((1, 4, 4, 1)), (4, 0))


def test_shift_average_is_the_mean_over_the_moves_that_keep_the_well_in_range(tmp_path):
    model = small_ednn(n_targets=2)
    # Minima at (6, 9) and (12, 4); the range allows rows 5..12 and columns 3..10.
    x = harmonic_images([(6.2, 8.9), (11.8, 4.1)])
    averaged = ShiftAverage(model, 1, [(5, 12), (3, 10)])
    assert averaged.shifts[0] == (0, 0) and len(averaged.shifts) == 9
    expected = []
    for image, (row, col) in zip(x, [(6, 9), (12, 4)], strict=True):
        outputs = [
            model(shift_extrapolated(image[None], s)).numpy()[0]
            for s in averaged.shifts
            if s == (0, 0) or (5 <= row + s[0] <= 12 and 3 <= col + s[1] <= 10)
        ]
        expected.append(np.mean(outputs, axis=0))
    # The second well sits on the range's last row: the moves down are left out.
    assert len(outputs) == 6
    np.testing.assert_allclose(averaged(x), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(averaged(x).numpy() - model(x).numpy()).max() > 1e-3
    averaged.save(tmp_path / "shifted.keras")
    loaded = keras.saving.load_model(tmp_path / "shifted.keras")
    assert (loaded.max_shift, loaded.centre_range, loaded.channel) == (1, ((5, 12), (3, 10)), 0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_shift": -1, "centre_range": [(0, 5), (0, 5)]}, "non-negative integer"),
        ({"max_shift": 1, "centre_range": [(5, 0), (0, 5)]}, "lo <= hi"),
        ({"max_shift": 1, "centre_range": [(0, 5)]}, "((lo_y, hi_y), (lo_x, hi_x))"),
    ],
)
def test_bad_shift_averages_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ShiftAverage(small_ednn(), **kwargs)
