"""Rasterize atoms into Gaussian images: the first step of structure -> image -> tiles -> sum.

Each atom becomes a 2D Gaussian of width ``sigma`` (Å) on a pixel grid of ``spacing`` (Å per
pixel), in one channel per species of a fixed species list (or, with ``z_weighted=True``, one
channel weighted by the atomic number Z, as in the original EDNN).  An optional last channel
carries out-of-plane displacements (see :func:`local_heights`).

Conventions
-----------
* Image axis 0 is y and axis 1 is x: ``image[iy, ix, channel]``.  Pixel ``(iy, ix)`` covers
  ``[ix dx, (ix + 1) dx) x [iy dy, (iy + 1) dy)`` of the rectangular cell and the Gaussians
  are sampled at pixel centres ``((ix + 1/2) dx, (iy + 1/2) dy)``.
* Periodic sheets wrap (minimum image): an atom near an edge spreads across it, and the
  image is exactly periodic because the effective spacing is ``L / n`` per axis
  (:func:`grid_for_cell`).  Hexagonal and oblique cells are first converted to a rectangular
  supercell (:func:`ednn.cells.to_rectangular`), non-periodic flakes are put in a padded box
  with zero boundaries (:func:`ednn.cells.flake_box`).
* Channel values are densities in 1/Å² (species), Z/Å² (``z_weighted``) and Å/Å² (height).

The work is linear in the number of atoms: each atom adds a separable ``(2k + 1)²`` stencil,
``k = ceil(4 sigma_max / spacing)``, scatter-added with :func:`numpy.bincount` into small
buffers, one group of nearby atoms at a time, so that scratch memory stays bounded
(:func:`splat_gaussians`).  :func:`rasterize_window` renders only a band or window of a large
sheet.  This module imports numpy, scipy and ASE only.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from scipy.spatial import cKDTree

from ednn import cells
from ednn._validation import (
    as_int_pair,
    check_allowed,
    check_finite_rows,
    check_nonempty,
    check_nonnegative,
    check_positive,
    check_positive_int,
)

__all__ = [
    "RasterLayout",
    "RasterSpec",
    "channel_weights",
    "commensurate_sheet",
    "fill_stretch_channels",
    "grid_for_cell",
    "image_to_png",
    "local_heights",
    "raster_layout",
    "rasterize",
    "rasterize_window",
    "sheet_z_period",
    "splat_gaussians",
]

#: Stencil half-width in units of sigma: the truncated Gaussian tail is below 1e-4.
STENCIL_SIGMAS = 4.0
#: Largest relative deviation of the effective spacing from the requested one.
MAX_SPACING_DEVIATION = 0.1
#: Unit of the ``stretch_y``/``stretch_x`` channels: a value of 1 means pixels 2 % larger.
STRETCH_UNIT = 0.02


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}.")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class RasterSpec:
    """How atoms become an image; stored with a model so that it rasterizes alike.

    Parameters
    ----------
    species : tuple of str, default ("C", "B", "N")
        Chemical symbols, one channel each in this order; a structure may only contain these.
    spacing : float, default 0.1
        Requested pixel size (Å); the effective one is ``L / n`` per axis.
    sigma : float or mapping of str to float, default 0.2
        Gaussian width (Å), or one per species (e.g. ``{"C": 0.2, "B": 0.22, "N": 0.21}``,
        every species given).  Stored as a float or as a tuple of ``(symbol, sigma)`` pairs.
    height_channel : bool, default True
        Add a last channel with out-of-plane displacements (see :func:`local_heights`).
    normalize : bool, default True
        Normalise each atom's discrete stencil so that a channel sums (times the pixel area
        in Å²) to its atom count; if False, use the analytic amplitude ``1 / (2 pi sigma²)``.
    z_weighted : bool, default False
        One channel of Gaussians weighted by the atomic number Z instead of one per species.
    height_radius : float, default 5.0
        In-plane radius (Å) of the neighbourhood whose mean z is the reference height.
    multiple_of : int or (int, int), default 1
        Image size along (y, x) is rounded to a multiple of this, e.g. the model's focus.
    padding : float, default 8.0
        Vacuum (Å) around a non-periodic flake.
    spacing_channels : bool, default False
        Add two constant channels ``stretch_y``, ``stretch_x`` holding the effective pixel
        size's relative deviation from ``spacing``, in units of :data:`STRETCH_UNIT` (2 %).
        The image of a cell whose length is not a whole number of focus regions is
        stretched by up to the spacing tolerance, like a strain of that size; these
        channels tell a model by how much, so that it need not mistake it for strain.

    Example
    -------
    >>> spec = RasterSpec(species=("C",), spacing=0.2, multiple_of=8)
    >>> spec.channel_names, spec.n_channels, spec.multiple_of
    (('C', 'height'), 2, (8, 8))
    >>> RasterSpec.from_dict(spec.to_dict()) == spec
    True
    """

    species: tuple[str, ...] = ("C", "B", "N")
    spacing: float = 0.1
    sigma: float | tuple[tuple[str, float], ...] = 0.2
    height_channel: bool = True
    normalize: bool = True
    z_weighted: bool = False
    height_radius: float = 5.0
    multiple_of: tuple[int, int] = (1, 1)
    padding: float = 8.0
    spacing_channels: bool = False

    def __post_init__(self) -> None:
        species = self.species
        if isinstance(species, str) or not isinstance(species, Sequence):
            raise TypeError(
                "`species` must be a sequence of chemical symbols, e.g. ('C', 'B', 'N'). "
                f"Received: species={species!r}."
            )
        species = tuple(species)
        check_nonempty(len(species), "species", "chemical symbol")
        for symbol in species:
            if not isinstance(symbol, str) or symbol not in atomic_numbers or symbol == "X":
                raise ValueError(
                    "`species` must hold chemical symbols such as 'C' or 'N'. "
                    f"Received: {symbol!r} in species={species!r}."
                )
        if len(set(species)) != len(species):
            raise ValueError(f"`species` must not repeat a symbol. Received: species={species!r}.")
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "spacing", check_positive(self.spacing, "spacing", "Å"))
        object.__setattr__(self, "sigma", self._normalize_sigma(self.sigma, species))
        for name in ("height_channel", "normalize", "z_weighted", "spacing_channels"):
            object.__setattr__(self, name, _check_bool(getattr(self, name), name))
        radius = check_positive(self.height_radius, "height_radius", "Å")
        object.__setattr__(self, "height_radius", radius)
        object.__setattr__(self, "multiple_of", as_int_pair(self.multiple_of, "multiple_of"))
        object.__setattr__(self, "padding", check_nonnegative(self.padding, "padding", "Å"))

    @staticmethod
    def _normalize_sigma(
        sigma: Any, species: tuple[str, ...]
    ) -> float | tuple[tuple[str, float], ...]:
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            return check_positive(sigma, "sigma", "Å")
        if isinstance(sigma, Mapping):
            pairs = dict(sigma)
        elif isinstance(sigma, Sequence) and not isinstance(sigma, str):
            try:
                pairs = dict(sigma)
            except (TypeError, ValueError):
                pairs = None
        else:
            pairs = None
        if pairs is None:
            raise TypeError(
                "`sigma` must be a positive number (Å) or a mapping from each species to one. "
                f"Received: sigma={sigma!r}."
            )
        check_allowed(pairs, species, "keys of `sigma`")
        missing = [s for s in species if s not in pairs]
        if missing:
            raise ValueError(
                f"`sigma` given per species must give every species {list(species)}. "
                f"Received: sigma={dict(pairs)!r} (missing {missing})."
            )
        return tuple((s, check_positive(pairs[s], f"sigma[{s!r}]", "Å")) for s in species)

    @property
    def sigmas(self) -> np.ndarray:
        """Gaussian width (Å) per species, float64 array of shape ``(len(species),)``."""
        if isinstance(self.sigma, float):
            return np.full(len(self.species), self.sigma)
        return np.array([value for _, value in self.sigma])

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the image channels in order, e.g. ``("C", "B", "N", "height")``."""
        names = ("Z",) if self.z_weighted else self.species
        names = (*names, "height") if self.height_channel else names
        return (*names, "stretch_y", "stretch_x") if self.spacing_channels else names

    @property
    def n_channels(self) -> int:
        """Number of image channels."""
        return len(self.channel_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict; :meth:`from_dict` rebuilds an equal spec."""
        return {
            "species": list(self.species),
            "spacing": self.spacing,
            "sigma": self.sigma if isinstance(self.sigma, float) else dict(self.sigma),
            "height_channel": self.height_channel,
            "normalize": self.normalize,
            "z_weighted": self.z_weighted,
            "height_radius": self.height_radius,
            "multiple_of": list(self.multiple_of),
            "padding": self.padding,
            "spacing_channels": self.spacing_channels,
        }

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> RasterSpec:
        """Build a spec from :meth:`to_dict` output; an unknown key is an error naming it."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"RasterSpec keys must be among {sorted(known)}. Received unknown keys {unknown}."
            )
        return cls(**config)


def _resolve_spec(spec: RasterSpec | None, overrides: Mapping[str, Any]) -> RasterSpec:
    if spec is None:
        spec = RasterSpec()
    elif not isinstance(spec, RasterSpec):
        raise TypeError(
            f"`spec` must be a RasterSpec or None. Received: spec of type {type(spec).__name__}."
        )
    given = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(spec, **given) if given else spec


def grid_for_cell(
    cell_lengths: Sequence[float],
    spacing: float,
    multiple_of: int | Sequence[int] = 1,
    grid_shape: Sequence[int] | None = None,
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Pixel grid of an exactly periodic image of a rectangular cell.

    ``H = round(Ly / spacing)`` and ``W = round(Lx / spacing)``, each rounded to a multiple of
    ``multiple_of`` (at least one multiple); the effective spacing is then ``Ly / H`` and
    ``Lx / W``.

    Parameters
    ----------
    cell_lengths : (float, float)
        Cell lengths ``(Lx, Ly)`` in Å, in cell order (x first).
    spacing : float
        Requested pixel size (Å).
    multiple_of : int or (int, int), default 1
        Multiple for ``(H, W)``, in image-axis order (y first).
    grid_shape : (int, int), optional
        Use this ``(H, W)`` instead of the rounded one.

    Returns
    -------
    shape : (int, int)
        ``(H, W)``: image axis 0 is y, axis 1 is x.
    effective_spacing : (float, float)
        ``(Ly / H, Lx / W)`` in Å.

    Raises
    ------
    ValueError
        If an effective spacing differs from ``spacing`` by more than 10 %.

    Example
    -------
    >>> shape, (dy, dx) = grid_for_cell((24.6, 42.6084), spacing=0.1, multiple_of=8)
    >>> shape, round(dy, 5), round(dx, 5)
    ((424, 248), 0.10049, 0.09919)
    """
    lx = check_positive(cell_lengths[0], "cell_lengths[0]", "Å")
    ly = check_positive(cell_lengths[1], "cell_lengths[1]", "Å")
    spacing = check_positive(spacing, "spacing", "Å")
    multiples = as_int_pair(multiple_of, "multiple_of")
    if grid_shape is None:
        shape = tuple(
            max(m, m * round(length / (spacing * m)))
            for length, m in zip((ly, lx), multiples, strict=True)
        )
    else:
        shape = as_int_pair(grid_shape, "grid_shape")
        for axis, (n, m) in enumerate(zip(shape, multiples, strict=True)):
            if n % m:
                raise ValueError(
                    f"`grid_shape` must be a multiple of multiple_of={multiples} along axis "
                    f"{axis}. Received: grid_shape={shape}."
                )
    effective = (ly / shape[0], lx / shape[1])
    for axis, (length, step) in enumerate(zip((ly, lx), effective, strict=True)):
        if abs(step - spacing) > MAX_SPACING_DEVIATION * spacing:
            name = "Ly" if axis == 0 else "Lx"
            raise ValueError(
                f"The cell length {name}={length:.4g} Å must split into "
                f"{shape[axis]} pixels (a multiple of {multiples[axis]}) of about the requested "
                f"spacing, within {MAX_SPACING_DEVIATION:.0%}; that gives {step:.4g} Å. Use a "
                "larger supercell (e.g. atoms * (nx, ny, 1)), a smaller multiple_of or a "
                f"spacing that fits. Received: spacing={spacing}, multiple_of={multiples}, "
                f"grid_shape={grid_shape}."
            )
    return (int(shape[0]), int(shape[1])), effective


def sheet_z_period(sheet: Atoms, periodic: bool) -> float | None:
    """Cell length along z (Å) when a periodic sheet is also periodic in z, else None."""
    if periodic and sheet.pbc[2] and sheet.cell[2, 2] != 0.0:
        return abs(float(sheet.cell[2, 2]))
    return None


def local_heights(
    positions: np.ndarray,
    radius: float = 5.0,
    box: Sequence[float] | None = None,
    z_period: float | None = None,
    chunk_size: int = 100_000,
    targets: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-plane displacement of each atom from its in-plane neighbourhood.

    ``dz_i = z_i - mean(z_j)`` over the atoms ``j`` (``i`` included) whose in-plane distance
    to ``i`` is at most ``radius``, every periodic image counted.  A flat sheet gives 0 at any
    height; a rigid shift of the structure leaves ``dz`` unchanged; ripples and buckling give
    non-zero ``dz``.  Uses :class:`scipy.spatial.cKDTree` (with ``boxsize`` when periodic),
    so the cost is linear in the number of atoms and memory is bounded by ``chunk_size``.

    Parameters
    ----------
    positions : numpy.ndarray, shape (n_atoms, 3)
        Cartesian positions (Å).
    radius : float, default 5.0
        In-plane neighbourhood radius (Å).
    box : (float, float), optional
        Rectangular periodic cell lengths ``(Lx, Ly)`` in Å; None for a non-periodic flake.
    z_period : float, optional
        Cell length along z (Å) if z is periodic too: z differences use the minimum image,
        so a sheet wrapped across the z boundary is handled.
    chunk_size : int, default 100000
        Atoms per neighbour query.
    targets : numpy.ndarray of int, optional
        Indices of the atoms whose ``dz`` is wanted (default: all).  The others only serve
        as neighbours, so a part of a sheet gets the same ``dz`` as in the whole sheet when
        ``positions`` holds every atom within ``radius`` of the targets.

    Returns
    -------
    numpy.ndarray, float64, shape (n_atoms,) or (len(targets),)
        ``dz`` in Å.

    Example
    -------
    >>> pos = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.6]])
    >>> local_heights(pos, radius=2.0).round(3).tolist()
    [-0.2, -0.2, 0.4]
    """
    positions = np.asarray(positions, dtype=np.float64)
    radius = check_positive(radius, "radius", "Å")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if targets is None:
        targets = np.arange(len(positions))
    else:
        targets = np.asarray(targets, dtype=np.int64)
    n_out = len(targets)
    xy, z = positions[:, :2], positions[:, 2]
    if box is not None:
        lengths = np.array([float(box[0]), float(box[1])])
        # cKDTree counts one image per pair; replicate small cells so that it sees them all.
        reps = np.where(lengths <= 2.0 * radius, np.floor(2.0 * radius / lengths) + 1, 1)
        reps = reps.astype(int)
        if reps.prod() > 1:
            shifts = (
                np.stack(
                    np.meshgrid(np.arange(reps[0]), np.arange(reps[1]), indexing="ij"), axis=-1
                ).reshape(-1, 2)
                * lengths
            )
            xy = (xy[None, :, :] + shifts[:, None, :]).reshape(-1, 2)
            z = np.tile(z, len(shifts))
            lengths = lengths * reps
        xy = np.mod(xy, lengths)
        xy[xy >= lengths] = 0.0
        boxsize = lengths
    else:
        boxsize = None
    tree = cKDTree(xy, boxsize=boxsize)
    # Replicated copies come after the originals, so `targets` still index the originals.
    if len(xy) <= chunk_size:
        # Few atoms (a band, a training cell): every pair once, 2-3x faster than the
        # chunked double-tree query below, the same sums.
        pairs = tree.query_pairs(radius, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        diff = z[j] - z[i]
        if z_period:
            diff -= z_period * np.round(diff / z_period)
        n = len(xy)
        sums = np.bincount(i, weights=diff, minlength=n) - np.bincount(j, weights=diff, minlength=n)
        counts = np.bincount(i, minlength=n) + np.bincount(j, minlength=n) + 1  # + the atom
        return -sums[targets] / counts[targets]
    dz = np.empty(n_out)
    for start in range(0, n_out, chunk_size):
        stop = min(start + chunk_size, n_out)
        chunk = targets[start:stop]
        queries = cKDTree(xy[chunk], boxsize=boxsize)
        pairs = queries.sparse_distance_matrix(tree, radius, output_type="ndarray")
        diff = z[pairs["j"]] - z[chunk[pairs["i"]]]
        if z_period:
            diff -= z_period * np.round(diff / z_period)
        sums = np.bincount(pairs["i"], weights=diff, minlength=stop - start)
        counts = np.bincount(pairs["i"], minlength=stop - start)
        dz[start:stop] = -sums / counts
    return dz


def _axis_centres(
    coord: np.ndarray, step: float, origin: int, n_out: int, period: int | None, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest pixel centre of each atom in window coordinates, and the offset from it.

    Returns ``(centre, frac)``: ``centre`` (int64) is the pixel index relative to the window
    (along a periodic axis the image nearest the window, so in ``[-half, n_out + half)``
    whenever the atom touches the window) and ``frac`` in [-1/2, 1/2) is the atom's offset
    from that pixel centre in pixels.
    """
    u = coord / step - 0.5
    centre = np.floor(u + 0.5)
    frac = u - centre
    centre = centre.astype(np.int64) - origin
    if period is not None:
        centre = np.mod(centre, period)
        centre = np.where(centre >= n_out + half, centre - period, centre)
    return centre, frac


def _gaussian_1d(
    frac: np.ndarray, sigma: np.ndarray, step: float, half: int, normalize: bool
) -> np.ndarray:
    """1D Gaussian weights at pixel offsets -half..half, shape (n, 2 * half + 1)."""
    distance = (np.arange(-half, half + 1) - frac[:, None]) * step
    values = np.exp(-0.5 * (distance / sigma[:, None]) ** 2)
    if normalize:
        values /= values.sum(axis=1, keepdims=True) * step
    else:
        values /= math.sqrt(2.0 * math.pi) * sigma[:, None]
    return values


def _fold_axis(
    patch: np.ndarray, start: int, axis: int, n_out: int, period: int | None
) -> list[tuple[np.ndarray, slice]]:
    """Map a patch axis starting at window index ``start`` onto the window.

    Returns ``(piece, window slice)`` pairs, views of the patch, each on a contiguous run of
    window indices: a periodic wrap gives two runs, and a patch longer than the period gives
    one or two runs per period-long piece, whose window slices overlap (the caller adds each
    piece, which sums the periodic images without copying the patch).
    """
    length = patch.shape[axis]
    step = length if period is None else period
    runs = []
    for begin in range(0, length, step):
        size = min(step, length - begin)
        index = start + begin + np.arange(size)
        if period is not None:
            index = np.mod(index, period)
        breaks = (np.flatnonzero(np.diff(index) != 1) + 1).tolist()
        for a, b in zip([0, *breaks], [*breaks, size], strict=True):
            (low, high) = (max(int(index[a]), 0), min(int(index[b - 1]) + 1, n_out))
            if high <= low:
                continue
            first = begin + a + low - int(index[a])
            where = [slice(None)] * patch.ndim
            where[axis] = slice(first, first + high - low)
            runs.append((patch[tuple(where)], slice(low, high)))
    return runs


def _add_patch(
    out: np.ndarray,
    patch: np.ndarray,
    start: tuple[int, int],
    periods: tuple[int | None, int | None],
) -> None:
    for row_piece, rows in _fold_axis(patch, start[0], 0, out.shape[0], periods[0]):
        for piece, cols in _fold_axis(row_piece, start[1], 1, out.shape[1], periods[1]):
            out[rows, cols] += piece


#: Pixels x channels of one float64 patch buffer (8 MiB): small enough to stay in cache.
PATCH_ENTRIES = 1 << 20


def splat_gaussians(
    xy: np.ndarray,
    sigma: np.ndarray,
    channels: np.ndarray,
    weights: np.ndarray,
    *,
    n_channels: int,
    spacing: float | Sequence[float],
    grid_shape: Sequence[int],
    origin: Sequence[int] = (0, 0),
    periods: Sequence[int | None] | None = None,
    normalize: bool = True,
    chunk_size: int = 20000,
) -> np.ndarray:
    """Add one 2D Gaussian per atom to a window of a pixel grid (the rasterizer's core).

    The global grid has pixel ``(iy, ix)`` centred at ``((ix + 1/2) dx, (iy + 1/2) dy)`` Å;
    the output is the window of ``grid_shape`` pixels starting at global pixel ``origin``.
    Along a periodic axis global indices wrap modulo the period; along a non-periodic axis
    pixels outside the window are dropped (zero boundaries).  Each atom adds
    ``weights[i, m] * g_i`` to channel ``channels[i, m]`` for every ``m``, where ``g_i`` is its
    separable stencil of half-width ``k = ceil(4 sigma_max / spacing)`` pixels.

    Parameters
    ----------
    xy : numpy.ndarray, shape (n_atoms, 2)
        In-plane positions ``(x, y)`` in Å.
    sigma : numpy.ndarray, shape (n_atoms,)
        Gaussian widths in Å.
    channels : numpy.ndarray of int, shape (n_atoms, n_targets)
        Channel index of each target of each atom.
    weights : numpy.ndarray, shape (n_atoms, n_targets)
        Weight of each target (1 for a species channel, Z, or a height in Å).
    n_channels : int
        Number of output channels.
    spacing : float or (float, float)
        Pixel size ``(dy, dx)`` in Å.
    grid_shape : (int, int)
        Window shape ``(h, w)``.
    origin : (int, int), default (0, 0)
        Global pixel index ``(row, col)`` of the window's first pixel.
    periods : (int or None, int or None), optional
        Global grid size ``(Ny, Nx)`` in pixels along periodic axes, None along non-periodic
        ones; None means non-periodic along both.
    normalize : bool, default True
        Each stencil sums to ``1 / (dx dy)`` (else the analytic ``1 / (2 pi sigma²)``).
    chunk_size : int, default 20000
        Most atoms processed at once.

    Returns
    -------
    numpy.ndarray, float32, shape (h, w, n_channels)

    Notes
    -----
    Atoms are grouped into square patches of the window (about 512 pixels on a side for four
    channels) and each group's stencils are summed with :func:`numpy.bincount` into a small
    float64 buffer covering the group, which is then added to the image.  Work and memory
    are linear in the number of atoms plus the number of pixels; scratch memory is about
    ``min(chunk_size, atoms per patch) * n_targets * (2k + 1)² * 16`` bytes plus 8 MiB.
    Atoms whose stencil misses the window are skipped.

    Example
    -------
    >>> img = splat_gaussians(np.array([[0.5, 0.5]]), np.array([0.2]), np.array([[0]]),
    ...                       np.array([[1.0]]), n_channels=1, spacing=0.1,
    ...                       grid_shape=(10, 10), periods=(10, 10))
    >>> img.shape, round(float(img.sum()) * 0.1 * 0.1, 6)
    ((10, 10, 1), 1.0)
    """
    xy = np.asarray(xy, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(xy),))
    channels = np.asarray(channels, dtype=np.int64).reshape(len(xy), -1)
    weights = np.asarray(weights, dtype=np.float64).reshape(len(xy), -1)
    dy, dx = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,)).tolist()
    height, width = as_int_pair(grid_shape, "grid_shape")
    origin = (int(origin[0]), int(origin[1]))
    periods = (None, None) if periods is None else (periods[0], periods[1])
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    out = np.zeros((height, width, n_channels), dtype=np.float32)
    if len(xy) == 0:
        return out
    ky = math.ceil(STENCIL_SIGMAS * float(sigma.max()) / dy)
    kx = math.ceil(STENCIL_SIGMAS * float(sigma.max()) / dx)
    cy, fy = _axis_centres(xy[:, 1], dy, origin[0], height, periods[0], ky)
    cx, fx = _axis_centres(xy[:, 0], dx, origin[1], width, periods[1], kx)
    touching = np.flatnonzero((cy >= -ky) & (cy < height + ky) & (cx >= -kx) & (cx < width + kx))
    # Group atoms by square patch of the window, rows sorted within a patch, so that each
    # group's stencils fall in a small buffer.
    side = max(16, math.isqrt(PATCH_ENTRIES // n_channels) - 2 * max(ky, kx))
    patch_row = np.clip(cy[touching], 0, height - 1) // side
    patch_col = np.clip(cx[touching], 0, width - 1) // side
    key = patch_row * (width // side + 1) + patch_col
    order = np.lexsort((cy[touching], key))
    atoms, key = touching[order], key[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    offsets_y = np.arange(2 * ky + 1)
    offsets_x = np.arange(2 * kx + 1)
    for group in np.split(atoms, cuts):
        for start in range(0, len(group), chunk_size):
            chunk = group[start : start + chunk_size]
            gy = _gaussian_1d(fy[chunk], sigma[chunk], dy, ky, normalize)
            gx = _gaussian_1d(fx[chunk], sigma[chunk], dx, kx, normalize)
            row0, col0 = int(cy[chunk].min()) - ky, int(cx[chunk].min()) - kx
            n_rows = int(cy[chunk].max()) + ky + 1 - row0
            n_cols = int(cx[chunk].max()) + kx + 1 - col0
            # Stencil pixel j of an atom is window row cy - ky + j, buffer row cy - ky + j - row0.
            rows = (cy[chunk] - row0 - ky)[:, None] + offsets_y
            cols = (cx[chunk] - col0 - kx)[:, None] + offsets_x
            pixel = rows[:, :, None] * n_cols + cols[:, None, :]
            index = pixel[:, None] * n_channels + channels[chunk, :, None, None]
            values = (gy[:, :, None] * gx[:, None, :])[:, None] * weights[chunk, :, None, None]
            patch = np.bincount(
                index.ravel(), weights=values.ravel(), minlength=n_rows * n_cols * n_channels
            ).reshape(n_rows, n_cols, n_channels)
            _add_patch(out, patch, (row0, col0), periods)
    return out


class RasterLayout(NamedTuple):
    """Where a structure's image lives: from :func:`raster_layout`.

    Attributes
    ----------
    sheet : ase.Atoms
        The structure in its rectangular cell (supercell of a hexagonal/oblique sheet, or a
        flake in its padded box).
    shape : (int, int)
        Full image shape ``(H, W)`` (axis 0 = y).
    spacing : (float, float)
        Effective pixel size ``(dy, dx)`` in Å.
    periodic : bool
        True for a periodic sheet, False for a flake (zero boundaries).
    """

    sheet: Atoms
    shape: tuple[int, int]
    spacing: tuple[float, float]
    periodic: bool


def _check_structure(atoms: Any, spec: RasterSpec) -> Atoms:
    if not isinstance(atoms, Atoms):
        raise TypeError(
            f"`atoms` must be an ase.Atoms object. Received: atoms of type {type(atoms).__name__}."
        )
    check_nonempty(len(atoms), "atoms")
    check_finite_rows(atoms.positions, "atoms.positions")
    symbols = [chemical_symbols[z] for z in np.unique(atoms.numbers)]
    check_allowed(symbols, spec.species, "chemical symbols of `atoms`")
    return atoms


def raster_layout(
    atoms: Atoms, spec: RasterSpec | None = None, grid_shape: Sequence[int] | None = None
) -> RasterLayout:
    """Rectangular cell, image shape and effective spacing that :func:`rasterize` will use.

    Parameters
    ----------
    atoms : ase.Atoms
        A periodic sheet (any cell with ``a3`` along z) or a non-periodic flake.
    spec : RasterSpec, optional
        Rasterization settings; defaults to ``RasterSpec()``.
    grid_shape : (int, int), optional
        Fixed image shape ``(H, W)``.  For a flake the box is then ``(W dx, H dy)`` with the
        requested spacing, and must hold the flake plus 4 sigma on each side.

    Returns
    -------
    RasterLayout

    Example
    -------
    >>> from ase.build import graphene
    >>> sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (10, 6, 1)
    >>> layout = raster_layout(sheet, RasterSpec(spacing=0.2))
    >>> len(layout.sheet), layout.shape, layout.periodic
    (240, (128, 123), True)
    """
    spec = _resolve_spec(spec, {})
    atoms = _check_structure(atoms, spec)
    if cells.is_periodic_sheet(atoms):
        sheet = cells.to_rectangular(atoms)
        lengths = (sheet.cell[0, 0], sheet.cell[1, 1])
        shape, spacing = grid_for_cell(lengths, spec.spacing, spec.multiple_of, grid_shape)
        return RasterLayout(sheet, shape, spacing, True)
    if grid_shape is None:
        my, mx = spec.multiple_of
        sheet = cells.flake_box(
            atoms, padding=spec.padding, multiple=(spec.spacing * mx, spec.spacing * my)
        )
        lengths = (sheet.cell[0, 0], sheet.cell[1, 1])
        shape = (round(lengths[1] / spec.spacing), round(lengths[0] / spec.spacing))
    else:
        shape = as_int_pair(grid_shape, "grid_shape")
        if shape[0] % spec.multiple_of[0] or shape[1] % spec.multiple_of[1]:
            raise ValueError(
                f"`grid_shape` must be a multiple of multiple_of={spec.multiple_of}. "
                f"Received: grid_shape={shape}."
            )
        sheet = cells.flake_box(
            atoms,
            padding=STENCIL_SIGMAS * float(spec.sigmas.max()),
            lengths=(shape[1] * spec.spacing, shape[0] * spec.spacing),
        )
    return RasterLayout(sheet, (int(shape[0]), int(shape[1])), (spec.spacing,) * 2, False)


def channel_weights(
    spec: RasterSpec, species_index: np.ndarray, numbers: np.ndarray, heights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Channel and weight of each atom's Gaussians, as :func:`splat_gaussians` takes them.

    Parameters
    ----------
    spec : RasterSpec
    species_index : numpy.ndarray of int, shape (n,)
        Each atom's position in ``spec.species``.
    numbers : numpy.ndarray of int, shape (n,)
        Atomic numbers (the weights of the ``Z`` channel).
    heights : numpy.ndarray, shape (n,), or None
        ``dz`` in Å for the height channel; needed when ``spec.height_channel``.

    Returns
    -------
    channels, weights : numpy.ndarray, shape (n, k)
        ``k`` is 1, or 2 with the height channel.
    """
    if spec.z_weighted:
        channels = [np.zeros(len(numbers), dtype=np.int64)]
        weights = [np.asarray(numbers, dtype=np.float64)]
    else:
        channels = [np.asarray(species_index, dtype=np.int64)]
        weights = [np.ones(len(numbers))]
    if spec.height_channel:
        height = len(spec.channel_names) - 1 - 2 * int(spec.spacing_channels)
        channels.append(np.full(len(numbers), height, dtype=np.int64))
        weights.append(np.asarray(heights, dtype=np.float64))
    return np.stack(channels, axis=1), np.stack(weights, axis=1)


def fill_stretch_channels(image: np.ndarray, spec: RasterSpec, spacing: Sequence[float]) -> None:
    """Write the ``stretch_y``/``stretch_x`` channels of ``image`` in place (if ``spec`` has them).

    ``spacing`` is the effective pixel size ``(dy, dx)`` (Å) of the whole image.
    """
    if spec.spacing_channels:
        for axis in (0, 1):
            deviation = (spacing[axis] / spec.spacing - 1.0) / STRETCH_UNIT
            image[..., spec.n_channels - 2 + axis] = deviation


def _render(
    layout: RasterLayout,
    spec: RasterSpec,
    origin: tuple[int, int],
    window_shape: tuple[int, int],
    heights: np.ndarray | None,
    chunk_size: int,
) -> np.ndarray:
    sheet = layout.sheet
    lookup = np.full(len(atomic_numbers) + 1, -1, dtype=np.int64)
    lookup[[atomic_numbers[symbol] for symbol in spec.species]] = np.arange(len(spec.species))
    species_index = lookup[sheet.numbers]
    if spec.height_channel and heights is None:
        box = (sheet.cell[0, 0], sheet.cell[1, 1]) if layout.periodic else None
        heights = local_heights(
            sheet.positions, spec.height_radius, box, sheet_z_period(sheet, layout.periodic)
        )
    channels, weights = channel_weights(spec, species_index, sheet.numbers, heights)
    image = splat_gaussians(
        sheet.positions[:, :2],
        spec.sigmas[species_index],
        channels,
        weights,
        n_channels=spec.n_channels,
        spacing=layout.spacing,
        grid_shape=window_shape,
        origin=origin,
        periods=layout.shape if layout.periodic else None,
        normalize=spec.normalize,
        chunk_size=chunk_size,
    )
    fill_stretch_channels(image, spec, layout.spacing)
    return image


def rasterize(
    atoms: Atoms,
    spec: RasterSpec | None = None,
    *,
    species: Sequence[str] | None = None,
    spacing: float | None = None,
    sigma: float | Mapping[str, float] | None = None,
    height_channel: bool | None = None,
    normalize: bool | None = None,
    z_weighted: bool | None = None,
    height_radius: float | None = None,
    multiple_of: int | Sequence[int] | None = None,
    padding: float | None = None,
    grid_shape: Sequence[int] | None = None,
    chunk_size: int = 20000,
) -> np.ndarray:
    """Rasterize a 2D sheet or flake into a multi-channel Gaussian image.

    Parameters
    ----------
    atoms : ase.Atoms
        A periodic sheet (``pbc`` True in x and y; rectangular, hexagonal or oblique cell
        with ``a3`` along z) or a non-periodic flake (``pbc`` False in x and y).  Positions
        in Å; every symbol must be in ``species``.
    spec : RasterSpec, optional
        Settings, e.g. a model's stored spec; defaults to ``RasterSpec()``.  Keyword
        arguments given (not None) override its fields; see :class:`RasterSpec` for them:
        ``species=("C", "B", "N")``, ``spacing=0.1`` Å, ``sigma=0.2`` Å (or per species),
        ``height_channel=True``, ``normalize=True``, ``z_weighted=False``,
        ``height_radius=5.0`` Å, ``multiple_of=1``, ``padding=8.0`` Å.
    grid_shape : (int, int), optional
        Fixed image shape ``(H, W)`` instead of the one from :func:`grid_for_cell`.
    chunk_size : int, default 20000
        Atoms processed at once (bounds scratch memory; does not change the result).

    Returns
    -------
    numpy.ndarray, float32, shape (H, W, n_channels)
        Axis 0 is y, axis 1 is x.  Channels: one per species (or one ``Z`` channel), then the
        height channel if asked for.  Values are densities per Å² (times Z, or times the
        height ``dz`` in Å for the height channel); with ``normalize=True`` each species
        channel sums, times the pixel area ``dx dy`` in Å², to its atom count in the
        rectangular cell.

    Raises
    ------
    ValueError
        For an empty structure, non-finite positions (naming the atom indices), symbols not
        in ``species``, a cell whose ``a3`` is not perpendicular to the sheet, a sheet with
        no small rectangular supercell, non-positive ``spacing`` or ``sigma``, or a grid
        whose spacing misses the requested one by more than 10 %.
    TypeError
        For arguments of the wrong type.

    Notes
    -----
    Hexagonal cells become a rectangular supercell with twice the atoms, so the image (and a
    model's energy) is that of the supercell: see
    :func:`ednn.cells.rectangular_supercell_matrix` for the multiplicity.  Memory: the image
    is ``4 H W n_channels`` bytes (4.2 GB for 10^6 graphene atoms at 0.1 Å: use
    :func:`rasterize_window` for giant sheets) plus a bounded scratch, see
    :func:`splat_gaussians`.  The height channel is ``sum_i g_i(r) dz_i`` with ``dz`` from
    :func:`local_heights`: the displacement of each atom from the mean z of its neighbours
    within ``height_radius``, so flat sheets give zero at any z and ripples do not.

    Example
    -------
    >>> from ase.build import graphene
    >>> sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (10, 6, 1)
    >>> image = rasterize(sheet, spacing=0.2)
    >>> image.shape, image.dtype
    ((128, 123, 4), dtype('float32'))
    """
    spec = _resolve_spec(
        spec,
        {
            "species": species,
            "spacing": spacing,
            "sigma": sigma,
            "height_channel": height_channel,
            "normalize": normalize,
            "z_weighted": z_weighted,
            "height_radius": height_radius,
            "multiple_of": multiple_of,
            "padding": padding,
        },
    )
    layout = raster_layout(atoms, spec, grid_shape)
    return _render(layout, spec, (0, 0), layout.shape, None, chunk_size)


def rasterize_window(
    atoms: Atoms,
    origin: Sequence[int],
    window_shape: Sequence[int],
    spec: RasterSpec | None = None,
    *,
    grid_shape: Sequence[int] | None = None,
    heights: np.ndarray | None = None,
    chunk_size: int = 20000,
) -> np.ndarray:
    """Rasterize only a rectangular window (e.g. a band) of a structure's image.

    Equals ``rasterize(atoms, spec)[rows, cols]`` for the window's rows and columns, taken
    periodically (``np.take(..., mode="wrap")``) for a periodic sheet and with zeros outside
    the image for a flake, without building the whole image (a window longer than a periodic
    image repeats it).  For a giant periodic sheet,
    ``atoms`` may hold only the atoms near the window (within ``4 sigma``) as long as its cell
    is the whole sheet's; pass the ``heights`` of those atoms then, computed on the whole
    sheet with :func:`local_heights`, since a subset lacks their neighbours.

    Parameters
    ----------
    atoms : ase.Atoms
        As for :func:`rasterize`; for a window of a periodic sheet, best already rectangular
        (a hexagonal cell is converted, repeating ``heights`` per copy).
    origin : (int, int)
        Pixel ``(row, col)`` of the full image where the window starts; may be negative or
        beyond the image (wrapped for a periodic sheet).
    window_shape : (int, int)
        Window shape ``(h, w)`` in pixels.
    spec : RasterSpec, optional
        Settings; defaults to ``RasterSpec()``.
    grid_shape : (int, int), optional
        Full image shape, as for :func:`rasterize`.
    heights : numpy.ndarray, shape (len(atoms),), optional
        Precomputed ``dz`` (Å) for the height channel.
    chunk_size : int, default 20000
        Atoms processed at once.

    Returns
    -------
    numpy.ndarray, float32, shape (h, w, n_channels)

    Example
    -------
    >>> from ase.build import graphene
    >>> sheet = cells.to_rectangular(graphene(vacuum=10.0)) * (10, 6, 1)
    >>> band = rasterize_window(sheet, origin=(120, 0), window_shape=(16, 123),
    ...                         spec=RasterSpec(spacing=0.2))
    >>> band.shape
    (16, 123, 4)
    """
    spec = _resolve_spec(spec, {})
    origin = (int(origin[0]), int(origin[1]))
    window_shape = as_int_pair(window_shape, "window_shape")
    layout = raster_layout(atoms, spec, grid_shape)
    if heights is not None:
        heights = check_finite_rows(np.ravel(heights), "heights")
        if len(heights) != len(atoms):
            raise ValueError(
                "`heights` must hold one value (Å) per atom. "
                f"Received: len(heights)={len(heights)}, len(atoms)={len(atoms)}."
            )
        # Supercells from to_rectangular repeat the atoms cell by cell.
        heights = np.tile(heights, len(layout.sheet) // len(heights))
    if not layout.periodic:
        return _render(layout, spec, origin, window_shape, heights, chunk_size)
    # A window longer than the period repeats it: render one period, then tile.
    base_shape = (min(window_shape[0], layout.shape[0]), min(window_shape[1], layout.shape[1]))
    window = _render(layout, spec, origin, base_shape, heights, chunk_size)
    for axis in (0, 1):
        if window_shape[axis] > base_shape[axis]:
            repeat = np.arange(window_shape[axis]) % base_shape[axis]
            window = np.take(window, repeat, axis=axis)
    return window


def _to_unit_range(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(values / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(values)


def image_to_png(
    image: np.ndarray,
    path: str | os.PathLike[str],
    *,
    height_channel: bool = False,
    max_size: int = 2048,
) -> Path:
    """Write an image as a PNG a person can look at.

    The species channels are overlaid in colour (red, green, blue, then yellow, magenta,
    cyan), each scaled by its 99.5th percentile; the height channel, if present, is drawn
    beside them in blue (below the local mean) to red (above).  y points up, as in a plot of
    the structure.  The file is written to a temporary file and moved into place, so a
    reader never sees half a PNG.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W, n_channels)
        As returned by :func:`rasterize`.
    path : str or os.PathLike
        Output file, e.g. ``"sheet.png"``.
    height_channel : bool, default False
        Whether the last channel is the height channel (``spec.height_channel``).
    max_size : int, default 2048
        Images larger than this along an axis are reduced by block averaging.

    Returns
    -------
    pathlib.Path
        The path written.

    Example
    -------
    >>> image = np.zeros((64, 48, 4), dtype=np.float32)
    >>> image_to_png(image, "/tmp/ednn_doctest.png", height_channel=True).name
    'ednn_doctest.png'
    """
    from PIL import Image  # pillow comes with matplotlib; imported here as only this needs it

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] < 1:
        raise ValueError(
            f"`image` must have shape (H, W, n_channels). Received: image.shape={image.shape}."
        )
    n_species = image.shape[2] - int(height_channel)
    if n_species < 1:
        raise ValueError(
            "`image` must have a species channel besides the height channel. "
            f"Received: image.shape={image.shape}, height_channel={height_channel}."
        )
    max_size = check_positive_int(max_size, "max_size")
    factor = max(1, math.ceil(max(image.shape[:2]) / max_size))
    if factor > 1:
        h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
        image = image[:h, :w].reshape(h // factor, factor, w // factor, factor, -1).mean((1, 3))
    palette = np.array(
        [[1, 0.2, 0.2], [0.2, 1, 0.2], [0.3, 0.5, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]]
    )
    rgb = np.zeros((*image.shape[:2], 3))
    for channel in range(n_species):
        values = image[:, :, channel]
        scale = float(np.percentile(values, 99.5)) or float(values.max())
        rgb += _to_unit_range(values, scale)[:, :, None] * palette[channel % len(palette)]
    panels = [np.clip(rgb, 0.0, 1.0)]
    if height_channel:
        heights = image[:, :, -1]
        scale = float(np.percentile(np.abs(heights), 99.5)) or float(np.abs(heights).max())
        t = _to_unit_range(heights, scale) - _to_unit_range(-heights, scale)  # in [-1, 1]
        red = np.where(t > 0, 1.0, 1.0 + t)
        blue = np.where(t < 0, 1.0, 1.0 - t)
        green = 1.0 - np.abs(t)
        gap = np.ones((image.shape[0], max(2, image.shape[1] // 50), 3))
        panels += [gap, np.stack([red, green, blue], axis=-1)]
    picture = (np.concatenate(panels, axis=1)[::-1] * 255).round().astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(picture).save(stream, format="PNG")
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


#: Default largest relative deviation of the effective pixel size in :func:`commensurate_sheet`.
SPACING_TOLERANCE = 0.02
#: Largest periodic repeat per axis that :func:`commensurate_sheet` tries.
MAX_REPEAT = 16


def _repeat_for(length: float, spacing: float, multiple: int, tolerance: float) -> int:
    for repeat in range(1, MAX_REPEAT + 1):
        n = max(multiple, multiple * round(repeat * length / (spacing * multiple)))
        if abs(repeat * length / n - spacing) <= tolerance * spacing:
            return repeat
    raise ValueError(
        f"No periodic repeat up to {MAX_REPEAT} of the cell length {length:.4f} Å splits into "
        f"whole focus regions of {multiple} px at {spacing} Å/px within {tolerance:.0%}; "
        "raise the tolerance or change the spacing."
    )


def commensurate_sheet(
    atoms: Atoms, spec: RasterSpec, tolerance: float | None = SPACING_TOLERANCE
) -> Atoms:
    """The cell that is imaged for ``atoms``: rectangular, repeated to fit the pixel grid.

    Parameters
    ----------
    atoms : ase.Atoms
        A periodic sheet or a flake (returned unchanged).
    spec : RasterSpec
        ``spacing`` (Å) and ``multiple_of`` (the model's focus, px) set the grid.
    tolerance : float or None, default 0.02
        Largest relative deviation of the effective pixel size from ``spec.spacing``; None
        keeps the rectangular cell as it is (the rasterizer then allows 10 %).

    Returns
    -------
    ase.Atoms
        The rectangular cell repeated ``(rx, ry, 1)`` times; ``len(result) / len(atoms)`` is
        the number of copies, by which extensive targets scale.

    Example
    -------
    >>> from ase.build import graphene
    >>> cell = cells.to_rectangular(graphene(vacuum=10.0)) * (5, 8, 1)  # 12.3 Å x 34.1 Å
    >>> sheet = commensurate_sheet(cell, RasterSpec(spacing=0.25, multiple_of=8))
    >>> len(sheet) // len(cell), sheet.cell.lengths()[:2].round(1).tolist()
    (4, [49.2, 34.1])
    """
    if not cells.is_periodic_sheet(atoms):
        return atoms
    sheet = cells.to_rectangular(atoms)
    if tolerance is None:
        return sheet
    multiple_y, multiple_x = spec.multiple_of
    repeat_x = _repeat_for(sheet.cell[0, 0], spec.spacing, multiple_x, tolerance)
    repeat_y = _repeat_for(sheet.cell[1, 1], spec.spacing, multiple_y, tolerance)
    return sheet.repeat((repeat_x, repeat_y, 1)) if repeat_x * repeat_y > 1 else sheet
