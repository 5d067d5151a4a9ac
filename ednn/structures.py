"""Builders for rectangular graphene, hBN and C|BN sheets with strain and point defects.

Every structure is a 2D sheet in the xy plane of a rectangular periodic cell with vacuum
along z.  The repeat unit is the 4-atom orthorhombic cell of the honeycomb lattice,
``a × √3 a`` (Å), with the zigzag direction along x.  Sublattice A holds B in hBN and
sublattice B holds N.

All randomness goes through a :class:`numpy.random.Generator` passed by the caller, so a
structure is a pure function of its recipe and seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

A_GRAPHENE = 2.46  # Å, lattice constant of graphene
A_HBN = 2.50  # Å, lattice constant of hBN

MATERIALS = ("graphene", "hbn", "hetero")
PATTERNS = ("stripes", "dot", "triangle", "random")
DEFECTS = (
    "none",
    "vacancy",
    "divacancy",
    "stone_wales",
    "antisite",
    "c_in_hbn",
    "bn_in_graphene",
)


@dataclass(frozen=True)
class Honeycomb:
    """Sites of a rectangular honeycomb supercell.

    Attributes
    ----------
    positions : ndarray, shape (n, 3)
        Cartesian positions in Å, sheet at ``z = vacuum / 2``.
    sublattice : ndarray of int, shape (n,)
        0 for sublattice A, 1 for B.
    cell : ndarray, shape (3,)
        Orthorhombic cell lengths in Å.
    """

    positions: np.ndarray
    sublattice: np.ndarray
    cell: np.ndarray


def honeycomb(nx: int, ny: int, a: float, vacuum: float = 20.0) -> Honeycomb:
    """Sites of ``nx × ny`` rectangular 4-atom cells of a honeycomb lattice.

    Parameters
    ----------
    nx, ny : int
        Repeats along x (length ``a``) and y (length ``√3 a``); ``4 nx ny`` atoms.
    a : float
        Lattice constant in Å (bond length ``a / √3``).
    vacuum : float
        Cell length along z in Å.

    Returns
    -------
    Honeycomb
        Positions, sublattice labels and cell lengths.
    """
    if nx < 1 or ny < 1:
        raise ValueError(f"`nx` and `ny` must be >= 1. Received: nx={nx}, ny={ny}")
    d = a / np.sqrt(3.0)
    basis = np.array([[0.0, 0.0], [0.0, d], [a / 2, 1.5 * d], [a / 2, 2.5 * d]])
    sub = np.array([0, 1, 0, 1])
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    shifts = np.stack([ii.ravel() * a, jj.ravel() * 3 * d], axis=1)
    xy = (shifts[:, None, :] + basis[None, :, :]).reshape(-1, 2)
    # Shift off the cell boundary so that wrapped coordinates are unambiguous.
    xy = xy + np.array([a / 4, d / 4])
    positions = np.column_stack([xy, np.full(len(xy), vacuum / 2)])
    return Honeycomb(positions, np.tile(sub, nx * ny), np.array([nx * a, ny * 3 * d, vacuum]))


def _domain_mask(xy: np.ndarray, cell: np.ndarray, pattern: str, rng: np.random.Generator):
    """Boolean mask of sites inside the hBN domain of a C|BN heterostructure."""
    lx, ly = cell[0], cell[1]
    frac = rng.uniform(0.3, 0.7)
    if pattern == "stripes":
        axis = int(rng.integers(2))
        length = (lx, ly)[axis]
        start = rng.uniform(0, length)
        return ((xy[:, axis] - start) % length) < frac * length
    centre = rng.uniform([0, 0], [lx, ly])
    delta = xy - centre
    delta -= np.round(delta / [lx, ly]) * [lx, ly]  # minimum image
    if pattern == "dot":
        radius = np.sqrt(frac * lx * ly / np.pi)
        radius = min(radius, 0.48 * min(lx, ly))
        return np.hypot(delta[:, 0], delta[:, 1]) < radius
    if pattern == "triangle":
        # Equilateral triangle with edges along zigzag directions (0°, 60°, 120°).
        size = min(np.sqrt(frac * lx * ly * 4 / np.sqrt(3)), 0.95 * min(lx, ly))
        inradius = size / (2 * np.sqrt(3))
        angles = np.deg2rad([90.0, 210.0, 330.0]) + np.pi * int(rng.integers(2))
        normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return np.all(delta @ normals.T < inradius, axis=1)
    if pattern == "random":
        # Smooth random field on a coarse periodic grid, thresholded at the quantile that
        # gives the requested hBN fraction.
        k = 4
        coeff = rng.normal(size=(2 * k + 1, 2 * k + 1)) + 1j * rng.normal(
            size=(2 * k + 1, 2 * k + 1)
        )
        ks = np.arange(-k, k + 1)
        kx, ky = np.meshgrid(ks, ks, indexing="ij")
        damp = np.exp(-(kx**2 + ky**2) / 4.0)
        phase = (
            2
            * np.pi
            * (
                xy[:, 0, None] * kx.ravel()[None, :] / lx
                + xy[:, 1, None] * ky.ravel()[None, :] / ly
            )
        )
        field = np.real(np.exp(1j * phase) @ (coeff * damp).ravel())
        return field < np.quantile(field, frac)
    raise ValueError(f"`pattern` must be one of {PATTERNS}. Received: pattern={pattern!r}")


def _neighbours(positions: np.ndarray, cell: np.ndarray, i: int, cutoff: float = 1.7):
    delta = positions[:, :2] - positions[i, :2]
    delta -= np.round(delta / cell[:2]) * cell[:2]
    dist = np.hypot(delta[:, 0], delta[:, 1])
    return np.flatnonzero((dist > 1e-6) & (dist < cutoff)), delta


def _stone_wales(positions: np.ndarray, cell: np.ndarray, rng: np.random.Generator) -> None:
    """Rotate one bond by 90° about its midpoint (in place)."""
    i = int(rng.integers(len(positions)))
    neigh, delta = _neighbours(positions, cell, i)
    j = int(rng.choice(neigh))
    mid = positions[i, :2] + delta[j] / 2
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    half = delta[j] / 2
    positions[i, :2] = mid - rot @ half
    positions[j, :2] = mid + rot @ half


def build_sheet(
    rng: np.random.Generator,
    material: str,
    nx: int,
    ny: int,
    pattern: str | None = None,
    defect: str = "none",
    strain: float = 0.0,
    vacuum: float = 20.0,
) -> tuple[Atoms, dict]:
    """Build one sheet from a recipe.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (domain shapes, defect sites, strain).
    material : {"graphene", "hbn", "hetero"}
        ``hetero`` is an in-plane C|BN heterostructure at the composition-weighted
        (Vegard) lattice constant.
    nx, ny : int
        Repeats of the 4-atom ``a × √3 a`` cell.
    pattern : {"stripes", "dot", "triangle", "random"}, optional
        Shape of the hBN domain in a heterostructure (drawn at random if None).
    defect : str
        One of :data:`DEFECTS`.
    strain : float
        Maximum absolute lattice strain; the x and y strains are drawn uniformly from
        ``[-strain, strain]`` independently.
    vacuum : float
        Cell length along z in Å.

    Returns
    -------
    atoms : ase.Atoms
        Periodic in all three directions, sheet at ``z = vacuum / 2``.
    description : dict
        What was built (material, pattern, defect, strain, lattice constant), for provenance.
    """
    if material not in MATERIALS:
        raise ValueError(f"`material` must be one of {MATERIALS}. Received: material={material!r}")
    if defect not in DEFECTS:
        raise ValueError(f"`defect` must be one of {DEFECTS}. Received: defect={defect!r}")
    # Domains are drawn on a unit-lattice-constant grid, then the lattice is scaled.
    unit = honeycomb(nx, ny, 1.0, vacuum)
    symbols = np.where(unit.sublattice == 0, "B", "N").astype("<U1")
    fraction_bn = 1.0
    if material == "graphene":
        symbols[:] = "C"
        fraction_bn = 0.0
    elif material == "hetero":
        pattern = pattern or str(rng.choice(PATTERNS))
        in_bn = _domain_mask(unit.positions[:, :2], unit.cell, pattern, rng)
        symbols[~in_bn] = "C"
        fraction_bn = float(in_bn.mean())
    a = A_GRAPHENE + fraction_bn * (A_HBN - A_GRAPHENE)
    sheet = honeycomb(nx, ny, a, vacuum)
    positions = sheet.positions.copy()
    cell = sheet.cell.copy()

    keep = np.ones(len(positions), dtype=bool)
    if defect == "vacancy":
        keep[int(rng.integers(len(positions)))] = False
    elif defect == "divacancy":
        i = int(rng.integers(len(positions)))
        neigh, _ = _neighbours(positions, cell, i)
        keep[[i, int(rng.choice(neigh))]] = False
    elif defect == "stone_wales":
        _stone_wales(positions, cell, rng)
    elif defect == "antisite":
        bn = np.flatnonzero(symbols != "C")
        if len(bn) == 0:
            raise ValueError(
                "an antisite defect needs B or N atoms; use material='hbn' or 'hetero'"
            )
        i = int(rng.choice(bn))
        symbols[i] = "N" if symbols[i] == "B" else "B"
    elif defect == "c_in_hbn":
        bn = np.flatnonzero(symbols != "C")
        if len(bn) == 0:
            raise ValueError("'c_in_hbn' needs B or N atoms; use material='hbn' or 'hetero'")
        symbols[int(rng.choice(bn))] = "C"
    elif defect == "bn_in_graphene":
        cc = np.flatnonzero(symbols == "C")
        if len(cc) == 0:
            raise ValueError("'bn_in_graphene' needs C atoms; use material='graphene' or 'hetero'")
        symbols[int(rng.choice(cc))] = str(rng.choice(["B", "N"]))

    eps = rng.uniform(-strain, strain, size=2) if strain > 0 else np.zeros(2)
    scale = np.array([1 + eps[0], 1 + eps[1], 1.0])
    atoms = Atoms(
        symbols=list(symbols[keep]),
        positions=positions[keep] * scale,
        cell=cell * scale,
        pbc=True,
    )
    atoms.wrap()
    description = {
        "material": material,
        "pattern": pattern or "none",
        "defect": defect,
        "strain_x": float(eps[0]),
        "strain_y": float(eps[1]),
        "lattice_a": float(a),
        "nx": int(nx),
        "ny": int(ny),
    }
    return atoms, description


def rippled_graphene(
    n_atoms: int,
    amplitude: float = 0.5,
    waves: int = 3,
    noise: float = 0.05,
    seed: int = 0,
) -> Atoms:
    """Roughly square rectangular graphene sheet of about ``n_atoms`` atoms, rippled.

    For benchmarks: ``z`` gets ``amplitude · sin(2π waves x / Lx)`` plus Gaussian noise of
    width ``noise`` (all in Å), so that the height channel has work to do.

    Parameters
    ----------
    n_atoms : int
        Target atom count (the result is the nearest multiple of 4).
    amplitude, noise : float
        Ripple amplitude and random height noise in Å.
    waves : int
        Ripple wavelengths along x.
    seed : int
        Seed of the noise.
    """
    from ase.build import graphene

    from ednn import cells

    unit = cells.to_rectangular(graphene(vacuum=10.0))
    lx, ly = unit.cell[0, 0], unit.cell[1, 1]
    nx = max(1, round(np.sqrt(n_atoms / 4 * ly / lx)))
    ny = max(1, round(n_atoms / 4 / nx))
    sheet = unit * (nx, ny, 1)
    rng = np.random.default_rng(seed)
    x = sheet.positions[:, 0] / sheet.cell[0, 0]
    ripple = amplitude * np.sin(2 * np.pi * waves * x)
    sheet.positions[:, 2] += ripple + rng.normal(0, noise, len(sheet))
    return sheet
