import numpy as np
import pytest

from ednn.ks2d.grid import Grid
from ednn.ks2d.xc import (
    Functional,
    gaussian_lda_exchange_energy,
    lda_exchange_energy_density,
)


def test_libxc_lda_x_2d_is_the_2d_slater_exchange():
    from pyscf.dft import libxc

    n = np.logspace(-6, 1, 30)
    exc, vxc, _, _ = libxc.eval_xc("LDA_X_2D", n, spin=0, deriv=1)
    # ε_x = -(4/3) √(2/π) n^{1/2} per particle, v_x = d(n ε_x)/dn = -2 √(2/π) n^{1/2}.
    assert np.allclose(n * exc, lda_exchange_energy_density(n), rtol=1e-12)
    assert np.allclose(vxc[0], -2 * np.sqrt(2 / np.pi) * np.sqrt(n), rtol=1e-12)


def test_lda_exchange_of_a_gaussian_matches_the_analytic_value(gaussian_density):
    grid = Grid(64, 20.0)
    density = gaussian_density(grid, 2.0, 1.2)
    terms = Functional("lda").local_terms(density, grid)
    assert terms.e_x == pytest.approx(gaussian_lda_exchange_energy(2.0, 1.2), rel=1e-10)
    assert gaussian_lda_exchange_energy(2.0, 1.2) == pytest.approx(-8 * 2**1.5 / (9 * np.pi * 1.2))


@pytest.mark.parametrize("name", ["lda", "gga", "hybrid"])
def test_potential_is_the_functional_derivative_of_the_energy(name, gaussian_density):
    grid = Grid(48, 16.0)
    x, y = grid.coordinates()
    density = gaussian_density(grid, 2.0, 1.3) + gaussian_density(grid, 1.0, 0.9) * (1 + 0.3 * x)
    functional = Functional(name)
    delta = 1e-4 * np.exp(-((x - 0.7) ** 2 + y**2))
    energy = [
        sum((lambda t: (t.e_x, t.e_c))(functional.local_terms(density + s * delta, grid)))
        for s in (1.0, -1.0)
    ]
    numerical = (energy[0] - energy[1]) / 2.0
    analytic = grid.integrate(functional.local_terms(density, grid).potential * delta)
    assert numerical == pytest.approx(analytic, rel=1e-6)


def test_hybrid_scales_local_exchange_by_one_minus_alpha(gaussian_density):
    grid = Grid(32, 16.0)
    density = gaussian_density(grid, 2.0, 1.0)
    lda = Functional("lda").local_terms(density, grid)
    hybrid = Functional("hybrid", 0.4).local_terms(density, grid)
    assert hybrid.e_x == pytest.approx(0.6 * lda.e_x)
    assert hybrid.e_c == pytest.approx(lda.e_c)


def test_functional_labels_name_the_libxc_parts():
    assert Functional("gga").label == "GGA_X_2D_B88 + LDA_C_2D_AMGB"
    assert Functional("hybrid").label == "0.25*HF + 0.75*LDA_X_2D + LDA_C_2D_AMGB"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "b3lyp"}, ValueError),
        ({"name": 3}, TypeError),
        ({"name": "lda", "exact_exchange": 0.25}, ValueError),
        ({"name": "hybrid", "exact_exchange": 1.5}, ValueError),
    ],
)
def test_bad_functionals_are_rejected(kwargs, error):
    with pytest.raises(error, match="Received"):
        Functional(**kwargs)
