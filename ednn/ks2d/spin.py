"""Spin-polarised self-consistent field: two spin channels with fixed electron counts.

Collinear, unrestricted Kohn–Sham (Hartree atomic units). Channel ``σ ∈ {↑, ↓}`` holds
``n_σ`` electrons in orbitals of its own, occupied 0 to 1 each (aufbau or Fermi–Dirac
with a Fermi level per channel, :func:`ednn.ks2d.occupations.occupations` with
``capacity=1``), in the potential

    v_σ = v_ext + v_H[n] + v_xc^σ[n_↑, n_↓]  (+ α K^σ for a hybrid),   n = n_↑ + n_↓,

with ``v_xc^σ = δE_xc/δn_σ`` from libxc's spin-polarised functionals
(:meth:`ednn.ks2d.xc.Functional.local_terms` on the spin densities) and ``K^σ`` the Fock
exchange of the channel's own orbitals (same-spin pairs only,
:mod:`ednn.ks2d.exchange` with ``capacity=1``). The total energy is

    E = Σ_σ T_s^σ + ∫ v_ext n + E_H[n] + E_x^loc[n_↑, n_↓] + E_c[n_↑, n_↓] + α Σ_σ E_x^{Fock,σ}.

The loop is that of :mod:`ednn.ks2d.scf`, per channel: warm-started LOBPCG for the lowest
``k = max(n_↑, n_↓) + extra_states`` levels of each channel; Pulay mixing of the stacked
pair ``(n_↑, n_↓)``, each channel clipped and renormalised to its own count (so the
magnetisation is fixed); ``∫|Δn|`` and ``|ΔE|`` summed over channels; for a hybrid an
outer loop rebuilding one ACE operator per occupied channel. The first input is the
independent-electron density in ``v_ext`` split by the counts, so a closed shell with
``n_↑ = n_↓`` follows the unpolarised run (to rounding) and ends at its solution.
"""

from __future__ import annotations

import numpy as np

from ednn.ks2d.eigensolver import Eigenpairs, lowest_eigenpairs
from ednn.ks2d.exchange import CompressedExchange, exact_exchange_energy
from ednn.ks2d.grid import Grid
from ednn.ks2d.hartree import Coulomb
from ednn.ks2d.mixing import PulayMixer
from ednn.ks2d.result import KSResult
from ednn.ks2d.scf import (
    _converged,
    _kinetic,
    _next_inner,
    _not_converged,
    _occupy,
    _result,
    _StallWatch,
    _State,
)
from ednn.ks2d.xc import Functional

#: Electrons per full orbital of one spin channel.
CAPACITY = 1.0


def solve_polarized(
    v_ext: np.ndarray,
    spin: tuple[int, int],
    grid: Grid,
    functional: Functional | None,
    smearing: float,
    extra_states: int,
    tolerances: tuple[float, float, float],
    max_iter: int,
    mixing: float,
    history: int,
    correction: str,
    max_edge_density: float | None,
    keep_orbitals: bool,
    start: float,
) -> KSResult:
    """Spin-polarised SCF; called by :func:`ednn.ks2d.scf.solve` with checked arguments.

    Parameters
    ----------
    v_ext : ndarray, shape (n, n)
        External potential in Hartree.
    spin : (int, int)
        Electrons ``(n_↑, n_↓)`` per channel.
    grid : Grid
        Real-space grid.
    functional : Functional or None
        Exchange–correlation functional; None for independent electrons.
    smearing, extra_states, max_iter, mixing, history, correction, max_edge_density, keep_orbitals
        As for :func:`ednn.ks2d.scf.solve`.
    tolerances : (float, float, float)
        ``(energy_tol, density_tol, residual_tol)`` in Hartree, electrons and Hartree.
    start : float
        ``time.perf_counter()`` at the start of the solve (for ``wall_time``).

    Returns
    -------
    KSResult
        Per-spin ``eigenvalues``/``occupations`` ``(2, k)``, ``orbitals`` ``(2, k, n, n)``,
        ``spin_densities`` ``(2, n, n)``; ``density`` is ``n_↑ + n_↓``.
    """
    energy_tol, density_tol, residual_tol = tolerances
    n_electrons = sum(spin)
    k = max(spin) + extra_states
    if k > grid.n * grid.n // 4:
        raise ValueError(
            f"expected far fewer states than grid points; use a finer grid. "
            f"Received: spin={spin}, grid.n={grid.n}"
        )
    first = lowest_eigenpairs(grid, v_ext, k, tol=0.1 * residual_tol)
    eig = _stack([first, first])
    occ, entropy = _occupy_channels(eig, spin, smearing)
    density = _density(eig, occ)
    finish = dict(
        grid=grid, n_electrons=n_electrons, v_ext=v_ext, start=start,
        keep_orbitals=keep_orbitals, max_edge_density=max_edge_density,
    )  # fmt: skip
    if functional is None:
        energies = {
            "t_s": _kinetic(grid, eig, occ),
            "e_ext": float(grid.integrate(v_ext * density.sum(axis=0))),
            "e_hartree": 0.0,
            "e_x": 0.0,
            "e_c": 0.0,
        }
        return _finish(
            **finish, name="none", alpha=0.0, density=density, eig=eig, occ=occ,
            entropy=entropy, energies=energies, iterations=1, records=None,
        )  # fmt: skip

    coulomb = Coulomb(grid, correction)
    alpha = functional.exact_exchange
    state = _State(eig=eig, occ=occ, entropy=entropy, density=density)
    records: list[dict] = []
    # As in scf: the hybrid's outer loop rebuilds K^σ; inner tolerances follow its changes.
    outer_iterations = max_iter if alpha else 1
    inner = (max(energy_tol, 1e-4), max(density_tol, 1e-2), residual_tol) if alpha else tolerances
    e_outer = np.inf
    for _ in range(outer_iterations):
        density_outer = state.density
        operators = [
            CompressedExchange(orbitals, f, coulomb, alpha, capacity=CAPACITY)
            if alpha and np.any(f > 0)
            else None
            for orbitals, f in zip(state.eig.orbitals, state.occ, strict=True)
        ]
        mixer = PulayMixer(beta=mixing, history=history, area_element=grid.area_element)
        converged = _inner_loop(
            state, grid, functional, coulomb, v_ext, spin, smearing, operators, mixer, inner,
            max_iter - len(records), records,
        )  # fmt: skip
        if not converged:
            break
        e_total = records[-1]["e_total"]
        outer_change = abs(e_total - e_outer)
        outer_density = float(np.sum(grid.integrate(np.abs(state.density - density_outer))))
        strict = inner == tolerances
        if not alpha or (strict and outer_change < energy_tol and outer_density < density_tol):
            return _finish(
                **finish, name=functional.name, alpha=alpha, density=state.density,
                eig=state.eig, occ=state.occ, entropy=state.entropy, energies=state.energies,
                iterations=len(records), records=records,
            )  # fmt: skip
        e_outer = e_total
        inner = _next_inner(inner, outer_change, outer_density, tolerances)
    raise _not_converged(records, tolerances, max_iter, f" (spin={spin})")


def _stack(channels: list[Eigenpairs]) -> Eigenpairs:
    return Eigenpairs(
        values=np.stack([c.values for c in channels]),
        orbitals=np.stack([c.orbitals for c in channels]),
        residuals=np.stack([c.residuals for c in channels]),
    )


def _occupy_channels(
    eig: Eigenpairs, spin: tuple[int, int], smearing: float
) -> tuple[np.ndarray, float]:
    pairs = [
        _occupy(values, count, smearing, CAPACITY)
        for values, count in zip(eig.values, spin, strict=True)
    ]
    return np.stack([occ for occ, _ in pairs]), float(sum(entropy for _, entropy in pairs))


def _density(eig: Eigenpairs, occ: np.ndarray) -> np.ndarray:
    return np.einsum("si,sixy->sxy", occ, eig.orbitals**2)


def _renormalise(density: np.ndarray, spin: tuple[int, int], grid: Grid) -> np.ndarray:
    # The mixer keeps the total; each channel must keep its own count.
    out = np.array(density)
    for channel, count in enumerate(spin):
        total = float(grid.integrate(out[channel]))
        out[channel] = out[channel] * (count / total) if total > 0 else 0.0
    return out


def _inner_loop(
    state: _State,
    grid: Grid,
    functional: Functional,
    coulomb: Coulomb,
    v_ext: np.ndarray,
    spin: tuple[int, int],
    smearing: float,
    operators: list[CompressedExchange | None],
    mixer: PulayMixer,
    tolerances: tuple[float, float, float],
    max_iter: int,
    records: list[dict],
) -> bool:
    # Density SCF of both channels with fixed nonlocal operators; updates `state`, `records`.
    # `state` holds stacked per-spin eigenpairs, occupations (2, k), spin densities (2, n, n).
    residual_tol = tolerances[2]
    n_in = state.density
    e_previous = np.inf
    watch = _StallWatch()
    k = state.eig.values.shape[-1]
    for _ in range(max_iter):
        local = functional.local_terms(n_in, grid)
        common = v_ext + coulomb.potential(n_in[0] + n_in[1])
        eig = _stack(
            [
                lowest_eigenpairs(
                    grid,
                    common + local.potential[channel],
                    k,
                    guess=state.eig.orbitals[channel],
                    nonlocal_op=operators[channel],
                    tol=0.1 * residual_tol,
                    maxiter=100,
                )
                for channel in range(2)
            ]
        )
        occ, entropy = _occupy_channels(eig, spin, smearing)
        n_out = _density(eig, occ)
        energies = _energies(grid, functional, coulomb, v_ext, n_out, eig, occ)
        e_total = sum(energies.values())
        record = {
            "e_total": e_total,
            "energy_change": abs(e_total - e_previous),
            "density_residual": float(np.sum(grid.integrate(np.abs(n_out - n_in)))),
            "eigen_residual": float(np.max(eig.residuals[occ > 0])),
        }
        records.append(record)
        state.eig, state.occ, state.entropy = eig, occ, entropy
        state.density, state.energies = n_out, energies
        if _converged(record, tolerances):
            return True
        e_previous = e_total
        watch.update(record["density_residual"], mixer)
        n_in = _renormalise(mixer(n_in, n_out), spin, grid)
    return False


def _energies(
    grid: Grid,
    functional: Functional,
    coulomb: Coulomb,
    v_ext: np.ndarray,
    spin_densities: np.ndarray,
    eig: Eigenpairs,
    occ: np.ndarray,
) -> dict[str, float]:
    density = spin_densities[0] + spin_densities[1]
    local = functional.local_terms(spin_densities, grid)
    e_x = local.e_x
    if functional.exact_exchange:
        fock = sum(
            exact_exchange_energy(orbitals, f, coulomb, capacity=CAPACITY)
            for orbitals, f in zip(eig.orbitals, occ, strict=True)
        )
        e_x += functional.exact_exchange * fock
    return {
        "t_s": _kinetic(grid, eig, occ),
        "e_ext": float(grid.integrate(v_ext * density)),
        "e_hartree": float(coulomb.energy(density)),
        "e_x": e_x,
        "e_c": local.e_c,
    }


def _finish(
    *,
    grid: Grid,
    n_electrons: int,
    v_ext: np.ndarray,
    start: float,
    keep_orbitals: bool,
    max_edge_density: float | None,
    name: str,
    alpha: float,
    density: np.ndarray,
    eig: Eigenpairs,
    occ: np.ndarray,
    entropy: float,
    energies: dict[str, float],
    iterations: int,
    records: list[dict] | None,
) -> KSResult:
    last = records[-1] if records else {"energy_change": 0.0, "density_residual": 0.0}
    return _result(
        grid, n_electrons, name, alpha, v_ext, density.sum(axis=0), eig, occ, entropy,
        energies, iterations, last["energy_change"], last["density_residual"], start,
        keep_orbitals, max_edge_density, spin_densities=density,
    )  # fmt: skip
