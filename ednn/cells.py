"""Cells of 2D sheets: periodic in x and y, vacuum along z.

The rasterizer (:mod:`ednn.raster`) needs a rectangular in-plane cell with ``a1`` along x and
``a2`` along y, so that the image is exactly periodic.  This module brings a structure there:

* :func:`to_rectangular` turns a periodic sheet (rectangular, hexagonal or oblique cell) into
  an equivalent rectangular supercell, rotated so that its first vector lies along x.
* :func:`flake_box` puts a non-periodic flake into a padded rectangular bounding box.
* :func:`prepare_sheet` chooses between the two from ``atoms.pbc``.

Lengths are in Å, angles in degrees.  Only numpy and ASE are imported.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from ase import Atoms
from ase.build import make_supercell

from ednn._validation import (
    check_nonempty,
    check_nonnegative,
    check_positive,
    check_positive_int,
)

__all__ = [
    "check_sheet_cell",
    "flake_box",
    "in_plane_angle",
    "is_periodic_sheet",
    "prepare_sheet",
    "rectangular_supercell_matrix",
    "to_rectangular",
]

logger = logging.getLogger(__name__)


def _check_atoms(atoms: object) -> Atoms:
    if not isinstance(atoms, Atoms):
        raise TypeError(
            f"`atoms` must be an ase.Atoms object. Received: atoms of type {type(atoms).__name__}."
        )
    check_nonempty(len(atoms), "atoms")
    return atoms


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


def in_plane_angle(cell: object) -> float:
    """Angle between the in-plane cell vectors ``a1`` and ``a2``.

    Parameters
    ----------
    cell : array_like, shape (3, 3), or ase.cell.Cell
        Cell vectors as rows, in Å.

    Returns
    -------
    float
        The angle in degrees, in [0, 180].

    Example
    -------
    >>> from ase.build import graphene
    >>> round(in_plane_angle(graphene().cell), 6)
    120.0
    """
    cell = np.asarray(cell, dtype=np.float64)
    return _angle_deg(cell[0], cell[1])


def check_sheet_cell(cell: object, tol: float = 1e-6) -> None:
    """Check that a cell describes a sheet in the xy-plane with vacuum along z.

    ``a1`` and ``a2`` must be non-zero and lie in the xy-plane, and ``a3`` (if non-zero) must be
    parallel to z, i.e. perpendicular to the sheet.

    Parameters
    ----------
    cell : array_like, shape (3, 3), or ase.cell.Cell
        Cell vectors as rows, in Å.
    tol : float, default 1e-6
        Tolerance on direction cosines (dimensionless): a vector counts as lying in the
        xy-plane if ``|a_z| <= tol * |a|``.

    Raises
    ------
    ValueError
        Naming the offending vector and its angle.

    Example
    -------
    >>> from ase.build import graphene
    >>> check_sheet_cell(graphene(vacuum=10.0).cell)
    """
    cell = np.asarray(cell, dtype=np.float64)
    hint = (
        "Rotate the structure so that the sheet lies in the xy-plane with vacuum along z "
        "(e.g. with atoms.rotate(..., rotate_cell=True))."
    )
    for i in (0, 1):
        length = np.linalg.norm(cell[i])
        if length <= tol:
            raise ValueError(
                f"A periodic sheet needs non-zero in-plane cell vectors a1 and a2 (Å). "
                f"Received: a{i + 1}={cell[i].tolist()}."
            )
        if abs(cell[i, 2]) > tol * length:
            tilt = math.degrees(math.asin(min(1.0, abs(cell[i, 2]) / length)))
            raise ValueError(
                f"The in-plane cell vector a{i + 1} must lie in the xy-plane (the sheet plane). "
                f"{hint} Received: a{i + 1}={cell[i].tolist()} at {tilt:.1f}° to the xy-plane."
            )
    length3 = np.linalg.norm(cell[2])
    if length3 > tol and np.linalg.norm(cell[2, :2]) > tol * length3:
        tilt = _angle_deg(cell[2], np.array([0.0, 0.0, math.copysign(1.0, cell[2, 2] or 1.0)]))
        raise ValueError(
            f"The out-of-plane cell vector a3 must be perpendicular to the sheet (parallel to z). "
            f"{hint} Received: a3={cell[2].tolist()} at {tilt:.1f}° to the z axis."
        )


def is_periodic_sheet(atoms: Atoms) -> bool:
    """Whether ``atoms`` is a periodic sheet (True) or a non-periodic flake (False).

    Parameters
    ----------
    atoms : ase.Atoms
        The structure; only ``atoms.pbc[:2]`` is read (``pbc[2]`` is free).

    Returns
    -------
    bool
        True if periodic along x and y, False if periodic along neither.

    Raises
    ------
    ValueError
        If periodic along exactly one in-plane axis (ribbons are not supported).

    Example
    -------
    >>> from ase.build import graphene
    >>> is_periodic_sheet(graphene())
    True
    """
    pbc = tuple(bool(p) for p in atoms.pbc[:2])
    if pbc == (True, True):
        return True
    if pbc == (False, False):
        return False
    raise ValueError(
        "A structure must be periodic along both in-plane axes (a sheet) or along neither "
        "(a flake); ribbons periodic along one axis are not supported. Set atoms.pbc to "
        f"(True, True, ...) or (False, False, ...). Received: atoms.pbc={atoms.pbc.tolist()}."
    )


def _perpendicular_coefficients(gram_a: np.ndarray, max_denominator: int) -> tuple[int, int]:
    """Smallest integer ``m`` with ``m @ gram_a = 0`` (up to rounding), by a rational fit."""
    g0, g1 = float(gram_a[0]), float(gram_a[1])
    if abs(g0) <= 1e-12 * abs(g1):
        return (1, 0)
    if abs(g1) <= 1e-12 * abs(g0):
        return (0, 1)
    ratio = Fraction(-g1 / g0).limit_denominator(max_denominator)
    return (ratio.numerator, ratio.denominator)


def rectangular_supercell_matrix(
    cell: object, max_coeff: int = 4, tol: float = 1e-6, max_multiplicity: int = 64
) -> np.ndarray:
    """Integer matrix of the smallest rectangular supercell of a sheet's in-plane cell.

    For each lattice vector ``A = n1 a1 + n2 a2`` with ``|n1|, |n2| <= max_coeff``, finds the
    shortest lattice vector ``B = m1 a1 + m2 a2`` perpendicular to it (if any), and keeps the
    pair of smallest area.  Among equal areas it prefers ``A = a1``, then short vectors.
    ``B`` is oriented so that ``A x B`` points along +z.  The supercell holds ``|det P|``
    copies of the input cell, so its energy is ``|det P|`` times the energy of the input.

    Parameters
    ----------
    cell : array_like, shape (3, 3), or ase.cell.Cell
        Cell vectors as rows, in Å; ``a1``, ``a2`` in the xy-plane.
    max_coeff : int, default 4
        Largest absolute integer coefficient of ``A``.
    tol : float, default 1e-6
        Tolerance on the cosine of the angle between ``A`` and ``B``.
    max_multiplicity : int, default 64
        Largest number of copies of the input cell accepted in the supercell.

    Returns
    -------
    numpy.ndarray, int, shape (3, 3)
        ``P`` with rows ``(n1, n2, 0)``, ``(m1, m2, 0)``, ``(0, 0, 1)``: the supercell is
        ``P @ cell``, as in :func:`ase.build.make_supercell`.

    Raises
    ------
    ValueError
        If no rectangular supercell within these limits exists; the message says how to
        build one by hand.

    Notes
    -----
    A hexagonal primitive cell needs 2 copies.  An ``(n, m, 1)`` repetition of it with
    ``n != m`` may need many more (6 for ``(10, 6, 1)``): build large sheets by repeating the
    rectangular cell instead, ``to_rectangular(primitive) * (nx, ny, 1)``.

    Example
    -------
    >>> from ase.build import graphene
    >>> rectangular_supercell_matrix(graphene().cell).tolist()
    [[1, 0, 0], [1, 2, 0], [0, 0, 1]]
    """
    cell = np.asarray(cell, dtype=np.float64)
    check_sheet_cell(cell, tol=tol)
    max_coeff = check_positive_int(max_coeff, "max_coeff")
    max_multiplicity = check_positive_int(max_multiplicity, "max_multiplicity")
    basis = cell[:2, :2]
    gram = basis @ basis.T
    best: tuple | None = None
    smallest_too_large = None
    for n in itertools.product(range(-max_coeff, max_coeff + 1), repeat=2):
        if math.gcd(*n) != 1:  # zero or a multiple of a shorter vector
            continue
        m = _perpendicular_coefficients(gram @ n, max_denominator=4 * max_coeff * max_multiplicity)
        a_vec, b_vec = np.array(n) @ basis, np.array(m) @ basis
        cosine = a_vec @ b_vec / (np.linalg.norm(a_vec) * np.linalg.norm(b_vec))
        det = abs(n[0] * m[1] - n[1] * m[0])
        if det == 0 or abs(cosine) > tol:
            continue
        if det > max_multiplicity:
            smallest_too_large = min(det, smallest_too_large or det)
            continue
        key = (det, n != (1, 0), a_vec @ a_vec + b_vec @ b_vec, n, m)
        if best is None or key < best:
            best = key
    if best is None:
        found = (
            f" (the smallest within tol={tol} holds {smallest_too_large} copies)"
            if smallest_too_large
            else ""
        )
        raise ValueError(
            f"The in-plane cell (|a1|={np.linalg.norm(cell[0]):.4g} Å, "
            f"|a2|={np.linalg.norm(cell[1]):.4g} Å, angle {in_plane_angle(cell):.1f}°) must "
            "have a small rectangular supercell, but none with at most "
            f"max_multiplicity={max_multiplicity} copies of the cell and first-vector "
            f"coefficients up to max_coeff={max_coeff} exists{found}. Build a rectangular "
            "cell first, e.g. with ase.build.make_supercell(atoms, P) for an integer 3x3 "
            "matrix P that makes a1 ⟂ a2 (then rotate a1 onto x), or repeat a rectangular "
            "unit cell (to_rectangular(primitive) * (nx, ny, 1)). "
            f"Received: cell={np.round(cell, 6).tolist()}."
        )
    _, _, _, a_coeff, b_coeff = best
    a_vec, b_vec = np.array(a_coeff) @ basis, np.array(b_coeff) @ basis
    # Orient B in Cartesian space (a left-handed input cell then gives det P < 0, which
    # make_supercell handles).
    if a_vec[0] * b_vec[1] - a_vec[1] * b_vec[0] < 0:
        b_coeff = (-b_coeff[0], -b_coeff[1])
    matrix = np.zeros((3, 3), dtype=int)
    matrix[0, :2] = a_coeff
    matrix[1, :2] = b_coeff
    matrix[2, 2] = 1
    return matrix


def _wrap_in_plane(positions: np.ndarray, lengths: Sequence[float]) -> np.ndarray:
    positions = positions.copy()
    for axis, length in enumerate(lengths):
        wrapped = np.mod(positions[:, axis], length)
        # np.mod can return `length` itself for tiny negative inputs.
        wrapped[wrapped >= length] = 0.0
        positions[:, axis] = wrapped
    return positions


def to_rectangular(
    atoms: Atoms, tol: float = 1e-6, max_coeff: int = 4, max_multiplicity: int = 64
) -> Atoms:
    """Equivalent periodic sheet with a rectangular cell: ``a1`` along x, ``a2`` along y.

    A rectangular cell is copied unchanged.  A hexagonal cell (``|a1| = |a2|`` at 60° or
    120°, as made by :func:`ase.build.graphene`) becomes the rectangular supercell
    ``A = a1``, ``B = a1 + 2 a2`` (or ``2 a2 - a1``) with twice the atoms; other oblique cells
    are handled when a small rectangular supercell exists (see
    :func:`rectangular_supercell_matrix`).  The structure is then rotated about z so that
    ``A`` lies along +x and positions are wrapped into the cell in x and y (never in z, so a
    sheet sitting at the cell's z boundary is not split).

    Parameters
    ----------
    atoms : ase.Atoms
        A sheet periodic in x and y; ``a1``, ``a2`` in the xy-plane, ``a3`` along z (or zero).
    tol : float, default 1e-6
        Tolerance on direction cosines (dimensionless).
    max_coeff : int, default 4
        Largest integer coefficient searched for the supercell's first vector.
    max_multiplicity : int, default 64
        Largest number of copies of the input cell accepted in the supercell.

    Returns
    -------
    ase.Atoms
        A new object with ``|det P|`` times as many atoms (the energy scales alike); the
        rectangular cell is ``diag(|A|, |B|, a3_z)`` in Å.  Arrays such as tags and momenta
        are repeated; positions (and momenta) are rotated.

    Raises
    ------
    ValueError
        If the structure is not a periodic sheet, ``a3`` is not perpendicular to the sheet,
        or no small rectangular supercell exists (the message says how to convert).

    Example
    -------
    >>> from ase.build import graphene
    >>> sheet = to_rectangular(graphene(vacuum=10.0))
    >>> len(sheet), sheet.cell.lengths().round(4).tolist()
    (4, [2.46, 4.2608, 20.0])
    """
    atoms = _check_atoms(atoms)
    if not is_periodic_sheet(atoms):
        raise ValueError(
            "to_rectangular needs a sheet periodic along x and y; use flake_box for a "
            f"non-periodic flake. Received: atoms.pbc={atoms.pbc.tolist()}."
        )
    cell = atoms.cell.array
    matrix = rectangular_supercell_matrix(
        cell, max_coeff=max_coeff, tol=tol, max_multiplicity=max_multiplicity
    )
    multiplicity = abs(round(np.linalg.det(matrix)))
    if multiplicity == 1 and np.array_equal(matrix, np.eye(3, dtype=int)):
        sheet = atoms.copy()
    else:
        sheet = make_supercell(atoms, matrix, wrap=False)
        sheet.info = dict(atoms.info)
        sheet.pbc = atoms.pbc
        logger.info(
            "Converted the in-plane cell (angle %.1f°, %d atoms) to a rectangular supercell "
            "with %d atoms (P=%s).",
            in_plane_angle(cell),
            len(atoms),
            len(sheet),
            matrix[:2, :2].tolist(),
        )
    new_cell = sheet.cell.array
    a_vec, b_vec = new_cell[0], new_cell[1]
    theta = math.atan2(a_vec[1], a_vec[0])
    positions = sheet.positions
    if theta != 0.0:
        c, s = math.cos(-theta), math.sin(-theta)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        positions = positions @ rotation.T
        if sheet.has("momenta"):
            sheet.set_momenta(sheet.get_momenta() @ rotation.T, apply_constraint=False)
    lengths = (float(np.linalg.norm(a_vec[:2])), float(np.linalg.norm(b_vec[:2])))
    sheet.set_cell(
        [[lengths[0], 0.0, 0.0], [0.0, lengths[1], 0.0], [0.0, 0.0, new_cell[2, 2]]],
        scale_atoms=False,
    )
    sheet.positions = _wrap_in_plane(positions, lengths)
    return sheet


def flake_box(
    atoms: Atoms,
    padding: float = 8.0,
    multiple: float | Sequence[float] | None = None,
    lengths: Sequence[float] | None = None,
) -> Atoms:
    """Put a non-periodic flake into a rectangular bounding box with vacuum padding.

    The flake is translated so that its in-plane bounding box is centred in a rectangular
    cell; the cell has ``pbc=False`` in-plane (the rasterizer then uses zero, non-wrapping
    boundaries).  The orientation is not changed.

    Parameters
    ----------
    atoms : ase.Atoms
        Any structure; its cell and in-plane ``pbc`` are ignored and replaced.
    padding : float, default 8.0
        Vacuum (Å) between the outermost atoms and the box edges in x and y; also used
        along z for the cell's third vector.
    multiple : float or (float, float), optional
        Round the box lengths ``(Lx, Ly)`` up to a multiple of this (Å), e.g.
        ``spacing * focus`` so that the image is a whole number of pixels and focus regions.
    lengths : (float, float), optional
        Fixed box lengths ``(Lx, Ly)`` in Å instead of the padded bounding box; they must hold
        the flake plus ``padding`` on each side.

    Returns
    -------
    ase.Atoms
        A copy with cell ``diag(Lx, Ly, Lz)`` and ``pbc=(False, False, atoms.pbc[2])``.

    Example
    -------
    >>> from ase import Atoms
    >>> flake = flake_box(Atoms("C2", positions=[[0, 0, 0], [1.42, 0, 0]]), padding=8.0)
    >>> flake.cell.lengths().round(2).tolist(), flake.positions[0].round(2).tolist()
    ([17.42, 16.0, 16.0], [8.0, 8.0, 8.0])
    """
    atoms = _check_atoms(atoms)
    padding = check_nonnegative(padding, "padding", "Å")
    positions = atoms.positions
    lower, upper = positions.min(axis=0), positions.max(axis=0)
    extent = upper - lower
    needed = extent[:2] + 2.0 * padding
    if lengths is not None:
        box = np.array(
            [
                check_positive(lengths[0], "lengths[0]", "Å"),
                check_positive(lengths[1], "lengths[1]", "Å"),
            ]
        )
        if np.any(box < needed - 1e-9):
            raise ValueError(
                "`lengths` must hold the flake plus the padding on each side: at least "
                f"({needed[0]:.4g}, {needed[1]:.4g}) Å. Received: lengths={tuple(lengths)}, "
                f"padding={padding}."
            )
    else:
        box = np.maximum(needed, 1e-3)
        if multiple is not None:
            step = np.broadcast_to(np.asarray(multiple, dtype=np.float64), (2,))
            for axis in (0, 1):
                check_positive(float(step[axis]), "multiple", "Å")
            box = np.ceil(box / step - 1e-9) * step
    height = float(extent[2] + 2.0 * padding) or 1.0
    shift = np.array([box[0] / 2, box[1] / 2, height / 2]) - (lower + upper) / 2
    flake = atoms.copy()
    flake.set_cell([[box[0], 0.0, 0.0], [0.0, box[1], 0.0], [0.0, 0.0, height]])
    flake.positions = positions + shift
    flake.pbc = (False, False, bool(atoms.pbc[2]))
    return flake


def prepare_sheet(
    atoms: Atoms,
    tol: float = 1e-6,
    padding: float = 8.0,
    multiple: float | Sequence[float] | None = None,
) -> Atoms:
    """Bring any supported structure to a rectangular cell for rasterizing.

    Periodic sheets go through :func:`to_rectangular`, non-periodic flakes through
    :func:`flake_box`.

    Parameters
    ----------
    atoms : ase.Atoms
        Sheet (``pbc`` True in x and y) or flake (``pbc`` False in x and y).
    tol : float, default 1e-6
        Tolerance on direction cosines for the sheet cell.
    padding : float, default 8.0
        Vacuum around a flake (Å).
    multiple : float or (float, float), optional
        For a flake: round its box lengths up to a multiple of this (Å).

    Returns
    -------
    ase.Atoms
        A new object with a rectangular cell; check ``all(result.pbc[:2])`` to tell
        a sheet from a flake.

    Example
    -------
    >>> from ase.build import graphene
    >>> len(prepare_sheet(graphene(vacuum=10.0) * (3, 3, 1)))
    36
    """
    atoms = _check_atoms(atoms)
    if is_periodic_sheet(atoms):
        return to_rectangular(atoms, tol=tol)
    return flake_box(atoms, padding=padding, multiple=multiple)
