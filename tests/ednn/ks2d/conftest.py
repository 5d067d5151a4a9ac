"""Shared fixtures for the 2D Kohn–Sham tests (Hartree atomic units)."""

import numpy as np
import pytest

pytest.importorskip("pyscf", reason="ednn.ks2d needs pyscf (the `ks2d` extra) for libxc")

from ednn.ks2d.grid import Grid
from ednn.ks2d.scf import _thread_limit


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # As ednn.ks2d.solve does: direct calls of the eigensolver and libxc in these tests
    # would otherwise run contended OpenMP/BLAS threads (many times slower on 2 cores).
    with _thread_limit(1):
        yield


@pytest.fixture
def grid48() -> Grid:
    return Grid(48, 16.0)


def _gaussian_density(grid: Grid, n_electrons: float, width: float) -> np.ndarray:
    x, y = grid.coordinates()
    return n_electrons / (2 * np.pi * width**2) * np.exp(-(x**2 + y**2) / (2 * width**2))


@pytest.fixture
def gaussian_density():
    """``gaussian_density(grid, N, s)``: ``N / (2π s²) exp(-r² / 2s²)`` in bohr⁻²."""
    return _gaussian_density
