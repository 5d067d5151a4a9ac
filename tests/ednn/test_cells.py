"""Tests for ednn.cells: rectangular cells for periodic sheets, boxes for flakes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene
from ase.neighborlist import neighbor_list

from ednn import cells

A_CC = 2.46  # graphene lattice constant used by ase.build.graphene, Å


def _distance_histogram(atoms: Atoms, cutoff: float = 4.0) -> np.ndarray:
    """Neighbour-distance histogram per atom (periodic), bins of 0.05 Å."""
    distances = neighbor_list("d", atoms, cutoff)
    counts, _ = np.histogram(distances, bins=np.arange(0.0, cutoff + 0.05, 0.05))
    return counts / len(atoms)


def _area(atoms: Atoms) -> float:
    return abs(float(np.linalg.det(atoms.cell.array[:2, :2])))


def test_hexagonal_graphene_becomes_four_atom_rectangle() -> None:
    sheet = cells.to_rectangular(graphene(vacuum=10.0))
    assert len(sheet) == 4
    np.testing.assert_allclose(sheet.cell.lengths()[:2], [A_CC, math.sqrt(3) * A_CC])
    np.testing.assert_allclose(sheet.cell.angles(), [90.0, 90.0, 90.0])
    assert np.all(sheet.positions[:, :2] >= 0.0)
    assert np.all(sheet.positions[:, :2] < sheet.cell.lengths()[:2])


def test_hexagonal_bn_keeps_composition() -> None:
    sheet = cells.to_rectangular(graphene(formula="BN", vacuum=10.0))
    assert sorted(sheet.get_chemical_symbols()) == ["B", "B", "N", "N"]


def test_rectangular_supercell_of_3x3_graphene_has_same_density_and_distances() -> None:
    hexagonal = graphene(vacuum=10.0) * (3, 3, 1)
    sheet = cells.to_rectangular(hexagonal)
    assert len(sheet) == 2 * len(hexagonal)
    assert len(sheet) / _area(sheet) == pytest.approx(len(hexagonal) / _area(hexagonal))
    np.testing.assert_allclose(_distance_histogram(sheet), _distance_histogram(hexagonal))


def test_sixty_degree_cell_is_converted() -> None:
    a2 = [A_CC / 2, A_CC * math.sqrt(3) / 2, 0.0]
    atoms = Atoms(
        "C2",
        scaled_positions=[[0.0, 0.0, 0.5], [1 / 3, 1 / 3, 0.5]],
        cell=[[A_CC, 0.0, 0.0], a2, [0.0, 0.0, 20.0]],
        pbc=(True, True, False),
    )
    sheet = cells.to_rectangular(atoms)
    assert len(sheet) == 4
    np.testing.assert_allclose(sheet.cell.lengths()[:2], [A_CC, math.sqrt(3) * A_CC])


def test_rotated_hexagonal_cell_is_rotated_onto_x() -> None:
    atoms = graphene(vacuum=10.0)
    atoms.rotate(37.0, "z", rotate_cell=True)
    sheet = cells.to_rectangular(atoms)
    np.testing.assert_allclose(sheet.cell.array[:2, :2], np.diag([A_CC, math.sqrt(3) * A_CC]))
    np.testing.assert_allclose(_distance_histogram(sheet), _distance_histogram(atoms))


def test_rectangular_cell_is_copied_unchanged() -> None:
    sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (2, 3, 1)
    copy = cells.to_rectangular(sheet)
    assert copy is not sheet
    np.testing.assert_allclose(copy.positions, sheet.positions)
    np.testing.assert_allclose(copy.cell.array, sheet.cell.array)
    assert np.array_equal(cells.rectangular_supercell_matrix(sheet.cell), np.eye(3, dtype=int))


def test_rectangular_cell_positions_are_wrapped() -> None:
    sheet = cells.to_rectangular(graphene(vacuum=10.0))
    sheet.positions += [-0.5, 10.0, 0.0]
    wrapped = cells.to_rectangular(sheet)
    assert np.all((wrapped.positions[:, :2] >= 0) & (wrapped.positions[:, :2] < [2.46, 4.27]))
    np.testing.assert_allclose(wrapped.positions[:, 2], sheet.positions[:, 2])


def test_left_handed_in_plane_cell_gives_positive_axes() -> None:
    sheet = cells.to_rectangular(graphene(vacuum=10.0))
    mirrored = sheet.copy()
    mirrored.set_cell(sheet.cell.array * [[1], [-1], [1]], scale_atoms=False)
    result = cells.to_rectangular(mirrored)
    assert len(result) == len(sheet)
    assert result.cell[0, 0] > 0 and result.cell[1, 1] > 0
    np.testing.assert_allclose(_distance_histogram(result), _distance_histogram(sheet))


def test_unequal_hexagonal_repeat_needs_a_larger_supercell() -> None:
    hexagonal = graphene(vacuum=10.0) * (10, 6, 1)
    matrix = cells.rectangular_supercell_matrix(hexagonal.cell)
    assert abs(round(np.linalg.det(matrix))) == 6
    assert len(cells.to_rectangular(hexagonal)) == 6 * len(hexagonal)


def test_supercell_above_max_multiplicity_is_refused_with_advice() -> None:
    hexagonal = graphene(vacuum=10.0) * (10, 6, 1)
    with pytest.raises(ValueError, match=r"max_multiplicity=4 copies.*holds 6 copies"):
        cells.to_rectangular(hexagonal, max_multiplicity=4)


def test_oblique_cell_error_says_how_to_convert() -> None:
    angle = math.radians(73.2)
    atoms = Atoms(
        "C",
        positions=[[0.0, 0.0, 5.0]],
        cell=[[2.5, 0.0, 0.0], [3.3 * math.cos(angle), 3.3 * math.sin(angle), 0.0], [0, 0, 10]],
        pbc=(True, True, False),
    )
    with pytest.raises(ValueError, match=r"angle 73\.2°.*ase\.build\.make_supercell"):
        cells.to_rectangular(atoms)


def test_tilted_third_vector_is_refused_naming_the_angle() -> None:
    atoms = graphene(vacuum=10.0)
    atoms.set_cell([atoms.cell[0], atoms.cell[1], [0.0, 20.0 * math.tan(0.2), 20.0]])
    with pytest.raises(ValueError, match=r"a3 must be perpendicular.*11\.5° to the z axis"):
        cells.to_rectangular(atoms)


def test_sheet_not_in_xy_plane_is_refused() -> None:
    atoms = graphene(vacuum=10.0)
    atoms.rotate(90.0, "x", rotate_cell=True)
    with pytest.raises(ValueError, match=r"a2 must lie in the xy-plane.*60\.0° to the xy-plane"):
        cells.to_rectangular(atoms)


def test_ribbon_pbc_is_refused() -> None:
    atoms = graphene(vacuum=10.0)
    atoms.pbc = (True, False, False)
    with pytest.raises(ValueError, match=r"ribbons.*Received: atoms.pbc=\[True, False, False\]"):
        cells.prepare_sheet(atoms)


def test_empty_atoms_are_refused() -> None:
    with pytest.raises(ValueError, match=r"at least one atom. Received: len\(atoms\)=0"):
        cells.to_rectangular(Atoms(cell=np.eye(3), pbc=True))


def test_flake_box_pads_and_centres_a_flake() -> None:
    flake = Atoms("C3", positions=[[0.0, 0.0, 0.0], [1.4, 0.0, 0.2], [0.7, 1.2, 0.0]])
    boxed = cells.flake_box(flake, padding=5.0)
    assert tuple(boxed.pbc) == (False, False, False)
    np.testing.assert_allclose(boxed.cell.lengths()[:2], [11.4, 11.2])
    np.testing.assert_allclose(boxed.positions.min(axis=0)[:2], [5.0, 5.0])
    np.testing.assert_allclose(boxed.positions - boxed.positions[0], flake.positions)


def test_flake_box_rounds_up_to_a_multiple() -> None:
    flake = Atoms("C2", positions=[[0.0, 0.0, 0.0], [1.42, 0.0, 0.0]])
    boxed = cells.flake_box(flake, padding=8.0, multiple=(1.6, 0.8))
    np.testing.assert_allclose(boxed.cell.lengths()[:2], [17.6, 16.0])


def test_prepare_sheet_dispatches_on_pbc() -> None:
    assert len(cells.prepare_sheet(graphene(vacuum=10.0))) == 4
    flake = graphene(vacuum=10.0) * (3, 3, 1)
    flake.pbc = False
    boxed = cells.prepare_sheet(flake, padding=6.0)
    assert len(boxed) == len(flake) and not boxed.pbc[:2].any()
