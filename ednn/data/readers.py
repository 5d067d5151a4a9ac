"""Read labelled training data: structures with energies, or ready-made images.

Three sources are understood, each with errors that name the file, the frame and the problem:

* any ASE-readable file of structures with energies: extxyz (``.gz`` too), VASP
  ``OUTCAR`` / ``vasprun.xml``, multi-frame trajectories (:func:`read_labelled`);
* an ednn dataset directory written by ``ednn generate`` (``shards/*.extxyz.gz``, unpacked
  ``_work/*.extxyz`` and ``splits.json``), read without writing anything, so it is safe while
  the generator is still running (:func:`read_dataset_dir`);
* the HDF5 layout of the original EDNN: images ``X`` of shape ``(N, H, W)`` or
  ``(N, H, W, C)`` and energies ``Y`` of shape ``(N,)`` or ``(N, 1)`` in eV, optionally atom
  counts ``n_atoms`` of shape ``(N,)`` (:func:`read_hdf5_images`).

Energies are in eV.  Every structure gets ``atoms.info["id"]`` (kept if present, else
``"<file name>:<frame>"``) and, when known, ``atoms.info["split"]``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms

from ednn._validation import format_items
from ednn.structio import StructureFileError, read_frames

__all__ = [
    "HDF5_SUFFIXES",
    "DataError",
    "ImageArrays",
    "check_species",
    "detect_format",
    "read_dataset_dir",
    "read_hdf5_images",
    "read_labelled",
    "read_splits_file",
    "target_values",
]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
SPLIT_NAMES = ("train", "validation", "test", "independent_md", "transfer")


class DataError(ValueError):
    """Training data that cannot be used as it is: no energy, NaN, unknown species, ..."""


class ImageArrays(NamedTuple):
    """Images and labels read from an HDF5 file (see :func:`read_hdf5_images`)."""

    images: np.ndarray  # float32 (N, H, W, C)
    energies: np.ndarray  # float64 (N, 1), eV
    n_atoms: np.ndarray | None  # int64 (N,) or None when the file does not say
    ids: list[str]


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """Name the reader for ``path``: ``"ednn-dir"``, ``"hdf5"`` or an ASE format name.

    ``format`` given (and not ``"auto"``) wins; otherwise a directory is an ednn dataset, a
    ``.h5``/``.hdf5`` file is HDF5 and anything else is left to ASE's detection (``"ase"``).
    """
    if format not in (None, "auto"):
        return format
    path = Path(path)
    if path.is_dir():
        return "ednn-dir"
    if path.suffix.lower() in HDF5_SUFFIXES:
        return "hdf5"
    return "ase"


def target_values(atoms: Atoms, targets: Sequence[str], where: str) -> np.ndarray:
    """The extensive targets of one structure as float64 ``(len(targets),)``.

    ``"energy"`` is ``atoms.get_potential_energy()`` (eV); any other name is read from
    ``atoms.info`` or the attached calculator's results.

    Raises
    ------
    DataError
        If a target is missing, not a number, or not finite; ``where`` names the frame.
    """
    values = []
    for name in targets:
        value = None
        if name == "energy":
            try:
                value = atoms.get_potential_energy()
            except Exception:  # no calculator, or one without an energy
                value = atoms.info.get("energy")
        else:
            value = atoms.info.get(name)
            if value is None and atoms.calc is not None:
                value = getattr(atoms.calc, "results", {}).get(name)
        if value is None:
            hint = (
                "Label it (e.g. extxyz `energy=` in the comment line, or a calculator result)"
                if name == "energy"
                else f"Store it in atoms.info[{name!r}]"
            )
            raise DataError(f"{where} has no {name!r} to train on. {hint}, or remove the frame.")
        try:
            number = float(np.asarray(value).reshape(()))
        except (TypeError, ValueError):
            raise DataError(
                f"{where}: target {name!r} must be one number (eV). Received: {value!r}."
            ) from None
        if not math.isfinite(number):
            raise DataError(
                f"{where}: target {name!r} must be finite. Received: {name}={number!r}."
            )
        values.append(number)
    return np.array(values, dtype=np.float64)


def check_species(frames: Sequence[Atoms], species: Sequence[str], source: str) -> None:
    """Raise :class:`DataError` naming the frames whose symbols are not in ``species``."""
    allowed = set(species)
    bad: dict[str, list[str]] = {}
    for atoms in frames:
        unknown = set(atoms.get_chemical_symbols()) - allowed
        for symbol in sorted(unknown):
            bad.setdefault(symbol, []).append(str(atoms.info.get("id", "?")))
    if bad:
        detail = "; ".join(
            f"{symbol} in {format_items(ids, limit=3)}" for symbol, ids in sorted(bad.items())
        )
        raise DataError(
            f"{source}: every chemical symbol must be one of the model's species "
            f"{list(species)}. Received: {detail}. Add the species to `data.species` or drop "
            "those structures."
        )


def _label_frames(frames: list[Atoms], path: Path, targets: Sequence[str]) -> list[Atoms]:
    for index, atoms in enumerate(frames):
        atoms.info.setdefault("id", f"{path.name}:{index}")
        where = f"{path}, frame {index} (id {atoms.info['id']})"
        if not np.isfinite(atoms.positions).all():
            raise DataError(f"{where}: positions must be finite (no NaN or inf).")
        target_values(atoms, targets, where)
    return frames


def read_labelled(
    path: str | os.PathLike, format: str | None = None, targets: Sequence[str] = ("energy",)
) -> list[Atoms]:
    """All frames of an ASE-readable file, each checked to carry finite ``targets``.

    Parameters
    ----------
    path : str or os.PathLike
        extxyz (``.gz`` too), ``OUTCAR``, ``vasprun.xml`` or anything else ASE reads.
    format : str, optional
        ASE format name when the file name does not say it.
    targets : sequence of str, default ("energy",)
        What to train on (see :func:`target_values`).

    Returns
    -------
    list of ase.Atoms
        With ``info["id"]`` set; every frame has been checked to carry the targets.

    Raises
    ------
    StructureFileError
        Missing, empty or corrupt file.
    DataError
        A frame without a target, or with a NaN one.
    """
    path = Path(path)
    frames = read_frames(path, format=None if format in (None, "auto", "ase") else format)
    return _label_frames(frames, path, targets)


def read_splits_file(path: str | os.PathLike) -> dict[str, str]:
    """Map each id to its split from a ``splits.json`` written by ``ednn generate``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        ids = payload["ids"]
        return {str(ident): str(split) for split, members in ids.items() for ident in members}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        raise DataError(
            f"{path}: expected a splits file with {{'ids': {{split: [id, ...]}}}} "
            f"({type(err).__name__}: {err})."
        ) from err


def _read_extxyz_gz(path: Path) -> list[Atoms]:
    from ase.io import read

    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return list(read(handle, index=":", format="extxyz"))
    except Exception as err:
        raise StructureFileError(
            f"{path}: could not read the shard ({type(err).__name__}: {err})."
        ) from err


def read_dataset_dir(
    directory: str | os.PathLike, targets: Sequence[str] = ("energy",)
) -> list[Atoms]:
    """Labelled structures of an ``ednn generate`` directory, with their splits.

    Reads ``shards/shard-*.extxyz.gz`` then ``_work/*.extxyz`` (structures labelled but not yet
    packed), never writing.  A generator may pack work files while this runs: a work file
    that vanished is skipped and a structure seen twice is kept once.  Splits come from
    ``splits.json`` where it lists an id, else from the structure's own ``info["split"]``
    (the generator computes both alike).

    Raises
    ------
    DataError
        If the directory holds no labelled structures, or one lacks a target.
    """
    from ase.io import read

    directory = Path(directory)
    frames: dict[str, Atoms] = {}
    sources = sorted((directory / "shards").glob("shard-*.extxyz.gz"))
    work = sorted((directory / "_work").glob("*.extxyz"))
    for path in [*sources, *work]:
        if path.suffix == ".gz":
            batch = _read_extxyz_gz(path)
        else:
            try:
                batch = list(read(path, index=":", format="extxyz"))
            except FileNotFoundError:  # packed into a shard meanwhile
                continue
            except Exception as err:
                raise StructureFileError(
                    f"{path}: could not read ({type(err).__name__}: {err})."
                ) from err
        for atoms in _label_frames(batch, path, targets):
            frames.setdefault(str(atoms.info["id"]), atoms)
    if not frames:
        raise DataError(
            f"{directory}: expected labelled structures in shards/*.extxyz.gz or "
            "_work/*.extxyz (an `ednn generate` directory). Received: none."
        )
    splits_path = directory / "splits.json"
    listed = read_splits_file(splits_path) if splits_path.exists() else {}
    for ident, atoms in frames.items():
        if ident in listed:
            atoms.info["split"] = listed[ident]
    return list(frames.values())


def read_hdf5_images(path: str | os.PathLike) -> ImageArrays:
    """Images and energies in the original EDNN HDF5 layout.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file with datasets ``X`` (images, ``(N, H, W)`` or ``(N, H, W, C)``), ``Y``
        (energies in eV, ``(N,)`` or ``(N, 1)``) and optionally ``n_atoms`` (``(N,)``).

    Returns
    -------
    ImageArrays
        Images as float32 ``(N, H, W, C)`` (a channel axis is added to 3D ``X``), energies
        float64 ``(N, 1)``, atom counts or None, ids ``"<file name>:<index>"``.  Memory: the
        whole of ``X`` is loaded.

    Raises
    ------
    DataError
        Corrupt file, missing or misshapen datasets, or non-finite values (indices named).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise StructureFileError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in ("X", "Y") if key not in handle]
            if missing:
                raise DataError(
                    f"{path}: expected HDF5 datasets 'X' (images) and 'Y' (energies, eV). "
                    f"Received: datasets {sorted(handle.keys())} (missing {missing})."
                )
            images = np.asarray(handle["X"], dtype=np.float32)
            energies = np.asarray(handle["Y"], dtype=np.float64)
            n_atoms = np.asarray(handle["n_atoms"]) if "n_atoms" in handle else None
    except DataError:
        raise
    except Exception as err:  # h5py raises OSError for a corrupt or non-HDF5 file
        raise DataError(f"{path}: could not read as HDF5 ({type(err).__name__}: {err}).") from err
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"{path}: 'X' must have shape (N, H, W) or (N, H, W, C). "
            f"Received: X.shape={images.shape}."
        )
    energies = energies.reshape(len(energies), -1) if energies.ndim else energies.reshape(1, 1)
    if len(energies) != len(images):
        raise DataError(
            f"{path}: 'Y' must hold one energy per image of 'X'. Received: "
            f"{len(images)} images and Y.shape={energies.shape}."
        )
    for name, values in (("X", images), ("Y", energies)):
        finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if not finite.all():
            raise DataError(
                f"{path}: '{name}' must be finite. Received: NaN or inf at indices "
                f"{format_items(np.flatnonzero(~finite).tolist())}."
            )
    if n_atoms is not None:
        n_atoms = n_atoms.reshape(-1).astype(np.int64)
        if len(n_atoms) != len(images) or (n_atoms < 1).any():
            raise DataError(
                f"{path}: 'n_atoms' must hold one positive count per image. "
                f"Received: shape {n_atoms.shape}, minimum {n_atoms.min(initial=0)}."
            )
    ids = [f"{path.name}:{index}" for index in range(len(images))]
    return ImageArrays(images, energies, n_atoms, ids)
