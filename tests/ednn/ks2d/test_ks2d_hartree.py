import numpy as np
import pytest
import scipy.integrate

from ednn.ks2d.grid import Grid
from ednn.ks2d.hartree import (
    EPSTEIN_ZETA_HALF,
    EPSTEIN_ZETA_MINUS_HALF,
    PIXEL_SELF,
    Coulomb,
    gaussian_hartree_energy,
    hartree_energy,
)


def test_gaussian_hartree_energy_matches_the_analytic_value(gaussian_density):
    grid = Grid(64, 20.0)
    density = gaussian_density(grid, 2.0, 1.3)
    exact = gaussian_hartree_energy(2.0, 1.3)  # N² √π / (4 s)
    assert hartree_energy(density, grid) == pytest.approx(exact, rel=1e-6)


def test_corrected_kernel_converges_faster_than_the_pixel_kernel(gaussian_density):
    exact = gaussian_hartree_energy(2.0, 0.7)
    errors = {}
    for correction in ("pixel", "zeta", "zeta2"):
        errors[correction] = [
            abs(hartree_energy(gaussian_density(g, 2.0, 0.7), g, correction) - exact)
            for g in (Grid(32, 20.0), Grid(64, 20.0))
        ]
    # Orders 1 (pixel self-cell with point neighbours), 3 and 5 when h halves.
    assert errors["pixel"][0] / errors["pixel"][1] < 3
    assert errors["zeta"][0] / errors["zeta"][1] > 6
    assert errors["zeta2"][0] / errors["zeta2"][1] > 20
    assert errors["zeta2"][1] < 1e-4 * exact


def test_pixel_self_term_is_the_integral_of_one_over_r_over_the_square():
    # ∫∫_{[-1/2, 1/2]²} d²r / r = 4 ln(1 + √2) for a unit square (8 triangles, polar coords).
    value, _ = scipy.integrate.dblquad(lambda y, x: 1 / np.hypot(x, y), 0, 0.5, 0, lambda x: x)
    assert 8 * value == pytest.approx(PIXEL_SELF, rel=1e-8)


def test_epstein_zeta_constants():
    mpmath = pytest.importorskip("mpmath")

    def z(s):  # 4 ζ(s) β(s), β(s) = 4^-s (ζ(s, ¼) - ζ(s, ¾))
        return 4 * mpmath.zeta(s) * 4**-s * (mpmath.zeta(s, 0.25) - mpmath.zeta(s, 0.75))

    assert float(z(0.5)) == pytest.approx(EPSTEIN_ZETA_HALF, rel=1e-12)
    assert float(z(-0.5)) == pytest.approx(EPSTEIN_ZETA_MINUS_HALF, rel=1e-12)


def test_potential_is_aperiodic_far_from_a_compact_charge(gaussian_density):
    grid = Grid(48, 24.0)
    density = gaussian_density(grid, 1.0, 0.8)
    potential = Coulomb(grid).potential(density)
    # At the corner (R = 12√2 bohr) the field is the Gaussian's multipole series, with no
    # periodic images: the angular mean of 1/|R - r| is (1 + r²/4R² + 9r⁴/64R⁴ + ...) / R,
    # and <r²> = 2s², <r⁴> = 8s⁴ for the 2D Gaussian.
    r, s2 = np.hypot(grid.x[0], grid.x[0]), 0.8**2
    expected = (1 + s2 / (2 * r**2) + 9 * s2**2 / (8 * r**4)) / r
    assert potential[0, 0] == pytest.approx(expected, rel=1e-7)


def test_hartree_energy_scales_as_charge_squared(gaussian_density):
    grid = Grid(32, 16.0)
    density = gaussian_density(grid, 1.0, 1.0)
    assert hartree_energy(3 * density, grid) == pytest.approx(9 * hartree_energy(density, grid))
