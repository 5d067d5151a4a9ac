import numpy as np

from ednn.ks2d.eigensolver import fourier_resample, lowest_eigenpairs
from ednn.ks2d.grid import Grid
from ednn.ks2d.potentials import harmonic_potential


def test_anisotropic_oscillator_levels_are_exact():
    grid = Grid(48, 20.0)
    omega = (1.0, 0.7)
    eig = lowest_eigenpairs(grid, harmonic_potential(grid, omega, (0.3, -1.0)), 8)
    exact = sorted(omega[0] * (a + 0.5) + omega[1] * (b + 0.5) for a in range(8) for b in range(8))
    assert np.max(np.abs(eig.values - exact[:8])) < 1e-9
    assert eig.residuals.max() < 1e-7


def test_orbitals_are_orthonormal_on_the_grid():
    grid = Grid(32, 14.0)
    eig = lowest_eigenpairs(grid, harmonic_potential(grid, (1.0, 1.0)), 6)
    overlap = np.einsum("ixy,jxy->ij", eig.orbitals, eig.orbitals) * grid.area_element
    assert np.allclose(overlap, np.eye(6), atol=1e-10)


def test_degenerate_shells_are_resolved():
    grid = Grid(32, 14.0)
    eig = lowest_eigenpairs(grid, harmonic_potential(grid, (1.0, 1.0)), 7)
    assert np.allclose(eig.values, [1, 2, 2, 3, 3, 3, 4][:7], atol=1e-8)


def test_fourier_resample_round_trips_a_band_limited_field():
    grid = Grid(48, 16.0)
    x, y = grid.coordinates()
    f = np.exp(-(x**2 + (y - 1) ** 2) / 2)
    assert np.allclose(fourier_resample(fourier_resample(f, 96), 48), f, atol=1e-12)
