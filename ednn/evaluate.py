"""Errors of a trained model on labelled images: MAE and RMSE in meV/atom per split.

A model's output is the network's energy; the per-species reference energies stored in
``model.metadata["reference_energies"]`` are added on the atom counts of each imaged cell to
give the total energy, which is compared with the label.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from ednn import _io
from ednn.data.dataset import ImageSet, batch_plan

__all__ = ["error_metrics", "evaluate", "predict_energies", "reference_matrix", "write_metrics"]

#: Splits reported by default, in this order, when present.
REPORT_SPLITS = ("train", "validation", "test", "independent_md", "transfer")


def reference_matrix(metadata: dict, species: Sequence[str], n_targets: int) -> np.ndarray:
    """Reference energies (eV/atom) as an array ``(len(species), n_targets)``.

    ``metadata["reference_energies"]`` maps a symbol to a float (one target) or a list (one
    per target); a species it does not name gets 0.
    """
    table = metadata.get("reference_energies") or {}
    matrix = np.zeros((len(species), n_targets))
    for row, symbol in enumerate(species):
        if symbol in table:
            matrix[row] = np.broadcast_to(np.asarray(table[symbol], dtype=np.float64), n_targets)
    return matrix


def predict_network(model, data: ImageSet, batch_size: int = 16) -> np.ndarray:
    """The network's outputs (eV, no reference energies), float64 ``(len(data), n_targets)``."""
    import tensorflow as tf

    forward = tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, None, None, data.n_channels), tf.float32)],
    )
    outputs = np.zeros((len(data), model.n_targets))
    for batch in batch_plan(data.shapes, batch_size, shuffle=False):
        images = np.stack(data.images(batch)).astype(np.float32, copy=False)
        outputs[batch] = np.asarray(forward(images), dtype=np.float64)
    return outputs


def predict_energies(model, data: ImageSet, batch_size: int = 16) -> np.ndarray:
    """Total energies (eV) of the imaged cells: network plus reference energies."""
    outputs = predict_network(model, data, batch_size)
    if data.counts is not None:
        outputs += data.counts @ reference_matrix(model.metadata, data.species, model.n_targets)
    return outputs


def error_metrics(predicted: np.ndarray, true: np.ndarray, n_atoms: np.ndarray) -> dict:
    """MAE, RMSE and largest error in meV/atom (meV per structure if atom counts are 0).

    Parameters
    ----------
    predicted, true : numpy.ndarray, shape (N,) or (N, n_targets)
        Extensive values in eV.
    n_atoms : numpy.ndarray, shape (N,)

    Returns
    -------
    dict
        ``{"n": N, "unit": "meV/atom", "mae": ..., "rmse": ..., "max": ...}`` (per target
        lists when there are several targets).
    """
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(n_atoms), -1)
    true = np.asarray(true, dtype=np.float64).reshape(len(n_atoms), -1)
    per_atom = bool(len(n_atoms)) and bool(np.all(n_atoms > 0))
    scale = np.asarray(n_atoms, dtype=np.float64)[:, None] if per_atom else 1.0
    errors = 1000.0 * (predicted - true) / scale
    result = {"n": len(n_atoms), "unit": "meV/atom" if per_atom else "meV/structure"}
    if not len(n_atoms):
        return result
    for key, value in (
        ("mae", np.abs(errors).mean(axis=0)),
        ("rmse", np.sqrt((errors**2).mean(axis=0))),
        ("max", np.abs(errors).max(axis=0)),
    ):
        result[key] = float(value[0]) if len(value) == 1 else value.tolist()
    return result


def evaluate(
    model, data: ImageSet, splits: Sequence[str] | None = None, batch_size: int = 16
) -> dict[str, dict]:
    """Errors of ``model`` on each split of ``data`` (see :func:`error_metrics`).

    Parameters
    ----------
    model : ednn.model.EDNN
    data : ImageSet
        Labelled images, with ``data.splits`` naming each structure's split.
    splits : sequence of str, optional
        Splits to report; by default every one of :data:`REPORT_SPLITS` present in ``data``.
    batch_size : int, default 16
        Structures per forward pass.

    Returns
    -------
    dict
        ``{split: {"n", "unit", "mae", "rmse", "max"}}``.
    """
    if splits is None:
        splits = [name for name in REPORT_SPLITS if np.any(data.splits == name)]
    results = {}
    for name in splits:
        part = data.split(name)
        predicted = predict_energies(model, part, batch_size) if len(part) else np.zeros((0, 1))
        results[name] = error_metrics(predicted, part.targets, part.n_atoms)
    return results


def write_metrics(path: str | os.PathLike, metrics: dict) -> None:
    """Write ``metrics`` as indented JSON, atomically."""
    _io.atomic_write_text(path, json.dumps(metrics, indent=1, sort_keys=False) + "\n")
