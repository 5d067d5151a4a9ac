import numpy as np
import pytest

from ednn.ks2d.exchange import exact_exchange_energy
from ednn.ks2d.grid import Grid
from ednn.ks2d.hartree import Coulomb
from ednn.ks2d.potentials import harmonic_potential
from ednn.ks2d.result import KSResult
from ednn.ks2d.scf import DensityNotConfined, SCFNotConverged, solve
from ednn.ks2d.xc import Functional

OMEGA = 1.0


@pytest.fixture(scope="module")
def sho():
    grid = Grid(48, 16.0)
    return grid, harmonic_potential(grid, (OMEGA, OMEGA))


@pytest.mark.parametrize(("n_electrons", "energy"), [(2, 2 * OMEGA), (6, 10 * OMEGA)])
def test_independent_electrons_fill_oscillator_shells(sho, n_electrons, energy):
    # Shells ω (n_x + n_y + 1) with degeneracy 1, 2, 3, ...: N = 2 → 2ω, N = 6 → 2ω + 4·2ω.
    grid, v_ext = sho
    result = solve(v_ext, n_electrons, grid, None)
    assert result.e_total == pytest.approx(energy, abs=1e-5)
    assert result.eigenvalues[:5] == pytest.approx([1, 2, 2, 3, 3], abs=1e-5)
    # Virial theorem of the harmonic well: T = E_ext = E / 2.
    assert result.t_s == pytest.approx(energy / 2, abs=1e-5)
    assert result.e_ext == pytest.approx(energy / 2, abs=1e-5)


@pytest.fixture(scope="module")
def lda_result(sho):
    grid, v_ext = sho
    return solve(v_ext, 2, grid, "lda")


def _double_counting_energy(result: KSResult, grid: Grid, functional: Functional) -> float:
    # E = Σ f ε - E_H + E_xc^loc - ∫ v_xc^loc n - α E_x^Fock (Σ f ε counts 2 α E_x^Fock).
    coulomb = Coulomb(grid)
    local = functional.local_terms(result.density, grid)
    total = (
        float(np.sum(result.occupations * result.eigenvalues))
        - coulomb.energy(result.density)
        + local.e_x
        + local.e_c
        - grid.integrate(local.potential * result.density)
    )
    if functional.exact_exchange:
        fock = exact_exchange_energy(result.orbitals, result.occupations, coulomb)
        total -= functional.exact_exchange * fock
    return float(total)


def test_lda_scf_conserves_charge_and_meets_its_tolerances(sho, lda_result):
    grid, _ = sho
    assert grid.integrate(lda_result.density) == pytest.approx(2.0, abs=1e-12)
    assert lda_result.energy_change < 1e-7 and lda_result.density_residual < 1e-5
    assert lda_result.edge_density < 1e-12


def test_lda_total_energy_equals_the_eigenvalue_sum_form(sho, lda_result):
    grid, _ = sho
    expected = _double_counting_energy(lda_result, grid, Functional("lda"))
    assert lda_result.e_total == pytest.approx(expected, abs=1e-6)


def test_energy_terms_add_up_and_interaction_raises_the_energy(lda_result):
    r = lda_result
    assert r.e_total == pytest.approx(r.t_s + r.e_ext + r.e_hartree + r.e_x + r.e_c)
    assert r.e_total > 2 * OMEGA and r.e_x < 0 and r.e_c < 0 and r.e_hartree > 0


@pytest.mark.parametrize("name", ["gga", "hybrid"])
def test_gga_and_hybrid_total_energy_equals_the_eigenvalue_sum_form(sho, name):
    grid, v_ext = sho
    functional = Functional(name)
    result = solve(v_ext, 2, grid, functional)
    assert result.e_total == pytest.approx(
        _double_counting_energy(result, grid, functional), abs=1e-6
    )


def test_hybrid_with_full_exact_exchange_cancels_self_interaction_for_two_electrons():
    # One doubly occupied orbital: E_x = -E_H/2, so E_H + E_x^Fock is ½ E_H.
    grid = Grid(32, 12.0)
    v_ext = harmonic_potential(grid, (OMEGA, OMEGA))
    result = solve(v_ext, 2, grid, Functional("hybrid", 1.0), energy_tol=1e-6)
    assert result.e_x == pytest.approx(-0.5 * result.e_hartree, rel=1e-8)


def test_too_few_iterations_raise_scf_not_converged_with_history(sho):
    grid, v_ext = sho
    with pytest.raises(SCFNotConverged, match="max_iter=2") as info:
        solve(v_ext, 4, grid, "lda", max_iter=2)
    assert len(info.value.history) == 2


def test_a_density_reaching_the_box_edge_is_rejected():
    grid = Grid(32, 8.0)
    v_ext = harmonic_potential(grid, (0.3, 0.3))
    with pytest.raises(DensityNotConfined, match="enlarge the box"):
        solve(v_ext, 2, grid, None, max_edge_density=1e-6)


def test_result_round_trips_through_a_flat_dict(lda_result):
    restored = KSResult.from_dict(lda_result.to_dict())
    assert restored.e_total == lda_result.e_total and restored.orbitals is None
    assert np.array_equal(restored.density, lda_result.density)


def test_energy_converges_with_grid_spacing():
    # Fixed 20 bohr box, h = 0.42 and 0.31 bohr: the spectral kinetic energy and the
    # O(h⁵) Coulomb quadrature leave < 1e-5 Ha between the two finest grids
    # (experiments/ks2d/grid_convergence.py has the full table).
    energies = []
    for n in (48, 64):
        grid = Grid(n, 20.0)
        energies.append(solve(harmonic_potential(grid, (0.5, 0.4)), 2, grid, "lda").e_total)
    assert abs(energies[1] - energies[0]) < 1e-5


def test_the_potential_above_20_hartree_does_not_change_the_energies():
    # Why the potential-input models may cap their input (train_models.py --v-ceiling 20):
    # half of this well's pixels lie above 20 Ha, where eight LDA electrons do not go.
    grid = Grid(48, 16.0)
    v_ext = harmonic_potential(grid, (1.0, 1.3))
    assert (v_ext > 20.0).mean() > 0.4
    (full, capped) = (
        solve(v, 8, grid, "lda", smearing=0.01) for v in (v_ext, np.minimum(v_ext, 20.0))
    )
    for term in ("t_s", "e_ext", "e_hartree", "e_x", "e_c", "e_total"):
        assert getattr(capped, term) == pytest.approx(getattr(full, term), abs=1e-6), term


@pytest.mark.parametrize("functional", ["lda", "hybrid"])
def test_energy_derivative_in_the_potential_is_the_density(sho, functional):
    # Hellmann–Feynman: the SCF energy is stationary in the density, so
    # dE/dε of E[v + ε δv] is ∫ δv n (what ``--density-gradient`` trains energy models on).
    grid, v_ext = sho
    (x, y) = grid.coordinates()
    bump = np.exp(-((x - 1.5) ** 2 + (y + 0.5) ** 2) / 4.0)
    (eps, tol) = (1e-3, {"energy_tol": 1e-10, "density_tol": 1e-7, "residual_tol": 1e-7})
    (plus, minus, centre) = (
        solve(v_ext + s * eps * bump, 6, grid, functional, **tol) for s in (1, -1, 0)
    )
    derivative = (plus.e_total - minus.e_total) / (2 * eps)
    assert derivative == pytest.approx(grid.integrate(bump * centre.density), rel=1e-5)
