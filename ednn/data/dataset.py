"""Training data as images: rasterize structures, fit reference energies, batch by shape.

:class:`ImageSet` holds one rasterized image per structure (cached in memory as float32, or
rasterized when a batch needs it), its extensive targets (eV), atom counts per species and
split.  Images of one batch must share a shape, so :func:`batch_plan` groups structures into
buckets of identical ``(H, W)`` (sheets of the same ``nx x ny`` cell give the same shape)
and :func:`make_tf_dataset` streams the batches, optionally augmented
(:mod:`ednn.data.augment`) and sharded over processes, through ``tf.data``.

Which cell is imaged: a periodic sheet becomes its rectangular cell
(:func:`ednn.cells.to_rectangular`), repeated along x and y until each length splits into
whole focus regions at a pixel size within ``spacing_tolerance`` of the requested one
(:func:`commensurate_sheet`, the rule ``ednn energy`` applies at prediction, so that a model
sees the same pixel size in training and in use).  Without that repeat the pixel size
would absorb up to 10 % of strain.  Targets and atom counts here are those of the imaged
cell, i.e. the input's times the number of copies, so an image and its label agree.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ase import Atoms

from ednn.data import readers
from ednn.data.augment import augment_image
from ednn.raster import SPACING_TOLERANCE, RasterSpec, commensurate_sheet, raster_layout, rasterize

__all__ = [
    "ImageSet",
    "batch_plan",
    "commensurate_sheet",
    "fit_reference_energies",
    "load_image_set",
    "make_tf_dataset",
    "random_split",
    "shard",
]


@dataclasses.dataclass
class ImageSet:
    """Images and labels of a set of structures, in one fixed order.

    Attributes
    ----------
    ids : list of str
        One id per structure (``atoms.info["id"]`` or ``"<file>:<frame>"``).
    targets : numpy.ndarray, float64, shape (N, n_targets)
        Extensive targets of the imaged cell in eV.
    n_atoms : numpy.ndarray, int64, shape (N,)
        Atoms in the imaged cell; 0 where unknown (HDF5 images without ``n_atoms``).
    counts : numpy.ndarray, float64, shape (N, n_species), or None
        Atoms per species in the imaged cell; None for images without structures.
    shapes : numpy.ndarray, int64, shape (N, 2)
        Image ``(H, W)`` in pixels.
    periodic : numpy.ndarray, bool, shape (N,)
        Periodic sheet (True) or flake in vacuum (False).
    splits : numpy.ndarray of str, shape (N,)
        ``"train"``, ``"validation"``, ... or ``""`` when the source did not say.
    groups : list of str
        Structures that must share a split (snapshots of one MD run); the id by default.
    spec : RasterSpec or None
        How structures were rasterized; None for ready-made images.
    """

    ids: list[str]
    targets: np.ndarray
    n_atoms: np.ndarray
    counts: np.ndarray | None
    shapes: np.ndarray
    periodic: np.ndarray
    splits: np.ndarray
    groups: list[str]
    spec: RasterSpec | None = None
    images_: list | None = None  # float32 (H, W, C) per structure, or None
    frames_: list | None = None  # ase.Atoms per structure, for rasterizing on demand

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_channels(self) -> int:
        """Channels per image."""
        if self.spec is not None:
            return self.spec.n_channels
        return int(self.images_[0].shape[-1])

    @property
    def species(self) -> tuple[str, ...]:
        """Species of the columns of :attr:`counts` (empty for ready-made images)."""
        return self.spec.species if self.spec is not None else ()

    def image(self, index: int) -> np.ndarray:
        """The float32 ``(H, W, C)`` image of structure ``index`` (rasterized if not cached)."""
        if self.images_ is not None and self.images_[index] is not None:
            return self.images_[index]
        return rasterize(self.frames_[index], self.spec)

    def translated_image(self, index: int, shift: Sequence[float]) -> np.ndarray:
        """The image of periodic structure ``index`` moved by ``shift = (dy, dx)`` pixels.

        The atoms are translated by ``shift`` times the image's pixel size (Å) and
        rasterized afresh, so a fractional shift moves them between the pixel centres: an
        exact symmetry of the energy that whole-pixel rolls of a cached image cannot show
        (a whole-pixel shift gives the rolled image).

        Raises
        ------
        ValueError
            If the set holds ready-made images (no structures) or ``index`` is not a
            periodic sheet.
        """
        if self.frames_ is None or self.spec is None:
            raise ValueError(
                "sub-pixel translations need the structures; this set holds ready-made "
                "images (HDF5), which cannot be rasterized again"
            )
        if not self.periodic[index]:
            raise ValueError(f"structure {self.ids[index]} is not periodic; only sheets move")
        layout = raster_layout(self.frames_[index], self.spec)
        atoms = layout.sheet.copy()
        (dy, dx) = (float(v) * h for v, h in zip(shift, layout.spacing, strict=True))
        atoms.translate([dx, dy, 0.0])
        return rasterize(atoms, self.spec)

    def images(self, indices: Sequence[int], workers: int = 1) -> list[np.ndarray]:
        """Images of several structures, rasterizing uncached ones with ``workers`` threads."""
        indices = [int(i) for i in indices]
        if workers > 1 and self.images_ is None and len(indices) > 1:
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(self.image, indices))
        return [self.image(i) for i in indices]

    def cache(self, workers: int = 1, progress: Callable | None = None) -> None:
        """Rasterize every image now and keep it in memory (float32).

        Memory: ``4 H W C`` bytes per structure.  ``progress`` is called once per image.
        """
        if self.images_ is not None:
            return
        images: list = [None] * len(self)

        def render(index: int) -> None:
            images[index] = self.image(index)
            if progress is not None:
                progress()

        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(render, range(len(self))))
        else:
            for index in range(len(self)):
                render(index)
        self.images_ = images

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """A new set with the structures at ``indices``, in that order (images shared)."""
        indices = np.asarray(indices, dtype=np.int64)

        def pick(items):
            return None if items is None else [items[i] for i in indices]

        return ImageSet(
            ids=[self.ids[i] for i in indices],
            targets=self.targets[indices],
            n_atoms=self.n_atoms[indices],
            counts=None if self.counts is None else self.counts[indices],
            shapes=self.shapes[indices],
            periodic=self.periodic[indices],
            splits=self.splits[indices],
            groups=[self.groups[i] for i in indices],
            spec=self.spec,
            images_=pick(self.images_),
            frames_=pick(self.frames_),
        )

    def split(self, name: str) -> ImageSet:
        """The structures of one split (``"train"``, ``"validation"``, ...)."""
        return self.subset(np.flatnonzero(self.splits == name))

    @classmethod
    def from_structures(
        cls,
        frames: Sequence[Atoms],
        spec: RasterSpec,
        targets: Sequence[str] = ("energy",),
        spacing_tolerance: float | None = SPACING_TOLERANCE,
    ) -> ImageSet:
        """Label and lay out structures; images are made later (:meth:`cache`, :meth:`image`).

        Each structure is imaged as :func:`commensurate_sheet` with ``spacing_tolerance``.

        Raises
        ------
        DataError
            Unknown species, a missing or NaN target, or a cell that cannot be rasterized
            at ``spec`` (naming the structure).
        """
        readers.check_species(frames, spec.species, "training data")
        lookup = {symbol: k for k, symbol in enumerate(spec.species)}
        rows, imaged = [], []
        for index, atoms in enumerate(frames):
            ident = str(atoms.info.get("id", index))
            where = f"structure {ident}"
            values = readers.target_values(atoms, targets, where)
            try:
                sheet = commensurate_sheet(atoms, spec, spacing_tolerance)
                layout = raster_layout(sheet, spec)
            except ValueError as err:
                raise readers.DataError(f"{where} cannot be rasterized: {err}") from err
            copies = len(layout.sheet) / len(atoms)
            counts = np.zeros(len(spec.species))
            np.add.at(counts, [lookup[s] for s in layout.sheet.get_chemical_symbols()], 1.0)
            rows.append((ident, values * copies, len(layout.sheet), counts, layout))
            imaged.append(sheet)
        return cls(
            ids=[row[0] for row in rows],
            targets=np.array([row[1] for row in rows]).reshape(len(rows), len(targets)),
            n_atoms=np.array([row[2] for row in rows], dtype=np.int64),
            counts=np.array([row[3] for row in rows]).reshape(len(rows), len(spec.species)),
            shapes=np.array([row[4].shape for row in rows], dtype=np.int64).reshape(-1, 2),
            periodic=np.array([row[4].periodic for row in rows], dtype=bool),
            splits=np.array([str(a.info.get("split", "")) for a in frames], dtype=object),
            groups=[str(a.info.get("group", row[0])) for a, row in zip(frames, rows, strict=True)],
            spec=spec,
            frames_=imaged,
        )

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        targets: np.ndarray,
        n_atoms: np.ndarray | None = None,
        ids: Sequence[str] | None = None,
        periodic: bool = True,
    ) -> ImageSet:
        """Ready-made images ``(N, H, W, C)`` with targets ``(N, n_targets)`` in eV."""
        images = np.asarray(images, dtype=np.float32)
        n = len(images)
        targets = np.asarray(targets, dtype=np.float64).reshape(n, -1)
        ids = [str(i) for i in range(n)] if ids is None else list(ids)
        return cls(
            ids=ids,
            targets=targets,
            n_atoms=np.zeros(n, np.int64) if n_atoms is None else np.asarray(n_atoms, np.int64),
            counts=None,
            shapes=np.tile(np.array(images.shape[1:3], dtype=np.int64), (n, 1)),
            periodic=np.full(n, periodic),
            splits=np.full(n, "", dtype=object),
            groups=list(ids),
            images_=list(images),
        )


def load_image_set(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    spec: RasterSpec | None,
    *,
    format: str | None = None,
    targets: Sequence[str] = ("energy",),
    spacing_tolerance: float | None = SPACING_TOLERANCE,
) -> ImageSet:
    """Read one or more sources (see :mod:`ednn.data.readers`) into one :class:`ImageSet`.

    Structures (ASE files, ednn dataset directories) are laid out with ``spec``; images are
    not made yet (call :meth:`ImageSet.cache`).  An HDF5 source gives images directly and
    cannot be mixed with structure sources; it supports the single target ``"energy"``.

    Raises
    ------
    DataError, StructureFileError
        With the file and the problem named.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise readers.DataError("`data.path` must name at least one file or directory.")
    kinds = [readers.detect_format(path, format) for path in paths]
    if "hdf5" in kinds:
        if len(paths) != 1:
            raise readers.DataError(
                "An HDF5 image file must be the only data source. "
                f"Received: data.path={[os.fspath(p) for p in paths]}."
            )
        if list(targets) != ["energy"]:
            raise readers.DataError(
                f"HDF5 images carry one target, the energy 'Y'. Received: targets={targets}."
            )
        arrays = readers.read_hdf5_images(paths[0])
        return ImageSet.from_arrays(arrays.images, arrays.energies, arrays.n_atoms, arrays.ids)
    if spec is None:
        raise TypeError("`spec` (a RasterSpec) is needed to rasterize structures.")
    frames: list[Atoms] = []
    for path, kind in zip(paths, kinds, strict=True):
        if kind == "ednn-dir":
            frames += readers.read_dataset_dir(path, targets)
        else:
            frames += readers.read_labelled(path, kind, targets)
    ids = [str(a.info["id"]) for a in frames]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = sorted({i for i in ids if i in seen or seen.add(i)})
        raise readers.DataError(
            f"Every structure id must be unique across the data sources. Received: "
            f"{readers.format_items(repeated)} more than once."
        )
    return ImageSet.from_structures(frames, spec, targets, spacing_tolerance)


def random_split(groups: Sequence[str], fractions: dict[str, float], seed: int = 0) -> np.ndarray:
    """Assign each item a split, whole groups at a time, reproducibly from ``seed``.

    Parameters
    ----------
    groups : sequence of str
        Group of each item; items of one group (e.g. snapshots of one MD run) share a split.
    fractions : dict of str to float
        Fraction of groups per split, e.g. ``{"validation": 0.1, "test": 0.1}``; the rest
        is ``"train"``.
    seed : int, default 0

    Returns
    -------
    numpy.ndarray of str, shape (len(groups),)

    Example
    -------
    >>> random_split(list("abcdefghij"), {"validation": 0.2}, seed=0).tolist().count("train")
    8
    """
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    assigned: dict[str, str] = {}
    start = 0
    for split, fraction in fractions.items():
        count = round(fraction * len(names))
        for k in order[start : start + count]:
            assigned[names[k]] = split
        start += count
    for k in order[start:]:
        assigned[names[k]] = "train"
    return np.array([assigned[g] for g in groups], dtype=object)


def fit_reference_energies(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-species reference energies by linear least squares on composition.

    Solves ``min ||counts @ eps - targets||²`` (no intercept): ``eps[s, t]`` is the energy in
    eV per atom of species ``s`` for target ``t``.  The network then learns the residual
    ``targets - counts @ eps``.

    Parameters
    ----------
    counts : numpy.ndarray, shape (N, n_species)
        Atoms per species of each structure.
    targets : numpy.ndarray, shape (N,) or (N, n_targets)
        Extensive targets in eV.

    Returns
    -------
    numpy.ndarray, float64, shape (n_species, n_targets)

    Notes
    -----
    The minimum-norm solution is returned when the compositions do not determine every
    species (a species absent from the data gets 0; species that always occur in a fixed
    ratio, as B and N in pure hBN, share their energy evenly).

    Example
    -------
    >>> counts = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    >>> fit_reference_energies(counts, counts @ [-9.0, -7.0]).ravel().round(6).tolist()
    [-9.0, -7.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64).reshape(len(counts), -1)
    solution, *_ = np.linalg.lstsq(counts, targets, rcond=None)
    return solution


def batch_plan(
    shapes: np.ndarray,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
) -> list[np.ndarray]:
    """One epoch's batches: indices grouped so that every batch has one image shape.

    A pure function of its arguments, so a resumed run replays the same epoch.

    Parameters
    ----------
    shapes : numpy.ndarray, shape (N, 2)
        Image shape of each structure.
    batch_size : int
        Structures per batch; a bucket's last batch may be smaller.
    seed, epoch : int
        With ``shuffle``, the order within buckets and of the batches is drawn from
        ``numpy.random.default_rng([seed, epoch])``.
    shuffle : bool, default True
        Without it, buckets come in order of first appearance and keep the data order.

    Returns
    -------
    list of numpy.ndarray of int64

    Example
    -------
    >>> shapes = np.array([[8, 8], [8, 16], [8, 8], [8, 8]])
    >>> [b.tolist() for b in batch_plan(shapes, 2, shuffle=False)]
    [[0, 2], [3], [1]]
    """
    shapes = np.asarray(shapes).reshape(-1, 2)
    _, first, bucket_of = np.unique(shapes, axis=0, return_index=True, return_inverse=True)
    bucket_of = bucket_of.reshape(-1)
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for bucket in np.argsort(first, kind="stable"):
        members = np.flatnonzero(bucket_of == bucket)
        if shuffle:
            members = rng.permutation(members)
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    if shuffle:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def shard(batch: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This process's share of a global batch: contiguous, sizes differing by at most one."""
    return np.array_split(np.asarray(batch), size)[rank]


def make_tf_dataset(
    data: ImageSet,
    batches: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    sizes: np.ndarray | None = None,
    augment: dict | None = None,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    size: int = 1,
    workers: int = 1,
    prefetch: int = 2,
):
    """Stream ``batches`` as a ``tf.data.Dataset`` of this process's shares.

    Each element is ``(images, targets, sizes, mask, n_global)``: float32 images
    ``(b, H, W, C)``, float32 ``targets[indices]`` ``(b, n_targets)``, float32 ``sizes[indices]``
    ``(b,)`` (atom counts by default), a float32 mask ``(b,)`` and the global batch size
    (int32 scalar), ``b`` being this rank's share (:func:`shard`).  A rank whose share of a
    small batch is empty gets one structure of the batch with mask 0, so that every rank
    takes part in every step's collectives (TensorFlow's convolutions fail on empty
    batches).  With ``augment`` (``{"translate": bool, "flip": bool, "subpixel": bool}``)
    each image gets a random energy-preserving symmetry drawn from
    ``default_rng([seed, epoch, index])``, so the draw does not depend on batching or on the
    number of processes.  ``subpixel`` first moves a periodic sheet's atoms by a uniform
    random fraction of a pixel along y and x (from ``default_rng([seed, epoch, index, 1])``)
    and rasterizes it afresh (:meth:`ImageSet.translated_image`), ignoring its cached image.
    """
    import tensorflow as tf

    n_targets = targets.shape[1]
    sizes = data.n_atoms if sizes is None else np.asarray(sizes)
    if augment and augment.get("subpixel") and data.frames_ is None:
        raise ValueError(
            "augment.subpixel needs the structures; this set holds ready-made images "
            "(HDF5), which cannot be rasterized again. Set training.augment.subpixel: false."
        )

    def generate():
        for batch in batches:
            mine = shard(batch, rank, size)
            mask = np.ones(len(mine), np.float32)
            if not len(mine):
                mine, mask = np.asarray(batch[:1]), np.zeros(1, np.float32)
            if augment and augment.get("subpixel"):
                images = _translated_images(data, mine, seed, epoch, workers)
            else:
                images = data.images(mine, workers=workers)
            if augment:
                images = [
                    augment_image(
                        image,
                        np.random.default_rng([seed, epoch, int(index)]),
                        periodic=bool(data.periodic[index]),
                        translate=augment.get("translate", True),
                        flip=augment.get("flip", True),
                    )
                    for image, index in zip(images, mine, strict=True)
                ]
            yield (
                np.stack(images).astype(np.float32, copy=False),
                targets[mine].astype(np.float32),
                sizes[mine].astype(np.float32),
                mask,
                np.int32(len(batch)),
            )

    signature = (
        tf.TensorSpec((None, None, None, data.n_channels), tf.float32),
        tf.TensorSpec((None, n_targets), tf.float32),
        tf.TensorSpec((None,), tf.float32),
        tf.TensorSpec((None,), tf.float32),
        tf.TensorSpec((), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.prefetch(prefetch)


def _translated_images(
    data: ImageSet, indices: Sequence[int], seed: int, epoch: int, workers: int
) -> list[np.ndarray]:
    # Periodic sheets moved by a random sub-pixel shift; flakes keep their own image.
    def one(index: int) -> np.ndarray:
        index = int(index)
        if not data.periodic[index]:
            return data.image(index)
        shift = np.random.default_rng([seed, epoch, index, 1]).random(2)
        return data.translated_image(index, shift)

    if workers > 1 and len(indices) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, indices))
    return [one(i) for i in indices]
