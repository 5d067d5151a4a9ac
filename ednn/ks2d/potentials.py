"""External potentials for 2D model systems (Hartree), as continuous functions of position.

Two kinds, after Mills, Spanner & Tamblyn, Phys. Rev. A 96, 042113 (2017) and Ryczko,
Strubbe & Tamblyn, Phys. Rev. A 100, 022512 (2019):

``"sho"``
    Anisotropic simple harmonic oscillator ``v = ½ ω_x² (x - c_x)² + ½ ω_y² (y - c_y)²``.
    Defaults: ``ω_x, ω_y`` uniform in [0.3, 1.0] Ha, ``c_x, c_y`` uniform in [-2, 2] bohr.
    The loosest case (ω_x = ω_y = 0.3, centre (2, 2), N = 8, LDA) leaves ~1e-7 bohr⁻² at
    the edge of the default 24 bohr box (``max(n) ≈ 0.11``); the dataset generator rejects
    densities above 1e-6 bohr⁻² there. A softer well needs a larger box.
``"blobs"``
    Random smooth wells: a binary random mask of ``resolution × resolution`` cells on the
    central ``fill`` fraction of the box, blurred by a Gaussian of width σ, normalised to a
    maximum of 1, scaled to a random depth and inverted into a well,
    ``v = -depth · (G_σ * mask) / max(G_σ * mask)``. The blur of a square cell is a product
    of error functions, so ``v`` is evaluated in closed form at any point: the same seed gives
    the same potential on every grid (needed for grid-convergence studies), unlike a blur of a
    pixel image. The maximum is taken on a fixed 256² reference grid of the box.
    Defaults: resolution 6, fill 0.5, σ in [1.0, 2.0] bohr, depth in [3, 8] Ha.

Every sampler takes a :class:`numpy.random.Generator` (or an int seed) and returns the
potential on the grid and a JSON-serialisable dict of the parameters drawn, so a sample is
reproducible from its seed or from its parameters.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from ednn.ks2d import _validation as check
from ednn.ks2d.grid import Grid

KINDS = ("sho", "blobs")

SHO_DEFAULTS = {"omega": (0.3, 1.0), "centre": (-2.0, 2.0)}
BLOB_DEFAULTS = {"resolution": 6, "fill": 0.5, "sigma": (1.0, 2.0), "depth": (3.0, 8.0)}

_REFERENCE_N = 256


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check.integer(seed, "seed", minimum=0))


def harmonic_potential(
    grid: Grid, omega: tuple[float, float], centre: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Anisotropic harmonic well ``½ ω_x² (x - c_x)² + ½ ω_y² (y - c_y)²`` in Hartree.

    Parameters
    ----------
    grid : Grid
        Real-space grid.
    omega : (float, float)
        Angular frequencies ``(ω_x, ω_y)`` in Hartree (ħ = 1); the levels are
        ``ω_x (n_x + ½) + ω_y (n_y + ½)``.
    centre : (float, float)
        Centre ``(c_x, c_y)`` in bohr.

    Returns
    -------
    ndarray, shape (n, n)

    Example
    -------
    >>> harmonic_potential(Grid(16, 8.0), (1.0, 0.5)).shape
    (16, 16)
    """
    wx, wy = (check.positive(w, "omega") for w in omega)
    x, y = grid.coordinates()
    return 0.5 * wx**2 * (x - centre[0]) ** 2 + 0.5 * wy**2 * (y - centre[1]) ** 2


def random_harmonic(
    grid: Grid,
    seed: int | np.random.Generator,
    omega: tuple[float, float] = SHO_DEFAULTS["omega"],
    centre: tuple[float, float] = SHO_DEFAULTS["centre"],
) -> tuple[np.ndarray, dict]:
    """Draw an anisotropic harmonic well; see the module notes for the default ranges.

    Parameters
    ----------
    grid : Grid
        Real-space grid.
    seed : int or numpy.random.Generator
        Source of randomness.
    omega : (float, float)
        Range of ``ω_x`` and ``ω_y`` in Hartree (each drawn uniformly).
    centre : (float, float)
        Range of ``c_x`` and ``c_y`` in bohr.

    Returns
    -------
    potential : ndarray, shape (n, n)
        In Hartree.
    params : dict
        ``{"kind": "sho", "omega": [ω_x, ω_y], "centre": [c_x, c_y]}``.
    """
    rng = _rng(seed)
    low, high = check.interval(omega, "omega")
    if low <= 0:
        raise ValueError(f"`omega` must be a range of positive frequencies. Received: {omega=}")
    c_low, c_high = check.interval(centre, "centre")
    w = rng.uniform(low, high, size=2)
    c = rng.uniform(c_low, c_high, size=2)
    params = {"kind": "sho", "omega": w.tolist(), "centre": c.tolist()}
    return harmonic_potential(grid, tuple(w), tuple(c)), params


def _blurred_cells(
    x: np.ndarray, y: np.ndarray, cells: np.ndarray, edges: np.ndarray, sigma: float
) -> np.ndarray:
    # Σ over on-cells of the Gaussian blur of the cell's indicator, separable in x and y.
    def profile(u: np.ndarray) -> np.ndarray:
        t = (u[:, None] - edges[None, :]) / (np.sqrt(2.0) * sigma)
        cdf = 0.5 * scipy.special.erf(t)
        return cdf[:, :-1] - cdf[:, 1:]  # (points, cells along the axis)

    return profile(x) @ cells.astype(float) @ profile(y).T


def blob_potential(
    grid: Grid, cells: np.ndarray, sigma: float, depth: float, fill: float
) -> np.ndarray:
    """Smooth well from a binary cell mask, in closed form (see the module notes).

    Parameters
    ----------
    grid : Grid
        Real-space grid.
    cells : ndarray of bool, shape (r, r)
        Mask; cell ``(i, j)`` covers the i-th/j-th of ``r`` equal slices of the central
        ``fill × box`` square along x/y.
    sigma : float
        Gaussian blur width in bohr.
    depth : float
        Depth of the well in Hartree (the potential's minimum is ``-depth``).
    fill : float
        Side of the masked square as a fraction of the box, in (0, 1].

    Returns
    -------
    ndarray, shape (n, n)
    """
    cells = np.asarray(cells, dtype=bool)
    if cells.ndim != 2 or cells.shape[0] != cells.shape[1] or not cells.any():
        raise ValueError(
            "expected a square 2D mask with at least one cell set. "
            f"Received: cells.shape={cells.shape}, cells set={int(cells.sum())}"
        )
    sigma = check.positive(sigma, "sigma")
    depth = check.positive(depth, "depth")
    fill = check.positive(fill, "fill")
    half = 0.5 * fill * grid.box
    edges = np.linspace(-half, half, cells.shape[0] + 1)
    reference = Grid(_REFERENCE_N, grid.box)
    peak = _blurred_cells(reference.x, reference.x, cells, edges, sigma).max()
    return -depth * _blurred_cells(grid.x, grid.x, cells, edges, sigma) / peak


def random_blobs(
    grid: Grid,
    seed: int | np.random.Generator,
    resolution: int = BLOB_DEFAULTS["resolution"],
    fill: float = BLOB_DEFAULTS["fill"],
    sigma: tuple[float, float] = BLOB_DEFAULTS["sigma"],
    depth: tuple[float, float] = BLOB_DEFAULTS["depth"],
) -> tuple[np.ndarray, dict]:
    """Draw a random smooth well (Mills, Spanner & Tamblyn 2017 style).

    Parameters
    ----------
    grid : Grid
        Real-space grid.
    seed : int or numpy.random.Generator
        Source of randomness.
    resolution : int
        Cells per side of the binary mask.
    fill : float
        Side of the masked central square as a fraction of the box.
    sigma : (float, float)
        Range of the blur width in bohr.
    depth : (float, float)
        Range of the well depth in Hartree.

    Returns
    -------
    potential : ndarray, shape (n, n)
        In Hartree, ``-depth <= v <= 0``, ~0 at the box edges.
    params : dict
        ``{"kind": "blobs", "cells": [[0/1, ...], ...], "sigma", "depth", "fill"}``.
    """
    rng = _rng(seed)
    resolution = check.integer(resolution, "resolution", minimum=1)
    s_low, s_high = check.interval(sigma, "sigma")
    d_low, d_high = check.interval(depth, "depth")
    cells = rng.random((resolution, resolution)) < 0.5
    while not cells.any():  # pragma: no cover - probability 2^-r²
        cells = rng.random((resolution, resolution)) < 0.5
    s = float(rng.uniform(s_low, s_high))
    d = float(rng.uniform(d_low, d_high))
    params = {
        "kind": "blobs",
        "cells": cells.astype(int).tolist(),
        "sigma": s,
        "depth": d,
        "fill": float(fill),
    }
    return blob_potential(grid, cells, s, d, fill), params


def sample_potential(
    kind: str, grid: Grid, seed: int | np.random.Generator, **options
) -> tuple[np.ndarray, dict]:
    """Draw a potential of the given ``kind`` (``"sho"`` or ``"blobs"``).

    Parameters
    ----------
    kind : {"sho", "blobs"}
        Which sampler: :func:`random_harmonic` or :func:`random_blobs`.
    grid : Grid
        Real-space grid.
    seed : int or numpy.random.Generator
        Source of randomness.
    **options
        Ranges passed on to the sampler.

    Returns
    -------
    potential : ndarray, shape (n, n)
    params : dict

    Example
    -------
    >>> v, params = sample_potential("sho", Grid(32, 24.0), seed=0)
    >>> params["kind"], v.shape
    ('sho', (32, 32))
    """
    check.choice(kind, "kind", KINDS)
    sampler = random_harmonic if kind == "sho" else random_blobs
    return sampler(grid, seed, **options)


def potential_from_params(grid: Grid, params: dict) -> np.ndarray:
    """Rebuild a potential on ``grid`` from the ``params`` dict of a sampler."""
    kind = check.choice(params.get("kind"), "params['kind']", KINDS)
    if kind == "sho":
        return harmonic_potential(grid, tuple(params["omega"]), tuple(params["centre"]))
    cells = np.array(params["cells"], dtype=bool)
    return blob_potential(grid, cells, params["sigma"], params["depth"], params["fill"])
