"""Self-consistent field for 2D Kohn–Sham electrons in an external potential.

Spin-unpolarised by default; ``solve(..., spin=(n_up, n_down))`` runs the spin-polarised
loop of :mod:`ednn.ks2d.spin` (same steps per spin channel). The notes below are for the
unpolarised loop.

Energies are in Hartree, lengths in bohr. The total energy of the output density and
orbitals of each iteration is

    E = T_s[φ] + ∫ v_ext n + E_H[n] + E_x^loc[n] + E_c[n] + α E_x^Fock[φ],

with ``T_s = Σ_i f_i ⟨φ_i|-½∇²|φ_i⟩`` evaluated spectrally. The loop is

1. ``v_eff = v_ext + v_H[n_in] + v_xc[n_in]`` (plus ``α K`` in ACE form for a hybrid);
2. the lowest ``k = ⌈N/2⌉ + extra`` eigenpairs by LOBPCG, warm-started from the previous
   orbitals (:mod:`ednn.ks2d.eigensolver`);
3. occupations (:mod:`ednn.ks2d.occupations`) and ``n_out = Σ f_i φ_i²``;
4. stop when ``|ΔE| < energy_tol`` and ``∫|n_out - n_in| < density_tol`` and the occupied
   eigen-residuals are below ``residual_tol``; otherwise Pulay-mix (:mod:`ednn.ks2d.mixing`).

The first ``n_in`` is the density of the independent-electron problem in ``v_ext``. For a
hybrid this loop is the inner one: an outer loop rebuilds the ACE operator ``K`` from the
orbitals of the last inner loop and stops when ``E`` and ``n`` change by less than the
tolerances between outer iterations (a single loop that rebuilt ``K`` every iteration while
Pulay-mixing the density stalled at ``∫|Δn| ~ 1e-3``: DIIS takes the residual to be a
function of the density alone).
A run that does not meet the tolerances in ``max_iter`` iterations raises
:class:`SCFNotConverged`, which carries its history.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ednn.ks2d import _validation as check
from ednn.ks2d.eigensolver import Eigenpairs, lowest_eigenpairs
from ednn.ks2d.exchange import CompressedExchange, exact_exchange_energy
from ednn.ks2d.grid import Grid
from ednn.ks2d.hartree import Coulomb
from ednn.ks2d.mixing import PulayMixer
from ednn.ks2d.occupations import occupations
from ednn.ks2d.result import KSResult
from ednn.ks2d.xc import Functional

#: Pulay restarts after this many iterations without a new lowest density residual.
RESTART_PATIENCE = 8


class KSFailure(RuntimeError):
    """A Kohn–Sham calculation that produced no usable result (a dataset skips it)."""


class SCFNotConverged(KSFailure):
    """The SCF loop missed its tolerances within ``max_iter`` iterations.

    Attributes
    ----------
    history : list of dict
        Per iteration: ``e_total``, ``energy_change``, ``density_residual``, ``eigen_residual``.
    """

    def __init__(self, message: str, history: list[dict]) -> None:
        super().__init__(message)
        self.history = history


class DensityNotConfined(KSFailure):
    """The density does not vanish at the edges of the box (box too small or state unbound)."""


def _occupy(
    eigenvalues: np.ndarray, n_electrons: int, smearing: float, capacity: float = 2.0
) -> tuple[np.ndarray, float]:
    # Too few computed levels for the shell or the smearing is a failure of this sample.
    try:
        return occupations(eigenvalues, n_electrons, smearing, capacity=capacity)
    except ValueError as error:
        raise KSFailure(f"{error} (raise `extra_states`)") from error


def _density(orbitals: np.ndarray, occ: np.ndarray) -> np.ndarray:
    return np.einsum("i,ixy->xy", occ, orbitals**2)


def _edge(density: np.ndarray) -> float:
    return float(
        max(
            np.abs(density[0]).max(),
            np.abs(density[-1]).max(),
            np.abs(density[:, 0]).max(),
            np.abs(density[:, -1]).max(),
        )
    )


def solve(
    v_ext: np.ndarray,
    n_electrons: int,
    grid: Grid,
    functional: str | Functional | None = "lda",
    *,
    spin: tuple[int, int] | None = None,
    smearing: float = 0.0,
    extra_states: int = 4,
    energy_tol: float = 1e-7,
    density_tol: float = 1e-5,
    residual_tol: float = 1e-5,
    max_iter: int | None = None,
    mixing: float = 0.5,
    history: int = 8,
    correction: str = "zeta2",
    max_edge_density: float | None = None,
    keep_orbitals: bool = True,
    threads: int | None = 1,
) -> KSResult:
    """Solve the 2D Kohn–Sham equations self-consistently, spin-unpolarised or polarised.

    Parameters
    ----------
    v_ext : ndarray, shape (n, n)
        External potential in Hartree on ``grid``.
    n_electrons : int
        Number of electrons ``N`` (>= 1; closed shells are even).
    grid : Grid
        Real-space grid; the box must be large enough for the density to vanish at its edges.
    functional : {"lda", "gga", "hybrid"}, Functional or None
        Exchange–correlation functional (:class:`ednn.ks2d.xc.Functional`); ``None`` for
        independent electrons (no Hartree, no xc: one diagonalisation).
    spin : (int, int), optional
        Electrons per spin channel ``(n_up, n_down)``, non-negative and adding up to
        ``N``: a spin-polarised (collinear, unrestricted) run with fixed counts per
        channel (:mod:`ednn.ks2d.spin`). None (default): spin-unpolarised, both spins in
        each orbital. ``(N/2, N/2)`` gives the unpolarised solution where that is stable.
    smearing : float
        Fermi–Dirac ``kT`` in Hartree; 0 for aufbau with degenerate shells shared equally.
        With ``spin``, each channel has its own Fermi level.
    extra_states : int
        Empty levels computed above ``⌈N/2⌉`` (to locate shells and for LOBPCG robustness);
        with ``spin``, above ``max(n_up, n_down)`` in each channel.
    energy_tol : float
        Convergence threshold on ``|ΔE_total|`` between iterations (Hartree).
    density_tol : float
        Convergence threshold on ``∫ |n_out - n_in| d²r`` (electrons).
    residual_tol : float
        Threshold on the occupied eigen-residuals ``‖Hφ - εφ‖`` (Hartree).
    max_iter : int, optional
        Maximum SCF iterations, summed over the outer loops of a hybrid. Default 100, and
        300 for a hybrid: where two levels are pinned at the Fermi level with fractional
        occupations its outer loop needed ~160 (SHO, ω = (0.48, 0.51), N = 8).
    mixing : float
        Pulay linear-mixing weight ``β``.
    history : int
        Pulay history length.
    correction : {"zeta2", "zeta", "pixel"}
        Coulomb self-cell quadrature (:func:`ednn.ks2d.hartree.coulomb_kernel`).
    max_edge_density : float, optional
        If given, raise :class:`DensityNotConfined` when the converged density exceeds it
        (bohr⁻²) on the outermost grid row or column.
    keep_orbitals : bool
        Keep the orbitals in the result.
    threads : int or None
        OpenMP threads of libxc (via ``pyscf.lib.num_threads``) and BLAS threads (via
        ``threadpoolctl``, if installed) while solving; None leaves them as they are. The
        work items are small (libxc on n² points, ``n² × 2k`` products) and gain nothing
        from threads; on a loaded 2-core machine the default threading made libxc ~3000×
        and the eigensolver 6-10× slower than one thread. Parallelise over samples instead.

    Returns
    -------
    KSResult
        With ``spin``: per-spin ``eigenvalues``/``occupations`` ``(2, k)``, ``orbitals``
        ``(2, k, n, n)`` and ``spin_densities`` ``(2, n, n)``; ``density`` is the total.

    Raises
    ------
    SCFNotConverged
        If the tolerances are not met within ``max_iter`` iterations.
    DensityNotConfined
        See ``max_edge_density``.

    Example
    -------
    >>> grid = Grid(48, 16.0)
    >>> X, Y = grid.coordinates()
    >>> result = solve(0.5 * (X**2 + Y**2), 2, grid, "lda")
    >>> round(float(grid.integrate(result.density)), 6)
    2.0
    >>> polarized = solve(0.5 * (X**2 + Y**2), 3, grid, "lda", spin=(2, 1))
    >>> polarized.occupations.shape, polarized.electrons_per_spin
    ((2, 6), (2, 1))
    """
    with _thread_limit(threads):
        return _solve(
            v_ext, n_electrons, grid, functional, spin, smearing, extra_states, energy_tol,
            density_tol, residual_tol, max_iter, mixing, history, correction,
            max_edge_density, keep_orbitals,
        )  # fmt: skip


@contextlib.contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    # libxc (through pyscf) runs OpenMP loops and the eigensolver BLAS products; both are
    # far too small to gain from threads, and contended threads made them slow.
    if threads is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            from pyscf import lib as pyscf_lib

            previous = pyscf_lib.num_threads()
            pyscf_lib.num_threads(threads)
            stack.callback(pyscf_lib.num_threads, previous)
        except ImportError:  # pragma: no cover - pyscf is needed for xc anyway
            pass
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
        except ImportError:  # optional: only a speed-up
            pass
        yield


def _solve(
    v_ext: np.ndarray,
    n_electrons: int,
    grid: Grid,
    functional: str | Functional | None,
    spin: tuple[int, int] | None,
    smearing: float,
    extra_states: int,
    energy_tol: float,
    density_tol: float,
    residual_tol: float,
    max_iter: int | None,
    mixing: float,
    history: int,
    correction: str,
    max_edge_density: float | None,
    keep_orbitals: bool,
) -> KSResult:
    start = time.perf_counter()
    v_ext = check.field(v_ext, "v_ext", grid.shape)
    n_electrons = check.integer(n_electrons, "n_electrons", minimum=1)
    extra_states = check.integer(extra_states, "extra_states", minimum=1)
    if functional is not None and not isinstance(functional, Functional):
        functional = Functional(functional)
    if max_iter is None:
        max_iter = 300 if functional is not None and functional.exact_exchange else 100
    max_iter = check.integer(max_iter, "max_iter", minimum=1)
    if spin is not None:
        # Imported here: ednn.ks2d.spin builds on this module's helpers.
        from ednn.ks2d.spin import solve_polarized

        return solve_polarized(
            v_ext, check.spin_counts(spin, n_electrons), grid, functional, smearing,
            extra_states, (energy_tol, density_tol, residual_tol), max_iter, mixing, history,
            correction, max_edge_density, keep_orbitals, start,
        )  # fmt: skip
    k = math.ceil(n_electrons / 2) + extra_states
    if k > grid.n * grid.n // 4:
        raise ValueError(
            f"expected far fewer states than grid points; use a finer grid. "
            f"Received: n_electrons={n_electrons}, grid.n={grid.n}"
        )

    eig = lowest_eigenpairs(grid, v_ext, k, tol=0.1 * residual_tol)
    occ, entropy = _occupy(eig.values, n_electrons, smearing)
    if functional is None:
        energies = {"t_s": _kinetic(grid, eig, occ), "e_ext": 0.0, "e_hartree": 0.0}
        n_out = _density(eig.orbitals, occ)
        energies["e_ext"] = float(grid.integrate(v_ext * n_out))
        return _result(
            grid, n_electrons, "none", 0.0, v_ext, n_out, eig, occ, entropy,
            {**energies, "e_x": 0.0, "e_c": 0.0}, 1, 0.0, 0.0, start, keep_orbitals,
            max_edge_density,
        )  # fmt: skip

    coulomb = Coulomb(grid, correction)
    alpha = functional.exact_exchange
    state = _State(eig=eig, occ=occ, entropy=entropy, density=_density(eig.orbitals, occ))
    tolerances = (energy_tol, density_tol, residual_tol)
    records: list[dict] = []
    # Hybrids: an outer loop rebuilds the ACE exchange operator from the orbitals of the
    # last inner SCF, which converges the density with that operator held fixed. Mixing
    # the density while updating K every iteration (one loop) stalled at ∫|Δn| ~ 1e-3.
    # Early inner loops need not be tight while K is still far from its fixed point: their
    # tolerances follow the last outer change, down to the requested ones.
    outer_iterations = max_iter if alpha else 1
    inner = (max(energy_tol, 1e-4), max(density_tol, 1e-2), residual_tol) if alpha else tolerances
    e_outer = np.inf
    for _ in range(outer_iterations):
        density_outer = state.density
        nonlocal_op = (
            CompressedExchange(state.eig.orbitals, state.occ, coulomb, alpha) if alpha else None
        )
        mixer = PulayMixer(beta=mixing, history=history, area_element=grid.area_element)
        converged = _inner_loop(
            state, grid, functional, coulomb, v_ext, n_electrons, smearing, nonlocal_op,
            mixer, inner, max_iter - len(records), records,
        )  # fmt: skip
        if not converged:
            break
        e_total = records[-1]["e_total"]
        outer_change = abs(e_total - e_outer)
        outer_density = float(grid.integrate(np.abs(state.density - density_outer)))
        strict = inner == tolerances
        if not alpha or (strict and outer_change < energy_tol and outer_density < density_tol):
            return _result(
                grid, n_electrons, functional.name, alpha, v_ext, state.density, state.eig,
                state.occ, state.entropy, state.energies, len(records),
                records[-1]["energy_change"], records[-1]["density_residual"], start,
                keep_orbitals, max_edge_density,
            )  # fmt: skip
        e_outer = e_total
        inner = _next_inner(inner, outer_change, outer_density, tolerances)
    raise _not_converged(records, tolerances, max_iter)


def _next_inner(
    inner: tuple[float, float, float],
    outer_change: float,
    outer_density: float,
    tolerances: tuple[float, float, float],
) -> tuple[float, float, float]:
    # Hybrid outer loop: the inner tolerances follow the last outer change, down to the
    # requested ones.
    (energy_tol, density_tol, residual_tol) = tolerances
    return (
        max(energy_tol, min(inner[0], 0.1 * outer_change)),
        max(density_tol, min(inner[1], 0.1 * outer_density)),
        residual_tol,
    )


def _not_converged(
    records: list[dict], tolerances: tuple[float, float, float], max_iter: int, where: str = ""
) -> SCFNotConverged:
    (energy_tol, density_tol, residual_tol) = tolerances
    last = records[-1]
    return SCFNotConverged(
        f"expected |ΔE| < {energy_tol:g} Ha, ∫|Δn| < {density_tol:g} and eigen-residual < "
        f"{residual_tol:g} within max_iter={max_iter} iterations{where}. Received: "
        f"|ΔE|={last['energy_change']:.3g}, ∫|Δn|={last['density_residual']:.3g}, "
        f"residual={last['eigen_residual']:.3g} after {len(records)} iterations",
        records,
    )


@dataclass
class _State:
    eig: Eigenpairs
    occ: np.ndarray
    entropy: float
    density: np.ndarray
    energies: dict[str, float] = field(default_factory=dict)


def _inner_loop(
    state: _State,
    grid: Grid,
    functional: Functional,
    coulomb: Coulomb,
    v_ext: np.ndarray,
    n_electrons: int,
    smearing: float,
    nonlocal_op: CompressedExchange | None,
    mixer: PulayMixer,
    tolerances: tuple[float, float, float],
    max_iter: int,
    records: list[dict],
) -> bool:
    # Density SCF with a fixed nonlocal operator; updates `state` and `records` in place.
    residual_tol = tolerances[2]
    n_in = state.density
    e_previous = np.inf
    watch = _StallWatch()
    for _ in range(max_iter):
        local = functional.local_terms(n_in, grid)
        eig = lowest_eigenpairs(
            grid,
            v_ext + coulomb.potential(n_in) + local.potential,
            len(state.eig.values),
            guess=state.eig.orbitals,
            nonlocal_op=nonlocal_op,
            tol=0.1 * residual_tol,
            maxiter=100,
        )
        occ, entropy = _occupy(eig.values, n_electrons, smearing)
        n_out = _density(eig.orbitals, occ)
        energies = _energies(grid, functional, coulomb, v_ext, n_out, eig, occ)
        e_total = sum(energies.values())
        record = {
            "e_total": e_total,
            "energy_change": abs(e_total - e_previous),
            "density_residual": float(grid.integrate(np.abs(n_out - n_in))),
            "eigen_residual": float(np.max(eig.residuals[occ > 0])),
        }
        records.append(record)
        state.eig, state.occ, state.entropy = eig, occ, entropy
        state.density, state.energies = n_out, energies
        if _converged(record, tolerances):
            return True
        e_previous = e_total
        watch.update(record["density_residual"], mixer)
        n_in = mixer(n_in, n_out)
    return False


def _converged(record: dict, tolerances: tuple[float, float, float]) -> bool:
    (energy_tol, density_tol, residual_tol) = tolerances
    return (
        record["energy_change"] < energy_tol
        and record["density_residual"] < density_tol
        and record["eigen_residual"] < residual_tol
    )


@dataclass
class _StallWatch:
    # A long Pulay history can lock into a cycle (charge sloshing between pockets of a
    # blob well went on for 100 iterations with history 8, converged with 4): after
    # RESTART_PATIENCE iterations without a new lowest ∫|Δn|, restart the history.
    best: float = np.inf
    stalled: int = 0

    def update(self, density_residual: float, mixer: PulayMixer) -> None:
        if density_residual < self.best:
            self.best, self.stalled = density_residual, 0
        else:
            self.stalled += 1
        if self.stalled >= RESTART_PATIENCE:
            mixer.reset()
            self.best, self.stalled = density_residual, 0


def _kinetic(grid: Grid, eig: Eigenpairs, occ: np.ndarray) -> float:
    per_orbital = grid.integrate(eig.orbitals * grid.kinetic(eig.orbitals))
    return float(np.sum(occ * per_orbital))


def _energies(
    grid: Grid,
    functional: Functional,
    coulomb: Coulomb,
    v_ext: np.ndarray,
    density: np.ndarray,
    eig: Eigenpairs,
    occ: np.ndarray,
) -> dict[str, float]:
    local = functional.local_terms(density, grid)
    e_x = local.e_x
    if functional.exact_exchange:
        e_x += functional.exact_exchange * exact_exchange_energy(eig.orbitals, occ, coulomb)
    return {
        "t_s": _kinetic(grid, eig, occ),
        "e_ext": float(grid.integrate(v_ext * density)),
        "e_hartree": float(coulomb.energy(density)),
        "e_x": e_x,
        "e_c": local.e_c,
    }


def _result(
    grid: Grid,
    n_electrons: int,
    name: str,
    alpha: float,
    v_ext: np.ndarray,
    density: np.ndarray,
    eig: Eigenpairs,
    occ: np.ndarray,
    entropy: float,
    energies: dict[str, float],
    iterations: int,
    energy_change: float,
    density_residual: float,
    start: float,
    keep_orbitals: bool,
    max_edge_density: float | None,
    spin_densities: np.ndarray | None = None,
) -> KSResult:
    # `eig` and `occ` may carry a leading spin axis (spin-polarised results).
    edge = _edge(density)
    if max_edge_density is not None and edge > max_edge_density:
        raise DensityNotConfined(
            f"expected the density to vanish at the box edges (below {max_edge_density:g} "
            f"bohr⁻²); enlarge the box or deepen the well. Received: edge density={edge:.3g}"
        )
    return KSResult(
        n=grid.n,
        box=grid.box,
        n_electrons=n_electrons,
        functional=name,
        exact_exchange=alpha,
        v_ext=v_ext,
        density=density,
        eigenvalues=eig.values,
        occupations=occ,
        entropy_term=entropy,
        e_total=float(sum(energies.values())),
        iterations=iterations,
        energy_change=energy_change,
        density_residual=density_residual,
        eigen_residual=float(np.max(eig.residuals[occ > 0])),
        edge_density=edge,
        wall_time=time.perf_counter() - start,
        orbitals=eig.orbitals if keep_orbitals else None,
        spin_densities=spin_densities,
        **energies,
    )
