"""Streaming evaluation of giant sheets: O(N) time, memory bounded by one band.

:func:`evaluate_sheet` never holds the whole image or all tiles.  The grid of focus regions
is cut into *bands* (square-ish blocks of about ``regions_per_band`` focus regions, or
``band_rows`` rows of them along y); each band is rasterized together with its context halo straight
from the atoms near it, evaluated (fused, :mod:`ednn.fused`, when the tile network allows
it, else tile by tile in batches), and its energy is added in float64.  Work is linear in
the number of atoms; memory is that of one band plus a y-sorted copy of the atoms (25 bytes
per atom); each band computes its atoms' local heights from the atoms around it.

:func:`evaluate_repeat` evaluates the periodic ``nx x ny`` repeat of a cell as one sheet,
generating the atoms of each band from the cell on the fly, so a 10^9-atom sheet needs no
10^9-atom array.

The result equals the in-memory ``model(rasterize(atoms, spec))`` up to float32 rounding:
each band reads the same image pixels (``ednn.raster.splat_gaussians``, the rasterizer's
core, on the same global pixel grid) and the halo follows the model's boundary (periodic
wrap or zeros), exactly as the model's tiling pads the whole image.

Units: positions in Å, energies in the model's units (eV).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorflow as tf
from ase import Atoms
from ase.data import atomic_numbers
from tqdm.auto import tqdm

from ednn import cells, raster
from ednn._validation import check_positive_int
from ednn.fused import FusedTileNetwork, apply_energy_affine

__all__ = [
    "PRECISIONS",
    "SheetResult",
    "configure_threads",
    "evaluate_repeat",
    "evaluate_sheet",
    "model_raster_spec",
]

#: Focus regions evaluated in one network call by default (fused path): a square-ish band
#: of 8192 regions of 16x16 pixels is ~2.3 M pixels with its halo (context 32 px), ~55 MB
#: of 6-channel image and ~0.1-0.3 GB of activations.
DEFAULT_REGIONS_PER_BAND = 8192
#: Tiles per tile-network call on the (unfused) tile path by default.
DEFAULT_TILE_BATCH = 256
#: Fewest pixel rows per strip when one band's window is rendered by several threads: a
#: 352-row image (10^3 atoms at 0.15 Å) took 15.8 ms in one strip and 20.0 ms in two.
STRIP_ROWS = 256


@dataclasses.dataclass(frozen=True)
class SheetResult:
    """What :func:`evaluate_sheet` returns.

    Attributes
    ----------
    energy_eV : float
        The first output (the energy, eV for an energy model), summed in float64.
    n_atoms : int
        Atoms in the evaluated sheet (for a hexagonal cell, its rectangular supercell, as
        :func:`ednn.raster.rasterize` sees it).
    per_region_map : numpy.ndarray or None
        float32 ``(nH, nW, n_targets)``: each focus region's contribution (local energy in
        eV), if asked for with ``return_map=True``.
    timings : dict of str to float
        Seconds spent: ``layout``, ``heights``, ``select`` (binning atoms), ``raster``,
        ``network``, ``total``; plus ``n_bands`` and ``path`` (``"fused"`` or ``"tiles"``).
    values : numpy.ndarray
        float64 ``(n_targets,)``: every output, summed; ``values[0] == energy_eV``.
    """

    energy_eV: float
    n_atoms: int
    per_region_map: np.ndarray | None
    timings: dict[str, Any]
    values: np.ndarray


def configure_threads(intra_op: int | None = None, inter_op: int | None = None) -> bool:
    """Set TensorFlow's CPU thread pools; returns False (with a warning) if it is too late.

    TensorFlow fixes its thread pools when it first runs an op, so call this first thing.
    ``None`` leaves a pool as it is (TensorFlow's default: one thread per core).
    """
    try:
        if intra_op is not None:
            tf.config.threading.set_intra_op_parallelism_threads(
                check_positive_int(intra_op, "intra_op")
            )
        if inter_op is not None:
            tf.config.threading.set_inter_op_parallelism_threads(
                check_positive_int(inter_op, "inter_op")
            )
    except RuntimeError as error:
        warnings.warn(
            f"TensorFlow's thread pools are already fixed ({error}); call "
            "ednn.stream.configure_threads before anything runs TensorFlow.",
            stacklevel=2,
        )
        return False
    return True


def model_raster_spec(model) -> raster.RasterSpec:
    """The model's :class:`~ednn.raster.RasterSpec` with ``multiple_of`` a multiple of the focus.

    Raises ``ValueError`` when ``model.metadata`` has no ``"raster"`` entry.
    """
    config = model.metadata.get("raster")
    if config is None:
        raise ValueError(
            "The model must store its rasterization settings in metadata['raster'] "
            "(RasterSpec.to_dict()) to evaluate structures. Received: metadata keys "
            f"{sorted(model.metadata)}."
        )
    spec = raster.RasterSpec.from_dict(config)
    multiple = tuple(math.lcm(m, f) for m, f in zip(spec.multiple_of, model.focus, strict=True))
    return dataclasses.replace(spec, multiple_of=multiple)


# --- Sources of atoms: a binned explicit sheet, or a repeated cell --------------------------


def _pieces(lo: float, hi: float, period: float | None) -> list[tuple[float, float]] | None:
    """[lo, hi) folded into [0, period) as disjoint pieces; None means everything."""
    if period is None:
        return [(lo, hi)]
    if hi - lo >= period:
        return None
    shift = math.floor(lo / period) * period
    lo, hi = lo - shift, hi - shift
    return [(lo, hi)] if hi <= period else [(lo, period), (0.0, hi - period)]


def _in_pieces(values: np.ndarray, pieces) -> np.ndarray:
    if pieces is None:
        return np.ones(len(values), dtype=bool)
    mask = np.zeros(len(values), dtype=bool)
    for lo, hi in pieces:
        mask |= (values >= lo) & (values < hi)
    return mask


class _Sheet:
    """Atoms sorted by y (wrapped into the cell when periodic) for fast band selection.

    Holds 25 bytes per atom (x, y, z as float64, the species as uint8); 16 more while the
    y-order is found.  The local heights are computed window by window in :meth:`select`,
    from the atoms within ``height_radius`` of the window, so no per-sheet neighbour tree
    is ever built (it took ~50 bytes per atom and ran before the bands, not beside the
    network).
    """

    def __init__(self, positions, numbers, lengths, periodic: bool, height_radius, z_period):
        self.periods = tuple(lengths) if periodic else None
        y = np.array(positions[:, 1], dtype=np.float64)
        if periodic:
            y %= lengths[1]
            y[y >= lengths[1]] = 0.0
        order = np.argsort(y, kind="stable")
        del y
        self.xy = np.asarray(positions[order, :2], dtype=np.float64)
        if periodic:  # the same operations as on `y` above, so the rows stay sorted
            self.xy %= lengths
            self.xy[self.xy >= lengths] = 0.0
        self.numbers = np.asarray(numbers, dtype=np.uint8)[order]  # Z <= 118
        self.z = None if height_radius is None else np.asarray(positions[order, 2], np.float64)
        self.height_radius, self.z_period = height_radius, z_period

    def _index(self, y_range, x_range) -> np.ndarray:
        periods = self.periods or (None, None)
        y_pieces = _pieces(*y_range, periods[1])
        if y_pieces is None:
            index = np.arange(len(self.xy))
        else:
            spans = [np.searchsorted(self.xy[:, 1], piece) for piece in y_pieces]
            index = np.concatenate([np.arange(a, b) for a, b in spans])
        x_pieces = _pieces(*x_range, periods[0])
        if x_pieces is not None:
            index = index[_in_pieces(self.xy[index, 0], x_pieces)]
        return index

    def _heights(self, index, y_range, x_range) -> np.ndarray:
        # Every neighbour (in-plane distance <= r) of an atom in the window lies in the window
        # widened by r, so these are the whole sheet's heights of the window's atoms.
        start = time.perf_counter()
        r = self.height_radius
        wide = np.sort(
            self._index((y_range[0] - r, y_range[1] + r), (x_range[0] - r, x_range[1] + r))
        )
        positions = np.column_stack([self.xy[wide], self.z[wide]])
        heights = raster.local_heights(
            positions, r, self.periods, self.z_period, targets=np.searchsorted(wide, index)
        )
        return heights, time.perf_counter() - start

    def select(self, y_range, x_range):
        """``(xy, numbers, heights, seconds spent on the heights)`` of the atoms in a window."""
        index = self._index(y_range, x_range)
        heights, seconds = None, 0.0
        if self.z is not None and len(index):
            heights, seconds = self._heights(index, y_range, x_range)
        return self.xy[index], self.numbers[index], heights, seconds


class _RepeatedCell:
    """The periodic nx x ny repeat of a rectangular cell, generated band by band."""

    def __init__(self, positions, numbers, heights, lengths, repeats):
        xy = np.array(positions[:, :2], dtype=np.float64) % lengths
        xy[xy >= lengths] = 0.0
        self.xy, self.numbers, self.heights = xy, np.asarray(numbers), heights
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.periods = tuple(self.lengths * repeats)
        self.repeats = repeats

    def _pairs(self, pieces, axis):
        # (copy index, cell atom index) of every atom copy along `axis` that lies in `pieces`.
        length, coord = self.lengths[axis], self.xy[:, axis]
        n_cell = len(coord)
        if pieces is None:
            copies = np.arange(self.repeats[axis])
            return np.repeat(copies, n_cell), np.tile(np.arange(n_cell), len(copies))
        copy_parts, atom_parts = [], []
        for lo, hi in pieces:
            copies = np.arange(math.floor(lo / length), math.ceil(hi / length))
            shifted = coord[None, :] + length * copies[:, None]
            k, a = np.nonzero((shifted >= lo) & (shifted < hi))
            copy_parts.append(copies[k])
            atom_parts.append(a)
        return np.concatenate(copy_parts), np.concatenate(atom_parts)

    def select(self, y_range, x_range):
        row, atom = self._pairs(_pieces(*y_range, self.periods[1]), 1)
        x_pieces = _pieces(*x_range, self.periods[0])
        if x_pieces is None:
            col = np.arange(self.repeats[0])
        else:
            col = np.concatenate(
                [
                    np.arange(math.floor(lo / self.lengths[0]), math.ceil(hi / self.lengths[0]))
                    for lo, hi in x_pieces
                ]
            )
        # Every row copy of an atom times every column copy, then keep those in x_range.
        x = self.xy[atom, 0][:, None] + self.lengths[0] * col[None, :]
        keep = _in_pieces(x.ravel(), x_pieces).reshape(x.shape)
        pair, which = np.nonzero(keep)
        atom = atom[pair]
        xy = np.stack([x[pair, which], self.xy[atom, 1] + self.lengths[1] * row[pair]], axis=1)
        heights = None if self.heights is None else self.heights[atom]
        return xy, self.numbers[atom], heights, 0.0  # the cell's heights came beforehand


# --- Rendering one band with its halo --------------------------------------------------------


def _axis_blocks(start: int, stop: int, size: int, wrap: bool):
    """Image index read by each window index in [start, stop) and the blocks to render.

    Returns ``(index, blocks)``: ``index[j]`` is the image pixel (row or column) that window
    pixel ``j`` shows, or -1 for a zero (halo beyond the edge with a zero boundary);
    ``blocks`` are the disjoint image intervals ``(a, b)`` that cover every index.
    """
    g = np.arange(start, stop)
    index = g % size if wrap else np.where((g >= 0) & (g < size), g, -1)
    used = np.unique(index[index >= 0])
    cuts = np.flatnonzero(np.diff(used) > 1) + 1
    blocks = [(int(run[0]), int(run[-1]) + 1) for run in np.split(used, cuts) if len(run)]
    return index, blocks


def _run(index: np.ndarray) -> slice | None:
    """``index`` as a slice when it is one increasing run of consecutive integers."""
    if index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return None


def _gather(block: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``np.take(block, index, axis)``, as a view (no copy) when ``index`` is one run."""
    run = _run(index)
    if run is None:
        return np.take(block, index, axis=axis)
    where = [slice(None)] * block.ndim
    where[axis] = run
    return block[tuple(where)]


def _as_index(rows: np.ndarray, cols: np.ndarray):
    # Slices where both index runs are contiguous (a plain copy), else an open mesh.
    row_run, col_run = _run(rows), _run(cols)
    if row_run is not None and col_run is not None:
        return (row_run, col_run)
    return np.ix_(rows, cols)


class _BandRenderer:
    """Renders windows of the sheet's image (with halos) from a source of atoms."""

    def __init__(self, source, spec, shape, spacing, periodic_structure, wrap_halo):
        self.source, self.spec, self.shape = source, spec, shape
        self.spacing = spacing
        self.periods = shape if periodic_structure else None
        self.wrap = wrap_halo
        sigma = float(spec.sigmas.max())
        self.margin = tuple(math.ceil(raster.STENCIL_SIGMAS * sigma / s) + 1 for s in spacing)
        lookup = np.full(len(atomic_numbers) + 1, -1, dtype=np.int64)
        lookup[[atomic_numbers[s] for s in spec.species]] = np.arange(len(spec.species))
        self.lookup = lookup
        # Seconds per stage, summed over the threads that render.
        self.seconds = {"select": 0.0, "heights": 0.0, "raster": 0.0}
        self._lock = threading.Lock()

    def window(self, rows: tuple[int, int], cols: tuple[int, int], threads: int = 1) -> np.ndarray:
        """Pixels [rows) x [cols) of the infinite image (wrapped or zero beyond the edges).

        With ``threads > 1``, each block of the image that the window shows is rendered as
        up to that many row strips at once (NumPy and SciPy release the GIL): for a band
        rasterized while no network runs beside it.
        """
        row_index, row_blocks = _axis_blocks(*rows, self.shape[0], self.wrap)
        col_index, col_blocks = _axis_blocks(*cols, self.shape[1], self.wrap)
        if len(row_blocks) == len(col_blocks) == 1 and row_index.min() >= 0 <= col_index.min():
            # One block, no zeros: the window is (a wrapped gather of) the block itself.  An
            # inner band is exactly its block, returned without a copy.
            (r,), (c,) = row_blocks, col_blocks
            block = _gather(self._render_strips(r, c, threads), row_index - r[0], 0)
            return np.ascontiguousarray(_gather(block, col_index - c[0], 1))
        out = np.zeros((len(row_index), len(col_index), self.spec.n_channels), np.float32)
        for r in row_blocks:
            where_r = np.flatnonzero((row_index >= r[0]) & (row_index < r[1]))
            for c in col_blocks:
                where_c = np.flatnonzero((col_index >= c[0]) & (col_index < c[1]))
                block = self._render_strips(r, c, threads)
                block = _gather(block, row_index[where_r] - r[0], 0)
                out[_as_index(where_r, where_c)] = _gather(block, col_index[where_c] - c[0], 1)
        return out

    def _render_strips(self, rows, cols, threads: int) -> np.ndarray:
        # Strips of at least STRIP_ROWS rows: on thinner ones, the threads and each strip's
        # margins (atoms within the heights radius) cost more than they save.
        parts = min(threads, (rows[1] - rows[0]) // STRIP_ROWS)
        if parts <= 1:
            return self._render(rows, cols)
        cuts = np.linspace(rows[0], rows[1], parts + 1).round().astype(int).tolist()
        with ThreadPoolExecutor(max_workers=parts) as pool:
            strips = list(pool.map(lambda a, b: self._render((a, b), cols), cuts[:-1], cuts[1:]))
        return np.concatenate(strips, axis=0)

    def _add_seconds(self, **seconds: float) -> None:
        with self._lock:
            for key, value in seconds.items():
                self.seconds[key] += value

    def _render(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        (dy, dx), (my, mx) = self.spacing, self.margin
        start = time.perf_counter()
        xy, numbers, heights, height_seconds = self.source.select(
            ((rows[0] - my) * dy, (rows[1] + my) * dy), ((cols[0] - mx) * dx, (cols[1] + mx) * dx)
        )
        middle = time.perf_counter()
        # "select" counts the binning alone.
        self._add_seconds(heights=height_seconds, select=middle - start - height_seconds)
        spec = self.spec
        shape = (rows[1] - rows[0], cols[1] - cols[0])
        if len(xy) == 0:
            block = np.zeros((*shape, spec.n_channels), np.float32)
            raster.fill_stretch_channels(block, spec, self.spacing)
            return block
        species_index = self.lookup[numbers]
        channels, weights = raster.channel_weights(spec, species_index, numbers, heights)
        block = raster.splat_gaussians(
            xy,
            spec.sigmas[species_index],
            channels,
            weights,
            n_channels=spec.n_channels,
            spacing=self.spacing,
            grid_shape=shape,
            origin=(rows[0], cols[0]),
            periods=self.periods,
            normalize=spec.normalize,
        )
        raster.fill_stretch_channels(block, spec, self.spacing)
        self._add_seconds(raster=time.perf_counter() - middle)
        return block


# --- The network on one band -----------------------------------------------------------------


#: Precisions of the network pass: Keras dtype policies.  "float32" is the model as trained;
#: the mixed ones compute in 16-bit floats with float32 weights (bfloat16 uses AMX / AVX-512
#: BF16 on recent x86 CPUs and tensor cores on GPUs; float16 suits GPUs).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# One traced function per model, path and precision, so that repeated calls (many small
# structures) do not trace the network again; entries go away with their model.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tile_network_in(model, precision: str):
    """The model's tile network, or its copy computing under a mixed precision policy.

    One copy per model and precision, shared by every path; :class:`_BandNetwork` copies
    the model's current weights into it once per evaluation.
    """
    if precision == "float32":
        return model.tile_network
    cache = _COMPILED.setdefault(model, {})
    if precision not in cache:
        import keras

        def layer_in(layer):
            return layer.__class__.from_config({**layer.get_config(), "dtype": precision})

        cache[precision] = keras.models.clone_model(model.tile_network, clone_function=layer_in)
    return cache[precision]


def _compiled(model, path: str, precision: str = "float32"):
    # path: "tiles" (a batch of tiles), "fused" (a padded band) or "periodic" (a whole
    # periodic image, no halo).  A model averaged over tile placements gives the outputs of
    # every placement of the band, scaled but not shifted (_BandNetwork sums them per region).
    cache = _COMPILED.setdefault(model, {})
    key = (path, precision)
    if key not in cache:
        step = getattr(model, "placement_step", None)
        scale, shift = model.energy_scale, model.energy_shift_per_tile
        if step is not None:
            shift = 0.0
        signature = [tf.TensorSpec([None, None, None, model.n_channels], tf.float32)]
        network = _tile_network_in(model, precision)
        if path == "tiles":

            def outputs(tiles):
                return network(tiles, training=False)
        else:
            fused = model.fused_network
            if network is not model.tile_network:
                fused = FusedTileNetwork(
                    network, model.focus, model.context, model.boundary, step=step
                )
            if path == "fused":

                def outputs(padded):
                    return fused.on_padded(padded, training=False)
            else:

                def outputs(image):
                    return fused.on_periodic(image, training=False)

        def run(images):
            return apply_energy_affine(tf.cast(outputs(images), tf.float32), scale, shift)

        cache[key] = tf.function(run, input_signature=signature)
    return cache[key]


class _BandNetwork:
    """Per-region outputs of a padded band, fused or tile by tile."""

    def __init__(
        self, model, evaluation: str | None, batch_size: int | None, precision: str = "float32"
    ):
        self.placement_step = getattr(model, "placement_step", None)
        if self.placement_step is not None:
            if evaluation == "tiles":
                raise ValueError(
                    "a model averaged over tile placements (placement_step="
                    f'{model.placement_step}) is evaluated fused. Received: evaluation="tiles"'
                )
            if model.fused_network.phases != (1, 1):
                raise ValueError(
                    f"streaming a model averaged over tile placements every "
                    f"{model.placement_step} px, below its trunk's stride "
                    f"{model.fused_network.total_stride}, is not supported: call the model "
                    "on the image, or use a step that the stride divides"
                )
        use_fused = model.fused_network is not None
        if evaluation == "tiles":
            use_fused = False
        elif evaluation == "fused" and not use_fused:
            raise ValueError(
                'evaluation="fused" needs a model whose tile network can be fused '
                f"(model.fused_network is None; model.evaluation={model.evaluation!r}). "
                'Received: evaluation="fused"; use None or "tiles".'
            )
        elif evaluation not in (None, "auto", "tiles", "fused"):
            raise ValueError(
                "`evaluation` must be None, 'auto', 'tiles' or 'fused'. "
                f"Received: evaluation={evaluation!r}"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: {precision!r}")
        self.path = "fused" if use_fused else "tiles"
        self.model, self.precision = model, precision
        self.batch_size = check_positive_int(
            DEFAULT_TILE_BATCH if batch_size is None else batch_size, "batch_size"
        )
        network = _tile_network_in(model, precision)
        if network is not model.tile_network:
            network.set_weights(model.tile_network.get_weights())  # the model's current ones
        self._run = _compiled(model, self.path, precision)

    def periodic(self, image: np.ndarray) -> np.ndarray:
        """Per-region outputs of a whole periodic image (fused path, no halo)."""
        return _compiled(self.model, "periodic", self.precision)(image[None])[0].numpy()

    def halo(self, low_edge: tuple[bool, bool]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Pixels rendered before and after a band's regions along each axis.

        The context; with placements every `k`, also the `f - k` after (the last
        placement's tile), and on the low edge of a zero-boundary image the `f - k` before
        (the placements that start before the image, counted in its first regions).
        """
        (focus, context) = (self.model.focus, self.model.context)
        if self.placement_step is None:
            return (tuple(context), tuple(context))
        extra = [f - k for f, k in zip(focus, self.placement_step, strict=True)]
        low = tuple(
            c + (e if edge else 0) for c, e, edge in zip(context, extra, low_edge, strict=True)
        )
        return (low, tuple(c + e for c, e in zip(context, extra, strict=True)))

    def __call__(
        self, padded: np.ndarray, grid: tuple[int, int], low_edge=(False, False)
    ) -> np.ndarray:
        if self.placement_step is not None:
            return self._placements_per_region(self._run(padded[None])[0].numpy(), low_edge)
        if self.path == "fused":
            return self._run(padded[None])[0].numpy()
        (f0, f1), (t0, t1) = self.model.focus, self.model.tile_shape[:2]
        view = np.lib.stride_tricks.sliding_window_view(padded, (t0, t1), axis=(0, 1))
        view = view[::f0, ::f1].transpose(0, 1, 3, 4, 2)  # (nR, nC, T0, T1, C), no copy
        n = grid[0] * grid[1]
        values = []
        for begin in range(0, n, self.batch_size):
            rows, cols = np.divmod(np.arange(begin, min(begin + self.batch_size, n)), grid[1])
            values.append(self._run(np.ascontiguousarray(view[rows, cols])).numpy())
        return np.concatenate(values).reshape(*grid, -1)

    def _placements_per_region(self, values: np.ndarray, low_edge) -> np.ndarray:
        # The (f/k)² placements whose origin lies in a region, summed over and divided by
        # the number of grids, plus the shift once: the region's share of the model's mean
        # over the shifted grids (``EDNN._placement_map``).  On a zero-boundary low edge the
        # f/k - 1 placements that start before the image join the first region, unshifted.
        per = [f // k for f, k in zip(self.model.focus, self.placement_step, strict=True)]
        for axis, edge in enumerate(low_edge):
            if edge:  # one empty placement in front makes whole regions; fold it into the next
                values = np.insert(values, 0, 0.0, axis=axis)
            shape = values.shape
            values = values.reshape(
                *shape[:axis], shape[axis] // per[axis], per[axis], *shape[axis + 1 :]
            ).sum(axis=axis + 1)
            if edge:
                first = np.take(values, [0], axis=axis) + np.take(values, [1], axis=axis)
                rest = np.take(values, np.arange(2, values.shape[axis]), axis=axis)
                values = np.concatenate([first, rest], axis=axis)
        shift = np.asarray(self.model.energy_shift_per_tile, np.float32)
        return values / np.float32(per[0] * per[1]) + shift


# --- Driver ----------------------------------------------------------------------------------


def _band_plan(grid, band_rows, regions_per_band):
    """Bands ``((r0, r1), (q0, q1))`` of focus regions that cover the grid once.

    With ``band_rows`` given: that many rows, split along x into at most
    ``regions_per_band`` columns. Else about ``regions_per_band`` regions per band in a
    square-ish block (a narrow or short sheet gives a long band), cut into equal parts: a
    band of ``R x Q`` regions is rendered and evaluated with a context halo of ``2c`` pixels
    along each axis, so the work per focus pixel is ``(Rf + 2c)(Qf + 2c) / (RQf^2)``, least
    for a square. (Full-width bands of a 10^7-atom sheet were 3 regions tall: 2.3x the work.)
    """
    (n_h, n_w) = grid
    regions = regions_per_band
    if band_rows is not None:
        rows = min(check_positive_int(band_rows, "band_rows"), n_h)
        width = min(n_w, regions)
    else:
        width = min(n_w, max(math.isqrt(regions), regions // n_h, 1))
        rows = min(n_h, max(1, regions // width))
        # Equal parts: n bands of ceil(n / parts) rather than full ones and a thin remainder.
        rows = -(-n_h // -(-n_h // rows))
        width = -(-n_w // -(-n_w // width))
    return [
        ((r, min(r + rows, n_h)), (q, min(q + width, n_w)))
        for r in range(0, n_h, rows)
        for q in range(0, n_w, width)
    ]


def _evaluate(
    model,
    renderer: _BandRenderer,
    grid: tuple[int, int],
    n_atoms: int,
    seconds: dict,
    *,
    band_rows,
    batch_size,
    regions_per_band,
    progress,
    backend,
    return_map,
    evaluation,
    prefetch,
    precision,
    started,
) -> SheetResult:
    network = _BandNetwork(model, evaluation, batch_size, precision)
    if backend is None:
        from ednn.distributed import SingleProcess

        backend = SingleProcess()
    regions = check_positive_int(
        DEFAULT_REGIONS_PER_BAND if regions_per_band is None else regions_per_band,
        "regions_per_band",
    )
    bands = _band_plan(grid, band_rows, regions)
    mine = bands[backend.rank :: backend.size]
    (f0, f1) = model.focus
    totals = np.zeros(model.n_targets, dtype=np.float64)
    tile_map = np.zeros((*grid, model.n_targets), np.float32) if return_map else None
    seconds["network"] = 0.0

    # A periodic image that is one band needs no halo: the fused network wraps each layer's
    # input instead, so no context pixel is rasterized or convolved twice.
    whole = (
        len(bands) == 1
        and renderer.wrap
        and network.path == "fused"
        and network.placement_step is None
    )
    seconds["path"] = "periodic" if whole else network.path

    # The first band (and every band without prefetching) is rasterized while no network
    # runs, so in strips on several cores at once; the others beside the network, on one.
    cores = min(os.cpu_count() or 1, 4)

    def low_edge(band) -> tuple[bool, bool]:
        # Bands on a zero-boundary image's first row or column of regions.
        ((r0, _), (q0, _)) = band
        return (not renderer.wrap and r0 == 0, not renderer.wrap and q0 == 0)

    def render(band, threads=1):
        ((r0, r1), (q0, q1)) = band
        if whole:
            return renderer.window((0, grid[0] * f0), (0, grid[1] * f1), threads)
        ((b0, b1), (a0, a1)) = network.halo(low_edge(band))
        rows, cols = (r0 * f0 - b0, r1 * f0 + a0), (q0 * f1 - b1, q1 * f1 + a1)
        return renderer.window(rows, cols, threads)

    # Rasterize the next band in a thread while the network runs on this one (NumPy and
    # TensorFlow both release the GIL); two bands are in memory at a time.
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(render, mine[0], cores) if (mine and prefetch) else None
        for index in tqdm(range(len(mine)), desc="bands", unit="band", disable=not progress):
            ((r0, r1), (q0, q1)) = mine[index]
            padded = upcoming.result() if prefetch else render(mine[index], cores)
            if prefetch and index + 1 < len(mine):
                upcoming = pool.submit(render, mine[index + 1])
            start = time.perf_counter()
            values = (
                network.periodic(padded)
                if whole
                else network(padded, (r1 - r0, q1 - q0), low_edge(mine[index]))
            )
            seconds["network"] += time.perf_counter() - start
            totals += values.sum(axis=(0, 1), dtype=np.float64)
            if tile_map is not None:
                tile_map[r0:r1, q0:q1] = values
    totals = np.asarray(backend.allreduce_sum(totals), dtype=np.float64)
    if tile_map is not None and backend.size > 1:
        tile_map = np.asarray(backend.allreduce_sum(tile_map), dtype=np.float32)
    for key, value in renderer.seconds.items():
        seconds[key] = seconds.get(key, 0.0) + value
    seconds["total"] = time.perf_counter() - started
    seconds["n_bands"] = len(bands)
    return SheetResult(float(totals[0]), int(n_atoms), tile_map, seconds, totals)


def _layout(atoms: Atoms, spec: raster.RasterSpec) -> raster.RasterLayout:
    """:func:`ednn.raster.raster_layout`, without copying a sheet that is already rectangular.

    ``to_rectangular`` returns a new, wrapped copy (32 bytes per atom: 1.1 GB for 35 M
    atoms); a cell with ``a1`` along +x, ``a2`` along +y and ``a3`` along z needs no change
    beyond the wrap into the cell, which :class:`_Sheet` does on its own copy anyway.
    """
    if isinstance(atoms, Atoms) and len(atoms) and cells.is_periodic_sheet(atoms):
        cell = atoms.cell.array
        aligned = cell[0, 0] > 0.0 and cell[1, 1] > 0.0
        aligned = aligned and not (cell[0, 1:].any() or cell[1, ::2].any() or cell[2, :2].any())
        if aligned:
            raster._check_structure(atoms, spec)
            lengths = (float(cell[0, 0]), float(cell[1, 1]))
            shape, spacing = raster.grid_for_cell(lengths, spec.spacing, spec.multiple_of)
            return raster.RasterLayout(atoms, shape, spacing, True)
    return raster.raster_layout(atoms, spec)


def evaluate_sheet(
    model,
    atoms: Atoms,
    *,
    band_rows: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    backend=None,
    return_map: bool = False,
    evaluation: str | None = None,
    regions_per_band: int | None = None,
    prefetch: bool = True,
    precision: str = "float32",
) -> SheetResult:
    """Energy of a sheet of any size, band by band in bounded memory.

    Parameters
    ----------
    model : ednn.model.EDNN
        A model whose ``metadata["raster"]`` holds its :class:`~ednn.raster.RasterSpec`.
        One averaged over tile placements (``placement_step``) is evaluated fused, at a
        step that its trunk's stride divides; each region of the map then holds the
        placements that start in it.
    atoms : ase.Atoms
        A periodic sheet (any cell with ``a3`` along z) or a non-periodic flake, positions
        in Å, as for :func:`ednn.raster.rasterize`.
    band_rows : int, optional
        Rows of focus regions per band; by default about ``regions_per_band`` regions per
        band.
    batch_size : int, optional
        Tiles per network call on the tile path (default 256); the fused path runs one
        band per call.
    progress : bool, default False
        Show a tqdm progress bar over the bands.
    backend : ednn.distributed backend, optional
        Bands are dealt round-robin to ``backend.size`` ranks and the energies summed with
        ``backend.allreduce_sum``; one process by default.
    return_map : bool, default False
        Also return the per-region outputs ``(nH, nW, n_targets)``.
    evaluation : {None, "tiles", "fused"}, optional
        Override the model's choice (None: fused when ``model.fused_network`` exists).
    regions_per_band : int, optional
        Focus regions per band (default 8192), in a square-ish block when ``band_rows`` is
        not given (the context halo then costs least); with ``band_rows``, bands wider than
        this are split along x.
    prefetch : bool, default True
        Rasterize the next band in a background thread while the network evaluates the
        current one (two bands in memory).
    precision : {"float32", "mixed_bfloat16", "mixed_float16"}, default "float32"
        Precision of the network pass (a Keras dtype policy; weights stay float32, the sum
        is float64).  On the development CPU (AMX) ``"mixed_bfloat16"`` ran the network
        2.0-2.3x and the whole evaluation 1.2x faster on 10^5-10^6 atoms and moved the
        default model's energy by -0.32 meV/atom (``experiments/precision_speed.py``);
        the tile outputs are then no longer equal to plain tiling's to 1e-5.

    Returns
    -------
    SheetResult
        ``energy_eV`` (float64 sum), ``n_atoms``, ``per_region_map`` (or None), ``timings``.

    Notes
    -----
    Memory: one band's image with its halo (``(R f + 2c) x (Q f + 2c) x C`` float32 for a
    band of ``R x Q`` regions) and the network's activations on it, two bands at a time, plus
    the atoms sorted by y (25 bytes per atom, 41 while sorting; no copy of the structure
    when its cell is an axis-aligned rectangle).  Time is linear in the number of atoms.
    The network runs on a GPU when TensorFlow sees one.  Thread counts:
    :func:`configure_threads`.

    Example
    -------
    >>> result = evaluate_sheet(model, big_sheet, progress=True)
    >>> result.energy_eV, result.n_atoms
    """
    started = time.perf_counter()
    spec = model_raster_spec(model)
    layout = _layout(atoms, spec)
    sheet = layout.sheet
    lengths = (float(sheet.cell[0, 0]), float(sheet.cell[1, 1]))
    radius = spec.height_radius if spec.height_channel else None
    z_period = raster.sheet_z_period(sheet, layout.periodic)
    source = _Sheet(sheet.positions, sheet.numbers, lengths, layout.periodic, radius, z_period)
    n_atoms, shape, spacing, periodic = len(sheet), layout.shape, layout.spacing, layout.periodic
    del layout, sheet  # a rotated or supercell copy is not needed once binned
    seconds = {"layout": time.perf_counter() - started}
    renderer = _BandRenderer(source, spec, shape, spacing, periodic, model.boundary == "periodic")
    grid = (shape[0] // model.focus[0], shape[1] // model.focus[1])
    return _evaluate(
        model,
        renderer,
        grid,
        n_atoms,
        seconds,
        band_rows=band_rows,
        batch_size=batch_size,
        regions_per_band=regions_per_band,
        progress=progress,
        backend=backend,
        return_map=return_map,
        evaluation=evaluation,
        prefetch=prefetch,
        precision=precision,
        started=started,
    )


def evaluate_repeat(
    model,
    atoms: Atoms,
    nx: int,
    ny: int,
    **options,
) -> SheetResult:
    """Energy of the periodic ``nx x ny`` repeat of a cell, evaluated as one whole sheet.

    The atoms of each band are generated from the cell as they are needed, so the repeat is
    never built: a 10^8-atom sheet from a 10^3-atom cell needs memory for one band only.  The
    image is that of the whole repeated sheet (its pixel grid is fitted to the whole sheet,
    as :func:`ednn.raster.rasterize` would fit it), so this equals
    ``evaluate_sheet(model, rect.repeat((nx, ny, 1)))`` with ``rect`` the cell's rectangular
    form (``ednn.cells.to_rectangular``; the cell itself when it is rectangular), and equals
    ``nx * ny`` times the cell's energy when the cell is a whole number of focus regions.

    Parameters
    ----------
    model : ednn.model.EDNN
        As for :func:`evaluate_sheet`.
    atoms : ase.Atoms
        One periodic cell of the sheet (Å).
    nx, ny : int
        Repeats along the rectangular cell's x and y.
    **options
        Keyword options of :func:`evaluate_sheet`.

    Returns
    -------
    SheetResult
        For the whole repeat (``n_atoms = nx * ny * len(rect)``).
    """
    started = time.perf_counter()
    nx, ny = check_positive_int(nx, "nx"), check_positive_int(ny, "ny")
    spec = model_raster_spec(model)
    if not isinstance(atoms, Atoms) or not cells.is_periodic_sheet(atoms):
        raise ValueError(
            "`atoms` must be a periodic sheet (an ase.Atoms with pbc in x and y) to repeat. "
            f"Received: {atoms!r}."
        )
    cell = cells.to_rectangular(atoms)
    lengths = (float(cell.cell[0, 0]), float(cell.cell[1, 1]))
    big = (lengths[0] * nx, lengths[1] * ny)
    shape, spacing = raster.grid_for_cell(big, spec.spacing, spec.multiple_of)
    seconds = {"layout": time.perf_counter() - started}
    start = time.perf_counter()
    # The repeat is periodic with the cell, so each copy's local heights are the cell's.
    heights = None
    if spec.height_channel:
        heights = raster.local_heights(
            cell.positions, spec.height_radius, lengths, raster.sheet_z_period(cell, True)
        )
    seconds["heights"] = time.perf_counter() - start
    source = _RepeatedCell(cell.positions, cell.numbers, heights, lengths, (nx, ny))
    renderer = _BandRenderer(source, spec, shape, spacing, True, model.boundary == "periodic")
    grid = (shape[0] // model.focus[0], shape[1] // model.focus[1])
    return _evaluate(
        model, renderer, grid, nx * ny * len(cell), seconds, started=started, **_defaults(options)
    )


def _defaults(options: dict) -> dict:
    known = (
        "band_rows",
        "batch_size",
        "progress",
        "backend",
        "return_map",
        "evaluation",
        "regions_per_band",
        "prefetch",
        "precision",
    )
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"Unknown options {unknown}; evaluate_sheet takes {list(known)}.")
    defaults = dict.fromkeys(known)
    defaults.update(progress=False, return_map=False, prefetch=True, precision="float32")
    return {**defaults, **options}
