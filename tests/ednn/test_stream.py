"""Tests of streaming giant-sheet evaluation against the in-memory model(rasterize(...))."""

import keras
import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene

from ednn import cells, raster
from ednn.model import build_ednn
from ednn.stream import evaluate_repeat, evaluate_sheet, model_raster_spec

SPEC = raster.RasterSpec(spacing=0.25, sigma=0.3)
VALID_NET = {"conv_layers": [(4, 3, 2, 1), (4, 3, 1, 1)], "dense_units": [8], "padding": "valid"}
SAME_NET = {"conv_layers": [(4, 3, 2, 1)], "dense_units": [8]}


def make_model(boundary="periodic", context=6, net=VALID_NET, n_targets=1):
    # Focus 8 px = 2 Å; a 20-pixel tile.
    keras.utils.set_random_seed(0)
    return build_ednn(
        8, context, n_channels=SPEC.n_channels, n_targets=n_targets, boundary=boundary,
        metadata={"raster": SPEC.to_dict()}, **net,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fused_model():
    return make_model()


@pytest.fixture(scope="module")
def rippled_sheet():
    # 7 x 5 rectangular graphene cells: an 88 x 72 px image, 11 x 9 focus regions.
    sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (7, 5, 1)
    rng = np.random.default_rng(0)
    sheet.positions[:, 2] += rng.normal(0.0, 0.2, len(sheet))
    sheet.numbers[rng.random(len(sheet)) < 0.2] = 5
    return sheet


def in_memory(model, atoms):
    image = raster.rasterize(atoms, model_raster_spec(model))[None]
    return float(model(image)[0, 0]), model.tile_outputs(image)[0].numpy()


def assert_relative(actual, expected, tol=1e-5):
    scale = np.abs(np.asarray(expected)).max()
    assert np.abs(np.asarray(actual) - np.asarray(expected)).max() <= tol * scale


@pytest.mark.parametrize(("band_rows", "path"), [(1, "fused"), (4, "fused"), (None, "periodic")])
def test_periodic_sheet_in_bands_equals_in_memory_evaluation(
    fused_model, rippled_sheet, band_rows, path
):
    # 11 rows of focus regions: bands of 4 leave a band of 3, not aligned with the cells.  One
    # band (the default here) is evaluated as a periodic image without a halo.
    energy, tile_map = in_memory(fused_model, rippled_sheet)
    assert tile_map.shape == (11, 9, 1)
    result = evaluate_sheet(fused_model, rippled_sheet, band_rows=band_rows, return_map=True)
    assert result.timings["path"] == path
    assert result.timings["n_bands"] == -(-11 // (band_rows or 11))
    assert result.n_atoms == len(rippled_sheet)
    assert_relative(result.energy_eV, energy)
    assert_relative(result.per_region_map, tile_map)


def test_bands_split_along_x_equal_in_memory_evaluation(fused_model, rippled_sheet):
    energy, _ = in_memory(fused_model, rippled_sheet)
    result = evaluate_sheet(fused_model, rippled_sheet, band_rows=2, regions_per_band=3)
    assert result.timings["n_bands"] == 6 * 3
    assert_relative(result.energy_eV, energy)


def test_unfusable_model_streams_tiles_in_batches(rippled_sheet):
    model = make_model(net=SAME_NET, n_targets=2)
    assert model.fused_network is None
    image = raster.rasterize(rippled_sheet, model_raster_spec(model))[None]
    result = evaluate_sheet(model, rippled_sheet, band_rows=3, batch_size=7, progress=True)
    assert result.timings["path"] == "tiles"
    assert_relative(result.values, model(image)[0].numpy())


def test_rotated_hexagonal_sheet_streams_like_the_whole_image(fused_model):
    # Not an axis-aligned rectangle: the layout converts (and rotates) a copy; an aligned
    # rectangular sheet is binned without one.  Both must read the same image.
    sheet = graphene(vacuum=10.0) * (8, 8, 1)
    sheet.rotate(30.0, "z", rotate_cell=True)
    sheet.positions[:, 2] += np.random.default_rng(1).normal(0.0, 0.2, len(sheet))
    energy, tile_map = in_memory(fused_model, sheet)
    result = evaluate_sheet(fused_model, sheet, band_rows=2, return_map=True)
    assert result.n_atoms == 2 * len(sheet)
    assert result.timings["heights"] > 0.0
    assert_relative(result.energy_eV, energy)
    assert_relative(result.per_region_map, tile_map)


def test_zero_boundary_flake_equals_in_memory_evaluation(rippled_sheet):
    model = make_model(boundary="zero")
    flake = rippled_sheet.copy()
    flake.pbc = False
    energy, tile_map = in_memory(model, flake)
    result = evaluate_sheet(model, flake, band_rows=3, return_map=True)
    assert_relative(result.energy_eV, energy)
    assert_relative(result.per_region_map, tile_map)


def test_one_band_rendered_in_threaded_strips_equals_in_memory(fused_model, monkeypatch):
    # 4 x 12 rectangular cells: 208 x 40 px of ~0.25 Å, one band, rendered as 3 strips of ~69
    # rows by 3 threads (each strip selects its atoms and their heights on its own).
    import ednn.stream

    monkeypatch.setattr(ednn.stream, "STRIP_ROWS", 64)
    monkeypatch.setattr(ednn.stream.os, "cpu_count", lambda: 3)
    sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (4, 12, 1)
    sheet.positions[:, 2] += np.random.default_rng(2).normal(0.0, 0.3, len(sheet))
    energy, tile_map = in_memory(fused_model, sheet)
    result = evaluate_sheet(fused_model, sheet, return_map=True)
    assert result.timings["n_bands"] == 1 and result.timings["path"] == "periodic"
    assert_relative(result.energy_eV, energy)
    assert_relative(result.per_region_map, tile_map)
    render, strips = ednn.stream._BandRenderer._render, []

    def spy(self, rows, cols):
        strips.append(rows)
        return render(self, rows, cols)

    monkeypatch.setattr(ednn.stream._BandRenderer, "_render", spy)
    evaluate_sheet(fused_model, sheet)
    assert sorted(strips) == [(0, 69), (69, 139), (139, 208)]
    # Two bands: the first (rasterized while no network runs) in strips, with its wrapped
    # halo; the second beside the network, in one piece.
    monkeypatch.setattr(ednn.stream, "STRIP_ROWS", 32)
    strips.clear()
    result = evaluate_sheet(fused_model, sheet, band_rows=13, return_map=True)
    assert result.timings["path"] == "fused" and result.timings["n_bands"] == 2
    assert_relative(result.energy_eV, energy)
    assert_relative(result.per_region_map, tile_map)
    assert {(0, 37), (37, 73), (73, 110), (98, 208)} <= set(strips)


def test_halo_wider_than_a_small_sheet_wraps_like_tiling():
    model = make_model(context=14)
    sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (3, 2, 1)  # 32 x 32 px
    energy, _ = in_memory(model, sheet)
    assert_relative(evaluate_sheet(model, sheet, band_rows=1).energy_eV, energy)


def whole_region_cell(seed=0):
    # 6 Å x 4 Å: exactly 24 x 16 px of 0.25 Å, i.e. 3 x 2 focus regions of 8 px.
    rng = np.random.default_rng(seed)
    positions = np.column_stack([rng.random(6) * 6.0, rng.random(6) * 4.0, rng.normal(5, 0.3, 6)])
    return Atoms("C3BN2", positions=positions, cell=[6.0, 4.0, 10.0], pbc=True)


def test_repeat_of_whole_region_cell_is_nx_ny_times_cell_energy(fused_model):
    cell = whole_region_cell()
    single = evaluate_sheet(fused_model, cell).energy_eV
    repeated = evaluate_repeat(fused_model, cell, 5, 3, band_rows=2)
    assert repeated.n_atoms == 15 * len(cell)
    assert_relative(repeated.energy_eV, 15 * single)
    assert_relative(
        repeated.energy_eV, evaluate_sheet(fused_model, cell.repeat((5, 3, 1))).energy_eV
    )


def test_repeat_equals_evaluating_the_repeated_atoms(fused_model):
    # 3 x 2 graphene cells do not fill whole focus regions: the grid is fitted to the repeat.
    cell = cells.to_rectangular(graphene(vacuum=10.0)) * (3, 2, 1)
    cell.positions[:, 2] += np.random.default_rng(1).normal(0.0, 0.2, len(cell))
    expected = evaluate_sheet(fused_model, cell.repeat((4, 3, 1))).energy_eV
    result = evaluate_repeat(fused_model, cell, 4, 3, band_rows=3, regions_per_band=5)
    assert_relative(result.energy_eV, expected)


class _Rank:
    """A fake backend: rank `rank` of 2 whose allreduce keeps the local value."""

    size = 2

    def __init__(self, rank):
        self.rank = rank

    def allreduce_sum(self, value):
        return value


def test_bands_are_dealt_round_robin_to_ranks(fused_model, rippled_sheet):
    full = evaluate_sheet(fused_model, rippled_sheet, band_rows=2).energy_eV
    parts = [
        evaluate_sheet(fused_model, rippled_sheet, band_rows=2, backend=_Rank(rank)).energy_eV
        for rank in (0, 1)
    ]
    assert parts[0] != pytest.approx(full)
    assert_relative(sum(parts), full)


def test_model_without_raster_metadata_raises():
    keras.utils.set_random_seed(0)
    model = build_ednn(8, 6, n_channels=4, **VALID_NET)
    with pytest.raises(ValueError, match=r"metadata\['raster'\]"):
        evaluate_sheet(model, whole_region_cell())


def test_stretch_channels_stream_like_the_whole_image(rippled_sheet):
    # The stretch channels depend on the whole sheet's grid, not on a band's.
    spec = raster.RasterSpec(spacing=0.25, sigma=0.3, spacing_channels=True)
    keras.utils.set_random_seed(0)
    model = build_ednn(
        8, 6, n_channels=spec.n_channels, metadata={"raster": spec.to_dict()}, **VALID_NET
    )
    sheet = rippled_sheet.repeat((1, 1, 1))
    sheet.set_cell(sheet.cell * [1.012, 0.991, 1.0], scale_atoms=True)
    image = raster.rasterize(sheet, model_raster_spec(model))
    assert np.abs(image[..., -2:]).max() > 0.1  # the grid is stretched
    energy = float(model(image[None])[0, 0])
    assert_relative(evaluate_sheet(model, sheet, band_rows=3).energy_eV, energy)
    repeated = evaluate_repeat(model, sheet, 2, 3, band_rows=2)
    assert_relative(repeated.energy_eV, evaluate_sheet(model, sheet.repeat((2, 3, 1))).energy_eV)


@pytest.mark.parametrize(
    ("grid", "regions"), [((11, 9), 8192), ((50, 2000), 8192), ((3000, 40), 8192), ((7, 5), 4)]
)
def test_default_bands_are_square_ish_and_cover_the_grid_once(grid, regions):
    from ednn.stream import _band_plan

    bands = _band_plan(grid, None, regions)
    covered = np.zeros(grid, dtype=int)
    for (r0, r1), (q0, q1) in bands:
        covered[r0:r1, q0:q1] += 1
        assert (r1 - r0) * (q1 - q0) <= max(regions, 1) or len(bands) == 1
    np.testing.assert_array_equal(covered, 1)
    # A band is a full row or column of the grid, or at least as tall as wide / 2 and v.v.
    (r0, r1), (q0, q1) = bands[0]
    (rows, cols) = (r1 - r0, q1 - q0)
    assert cols == grid[1] or rows == grid[0] or 0.5 <= rows / cols <= 2.0
    # Work with the halo (focus 16, context 32 px) against the old full-width plan.
    if grid == (50, 2000):
        assert (rows, cols) == (50, 154)


def test_wide_sheet_in_square_bands_equals_in_memory_evaluation(fused_model, rippled_sheet):
    energy, tile_map = in_memory(fused_model, rippled_sheet)
    result = evaluate_sheet(fused_model, rippled_sheet, regions_per_band=16, return_map=True)
    assert result.timings["n_bands"] == 9  # 11 x 9 regions in bands of 4 x 3
    assert_relative(result.energy_eV, energy)
    assert_relative(result.per_region_map, tile_map)


@pytest.mark.parametrize(
    ("evaluation", "band_rows", "path"),
    [(None, None, "periodic"), (None, 4, "fused"), ("tiles", 4, "tiles")],
)
def test_mixed_precision_on_every_path_is_close_to_float32(
    fused_model, rippled_sheet, evaluation, band_rows, path
):
    options = {"evaluation": evaluation, "band_rows": band_rows, "return_map": True}
    full = evaluate_sheet(fused_model, rippled_sheet, **options)
    for precision in ("mixed_bfloat16", "mixed_float16"):
        mixed = evaluate_sheet(fused_model, rippled_sheet, precision=precision, **options)
        assert mixed.timings["path"] == path
        assert mixed.energy_eV != full.energy_eV
        assert_relative(mixed.per_region_map, full.per_region_map, tol=2e-2)
    with pytest.raises(ValueError, match="`precision` must be one of"):
        evaluate_sheet(fused_model, rippled_sheet, precision="float64")


def placed_model(boundary, step):
    keras.utils.set_random_seed(0)
    return build_ednn(
        8, 6, n_channels=SPEC.n_channels, n_targets=2, boundary=boundary,
        energy_scale=[1.0, 2.0], energy_shift_per_tile=[0.3, -0.1],
        metadata={"raster": SPEC.to_dict()}, placement_step=step, **VALID_NET,
    )  # fmt: skip


@pytest.mark.parametrize("step", [2, 4])
@pytest.mark.parametrize("band_rows", [1, 4, None])
def test_placement_averaged_model_streams_like_the_whole_image(rippled_sheet, step, band_rows):
    model = placed_model("periodic", step)
    image = raster.rasterize(rippled_sheet, model_raster_spec(model))[None]
    result = evaluate_sheet(model, rippled_sheet, band_rows=band_rows, return_map=True)
    assert result.timings["path"] == "fused"  # never the halo-free whole-image pass
    assert_relative(result.values, model(image)[0].numpy())
    # Each region's share: the placements that start in it (the model's map, per region).
    placements = model.tile_outputs(image)[0].numpy()
    per = 8 // step
    regions = placements.reshape(11, per, 9, per, 2).sum(axis=(1, 3))
    assert_relative(result.per_region_map, regions)


@pytest.mark.parametrize("band_rows", [1, 4])
def test_zero_boundary_placement_averaged_flake_streams_like_the_whole_image(
    rippled_sheet, band_rows
):
    model = placed_model("zero", 2)
    flake = rippled_sheet.copy()
    flake.pbc = False
    image = raster.rasterize(flake, model_raster_spec(model))[None]
    result = evaluate_sheet(model, flake, band_rows=band_rows, regions_per_band=4,
                            return_map=True)  # fmt: skip
    assert result.timings["n_bands"] > 4  # bands on both low edges and inside
    # The model's own float32 sum over ~2,000 placements is off by ~3e-5 here: sum its
    # placements' outputs in float64 instead.
    raw = model.fused_network(image)[0].numpy().astype(np.float64).sum(axis=(0, 1))
    regions = image.shape[1] * image.shape[2] // 64
    expected = np.array([1.0, 2.0]) * raw / 16 + np.array([0.3, -0.1]) * regions
    assert_relative(result.values, expected, tol=1e-6)
    assert_relative(result.values, model(image)[0].numpy(), tol=1e-4)
    assert_relative(result.per_region_map.sum(axis=(0, 1)), result.values)


def test_placements_streamed_only_fused_and_at_steps_the_stride_divides(rippled_sheet):
    with pytest.raises(ValueError, match=r'is evaluated fused\. Received: evaluation="tiles"'):
        evaluate_sheet(placed_model("periodic", 4), rippled_sheet, evaluation="tiles")
    with pytest.raises(ValueError, match=r"every \(1, 1\) px, below its trunk's stride \(2, 2\)"):
        evaluate_sheet(placed_model("periodic", 1), rippled_sheet)
