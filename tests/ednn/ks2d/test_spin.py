"""Spin-polarised 2D Kohn–Sham: identities of the two-channel SCF (Hartree atomic units)."""

import numpy as np
import pytest

from ednn.ks2d.energies import density_energies
from ednn.ks2d.grid import Grid
from ednn.ks2d.potentials import harmonic_potential
from ednn.ks2d.result import KSResult
from ednn.ks2d.scf import solve
from ednn.ks2d.xc import Functional, gaussian_lda_exchange_energy

OMEGA = 1.0
TIGHT = {"energy_tol": 1e-10, "density_tol": 1e-8, "residual_tol": 1e-7}


@pytest.fixture(scope="module")
def sho():
    grid = Grid(32, 12.0)
    return grid, harmonic_potential(grid, (OMEGA, OMEGA))


@pytest.mark.parametrize("name", ["lda", "gga", "hybrid"])
def test_closed_shell_polarised_run_equals_the_unpolarised_run(sho, name):
    grid, v_ext = sho
    unpolarised = solve(v_ext, 2, grid, name, **TIGHT)
    polarised = solve(v_ext, 2, grid, name, spin=(1, 1), **TIGHT)
    for key in ("t_s", "e_ext", "e_hartree", "e_x", "e_c", "e_total"):
        assert getattr(polarised, key) == pytest.approx(getattr(unpolarised, key), abs=1e-8)
    assert np.max(np.abs(polarised.density - unpolarised.density)) < 1e-8
    up, down = polarised.spin_densities
    assert np.max(np.abs(up - down)) < 1e-8
    assert polarised.eigenvalues[0] == pytest.approx(unpolarised.eigenvalues, abs=1e-7)


@pytest.mark.parametrize(
    ("spin", "energy"),
    # Shells ω (n_x + n_y + 1) of degeneracy 1, 2, ... filled per spin, one electron each:
    # (2, 1): ↑ ω + 2ω, ↓ ω; (3, 2): ↑ ω + 2·2ω, ↓ ω + 2ω; (3, 0): ↑ ω + 2·2ω.
    [((2, 1), 4 * OMEGA), ((3, 2), 8 * OMEGA), ((3, 0), 5 * OMEGA)],
)
def test_independent_electrons_fill_oscillator_shells_per_spin(sho, spin, energy):
    grid, v_ext = sho
    result = solve(v_ext, sum(spin), grid, None, spin=spin)
    assert result.t_s + result.e_ext == pytest.approx(energy, abs=1e-5)
    assert result.t_s == pytest.approx(energy / 2, abs=1e-5)  # virial theorem of the SHO
    assert result.occupations.sum(axis=1).tolist() == list(spin)
    assert result.electrons_per_spin == spin
    assert grid.integrate(result.magnetization) == pytest.approx(spin[0] - spin[1], abs=1e-12)


def test_one_electron_with_full_exact_exchange_has_no_self_interaction(sho):
    # One orbital φ occupied once: E_H = ½ (11|11) and E_x^Fock = -½ (11|11).
    grid, v_ext = sho
    result = solve(v_ext, 1, grid, Functional("hybrid", 1.0), spin=(1, 0))
    assert result.e_x == pytest.approx(-result.e_hartree, rel=1e-12)
    assert result.e_hartree > 0.1
    assert np.all(result.spin_densities[1] == 0.0)
    assert result.occupations.tolist()[1] == [0.0] * result.occupations.shape[1]


def test_lda_exchange_of_a_fully_polarised_density_is_sqrt2_times_unpolarised(gaussian_density):
    # 2D Slater exchange per area ∝ n^{3/2}; spin scaling E_x[n, 0] = ½ E_x[2n] = √2 E_x[n].
    grid = Grid(48, 16.0)
    density = gaussian_density(grid, 1.0, 1.1)
    lda = Functional("lda")
    polarised = lda.local_terms(np.stack([density, np.zeros_like(density)]), grid)
    unpolarised = lda.local_terms(density, grid)
    assert polarised.e_x == pytest.approx(np.sqrt(2.0) * unpolarised.e_x, rel=1e-10)
    exact = np.sqrt(2.0) * gaussian_lda_exchange_energy(1.0, 1.1)
    assert polarised.e_x == pytest.approx(exact, rel=1e-8)


def test_gga_exchange_by_spin_scaling_equals_libxc_spin_polarised(gaussian_density):
    # Where the tail switch is off (n_σ well above its window) the spin-scaled
    # unpolarised B88 must equal libxc's spin=1 evaluation with per-spin gradient rows.
    from pyscf.dft import libxc

    grid = Grid(32, 12.0)
    x, _ = grid.coordinates()
    up = gaussian_density(grid, 2.0, 1.5) * (1.0 + 0.2 * np.tanh(x))
    down = gaussian_density(grid, 1.0, 1.2)
    inside = np.minimum(up, down) > 1e-2
    rows = []
    for n in (up, down):
        gradient = grid.gradient(n)
        rows.append(np.stack([n, gradient[0], gradient[1], np.zeros_like(n)]).reshape(4, -1))
    exc, _, _, _ = libxc.eval_xc("GGA_X_2D_B88", tuple(rows), spin=1, deriv=1)
    libxc_energy = ((up + down) * exc.reshape(up.shape))[inside]
    scaled = 0.0
    for row in rows:
        exc_unpolarised, _, _, _ = libxc.eval_xc("GGA_X_2D_B88", 2.0 * row, spin=0, deriv=1)
        scaled = scaled + 0.5 * (2.0 * row[0] * exc_unpolarised).reshape(up.shape)
    assert np.allclose(scaled[inside], libxc_energy, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["lda", "gga"])
def test_spin_potentials_are_derivatives_of_the_energy(name, gaussian_density):
    grid = Grid(32, 14.0)
    x, y = grid.coordinates()
    spins = np.stack([gaussian_density(grid, 2.0, 1.3), gaussian_density(grid, 1.0, 1.0)])
    functional = Functional(name)
    delta = 1e-4 * np.exp(-((x - 0.5) ** 2 + y**2))
    potential = functional.local_terms(spins, grid).potential
    for channel in range(2):
        step = np.zeros_like(spins)
        step[channel] = delta
        energy = [
            (lambda t: t.e_x + t.e_c)(functional.local_terms(spins + s * step, grid))
            for s in (1.0, -1.0)
        ]
        numerical = (energy[0] - energy[1]) / 2.0
        analytic = grid.integrate(potential[channel] * delta)
        assert numerical == pytest.approx(analytic, rel=1e-6)


def test_odd_electron_count_gains_exchange_energy_by_polarising(sho):
    # N = 3: the unpolarised run spreads the third electron over both spins of two
    # degenerate levels; the polarised one puts it in the up channel and gains exchange.
    grid, v_ext = sho
    polarised = solve(v_ext, 3, grid, "lda", spin=(2, 1))
    unpolarised = solve(v_ext, 3, grid, "lda")
    assert polarised.e_total < unpolarised.e_total - 1e-2
    assert polarised.e_x < unpolarised.e_x


def test_density_energies_of_spin_densities_reproduce_the_solver(sho):
    grid, v_ext = sho
    result = solve(v_ext, 3, grid, "gga", spin=(2, 1))
    terms = density_energies(result.spin_densities, v_ext, grid, "gga", spin_polarized=True)
    for key in ("e_ext", "e_hartree", "e_x", "e_c"):
        assert terms[key] == pytest.approx(getattr(result, key), rel=1e-12)
    batch = density_energies(
        np.stack([result.spin_densities] * 2), v_ext, grid, "gga", spin_polarized=True
    )
    assert batch["e_x"].shape == (2,) and batch["e_x"][1] == pytest.approx(terms["e_x"])


def test_spin_polarised_result_round_trips_through_a_flat_dict(sho):
    grid, v_ext = sho
    result = solve(v_ext, 3, grid, None, spin=(2, 1))
    restored = KSResult.from_dict(result.to_dict())
    assert np.array_equal(restored.spin_densities, result.spin_densities)
    assert restored.electrons_per_spin == (2, 1) and restored.eigenvalues.shape[0] == 2
    unpolarised = solve(v_ext, 2, grid, None)
    assert "spin_densities" not in unpolarised.to_dict()
    assert not unpolarised.spin_polarized and unpolarised.magnetization is None


@pytest.mark.parametrize(
    ("spin", "error", "match"),
    [
        ((2, 2), ValueError, r"add up to n_electrons=3\. Received: spin=\(2, 2\)"),
        ((4, -1), ValueError, "non-negative"),
        ((1.5, 1.5), TypeError, "pair"),
        (3, TypeError, "pair"),
        ((1, 1, 1), TypeError, "pair"),
    ],
)
def test_bad_spin_counts_are_rejected_by_name(sho, spin, error, match):
    grid, v_ext = sho
    with pytest.raises(error, match=match):
        solve(v_ext, 3, grid, "lda", spin=spin)


def test_spin_densities_of_the_wrong_shape_are_rejected(sho):
    grid, v_ext = sho
    with pytest.raises(ValueError, match="spin_polarized"):
        density_energies(np.zeros(grid.shape), v_ext, grid, "lda", spin_polarized=True)
