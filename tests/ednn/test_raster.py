"""Tests for ednn.raster: Gaussian images of 2D sheets and flakes."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn import cells, raster
from ednn.raster import RasterSpec, grid_for_cell, rasterize, rasterize_window


def _sheet(nx: int = 4, ny: int = 3, formula: str = "C2") -> Atoms:
    """Rectangular graphene-like sheet of nx x ny 4-atom cells at z = 10 Å."""
    return cells.to_rectangular(graphene(formula=formula, vacuum=10.0)) * (nx, ny, 1)


def _mixed_sheet() -> Atoms:
    """BN sheet with a few carbon substitutions: 48 atoms of three species."""
    atoms = _sheet(4, 3, "BN")
    symbols = atoms.get_chemical_symbols()
    for index in (0, 5, 17, 30):
        symbols[index] = "C"
    atoms.set_chemical_symbols(symbols)
    return atoms


def _pixel_area(atoms: Atoms, image: np.ndarray) -> float:
    layout = raster.raster_layout(atoms, RasterSpec(spacing=0.1), grid_shape=image.shape[:2])
    return layout.spacing[0] * layout.spacing[1]


def _integrals(atoms: Atoms, image: np.ndarray) -> np.ndarray:
    return image.sum(axis=(0, 1), dtype=np.float64) * _pixel_area(atoms, image)


def _rippled(atoms: Atoms, amplitude: float) -> Atoms:
    rippled = atoms.copy()
    length = atoms.cell[0, 0]
    rippled.positions[:, 2] += amplitude * np.sin(2 * np.pi * atoms.positions[:, 0] / length)
    return rippled


# --- integrals and normalisation -------------------------------------------------------------


def test_species_channels_integrate_to_atom_counts() -> None:
    atoms = _mixed_sheet()
    image = rasterize(atoms, species=("C", "B", "N"))
    assert image.dtype == np.float32 and image.shape[2] == 4
    counts = [atoms.get_chemical_symbols().count(s) for s in ("C", "B", "N")]
    np.testing.assert_allclose(_integrals(atoms, image)[:3], counts, rtol=1e-3)


def test_analytic_amplitude_without_normalisation() -> None:
    atoms = Atoms("C", positions=[[1.05, 1.05, 0.0]], cell=[2.0, 2.0, 10.0], pbc=(1, 1, 0))
    image = rasterize(atoms, species=("C",), spacing=0.1, normalize=False, height_channel=False)
    assert image[10, 10, 0] == pytest.approx(1.0 / (2 * math.pi * 0.2**2), rel=1e-6)
    assert _integrals(atoms, image)[0] == pytest.approx(1.0, abs=1e-3)


def test_per_species_sigma_changes_peak_not_integral() -> None:
    atoms = _sheet(2, 2, "BN")
    narrow = rasterize(atoms, species=("B", "N"), sigma={"B": 0.15, "N": 0.3}, normalize=True)
    np.testing.assert_allclose(_integrals(atoms, narrow)[:2], [8, 8], rtol=1e-3)
    assert narrow[..., 0].max() > 3 * narrow[..., 1].max()


def test_z_weighted_channel_integrates_to_total_atomic_number() -> None:
    atoms = _mixed_sheet()
    image = rasterize(atoms, z_weighted=True, height_channel=False)
    assert image.shape[2] == 1
    assert _integrals(atoms, image)[0] == pytest.approx(atoms.numbers.sum(), rel=1e-3)


# --- periodicity -----------------------------------------------------------------------------


def test_atom_at_edge_spreads_across_it() -> None:
    atoms = Atoms("C", positions=[[0.0, 1.0, 0.0]], cell=[3.0, 2.0, 10.0], pbc=(1, 1, 0))
    image = rasterize(atoms, species=("C",), height_channel=False)[..., 0]
    row = image[10].astype(np.float64)
    assert row[:8].sum() == pytest.approx(row[-8:].sum(), rel=1e-3)
    assert row[0] == pytest.approx(row[-1], rel=1e-6) and row[0] == row.max()
    assert row[10:-10].max() < 1e-6 * row.max()
    assert _integrals(atoms, image[..., None])[0] == pytest.approx(1.0, rel=1e-3)


def test_translation_by_one_pixel_rolls_the_image() -> None:
    atoms = _rippled(_mixed_sheet(), 0.4)
    image = rasterize(atoms)
    dy, dx = raster.raster_layout(atoms).spacing
    shifted = atoms.copy()
    shifted.positions += [dx, 2 * dy, 0.0]
    np.testing.assert_allclose(rasterize(shifted), np.roll(image, (2, 1), axis=(0, 1)), atol=1e-4)


def test_periodic_repeat_tiles_the_image() -> None:
    atoms = _rippled(_sheet(2, 2), 0.3)
    image = rasterize(atoms)
    doubled = rasterize(atoms * (2, 1, 1), grid_shape=(image.shape[0], 2 * image.shape[1]))
    np.testing.assert_allclose(doubled, np.tile(image, (1, 2, 1)), atol=1e-4)


def test_hexagonal_and_rectangular_graphene_give_the_same_image() -> None:
    hexagonal = graphene(vacuum=10.0) * (3, 3, 1)
    rectangular = cells.to_rectangular(graphene(vacuum=10.0)) * (3, 3, 1)
    image_hex, image_rect = rasterize(hexagonal), rasterize(rectangular)
    assert image_hex.shape == image_rect.shape
    per_atom_hex = _integrals(rectangular, image_hex) / (2 * len(hexagonal))
    per_atom_rect = _integrals(rectangular, image_rect) / len(rectangular)
    np.testing.assert_allclose(per_atom_hex, per_atom_rect, atol=1e-6)
    np.testing.assert_allclose(image_hex, image_rect, atol=1e-4)


def test_chunking_does_not_change_the_image() -> None:
    atoms = _rippled(_mixed_sheet(), 0.5)
    np.testing.assert_allclose(rasterize(atoms, chunk_size=7), rasterize(atoms), atol=1e-5)


def test_small_patches_give_the_same_image(monkeypatch: pytest.MonkeyPatch) -> None:
    atoms = _rippled(_mixed_sheet(), 0.5)
    image = rasterize(atoms)
    monkeypatch.setattr(raster, "PATCH_ENTRIES", 4 * 40 * 40)  # 24-pixel patches, many seams
    np.testing.assert_allclose(rasterize(atoms), image, atol=1e-5)
    window = rasterize_window(atoms, (-30, 50), (90, 70))
    rows, cols = np.arange(-30, 60), np.arange(50, 120)
    expected = np.take(np.take(image, rows, axis=0, mode="wrap"), cols, axis=1, mode="wrap")
    np.testing.assert_allclose(window, expected, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-5.0, 10.0), st.floats(-5.0, 10.0)), min_size=1, max_size=12),
    st.floats(0.12, 0.4),
)
def test_any_periodic_structure_integrates_to_its_atom_count(
    points: list[tuple[float, float]], sigma: float
) -> None:
    positions = [(x, y, 0.0) for x, y in points]
    atoms = Atoms(f"C{len(points)}", positions=positions, cell=[2.4, 3.1, 8.0], pbc=(1, 1, 0))
    image = rasterize(atoms, species=("C",), sigma=sigma, height_channel=False)
    assert _integrals(atoms, image)[0] == pytest.approx(len(points), rel=1e-3)


# --- height channel --------------------------------------------------------------------------


def test_flat_sheet_has_zero_height_channel_at_any_z() -> None:
    atoms = _sheet()
    atoms.positions[:, 2] = 3.7
    assert np.all(rasterize(atoms)[..., -1] == 0.0)


def test_ripple_changes_the_image() -> None:
    flat = _sheet(8, 2)
    rippled = _rippled(flat, 0.75)
    image_flat, image_rippled = rasterize(flat), rasterize(rippled)
    np.testing.assert_allclose(image_flat[..., :3], image_rippled[..., :3], atol=1e-6)
    assert np.abs(image_rippled[..., -1]).max() > 0.1
    assert not np.allclose(image_flat, image_rippled, atol=1e-3)


def test_rigid_z_shift_gives_the_same_image() -> None:
    rippled = _rippled(_sheet(8, 2), 0.75)
    shifted = rippled.copy()
    shifted.positions[:, 2] += 4.2
    np.testing.assert_allclose(rasterize(shifted), rasterize(rippled), atol=1e-5)


def test_heights_use_minimum_image_along_periodic_z() -> None:
    rippled = _rippled(_sheet(8, 2), 0.75)
    rippled.positions[:, 2] -= 10.0  # sheet around z = 0
    rippled.pbc = True
    wrapped = rippled.copy()
    wrapped.wrap()  # atoms below z = 0 jump to the top of the cell
    assert np.ptp(wrapped.positions[:, 2]) > 10.0
    np.testing.assert_allclose(rasterize(wrapped), rasterize(rippled), atol=1e-5)


def test_local_heights_are_relative_to_neighbourhood_mean() -> None:
    positions = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.6], [9.0, 9.0, 5.0]])
    dz = raster.local_heights(positions, radius=2.0)
    np.testing.assert_allclose(dz, [-0.2, -0.2, 0.4, 0.0])


@pytest.mark.parametrize("box", [(30.0, 24.0), (7.0, 24.0), None])
def test_local_heights_of_targets_equal_those_of_the_whole_sheet(box) -> None:
    # Targets near a corner: their neighbours wrap across both periodic edges; a 7 Å cell is
    # replicated internally (<= 2 radius), and the targets must still index the originals.
    rng = np.random.default_rng(3)
    lengths = (30.0, 24.0) if box is None else box
    positions = np.column_stack([rng.random((400, 2)) * lengths, rng.normal(0.0, 0.3, 400)])
    whole = raster.local_heights(positions, 4.0, box)
    targets = np.flatnonzero((positions[:, 0] < 3.0) | (positions[:, 1] > 22.0))[::-1]
    part = raster.local_heights(positions, 4.0, box, targets=targets, chunk_size=7)
    np.testing.assert_allclose(part, whole[targets], rtol=0, atol=1e-12)


def test_local_heights_pair_and_chunked_paths_agree_across_the_z_boundary() -> None:
    # A sheet straddling z = 0 of a 20 Å periodic cell: differences use the minimum image.
    rng = np.random.default_rng(4)
    positions = np.column_stack([rng.random((300, 2)) * 20.0, rng.normal(0.0, 0.3, 300) % 20.0])
    pairs = raster.local_heights(positions, 3.0, (20.0, 20.0), z_period=20.0)
    chunked = raster.local_heights(positions, 3.0, (20.0, 20.0), z_period=20.0, chunk_size=50)
    np.testing.assert_allclose(pairs, chunked, rtol=0, atol=1e-12)
    assert np.abs(pairs).max() < 2.0  # not ~20 Å: the wrap was undone


# --- grids -----------------------------------------------------------------------------------


def test_grid_is_a_multiple_with_exactly_periodic_spacing() -> None:
    shape, (dy, dx) = grid_for_cell((24.6, 42.6), spacing=0.1, multiple_of=(16, 8))
    assert shape[0] % 16 == 0 and shape[1] % 8 == 0
    assert dy * shape[0] == pytest.approx(42.6) and dx * shape[1] == pytest.approx(24.6)


def test_image_shape_follows_multiple_of() -> None:
    atoms = _sheet(6, 4)
    assert [n % 8 for n in rasterize(atoms, multiple_of=8).shape[:2]] == [0, 0]


def test_spacing_far_from_requested_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Ly=4\.261 Å.*larger supercell.*multiple_of=\(32, 32\)"):
        rasterize(_sheet(1, 1), multiple_of=32)


# --- windows ---------------------------------------------------------------------------------


def test_window_across_the_seam_equals_wrapped_slice() -> None:
    atoms = _rippled(_mixed_sheet(), 0.4)
    image = rasterize(atoms)
    origin, shape = (-7, 30), (20, image.shape[1] + 5)
    window = rasterize_window(atoms, origin, shape)
    rows = np.arange(origin[0], origin[0] + shape[0])
    cols = np.arange(origin[1], origin[1] + shape[1])
    expected = np.take(np.take(image, rows, axis=0, mode="wrap"), cols, axis=1, mode="wrap")
    np.testing.assert_allclose(window, expected, atol=1e-5)


def test_window_from_nearby_atoms_with_given_heights_equals_slice() -> None:
    atoms = _rippled(_sheet(4, 6), 0.5)
    spec = RasterSpec()
    layout = raster.raster_layout(atoms, spec)
    image = rasterize(atoms, spec)
    dz = raster.local_heights(atoms.positions, 5.0, (atoms.cell[0, 0], atoms.cell[1, 1]))
    dy = layout.spacing[0]
    band_rows = (100, 140)
    margin = 4 * spec.sigma + dy
    y = atoms.positions[:, 1]
    near = (y > band_rows[0] * dy - margin) & (y < band_rows[1] * dy + margin)
    band = rasterize_window(
        atoms[near], (band_rows[0], 0), (40, image.shape[1]), spec, heights=dz[near]
    )
    np.testing.assert_allclose(band, image[100:140], atol=1e-5)


def test_window_of_a_flake_is_zero_outside_the_image() -> None:
    flake = _sheet(2, 2)
    flake.pbc = False
    image = rasterize(flake)
    window = rasterize_window(flake, (-3, -3), (image.shape[0] + 6, 10))
    np.testing.assert_allclose(window[3:-3, 3:], image[:, :7], atol=1e-6)
    assert np.all(window[:3] == 0) and np.all(window[:, :3] == 0)


# --- flakes ----------------------------------------------------------------------------------


def test_flake_has_zero_boundaries_and_full_mass() -> None:
    flake = _mixed_sheet()
    flake.pbc = False
    image = rasterize(flake, multiple_of=(8, 4))
    assert image.shape[0] % 8 == 0 and image.shape[1] % 4 == 0
    edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert np.all(edges == 0)
    counts = [flake.get_chemical_symbols().count(s) for s in ("C", "B", "N")]
    np.testing.assert_allclose(image[..., :3].sum((0, 1), dtype=np.float64) * 0.01, counts, 1e-3)


def test_flake_fixed_grid_shape_must_hold_it() -> None:
    flake = _sheet(2, 2)
    flake.pbc = False
    assert rasterize(flake, grid_shape=(200, 160)).shape == (200, 160, 4)
    with pytest.raises(ValueError, match="`lengths` must hold the flake"):
        rasterize(flake, grid_shape=(40, 40))


# --- bad input -------------------------------------------------------------------------------


def test_unknown_species_are_named_with_the_allowed_list() -> None:
    atoms = _sheet(1, 1)
    atoms.set_chemical_symbols(["C", "Si", "C", "Mo"])
    with pytest.raises(ValueError, match=r"\['C', 'B', 'N'\]. Received: Mo, Si"):
        rasterize(atoms)


def test_non_finite_positions_name_the_atoms() -> None:
    atoms = _sheet(2, 1)
    atoms.positions[3, 0] = np.nan
    atoms.positions[6, 2] = np.inf
    with pytest.raises(ValueError, match=r"finite.*atom indices 3, 6"):
        rasterize(atoms)


def test_empty_structure_is_refused() -> None:
    with pytest.raises(ValueError, match=r"at least one atom. Received: len\(atoms\)=0"):
        rasterize(Atoms(cell=[3.0, 3.0, 10.0], pbc=(1, 1, 0)))


def test_tilted_out_of_plane_axis_is_refused() -> None:
    atoms = _sheet(2, 2)
    atoms.set_cell([atoms.cell[0], atoms.cell[1], [3.0, 0.0, 20.0]])
    with pytest.raises(ValueError, match=r"a3 must be perpendicular.*8\.5° to the z axis"):
        rasterize(atoms)


def test_oblique_cell_error_mentions_how_to_convert() -> None:
    angle = math.radians(73.2)
    atoms = Atoms(
        "C",
        positions=[[0.0, 0.0, 5.0]],
        cell=[[2.5, 0.0, 0.0], [3.3 * math.cos(angle), 3.3 * math.sin(angle), 0.0], [0, 0, 10]],
        pbc=(True, True, False),
    )
    with pytest.raises(ValueError, match=r"angle 73\.2°.*make_supercell\(atoms, P\)"):
        rasterize(atoms)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": 0.0}, r"`spacing` must be a positive number \(Å\). Received: spacing=0.0"),
        ({"spacing": -0.1}, r"`spacing` must be a positive number"),
        ({"sigma": -0.2}, r"`sigma` must be a positive number \(Å\). Received: sigma=-0.2"),
        ({"sigma": {"C": 0.2, "B": 0.0, "N": 0.2}}, r"`sigma\['B'\]` must be a positive"),
        ({"sigma": {"C": 0.2}}, r"every species \['C', 'B', 'N'\].*missing \['B', 'N'\]"),
        ({"sigma": {"C": 0.2, "B": 0.2, "N": 0.2, "Si": 0.2}}, r"keys of `sigma`.*Si"),
        ({"species": ("C", "Xx")}, r"chemical symbols.*Received: 'Xx'"),
        ({"species": ("C", "C")}, r"must not repeat"),
        ({"multiple_of": 0}, r"`multiple_of` must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rasterize(_sheet(2, 2), **kwargs)


def test_non_atoms_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"ase.Atoms object. Received: atoms of type ndarray"):
        rasterize(np.zeros((3, 3)))


# --- spec, png, imports ----------------------------------------------------------------------


def test_spec_round_trips_through_json() -> None:
    spec = RasterSpec(species=("B", "N"), sigma={"B": 0.22, "N": 0.2}, multiple_of=(8, 4))
    restored = RasterSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    assert restored.channel_names == ("B", "N", "height")


def test_spec_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['spacng'\]"):
        RasterSpec.from_dict({"spacng": 0.1})


def test_spec_and_keyword_overrides_combine() -> None:
    atoms = _mixed_sheet()
    spec = RasterSpec(spacing=0.2, height_channel=False)
    image = rasterize(atoms, spec, z_weighted=True)
    expected = rasterize(atoms, spacing=0.2, height_channel=False, z_weighted=True)
    np.testing.assert_array_equal(image, expected)


def test_image_to_png_writes_a_readable_picture(tmp_path: Path) -> None:
    from PIL import Image

    image = rasterize(_rippled(_mixed_sheet(), 0.5))
    path = raster.image_to_png(image, tmp_path / "out" / "sheet.png", height_channel=True)
    with Image.open(path) as picture:
        assert picture.size[1] == image.shape[0] and picture.size[0] > 2 * image.shape[1]
        assert np.asarray(picture).max() > 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["sheet.png"]


def test_raster_modules_do_not_import_tensorflow_or_keras() -> None:
    for module in (raster, cells):
        tree = ast.parse(Path(module.__file__).read_text())
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {n for n in names if n and n.split(".")[0] in ("tensorflow", "keras")}


def test_spacing_channels_hold_the_stretch_of_the_pixels() -> None:
    spec = RasterSpec(spacing=0.25, sigma=0.3, multiple_of=16, spacing_channels=True)
    sheet = raster.commensurate_sheet(_sheet(5, 8), spec)
    image = rasterize(sheet, spec)
    layout = raster.raster_layout(sheet, spec)
    assert spec.channel_names[-2:] == ("stretch_y", "stretch_x")
    assert image.shape[2] == spec.n_channels == 6
    for axis in (0, 1):
        expected = (layout.spacing[axis] / 0.25 - 1.0) / raster.STRETCH_UNIT
        np.testing.assert_allclose(image[..., 4 + axis], expected, rtol=1e-6)
        assert abs(expected) <= 1.0 + 1e-9  # within the 2 % tolerance
    # The Gaussians and the height channel are those of the spec without the extra channels.
    plain = rasterize(sheet, dataclasses.replace(spec, spacing_channels=False))
    np.testing.assert_array_equal(image[..., :4], plain)
    # A window carries the same constants.
    window = rasterize_window(sheet, (3, 5), (20, 24), spec)
    np.testing.assert_array_equal(window[..., 4:], image[:20, :24, 4:])
    assert RasterSpec.from_dict(spec.to_dict()) == spec


def test_spacing_channels_are_zero_for_a_flake() -> None:
    flake = _sheet(3, 2)
    flake.pbc = False
    image = rasterize(flake, RasterSpec(spacing=0.25, spacing_channels=True))
    np.testing.assert_allclose(image[..., -2:], 0.0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_add_patch_equals_wrapped_index_add(seed) -> None:
    # Patches longer than the period, crossing the wrap, or partly outside the window.
    rng = np.random.default_rng(seed)
    out_shape = tuple(int(n) for n in rng.integers(3, 12, size=2))
    periods = tuple(None if rng.random() < 0.3 else int(n + rng.integers(0, 4)) for n in out_shape)
    patch = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)), 2))
    start = tuple(int(s) for s in rng.integers(-15, 15, size=2))
    out = rng.random((*out_shape, 2)).astype(np.float32)
    expected = out.astype(np.float64)
    for i in range(patch.shape[0]):
        for j in range(patch.shape[1]):
            (r, c) = (start[0] + i, start[1] + j)
            r = r % periods[0] if periods[0] else r
            c = c % periods[1] if periods[1] else c
            if 0 <= r < out_shape[0] and 0 <= c < out_shape[1]:
                expected[r, c] += patch[i, j]
    raster._add_patch(out, patch, start, periods)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
