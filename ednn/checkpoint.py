"""Run directories and training checkpoints that survive ``kill -9``.

Layout of a run directory ``RUN``::

    RUN/config.yaml                 the merged training configuration
    RUN/split.json                  structure ids per split, and where the split came from
    RUN/checkpoints/epoch-NNNNN/    model.keras, optimizer.npz, state.json after epoch NNNNN
    RUN/checkpoints/latest.json     which checkpoint is complete (written last, atomically)
    RUN/best.keras                  the model of the best validation MAE
    RUN/model.keras                 the model after the last epoch
    RUN/metrics.json                MAE / RMSE (meV/atom) per split, history
    RUN/logs/train, RUN/logs/validation   TensorBoard event files

A checkpoint directory is filled completely (files fsynced) before ``latest.json`` names it,
so a crash while saving leaves the previous checkpoint in force: a resumed run loses at most
the epoch in progress.  ``.keras`` files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ednn import _io

__all__ = [
    "RunDirError",
    "latest_checkpoint",
    "load_checkpoint",
    "prepare_run_dir",
    "save_checkpoint",
    "save_model_atomic",
]

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
# A directory is taken for an ednn run directory, and may be replaced by --overwrite, only
# if it holds this file.
MARKER = "config.yaml"


class RunDirError(ValueError):
    """A run directory would be overwritten, or cannot be resumed."""


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_model_atomic(model, path: str | os.PathLike) -> Path:
    """``model.save(path)`` through a temporary ``.keras`` file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def prepare_run_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> bool:
    """Make ``path`` ready for a run; returns whether there is a run to resume.

    Raises
    ------
    RunDirError
        If ``path`` holds files and neither ``resume`` nor ``overwrite`` is set, or
        ``resume`` or ``overwrite`` is asked for a directory that is not an ednn run
        directory.  An empty or missing directory starts a fresh run either way.
    """
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("Pass --resume or --overwrite, not both.")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"The run directory {path} is a file; choose another --out.")
    occupied = path.is_dir() and any(path.iterdir())
    if occupied and resume:
        if not (path / MARKER).exists():
            raise RunDirError(
                f"--resume continues an ednn run directory (holding {MARKER}); {path} is not "
                "one. Choose another --out."
            )
        return True
    if occupied and overwrite:
        if not (path / MARKER).exists():
            raise RunDirError(
                f"--overwrite replaces only ednn run directories (holding {MARKER}); {path} is "
                "not one. Choose another --out."
            )
        shutil.rmtree(path)
    elif occupied:
        raise RunDirError(
            f"The run directory {path} exists and is not empty. Pass --resume to continue "
            "its training, --overwrite to replace it, or choose another --out."
        )
    path.mkdir(parents=True, exist_ok=True)
    return False


def save_checkpoint(
    run_dir: str | os.PathLike,
    model,
    optimizer,
    state: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write the model, the optimizer's variables and ``state`` after ``state["epoch"]``.

    ``keep`` most recent checkpoints are kept.  Returns the checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS
    name = f"epoch-{int(state['epoch']):05d}"
    directory = root / name
    if directory.exists():  # a save of this epoch that crashed, or a rerun
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    model.save(directory / "model.keras")
    variables = {f"{k:05d}": np.asarray(v) for k, v in enumerate(optimizer.variables)}
    names = [v.path for v in optimizer.variables]
    np.savez(directory / "optimizer.npz", **variables)
    (directory / "state.json").write_text(
        json.dumps({**state, "optimizer_variables": names}, indent=1), encoding="utf-8"
    )
    for item in directory.iterdir():
        _fsync(item)
    _io.atomic_write_text(root / LATEST, json.dumps({"checkpoint": name, "epoch": state["epoch"]}))
    complete = sorted(p for p in root.glob("epoch-*") if p.is_dir())
    for old in [p for p in complete if p.name != name][: max(0, len(complete) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The last complete checkpoint directory, or None."""
    root = Path(run_dir) / CHECKPOINTS
    try:
        name = json.loads((root / LATEST).read_text(encoding="utf-8"))["checkpoint"]
    except FileNotFoundError:
        return None
    directory = root / name
    if not directory.is_dir():
        raise RunDirError(f"{root / LATEST} names {name}, which is missing; the run is damaged.")
    return directory


def load_checkpoint(directory: str | os.PathLike) -> tuple[Any, list[np.ndarray], dict]:
    """``(model, optimizer variable values, state)`` of a checkpoint directory."""
    import keras

    directory = Path(directory)
    model = keras.saving.load_model(directory / "model.keras", compile=False)
    with np.load(directory / "optimizer.npz") as archive:
        values = [archive[key] for key in sorted(archive.files)]
    state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    return model, values, state


def restore_optimizer(optimizer, values: list[np.ndarray], names: list[str]) -> None:
    """Assign saved values to a built optimizer's variables, checking that they match."""
    current = [v.path for v in optimizer.variables]
    if len(current) != len(values):
        raise RunDirError(
            f"The checkpoint holds {len(values)} optimizer variables but the optimizer has "
            f"{len(current)}; was the optimizer or the model changed? Saved: {names[:4]}..."
        )
    for variable, value in zip(optimizer.variables, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise RunDirError(
                f"Optimizer variable {variable.path} has shape {tuple(variable.shape)}, the "
                f"checkpoint {value.shape}."
            )
        variable.assign(value)
