"""Exact (Fock) exchange of real orbitals in 2D, with the same ``1/r`` kernel as Hartree.

For real spatial orbitals ``φ_i`` with occupations ``f_i ∈ [0, 2]`` (both spins):

    E_x = -¼ Σ_ij f_i f_j ∫∫ ρ_ij(r) ρ_ij(r') / |r - r'| d²r d²r',   ρ_ij = φ_i φ_j,
    (K ψ)(r) = -½ Σ_j f_j φ_j(r) ∫ φ_j(r') ψ(r') / |r - r'| d²r',

so that ``E_x = ½ Σ_i f_i ⟨φ_i|K|φ_i⟩`` and ``δE_x/δφ_i = f_i K φ_i``. For one doubly
occupied orbital, ``n = 2φ²`` and ``E_H = ½ ∫∫ n n' / r = 2 (ii|ii)`` while
``E_x = -(ii|ii)``: ``E_x = -E_H / 2``, the self-interaction is cancelled exactly.

For the orbitals of one spin channel (``capacity=1``: occupations ``g_i ∈ [0, 1]``) only
same-spin pairs exchange, and the prefactors double:

    E_x^σ = -½ Σ_ij g_i g_j (ij|ji),   (K^σ ψ)(r) = -Σ_j g_j φ_j(r) ∫ φ_j(r') ψ(r') / |r - r'|,

i.e. the formulas above with ``f = 2g`` for the operator and half of their energy. One
electron (``g = (1)``) has ``E_x = -½ (11|11) = -E_H``. In general the prefactors are
``-1/(2c)`` and ``-1/c`` for the capacity ``c`` (electrons per full orbital).

Inside the eigensolver the operator is applied in the adaptively compressed form (ACE,
Lin, J. Chem. Theory Comput. 12, 2242 (2016)): with ``W = K Φ`` for the block ``Φ`` of
computed orbitals and ``M = Φᵀ W = -L Lᵀ``, ``K ≈ -ξ ξᵀ`` with ``ξ = W L⁻ᵀ``. The
compressed operator equals ``K`` on span(Φ), costs two small matrix products per
application, and is rebuilt from the new orbitals in every SCF iteration.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ednn.ks2d.hartree import Coulomb


def _occupied(orbitals: np.ndarray, occupations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.asarray(occupations) > 0
    return np.asarray(orbitals)[keep], np.asarray(occupations, dtype=float)[keep]


def apply_fock_exchange(
    psi: np.ndarray,
    orbitals: np.ndarray,
    occupations: np.ndarray,
    coulomb: Coulomb,
    *,
    capacity: float = 2.0,
) -> np.ndarray:
    """Apply the exchange operator ``K`` built from ``orbitals`` to ``psi``.

    Parameters
    ----------
    psi : ndarray, shape (m, n, n)
        Functions to act on (bohr⁻¹ amplitudes).
    orbitals : ndarray, shape (k, n, n)
        Orbitals normalised on the grid.
    occupations : ndarray, shape (k,)
        Electrons per spatial orbital, in [0, capacity].
    coulomb : Coulomb
        The ``1/r`` convolution of the grid.
    capacity : float
        2 for spin-unpolarised orbitals, 1 for the orbitals of one spin channel.

    Returns
    -------
    ndarray, shape (m, n, n)
        ``K ψ`` in Hartree bohr⁻¹.

    Notes
    -----
    Costs ``m × k_occ`` Coulomb convolutions on the padded grid.
    """
    occ_orbitals, occ = _occupied(orbitals, occupations)
    out = np.zeros_like(psi)
    for phi_j, f_j in zip(occ_orbitals, occ, strict=True):
        out -= (1.0 / capacity) * f_j * phi_j * coulomb.potential(phi_j * psi)
    return out


def exact_exchange_energy(
    orbitals: np.ndarray, occupations: np.ndarray, coulomb: Coulomb, *, capacity: float = 2.0
) -> float:
    """Fock exchange energy ``E_x = -¼ Σ_ij f_i f_j (ij|ji)`` in Hartree (``-½`` per spin).

    Parameters
    ----------
    orbitals : ndarray, shape (k, n, n)
        Real orbitals normalised on the grid.
    occupations : ndarray, shape (k,)
        Electrons per spatial orbital, in [0, capacity].
    coulomb : Coulomb
        The ``1/r`` convolution of the grid.
    capacity : float
        2 for spin-unpolarised orbitals, 1 for the orbitals of one spin channel (then
        ``E_x = -½ Σ_ij g_i g_j (ij|ji)``, same-spin pairs only).

    Returns
    -------
    float
    """
    occ_orbitals, occ = _occupied(orbitals, occupations)
    energy = 0.0
    for i, (phi_i, f_i) in enumerate(zip(occ_orbitals, occ, strict=True)):
        pairs = phi_i * occ_orbitals[: i + 1]
        # (ij|ij) = 2 × coulomb.energy(ρ_ij); off-diagonal pairs appear twice in Σ_ij.
        repulsion = 2.0 * np.asarray(coulomb.energy(pairs))
        weights = f_i * occ[: i + 1] * np.where(np.arange(i + 1) == i, 1.0, 2.0)
        energy -= 1.0 / (2.0 * capacity) * float(np.sum(weights * repulsion))
    return energy


class CompressedExchange:
    """ACE form of ``K`` from a block of orbitals: ``K ≈ -ξ ξᵀ``, exact on span(orbitals).

    Parameters
    ----------
    orbitals : ndarray, shape (k, n, n)
        Orbitals (occupied and a few empty) normalised on the grid.
    occupations : ndarray, shape (k,)
        Electrons per spatial orbital; only occupied ones define ``K`` (at least one must be).
    coulomb : Coulomb
        The ``1/r`` convolution of the grid.
    scale : float
        Multiplies the operator (the hybrid's fraction ``α``).
    capacity : float
        2 for spin-unpolarised orbitals, 1 for the orbitals of one spin channel.
    """

    def __init__(
        self,
        orbitals: np.ndarray,
        occupations: np.ndarray,
        coulomb: Coulomb,
        scale: float = 1.0,
        *,
        capacity: float = 2.0,
    ) -> None:
        grid = coulomb.grid
        w = apply_fock_exchange(orbitals, orbitals, occupations, coulomb, capacity=capacity)
        k = len(orbitals)
        w_flat = w.reshape(k, -1)
        m = orbitals.reshape(k, -1) @ w_flat.T * grid.area_element
        m = 0.5 * (m + m.T)
        chol = scipy.linalg.cholesky(-m, lower=True)
        # ξ = W L⁻ᵀ as rows: solve L ξ_rows = W_rows.
        self._xi = scipy.linalg.solve_triangular(chol, w_flat, lower=True) * np.sqrt(scale)
        self._area = grid.area_element
        self._shape = orbitals.shape[1:]

    def __call__(self, psi: np.ndarray) -> np.ndarray:
        """Return ``scale · K ψ`` for ``psi`` of shape ``(m, n, n)``."""
        flat = psi.reshape(len(psi), -1)
        coeff = flat @ self._xi.T * self._area
        return (-(coeff @ self._xi)).reshape(psi.shape)
