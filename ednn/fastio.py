"""Fast reading of multi-million-atom (ext)xyz files, so that input is not the bottleneck.

ASE's extxyz reader converts every value in Python: 4-5 s per 10^6 atoms on this (loaded)
machine, a third of the time of evaluating the sheet.  :func:`read_structure` parses the
common simple layout, ``Properties=species:S:1:pos:R:3`` (what ``ase.io.write`` produces for
plain atoms, and the default of a plain xyz file) with a header of at most ``Lattice``,
``pbc`` and ``Properties``, with NumPy's C text parser (:func:`numpy.loadtxt`),
``chunk_lines`` lines at a time so that memory stays bounded; about 2x faster.  Any other
file (other columns, more header keys such as an energy, compressed files, other formats)
is handed to :func:`ase.io.read` unchanged, so the result is always what ASE would return.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ednn._validation import check_positive_int

__all__ = ["read_structure"]

_SIMPLE_PROPERTIES = "species:S:1:pos:R:3"
_HEADER_KEYS = {"Lattice", "pbc", "Properties"}
_SUFFIXES = (".xyz", ".extxyz")
_ROW = [("symbol", np.dtype("S8")), ("position", np.float64, (3,))]


class _NotSimple(Exception):
    """The frame is not in the layout the fast path reads; ASE reads it instead."""


def read_structure(
    path: str | os.PathLike, index: int = -1, *, chunk_lines: int = 1 << 20
) -> Atoms:
    """Read one structure, fast for simple (ext)xyz files, else with :func:`ase.io.read`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.  ``.xyz``/``.extxyz`` files in the simple layout (see the module
        docstring) are parsed with NumPy; anything else goes to ``ase.io.read``.
    index : int, default -1
        Which frame of a multi-frame file (the last by default, as ``ase.io.read``).
    chunk_lines : int, default 1048576
        Atom lines converted at once; bounds the scratch memory (~200 bytes per line).

    Returns
    -------
    ase.Atoms
        Equal to ``ase.io.read(path, index=index)``: same numbers, positions (Å), cell and
        pbc, and no ``info`` (the simple layout carries none).

    Example
    -------
    >>> atoms = read_structure("sheet.extxyz")  # 10^6 atoms in ~1 s instead of ~5 s
    """
    path = Path(path)
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"`index` must be an int. Received: index={index!r}")
    chunk_lines = check_positive_int(chunk_lines, "chunk_lines")
    if path.suffix.lower() in _SUFFIXES:
        try:
            return _read_simple(path, index, chunk_lines)
        except _NotSimple:
            pass
    import ase.io

    return ase.io.read(path, index=index)


def count_frames(path: str | os.PathLike) -> int | None:
    """Number of frames of a plain (ext)xyz file, or None if it is not of that simple form."""
    with open(path, "rb") as stream:
        try:
            return len(_frame_offsets(stream))
        except _NotSimple:
            return None


def _frame_offsets(stream) -> list[tuple[int, int]]:
    # (byte offset of the comment line, atom count) of every frame.
    frames = []
    while True:
        line = stream.readline()
        if not line.strip():
            if line:
                continue  # blank lines between frames
            return frames
        try:
            n_atoms = int(line)
        except ValueError as error:
            raise _NotSimple from error
        frames.append((stream.tell(), n_atoms))
        stream.readline()
        for _ in itertools.islice(stream, n_atoms):
            pass


def _parse_lines(lines: list[bytes], expected: int) -> tuple[np.ndarray, np.ndarray]:
    # NumPy's C text parser; any irregular line (other columns, a bad number) is an error.
    if len(lines) != expected:
        raise _NotSimple
    try:
        table = np.loadtxt(lines, dtype=_ROW, ndmin=1)
    except ValueError as error:
        raise _NotSimple from error
    # Few distinct symbols: look each up once.  A symbol that filled the field may be cut.
    symbols, inverse = np.unique(table["symbol"], return_inverse=True)
    if any(len(symbol) >= _ROW[0][1].itemsize for symbol in symbols):
        raise _NotSimple
    try:
        lookup = np.array([atomic_numbers[s.decode().capitalize()] for s in symbols])
    except (KeyError, UnicodeDecodeError) as error:
        raise _NotSimple from error
    return lookup[inverse.ravel()], table["position"]


def _read_simple(path: Path, index: int, chunk_lines: int) -> Atoms:
    from ase.io.extxyz import key_val_str_to_dict

    with open(path, "rb") as stream:
        frames = _frame_offsets(stream)
        try:
            (offset, n_atoms) = frames[index]
        except IndexError:
            raise _NotSimple from None
        stream.seek(offset)
        comment = stream.readline().decode("utf-8", "replace").strip()
        info = key_val_str_to_dict(comment) if comment else {}
        if set(info) - _HEADER_KEYS or info.get("Properties", _SIMPLE_PROPERTIES) != (
            _SIMPLE_PROPERTIES
        ):
            raise _NotSimple
        numbers = np.empty(n_atoms, dtype=np.int64)
        positions = np.empty((n_atoms, 3), dtype=np.float64)
        for start in range(0, n_atoms, chunk_lines):
            stop = min(start + chunk_lines, n_atoms)
            (numbers[start:stop], positions[start:stop]) = _parse_lines(
                list(itertools.islice(stream, stop - start)), stop - start
            )
    if "Lattice" in info:
        cell = np.asarray(info["Lattice"], dtype=np.float64).T
        pbc = info.get("pbc", [True, True, True])
    else:
        cell, pbc = None, info.get("pbc")
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
