"""Resumable ``keras.Model.fit``: a checkpoint after every epoch, the best weights kept.

``ednn train`` has its own training loop and run directories (:mod:`ednn.checkpoint`);
this callback gives the same guarantees to scripts that train with ``model.fit``, such as
the Kohn–Sham experiments (``experiments/ks2d/train_models.py``): after ``kill -9`` or the
end of a session a rerun loses at most the epoch in progress.

Layout of ``DIRECTORY``::

    DIRECTORY/checkpoints/epoch-NNNNN/   model.keras, optimizer.npz, state.json
    DIRECTORY/checkpoints/latest.json    the complete checkpoint (written last, atomically)
    DIRECTORY/best.keras                 the weights of the best monitored value so far

Usage::

    checkpoint = ResumableFit(directory, monitor="val_loss", patience=25)
    initial_epoch = checkpoint.restore(model)          # 0 for a fresh directory
    if not checkpoint.stopped:
        model.fit(..., initial_epoch=initial_epoch, epochs=epochs, callbacks=[checkpoint])
    checkpoint.load_best(model)

A resumed run continues the weights, the optimizer state (moments, step count and so a
learning-rate schedule) and the early-stopping count; the order in which a shuffled
``tf.data`` pipeline draws its examples starts again from its seed, so a resumed run is not
bit-for-bit the uninterrupted one unless the data are not shuffled.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras

from ednn.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
    save_model_atomic,
)

__all__ = ["ResumableFit"]

BEST = "best.keras"


class ResumableFit(keras.callbacks.Callback):
    """Checkpoint a ``model.fit`` after every epoch and keep its best weights.

    Parameters
    ----------
    directory : str or path-like
        Where the checkpoints and ``best.keras`` live (created if missing).
    monitor : str
        The ``logs`` entry that selects the best weights (lower is better), e.g.
        ``"val_loss"``.
    patience : int, optional
        Stop after this many epochs without an improvement of ``monitor``, counted across
        resumptions; ``None`` never stops early.

    Attributes
    ----------
    epoch : int
        Epochs completed, those of earlier processes included.
    best : float
        The best monitored value so far (``inf`` before the first epoch).
    best_epoch : int or None
        The epoch (1-based) of ``best``.
    stopped : bool
        Whether early stopping has ended the run.
    """

    def __init__(
        self, directory: str | os.PathLike, monitor: str = "val_loss", patience: int | None = None
    ) -> None:
        super().__init__()
        if patience is not None and patience < 1:
            raise ValueError(f"`patience` must be >= 1 or None. Received: patience={patience}")
        self.directory = Path(directory)
        self.monitor = monitor
        self.patience = patience
        self.epoch = 0
        self.best = math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped = False

    @property
    def state(self) -> dict:
        """What a checkpoint records besides the weights."""
        return {
            "epoch": self.epoch,
            "monitor": self.monitor,
            "best": self.best if math.isfinite(self.best) else None,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped": self.stopped,
        }

    def restore(self, model: keras.Model) -> int:
        """Load the latest checkpoint into ``model`` (compiled, built); return its epoch.

        A directory without a checkpoint leaves ``model`` as it is and returns 0.

        Raises
        ------
        ValueError
            If the checkpoint monitored another quantity, or its weights or optimizer do
            not fit ``model`` (names what differs).
        """
        directory = latest_checkpoint(self.directory)
        if directory is None:
            return 0
        saved, values, state = load_checkpoint(directory)
        if state["monitor"] != self.monitor:
            raise ValueError(
                f"The checkpoint in {self.directory} monitored {state['monitor']!r}, this run "
                f"{self.monitor!r}; use another directory."
            )
        _copy_weights(saved, model, directory)
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        restore_optimizer(optimizer, values, state["optimizer_variables"])
        self.epoch = int(state["epoch"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_epoch = state["best_epoch"]
        self.wait = int(state["wait"])
        self.stopped = bool(state["stopped"])
        return self.epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"ResumableFit monitors {self.monitor!r}, which fit did not log; it logged "
                f"{sorted(logs or {})}."
            )
        self.epoch = epoch + 1
        if float(value) < self.best:
            self.best, self.best_epoch, self.wait = float(value), self.epoch, 0
            save_model_atomic(self.model, self.directory / BEST)
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                self.stopped = True
                self.model.stop_training = True
        # The best model is written before the checkpoint that records it.
        save_checkpoint(self.directory, self.model, self.model.optimizer, self.state)

    def load_best(self, model: keras.Model) -> None:
        """Set ``model``'s weights to the best ones saved (no-op before the first epoch)."""
        path = self.directory / BEST
        if path.exists():
            _copy_weights(keras.saving.load_model(path, compile=False), model, path)


def _copy_weights(source: keras.Model, target: keras.Model, where: os.PathLike) -> None:
    weights = source.get_weights()
    shapes = [tuple(w.shape) for w in target.get_weights()]
    if [tuple(w.shape) for w in weights] != shapes:
        raise ValueError(
            f"The weights in {where} do not fit this model ({len(weights)} arrays saved, "
            f"{len(shapes)} expected); was the architecture changed?"
        )
    target.set_weights(weights)
