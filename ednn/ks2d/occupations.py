"""Occupation numbers of Kohn–Sham orbitals: 0 to 2 electrons each, or 0 to 1 per spin.

``capacity`` is the most electrons one spatial orbital holds: 2 for spin-unpolarised
orbitals (the default), 1 for the orbitals of one spin channel of a spin-polarised run,
whose electron count is fixed (a separate Fermi level per channel).

Two rules, chosen by ``smearing`` (Hartree):

``smearing == 0`` (default): aufbau with degenerate shells shared equally. Levels within
    ``degeneracy_tol`` of the highest occupied level form one shell, and the electrons
    left for that shell are spread evenly over it. Closed shells (SHO with N = 2, 6, 12
    in the isotropic case) thus get integer occupations, and an open shell (isotropic SHO,
    N = 4) keeps the symmetry of the potential instead of breaking it at random.
``smearing > 0``: Fermi–Dirac, ``f_i = c / (1 + exp((ε_i - μ) / kT))`` (capacity ``c``), ``kT =
    smearing`` and ``μ`` found by bisection so that ``Σ f_i = N``. The entropy term
    ``-T S`` is returned so that the caller can report the Mermin free energy.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special

from ednn.ks2d import _validation as check

#: Levels closer than this (Hartree) to the highest occupied one share its electrons.
DEGENERACY_TOL = 1e-5


def occupations(
    eigenvalues: np.ndarray,
    n_electrons: float,
    smearing: float = 0.0,
    degeneracy_tol: float = DEGENERACY_TOL,
    *,
    capacity: float = 2.0,
) -> tuple[np.ndarray, float]:
    """Return occupations (electrons per spatial orbital) and the entropy term ``-TS``.

    Parameters
    ----------
    eigenvalues : ndarray, shape (k,)
        Orbital energies in Hartree, ascending.
    n_electrons : float
        Number of electrons ``N`` to place (both spins for ``capacity=2``, one spin
        channel's for ``capacity=1``); 0 gives all-empty levels.
    smearing : float
        Fermi–Dirac ``kT`` in Hartree; 0 for aufbau with degenerate shells shared.
    degeneracy_tol : float
        Degeneracy window in Hartree (only for ``smearing == 0``).
    capacity : {2.0, 1.0}
        Electrons a full orbital holds: 2 spin-unpolarised, 1 for one spin channel.

    Returns
    -------
    occupations : ndarray, shape (k,)
        Values in [0, capacity] summing to ``n_electrons``.
    entropy_term : float
        ``-T S`` in Hartree (0 without smearing).

    Raises
    ------
    ValueError
        If ``k`` orbitals cannot hold ``n_electrons``, or (with ``smearing == 0``) the
        shell at the Fermi level is not fully inside the ``k`` computed levels.

    Example
    -------
    >>> occupations(np.array([1.0, 2.0, 2.0, 3.0]), 4)[0]
    array([2., 1., 1., 0.])
    >>> occupations(np.array([1.0, 2.0, 2.0, 3.0]), 2, capacity=1.0)[0]
    array([1. , 0.5, 0.5, 0. ])
    """
    eps = np.asarray(eigenvalues, dtype=float)
    n_electrons = check.positive(n_electrons, "n_electrons", allow_zero=True)
    smearing = check.positive(smearing, "smearing", allow_zero=True)
    if capacity not in (1.0, 2.0):
        raise ValueError(f"`capacity` must be 1 or 2. Received: capacity={capacity!r}")
    capacity = float(capacity)
    if capacity * len(eps) < n_electrons:
        raise ValueError(
            f"expected at least {n_electrons / capacity:g} orbitals for {n_electrons:g} "
            f"electrons. Received: len(eigenvalues)={len(eps)}"
        )
    if n_electrons == 0:  # an empty spin channel
        return np.zeros_like(eps), 0.0
    if smearing > 0:
        return _fermi_dirac(eps, n_electrons, smearing, capacity)
    occ = np.zeros_like(eps)
    n_full = int(np.ceil(n_electrons / capacity))
    homo = eps[n_full - 1]
    shell = np.abs(eps - homo) <= degeneracy_tol
    if shell[-1]:
        raise ValueError(
            "expected the degenerate shell at the Fermi level to end below the highest "
            f"computed level; compute more orbitals. Received: eigenvalues={eps!r}"
        )
    below = eps < homo - degeneracy_tol
    occ[below] = capacity
    occ[shell] = (n_electrons - capacity * np.count_nonzero(below)) / np.count_nonzero(shell)
    return occ, 0.0


def _fermi_dirac(
    eps: np.ndarray, n_electrons: float, kt: float, capacity: float
) -> tuple[np.ndarray, float]:
    def count(mu: float) -> float:
        return float(np.sum(capacity * scipy.special.expit(-(eps - mu) / kt))) - n_electrons

    span = 50.0 * kt + float(np.ptp(eps)) + 1.0
    mu = scipy.optimize.brentq(count, eps[0] - span, eps[-1] + span, xtol=1e-14)
    f = scipy.special.expit(-(eps - mu) / kt)
    if capacity * f[-1] > 1e-6:
        raise ValueError(
            "expected the highest computed level to be empty under the smearing; compute "
            f"more orbitals or reduce `smearing`. Received: smearing={kt!r}, "
            f"top occupation={capacity * f[-1]:.2e}"
        )
    s = -np.sum(scipy.special.xlogy(f, f) + scipy.special.xlogy(1 - f, 1 - f))
    return capacity * f, float(-kt * capacity * s)
