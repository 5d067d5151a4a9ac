"""Lowest eigenpairs of a 2D Kohn–Sham Hamiltonian ``-½∇² + v(r) [+ nonlocal exchange]``.

The Hamiltonian is never stored. It is applied matrix-free (FFT kinetic energy plus a
local potential, plus an optional low-rank operator for exact exchange) inside a block
LOBPCG with a preconditioner that is diagonal in Fourier and in real space. A cold start
takes its guess from a dense diagonalisation on a coarse ``32 × 32`` copy of the problem,
Fourier-interpolated to the grid; inside an SCF loop the previous orbitals are the guess.

Why not a dense solver: at ``n = 64`` the matrix is 4096², and ``eigh`` costs seconds per
SCF step; LOBPCG costs tens of milliseconds. Why not Lanczos (``eigsh``): the spectrum
of ``-½∇²`` spans ``π²/h² ≈ 110`` Ha at ``h = 0.3`` bohr while the gaps of interest are
``~0.1`` Ha, so unpreconditioned Krylov methods need thousands of steps. Why not
:func:`scipy.sparse.linalg.lobpcg`: on these problems it stalled near residuals of 1e-7
and warned of ill-conditioned Gram matrices once the search directions became
dependent, and its multithreaded small products were slow; the SVQB variant here drops
dependent directions and converges to 1e-8 and below.

Orbitals are returned normalised on the grid, ``Σ |φ|² h² = 1`` (bohr⁻¹ amplitudes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ednn.ks2d.grid import Grid

#: Side of the coarse grid used for cold-start guesses.
COARSE_N = 32


@dataclass(frozen=True)
class Eigenpairs:
    """Eigenvalues (Hartree, ascending) and orbitals ``(k, n, n)`` normalised on the grid.

    ``residuals`` holds ``‖Hφ - εφ‖`` for unit-norm φ (the grid L² norm; Hartree).
    """

    values: np.ndarray
    orbitals: np.ndarray
    residuals: np.ndarray


def fourier_resample(f: np.ndarray, m: int) -> np.ndarray:
    """Resample periodic field(s) ``(..., n, n)`` to ``(..., m, m)`` by Fourier truncation/padding.

    The box is unchanged, so the values are those of the same trigonometric interpolant
    at the new points (for ``m > n``) or of its band-limited projection (``m < n``).
    """
    n = f.shape[-1]
    f_k = np.fft.fft2(f, axes=(-2, -1))
    out = np.zeros((*f.shape[:-2], m, m), dtype=complex)
    half = min(n, m) // 2
    idx = np.r_[0:half, -half + 1 : 0] if half > 1 else np.r_[0:1]
    out[..., idx[:, None], idx[None, :]] = f_k[..., idx[:, None], idx[None, :]]
    return np.real(np.fft.ifft2(out, axes=(-2, -1))) * (m * m) / (n * n)


def _dense_lowest(grid: Grid, potential: np.ndarray, k: int) -> np.ndarray:
    # Dense Hamiltonian on a small grid: kinetic matrix from the FFT of unit vectors.
    size = grid.n * grid.n
    unit = np.eye(size).reshape(size, grid.n, grid.n)
    hamiltonian = grid.kinetic(unit).reshape(size, size)
    hamiltonian = 0.5 * (hamiltonian + hamiltonian.T)
    hamiltonian[np.diag_indices(size)] += potential.ravel()
    _, vectors = scipy.linalg.eigh(hamiltonian, subset_by_index=(0, k - 1))
    return vectors.T.reshape(k, grid.n, grid.n) / grid.h


def coarse_guess(grid: Grid, potential: np.ndarray, k: int) -> np.ndarray:
    """Cold-start guess: ``k`` lowest orbitals of ``-½∇² + v`` on a coarse grid, interpolated.

    Parameters
    ----------
    grid : Grid
        The target grid.
    potential : ndarray, shape (n, n)
        Local potential in Hartree.
    k : int
        Number of orbitals.

    Returns
    -------
    ndarray, shape (k, n, n)
        Orbitals on ``grid`` (not exactly orthonormal there).
    """
    m = min(COARSE_N, grid.n)
    coarse = Grid(m, grid.box)
    # The band-limited projection of a steep potential rings; its range is what matters.
    v_coarse = np.clip(fourier_resample(potential, m), potential.min(), potential.max())
    orbitals = _dense_lowest(coarse, v_coarse, min(k, m * m))
    if len(orbitals) < k:  # pragma: no cover - only for k > 1024
        rng = np.random.default_rng(0)
        extra = rng.standard_normal((k - len(orbitals), m, m))
        orbitals = np.concatenate([orbitals, extra])
    return fourier_resample(orbitals, grid.n)


def _orthonormal_basis(block: np.ndarray) -> np.ndarray:
    # SVQB (Stathopoulos & Wu 2002): orthonormalise columns through the Gram matrix and
    # drop directions that are numerically dependent. Two passes: one pass leaves errors
    # of order eps / (smallest kept Gram eigenvalue).
    for _ in range(2):
        gram = block.T @ block
        scale = 1.0 / np.sqrt(np.maximum(np.diag(gram), 1e-300))
        gram = gram * scale[:, None] * scale[None, :]
        values, vectors = np.linalg.eigh(gram)
        keep = values > 1e-12 * values[-1]
        block = block @ (scale[:, None] * vectors[:, keep] / np.sqrt(values[keep]))
    return block


def _project_out(x: np.ndarray, block: np.ndarray) -> np.ndarray:
    # Remove span(X) from `block` (twice, classical Gram–Schmidt), dropping columns that
    # were almost inside it: once projected they are rounding noise.
    before = np.linalg.norm(block, axis=0)
    for _ in range(2):
        block = block - x @ (x.T @ block)
    keep = np.linalg.norm(block, axis=0) > 1e-10 * before
    return block[:, keep]


def lowest_eigenpairs(
    grid: Grid,
    potential: np.ndarray,
    k: int,
    guess: np.ndarray | None = None,
    nonlocal_op: Callable[[np.ndarray], np.ndarray] | None = None,
    tol: float = 1e-8,
    maxiter: int = 300,
) -> Eigenpairs:
    """Return the ``k`` lowest eigenpairs of ``H = -½∇² + v(r) [+ V_nl]`` on ``grid``.

    Parameters
    ----------
    grid : Grid
        Real-space grid (spacing ``h`` bohr).
    potential : ndarray, shape (n, n)
        Local potential ``v(r)`` in Hartree.
    k : int
        Number of eigenpairs.
    guess : ndarray, shape (k, n, n), optional
        Starting orbitals; by default a coarse-grid solution (:func:`coarse_guess`).
    nonlocal_op : callable, optional
        Maps orbitals ``(m, n, n)`` to ``V_nl φ`` of the same shape (Hartree bohr⁻¹);
        must be symmetric. Used for exact exchange.
    tol : float
        Stop when every residual ``‖Hφ - εφ‖`` (unit-norm φ, Hartree) is below ``tol``.
    maxiter : int
        Iteration limit; the achieved residuals are returned for the caller to judge.

    Returns
    -------
    Eigenpairs
        Values ascending, orbitals ``(k, n, n)`` with ``Σ |φ|² h² = 1``.

    Notes
    -----
    A block LOBPCG (Knyazev 2001) with the search space ``[X, T R, P]``, where ``T`` is
    the Fourier preconditioner and ``P = X_new - X (Xᵀ X_new)`` the implicit conjugate
    direction; the space is orthonormalised by SVQB so that a vanishing ``P`` (at
    convergence, or in a degenerate shell) is dropped instead of breaking the
    Rayleigh–Ritz step. ``H`` is applied to the new directions (at most ``2k`` vectors)
    in every iteration rather than updated by recurrences, which lose their accuracy as
    ``P`` shrinks. The preconditioner is ``D^{-1/2} (½k² + c)^{-1} D^{-1/2}`` with
    ``D = 1 + max(v - ε_k, 0)/c``, ``c = max(1, ε_k - ε_1)`` from the guess's Ritz values:
    the real-space factor tames the walls of a well, where ``v ≫ ε``. Memory: about
    ``10 k n²`` float64 numbers (6 MiB at ``k = 8, n = 96``).
    """
    n = grid.n
    size = n * n

    def apply_h(block: np.ndarray) -> np.ndarray:
        psi = block.T.reshape(-1, n, n)
        out = grid.kinetic(psi) + potential * psi
        if nonlocal_op is not None:
            out = out + nonlocal_op(psi)
        return out.reshape(psi.shape[0], size).T

    scaling = np.ones_like(potential)
    shift = 1.0

    def precondition(block: np.ndarray) -> np.ndarray:
        psi = block.T.reshape(-1, n, n) * scaling
        out = grid.ifft(grid.fft(psi) / (0.5 * grid.k2 + shift)) * scaling
        return out.reshape(psi.shape[0], size).T

    start = coarse_guess(grid, potential, k) if guess is None else np.asarray(guess)
    x = _orthonormal_basis(start.reshape(k, size).T)
    if x.shape[1] < k:
        raise ValueError(
            f"expected {k} linearly independent guess orbitals. "
            f"Received: guess of rank {x.shape[1]}"
        )
    hx = apply_h(x)
    small = x.T @ hx
    guess_values = np.linalg.eigvalsh(0.5 * (small + small.T))
    # T = D^{-1/2} (½k² + c)^{-1} D^{-1/2} with D = 1 + max(v - ε_k, 0) / c: the Fourier
    # part handles the kinetic energy, D the classically forbidden regions where v ≫ ε
    # (the walls of a harmonic well), which a kinetic-only preconditioner leaves
    # ill-conditioned (10x more iterations for an SHO filling the box).
    shift = max(1.0, float(guess_values[-1] - guess_values[0]))
    scaling = 1.0 / np.sqrt(1.0 + np.maximum(potential - guess_values[-1], 0.0) / shift)
    p = None
    values = np.zeros(k)
    residuals = np.full(k, np.inf)
    for _ in range(maxiter + 1):
        # Rayleigh–Ritz in span(X): sorted Ritz pairs.
        small = x.T @ hx
        values, vectors = np.linalg.eigh(0.5 * (small + small.T))
        x, hx = x @ vectors, hx @ vectors
        r = hx - x * values
        residuals = np.linalg.norm(r, axis=0)
        if residuals.max() < tol:
            break
        # Soft locking: converged columns add no new directions.
        blocks = [_project_out(x, precondition(r[:, residuals >= tol]))]
        if p is not None:
            blocks.append(_project_out(x, p))
        z = _orthonormal_basis(np.hstack(blocks))
        z = _orthonormal_basis(_project_out(x, z))
        if z.shape[1] == 0:
            break
        # H z is applied, not updated from earlier products: the implicit direction P
        # shrinks with the residual and an updated H P would lose all its digits.
        basis, h_basis = np.hstack([x, z]), np.hstack([hx, apply_h(z)])
        small = basis.T @ h_basis
        _, ritz = np.linalg.eigh(0.5 * (small + small.T))
        x_new, hx = basis @ ritz[:, :k], h_basis @ ritz[:, :k]
        p = x_new - x @ (x.T @ x_new)
        x = x_new
    orbitals = x.T.reshape(k, n, n) / grid.h
    return Eigenpairs(values=values, orbitals=orbitals, residuals=residuals)
