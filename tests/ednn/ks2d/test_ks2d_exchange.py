import numpy as np
import pytest

from ednn.ks2d.eigensolver import lowest_eigenpairs
from ednn.ks2d.exchange import CompressedExchange, apply_fock_exchange, exact_exchange_energy
from ednn.ks2d.grid import Grid
from ednn.ks2d.hartree import Coulomb
from ednn.ks2d.potentials import harmonic_potential


@pytest.fixture(scope="module")
def orbitals():
    grid = Grid(32, 14.0)
    eig = lowest_eigenpairs(grid, harmonic_potential(grid, (1.0, 0.8)), 4)
    return grid, eig.orbitals


def test_exchange_of_a_doubly_occupied_orbital_is_minus_half_hartree(orbitals):
    grid, phi = orbitals
    coulomb = Coulomb(grid)
    occupations = np.array([2.0, 0.0, 0.0, 0.0])
    e_x = exact_exchange_energy(phi, occupations, coulomb)
    e_h = coulomb.energy(2.0 * phi[0] ** 2)
    assert e_x == pytest.approx(-0.5 * e_h, rel=1e-12)


def test_exchange_energy_is_half_the_occupied_expectation_of_k(orbitals):
    grid, phi = orbitals
    coulomb = Coulomb(grid)
    occupations = np.array([2.0, 2.0, 1.0, 0.0])
    k_phi = apply_fock_exchange(phi, phi, occupations, coulomb)
    expectation = grid.integrate(phi * k_phi)
    assert exact_exchange_energy(phi, occupations, coulomb) == pytest.approx(
        0.5 * np.sum(occupations * expectation), rel=1e-12
    )


def test_compressed_exchange_equals_k_on_the_span_of_its_orbitals(orbitals):
    grid, phi = orbitals
    coulomb = Coulomb(grid)
    occupations = np.array([2.0, 2.0, 0.0, 0.0])
    ace = CompressedExchange(phi, occupations, coulomb, scale=0.25)
    psi = np.tensordot(np.array([[0.3, -1.0, 0.5, 2.0]]), phi, axes=1)
    exact = 0.25 * apply_fock_exchange(psi, phi, occupations, coulomb)
    assert np.allclose(ace(psi), exact, atol=1e-12)
