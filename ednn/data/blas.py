"""An optimised BLAS/LAPACK for tblite, whose PyPI wheel bundles the reference ones.

The ``tblite`` wheels link the netlib reference BLAS and LAPACK 3.8 (``tblite.libs/``).
Its self-consistent cycle is dominated by dense linear algebra (the generalised
eigenproblem of each iteration), which the reference routines run about 5x slower than
OpenBLAS: 8 shipped structures of 158-280 atoms took 5.1x longer in all on one thread, with
the same energies to 2e-5 meV/atom (``experiments/label_time.py``, ``docs/data.md``).

:func:`load_openblas` loads an OpenBLAS shared library into the process with
``RTLD_GLOBAL`` *before* tblite's library is loaded, so the dynamic linker binds tblite's
BLAS/LAPACK symbols (``dgemm_``, ``dsyevd_``, ``dsygst_``, ...) to OpenBLAS, found first in the global
scope. The library comes from, in order: the ``EDNN_OPENBLAS`` environment variable (a path;
``off`` disables the swap), or the ``cmeel-openblas`` wheel that the ``data`` extra installs
on Linux (unprefixed symbols, unlike numpy's and scipy's own OpenBLAS). Without either,
tblite keeps its reference BLAS: the labels are the same, only slower.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
import sysconfig
import warnings
from pathlib import Path

__all__ = ["load_openblas", "openblas_candidates"]

ENV = "EDNN_OPENBLAS"
_LOADED: dict[str, str | None] = {}


def openblas_candidates() -> list[Path]:
    """Where an OpenBLAS with unprefixed symbols may be: ``$EDNN_OPENBLAS``, then cmeel's."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return [] if chosen.strip().lower() in ("", "0", "off", "none") else [Path(chosen)]
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    return [Path(root) / "cmeel.prefix" / "lib" / "libopenblas.so.0" for root in sorted(roots)]


def load_openblas(threads: int | None = None) -> str | None:
    """Load OpenBLAS globally so that tblite, loaded afterwards, uses it.

    Parameters
    ----------
    threads : int, optional
        OpenBLAS threads (``OPENBLAS_NUM_THREADS``, if not already set); default: the
        ``OMP_NUM_THREADS`` of the process, else 1.

    Returns
    -------
    str or None
        The path of the library loaded, or None when none is available or tblite's own
        library is already loaded (too late to swap; a warning says so).
    """
    if "path" in _LOADED:
        return _LOADED["path"]
    if not sys.platform.startswith("linux"):
        return None
    if "tblite.library" in sys.modules:  # its native library is loaded and bound already
        warnings.warn(
            "tblite is already loaded with its reference BLAS; call "
            "ednn.data.blas.load_openblas() before importing tblite to label faster.",
            stacklevel=2,
        )
        return None
    default = os.environ.get("OMP_NUM_THREADS", "1") if threads is None else str(threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", default)
    for path in openblas_candidates():
        if not path.exists():
            if os.environ.get(ENV):
                warnings.warn(f"{ENV}={path} does not exist; tblite keeps its reference BLAS.")
            continue
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            warnings.warn(f"could not load {path} ({err}); tblite keeps its reference BLAS.")
            continue
        _LOADED["path"] = str(path)
        return str(path)
    _LOADED["path"] = None
    return None
