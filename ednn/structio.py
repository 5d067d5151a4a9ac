"""Reading structures for the command line: every failure names the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

from ase import Atoms

#: Files larger than this (one giant sheet, typically) go through ednn's fast extxyz reader.
FAST_READ_BYTES = 50 * 2**20


def _read_large(path: Path) -> list[Atoms]:
    """A single-frame giant sheet, read about 2x faster than ASE for plain extxyz layouts."""
    from ase.io import read

    from ednn import fastio

    if path.suffix.lower() in (".xyz", ".extxyz") and fastio.count_frames(path) == 1:
        return [fastio.read_structure(path, index=0)]
    return read(path, index=":")


class StructureFileError(ValueError):
    """A structure file is missing, empty, corrupt or not a structure."""


def read_frames(
    path: str | os.PathLike, index: str = ":", format: str | None = None
) -> list[Atoms]:
    """All frames of any ASE-readable file (extxyz, cif, POSCAR, OUTCAR, ...; ``.gz`` too).

    Raises
    ------
    StructureFileError
        If the file does not exist, is empty, cannot be parsed, or holds no atoms.
    """
    from ase.io import read

    path = Path(path)
    if not path.exists():
        raise StructureFileError(f"{path}: no such file")
    if path.is_dir():
        raise StructureFileError(f"{path}: is a directory, expected a structure file")
    if path.stat().st_size == 0:
        raise StructureFileError(f"{path}: the file is empty")
    try:
        if format is None and index == ":" and path.stat().st_size > FAST_READ_BYTES:
            frames = _read_large(path)
        else:
            frames = read(path, index=index, format=format)
    except Exception as err:  # ASE raises many types for unreadable input
        detail = str(err) or type(err).__name__
        raise StructureFileError(
            f"{path}: could not read a structure ({type(err).__name__}: {detail}). "
            "Is it a format ASE reads (extxyz, cif, POSCAR, ...)? Pass the format if the "
            "extension does not say it."
        ) from err
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise StructureFileError(f"{path}: holds no frames")
    for k, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise StructureFileError(f"{path}: frame {k} has no atoms")
    return list(frames)
