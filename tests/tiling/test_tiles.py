"""Tests for :mod:`tiling`: focus/context tiles of 2D and 3D images and their stitching."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiling import extract_tiles, stitch_tiles, tile_grid

REPO_ROOT = Path(__file__).resolve().parents[2]


def numbered_image(spatial: tuple[int, ...], channels: int = 2) -> np.ndarray:
    """Distinct, non-zero integer pixels, so any misplaced or zero pixel shows."""
    size = math.prod(spatial) * channels
    return np.arange(1, size + 1, dtype=np.int64).reshape((*spatial, channels))


def as_tuple(value: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def reference_tiles(image, focus, context, boundary="periodic"):
    """Tiles by the definition: slices of the np.pad-ded image, one tile at a time."""
    ndim = image.ndim - 1
    f, c = as_tuple(focus, ndim), as_tuple(context, ndim)
    pad = [(ci, ci) for ci in c] + [(0, 0)]
    padded = np.pad(image, pad, mode="wrap" if boundary == "periodic" else "constant")
    grid = [size // fi for size, fi in zip(image.shape[:-1], f, strict=True)]
    tiles = []
    for idx in itertools.product(*(range(n) for n in grid)):
        window = zip(idx, f, c, strict=True)
        tiles.append(padded[tuple(slice(i * fi, i * fi + fi + 2 * ci) for i, fi, ci in window)])
    return np.stack(tiles)


# --- identities -------------------------------------------------------------------------


@pytest.mark.parametrize("boundary", ["periodic", "zero"])
def test_stitch_inverts_extract_2d(boundary):
    image = numbered_image((12, 8))
    tiles = extract_tiles(image, focus=4, context=3, boundary=boundary)
    assert np.array_equal(stitch_tiles(tiles, grid=(3, 2), context=3), image)


@pytest.mark.parametrize("boundary", ["periodic", "zero"])
def test_stitch_inverts_extract_3d(boundary):
    image = numbered_image((6, 4, 8))
    tiles = extract_tiles(image, focus=2, context=3, boundary=boundary)
    assert np.array_equal(stitch_tiles(tiles, grid=(3, 2, 4), context=3), image)


def test_stitch_inverts_extract_with_per_axis_focus_and_context():
    image = numbered_image((6, 10, 4))
    focus, context = (3, 5, 2), (0, 2, 7)
    tiles = extract_tiles(image, focus, context)
    grid = tile_grid(image.shape[:-1], focus)
    assert np.array_equal(stitch_tiles(tiles, grid, context=context), image)


def test_stitch_of_focus_sized_outputs_with_zero_context():
    image = numbered_image((8, 6))
    focus_blocks = extract_tiles(image, focus=(4, 3), context=0)
    assert np.array_equal(stitch_tiles(focus_blocks, grid=(2, 2)), image)


# --- shapes and order -------------------------------------------------------------------


def test_tile_count_and_shape_2d():
    tiles = extract_tiles(np.zeros((256, 128, 3)), focus=64, context=16)
    assert tiles.shape == (8, 96, 96, 3)


def test_tile_count_and_shape_3d_per_axis():
    tiles = extract_tiles(np.zeros((8, 12, 16, 1)), focus=(4, 3, 8), context=(1, 0, 2))
    assert tiles.shape == (2 * 4 * 2, 6, 3, 12, 1)


def test_tile_grid_counts_focus_regions_per_axis():
    assert tile_grid((256, 128), 64) == (4, 2)
    assert tile_grid((8, 12, 16), (4, 3, 8)) == (2, 4, 2)


def test_tile_grid_rounds_up_with_pad_to_focus():
    assert tile_grid((250, 128), 64, pad_to_focus=True) == (4, 2)


def test_int_focus_and_context_equal_their_tuples():
    image = numbered_image((8, 8, 8))
    assert np.array_equal(extract_tiles(image, 4, 2), extract_tiles(image, (4, 4, 4), (2, 2, 2)))


def test_tiles_follow_row_major_grid_order():
    image = numbered_image((6, 4))
    tiles = extract_tiles(image, focus=2, context=0)
    for k, (i, j) in enumerate(itertools.product(range(3), range(2))):
        assert np.array_equal(tiles[k], image[2 * i : 2 * i + 2, 2 * j : 2 * j + 2])


def test_extract_preserves_dtype():
    image = np.ones((4, 4, 1), dtype=np.float32)
    assert extract_tiles(image, 2, 1, boundary="zero").dtype == np.float32


def test_extract_returns_a_copy():
    image = numbered_image((4, 4))
    tiles = extract_tiles(image, focus=4, context=0)
    tiles[...] = 0
    assert image.min() == 1


def test_stitch_returns_a_copy():
    tiles = numbered_image((1, 4, 4))
    image = stitch_tiles(tiles, grid=(1, 1))
    image[...] = 0
    assert tiles.min() == 1


# --- periodic boundary ------------------------------------------------------------------


def test_periodic_tile_equals_rolled_image():
    image = numbered_image((12, 8))
    (f0, f1), (c0, c1) = (4, 2), (3, 2)
    tiles = extract_tiles(image, (f0, f1), (c0, c1)).reshape(3, 4, f0 + 2 * c0, f1 + 2 * c1, 2)
    for i, j in itertools.product(range(3), range(4)):
        rolled = np.roll(image, shift=(c0 - i * f0, c1 - j * f1), axis=(0, 1))
        assert np.array_equal(tiles[i, j], rolled[: f0 + 2 * c0, : f1 + 2 * c1])


def test_periodic_tiles_match_np_pad_wrap_when_context_equals_image():
    image = numbered_image((4, 6))
    assert np.array_equal(extract_tiles(image, 2, (4, 6)), reference_tiles(image, 2, (4, 6)))


def test_periodic_context_wraps_several_times_around_small_image():
    image = numbered_image((3, 2), channels=1)
    tiles = extract_tiles(image, focus=1, context=7)
    # np.pad(mode="wrap") continues the period: padded[k] = image[(k - 7) % 3]
    assert np.array_equal(tiles, reference_tiles(image, focus=1, context=7))
    assert np.array_equal(tiles[0, :, 7, 0], image[np.arange(-7, 8) % 3, 0, 0])


def test_periodic_3d_tiles_match_np_pad_wrap_with_context_beyond_image():
    image = numbered_image((2, 4, 3))
    focus, context = (1, 2, 3), (5, 9, 4)
    assert np.array_equal(
        extract_tiles(image, focus, context), reference_tiles(image, focus, context)
    )


# --- zero boundary ----------------------------------------------------------------------


def test_zero_boundary_context_beyond_edges_is_zero():
    image = numbered_image((8, 8))
    tiles = extract_tiles(image, focus=4, context=2, boundary="zero").reshape(2, 2, 8, 8, 2)
    assert not tiles[0, 0, :2].any() and not tiles[0, 0, :, :2].any()
    assert not tiles[1, 1, -2:].any() and not tiles[1, 1, :, -2:].any()
    # inner context comes from the neighbouring focus region, not zeros
    assert np.array_equal(tiles[0, 0, 2:, 2:], image[:6, :6])


def test_zero_boundary_matches_np_pad_constant_with_context_beyond_image():
    image = numbered_image((4, 2, 6))
    tiles = extract_tiles(image, (2, 1, 3), (3, 5, 0), boundary="zero")
    assert np.array_equal(tiles, reference_tiles(image, (2, 1, 3), (3, 5, 0), boundary="zero"))


# --- sizes that are not multiples of the focus ------------------------------------------


def test_non_multiple_of_focus_error_names_both_sizes_and_axis():
    with pytest.raises(
        ValueError, match=r"image size 250 along axis 0\. Received: focus=64"
    ) as err:
        extract_tiles(np.zeros((250, 256, 1)), focus=64, context=8)
    assert "pad_to_focus=True" in str(err.value)


def test_non_multiple_of_focus_error_names_the_failing_axis():
    with pytest.raises(ValueError, match=r"image size 10 along axis 1\. Received: focus=\(4, 3\)"):
        extract_tiles(np.zeros((8, 10, 1)), focus=(4, 3), context=0)


def test_pad_to_focus_zero_pads_the_high_end():
    image = numbered_image((5, 7))
    tiles = extract_tiles(image, focus=(2, 4), context=1, pad_to_focus=True)
    grid = tile_grid(image.shape[:-1], (2, 4), pad_to_focus=True)
    padded = stitch_tiles(tiles, grid, context=1)
    assert grid == (3, 2) and padded.shape == (6, 8, 2)
    assert np.array_equal(padded[:5, :7], image)
    assert not padded[5:].any() and not padded[:, 7:].any()


def test_pad_to_focus_periodic_context_wraps_into_the_padding():
    image = numbered_image((5, 4), channels=1)
    tiles = extract_tiles(image, focus=(3, 4), context=(1, 0), pad_to_focus=True)
    # the row above the first tile is the padding row 5, not image row 4
    assert not tiles[0, 0].any()


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (8,), (2, 4, 4, 4, 1)])
def test_image_without_two_or_three_spatial_axes_is_rejected(shape):
    with pytest.raises(ValueError, match=r"\(H, W, C\) or \(D, H, W, C\).*Received: image\.shape"):
        extract_tiles(np.zeros(shape), focus=2, context=0)


@pytest.mark.parametrize("focus", [0, -2, (4, 0)])
def test_non_positive_focus_is_rejected(focus):
    with pytest.raises(ValueError, match=r"`focus` must be positive.*Received: focus="):
        extract_tiles(np.zeros((8, 8, 1)), focus=focus, context=0)


@pytest.mark.parametrize("context", [-1, (0, -3)])
def test_negative_context_is_rejected(context):
    with pytest.raises(ValueError, match=r"`context` must be at least 0.*Received: context="):
        extract_tiles(np.zeros((8, 8, 1)), focus=4, context=context)


def test_tuple_of_wrong_length_is_rejected():
    with pytest.raises(ValueError, match=r"tuple of 3 ints.*Received: focus=\(4, 4\)"):
        extract_tiles(np.zeros((8, 8, 8, 1)), focus=(4, 4), context=0)


@pytest.mark.parametrize("focus", [4.0, "4", True, (4, 2.5)])
def test_focus_that_is_not_an_int_is_a_type_error(focus):
    with pytest.raises(TypeError, match="`focus` must be an int or a tuple of ints"):
        extract_tiles(np.zeros((8, 8, 1)), focus=focus, context=0)


def test_unknown_boundary_is_rejected():
    with pytest.raises(
        ValueError, match=r"one of \('periodic', 'zero'\)\. Received: boundary='reflect'"
    ):
        extract_tiles(np.zeros((8, 8, 1)), focus=4, context=1, boundary="reflect")


def test_boundary_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="`boundary` must be a string"):
        extract_tiles(np.zeros((8, 8, 1)), focus=4, context=1, boundary=0)


def test_pad_to_focus_that_is_not_a_bool_is_a_type_error():
    with pytest.raises(TypeError, match="`pad_to_focus` must be True or False"):
        extract_tiles(np.zeros((8, 8, 1)), focus=4, context=1, pad_to_focus="yes")


def test_tile_count_not_matching_grid_is_rejected():
    with pytest.raises(ValueError, match=r"one tile per grid cell, 6 for grid=\(3, 2\)"):
        stitch_tiles(np.zeros((4, 6, 6, 1)), grid=(3, 2), context=1)


def test_stitch_tiles_without_channel_axis_is_rejected():
    with pytest.raises(ValueError, match=r"Received: tiles\.shape=\(4, 6, 6\)"):
        stitch_tiles(np.zeros((4, 6, 6)), grid=(2, 2))


def test_stitch_context_leaving_no_focus_is_rejected():
    with pytest.raises(ValueError, match=r"exceed 2 \* context.*Received: context=3"):
        stitch_tiles(np.zeros((4, 6, 6, 1)), grid=(2, 2), context=3)


def test_tile_grid_needs_two_or_three_spatial_sizes():
    with pytest.raises(ValueError, match=r"2 or 3 spatial sizes.*Received: image_shape=\(8,\)"):
        tile_grid((8,), focus=4)


# --- properties over random shapes ------------------------------------------------------


@st.composite
def tiling_cases(draw):
    """A numbered image whose size is a multiple of the focus, and a context up to ~2x it."""
    ndim = draw(st.sampled_from([2, 3]))
    max_grid, max_focus = (3, 4) if ndim == 2 else (2, 3)
    grid = tuple(draw(st.integers(1, max_grid)) for _ in range(ndim))
    focus = tuple(draw(st.integers(1, max_focus)) for _ in range(ndim))
    shape = tuple(n * f for n, f in zip(grid, focus, strict=True))
    context = tuple(draw(st.integers(0, 2 * size + 1)) for size in shape)
    image = numbered_image(shape, channels=draw(st.integers(1, 2)))
    return image, grid, focus, context


@settings(max_examples=40, deadline=None)
@given(case=tiling_cases(), boundary=st.sampled_from(["periodic", "zero"]))
def test_property_stitch_inverts_extract(case, boundary):
    image, grid, focus, context = case
    tiles = extract_tiles(image, focus, context, boundary=boundary)
    assert tile_grid(image.shape[:-1], focus) == grid
    assert np.array_equal(stitch_tiles(tiles, grid, context=context), image)


@settings(max_examples=40, deadline=None)
@given(case=tiling_cases(), boundary=st.sampled_from(["periodic", "zero"]))
def test_property_tiles_match_np_pad_reference(case, boundary):
    image, _, focus, context = case
    tiles = extract_tiles(image, focus, context, boundary=boundary)
    assert np.array_equal(tiles, reference_tiles(image, focus, context, boundary=boundary))


# --- dependencies -----------------------------------------------------------------------


def test_import_tiling_does_not_import_tensorflow():
    code = "import sys, tiling; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
