"""Tests of the fast (ext)xyz reader: it returns what ase.io.read returns."""

import ase.io
import numpy as np
import pytest
from ase.build import graphene

from ednn import cells
from ednn.fastio import read_structure


@pytest.fixture
def sheet():
    atoms = cells.to_rectangular(graphene(vacuum=10.0)) * (5, 4, 1)
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 7
    atoms.numbers[:3] = 5
    return atoms


def assert_same_atoms(actual, expected):
    np.testing.assert_array_equal(actual.numbers, expected.numbers)
    np.testing.assert_array_equal(actual.positions, expected.positions)
    np.testing.assert_array_equal(actual.cell.array, expected.cell.array)
    np.testing.assert_array_equal(actual.pbc, expected.pbc)
    assert actual.info == expected.info


@pytest.mark.parametrize("chunk_lines", [7, 1 << 20])
def test_simple_extxyz_matches_ase(tmp_path, sheet, chunk_lines):
    path = tmp_path / "sheet.extxyz"
    ase.io.write(path, sheet, format="extxyz")
    assert_same_atoms(read_structure(path, chunk_lines=chunk_lines), ase.io.read(path))


def test_frames_of_a_trajectory_match_ase(tmp_path, sheet):
    path = tmp_path / "frames.xyz"
    second = sheet * (1, 2, 1)
    ase.io.write(path, [sheet, second], format="extxyz")
    for index in (0, 1, -1, -2):
        assert_same_atoms(read_structure(path, index), ase.io.read(path, index=index))


def test_plain_xyz_without_lattice_matches_ase(tmp_path, sheet):
    path = tmp_path / "flake.xyz"
    path.write_text(
        f"{len(sheet)}\n\n"
        + "".join(
            f"{s} {x:.10f} {y:.10f} {z:.10f}\n"
            for s, (x, y, z) in zip(sheet.get_chemical_symbols(), sheet.positions, strict=True)
        )
    )
    assert_same_atoms(read_structure(path), ase.io.read(path))


def test_other_layouts_fall_back_to_ase(tmp_path, sheet):
    path = tmp_path / "labelled.extxyz"
    sheet.info["energy_eV"] = -12.5
    sheet.arrays["weight"] = np.linspace(-1.0, 1.0, len(sheet))
    ase.io.write(path, sheet, format="extxyz")
    fast, reference = read_structure(path), ase.io.read(path)
    assert_same_atoms(fast, reference)
    np.testing.assert_array_equal(fast.arrays["weight"], reference.arrays["weight"])
