"""The 2D virial theorem in a harmonic well and the correlation term's scaling derivative."""

import numpy as np
import pytest

from ednn.ks2d.grid import Grid
from ednn.ks2d.potentials import harmonic_potential
from ednn.ks2d.scf import solve
from ednn.ks2d.virial import correlation_scaling_derivative, virial_residual
from ednn.ks2d.xc import Functional


def test_the_scaling_derivative_of_correlation_matches_finite_differences(gaussian_density):
    # n_γ(r) = γ² n(γ r) of a Gaussian of width s is the Gaussian of width s / γ.
    grid = Grid(96, 24.0)
    (electrons, width, h) = (4.0, 1.5, 1e-3)
    e_c = [
        Functional("lda").local_terms(gaussian_density(grid, electrons, width / g), grid).e_c
        for g in (1 + h, 1 - h)
    ]
    derivative = correlation_scaling_derivative(gaussian_density(grid, electrons, width), grid)
    assert derivative == pytest.approx((e_c[0] - e_c[1]) / (2 * h), rel=1e-5)
    assert derivative < -0.01  # not a vanishing check


@pytest.mark.parametrize("name", ["lda", "gga", "hybrid"])
def test_self_consistent_energies_in_a_harmonic_well_obey_the_virial_theorem(name):
    grid = Grid(48, 24.0)
    result = solve(harmonic_potential(grid, (0.6, 0.9), (0.7, -0.4)), 4, grid, name)
    de_c = correlation_scaling_derivative(result.density, grid, name)
    residual = virial_residual(result.t_s, result.e_ext, result.e_hartree, result.e_x, de_c)
    assert abs(residual) < 1e-3  # Hartree; the grid's share (labels: -0.4 ± 0.3 mHa)
    assert abs(de_c) > 0.05  # without correlation's term it would fail
    # Vectorised over samples alike.
    np.testing.assert_allclose(virial_residual(*(np.full(3, v) for v in (1, 2, 3, 4, 5))), 10.0)


def test_a_density_of_another_grid_is_refused():
    with pytest.raises(ValueError, match=r"grid shape \(16, 16\)"):
        correlation_scaling_derivative(np.zeros((8, 8)), Grid(16, 8.0))


def test_the_residual_is_the_discretisation_s_and_vanishes_on_finer_grids():
    tight = {"energy_tol": 1e-9, "density_tol": 1e-7, "residual_tol": 1e-7}
    residuals = []
    for points in (48, 96):  # 0.5 and 0.25 bohr over the same 24 bohr
        grid = Grid(points, 24.0)
        r = solve(harmonic_potential(grid, (0.6, 0.9), (0.7, -0.4)), 4, grid, "lda", **tight)
        de_c = correlation_scaling_derivative(r.density, grid)
        residuals.append(virial_residual(r.t_s, r.e_ext, r.e_hartree, r.e_x, de_c))
    assert abs(residuals[1]) < 0.1 * abs(residuals[0])  # -0.48 mHa -> -0.015 mHa
