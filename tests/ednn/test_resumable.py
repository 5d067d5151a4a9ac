"""ednn.resumable: model.fit that survives interruption and keeps its best weights."""

import json

import keras
import numpy as np
import pytest

from ednn.resumable import ResumableFit

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3)).astype("float32")
Y = (X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * RNG.normal(size=(64, 1))).astype("float32")
EPOCHS = 6


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
    )
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, EPOCHS * 4)
    model.compile(keras.optimizers.Adam(schedule), "mse")
    return model


def _fit(model, checkpoint, epochs, extra=()):
    initial = checkpoint.restore(model)
    if checkpoint.stopped:
        return
    model.fit(
        X,
        Y,
        batch_size=16,
        epochs=epochs,
        initial_epoch=initial,
        shuffle=False,
        validation_data=(X[:16], Y[:16]),
        callbacks=[checkpoint, *extra],
        verbose=0,
    )


class _StopAfter(keras.callbacks.Callback):
    """Ends fit after `n` epochs, as the end of a session would."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.n:
            self.model.stop_training = True


def test_interrupted_fit_resumes_to_the_uninterrupted_weights(tmp_path):
    whole = _model()
    _fit(whole, ResumableFit(tmp_path / "whole"), EPOCHS)

    first = _model()
    _fit(first, ResumableFit(tmp_path / "parts"), EPOCHS, extra=[_StopAfter(2)])
    second = _model(seed=1)  # other initial weights: everything must come from the checkpoint
    checkpoint = ResumableFit(tmp_path / "parts")
    _fit(second, checkpoint, EPOCHS)

    assert checkpoint.epoch == EPOCHS
    assert int(second.optimizer.iterations) == int(whole.optimizer.iterations) == EPOCHS * 4
    for a, b in zip(whole.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_best_weights_and_state_survive(tmp_path):
    model = _model()
    checkpoint = ResumableFit(tmp_path)
    _fit(model, checkpoint, EPOCHS)
    history_best = checkpoint.best
    state = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert state["epoch"] == EPOCHS

    again = ResumableFit(tmp_path)
    fresh = _model(seed=2)
    assert again.restore(fresh) == EPOCHS
    assert again.best == pytest.approx(history_best)
    again.load_best(fresh)
    loss = fresh.evaluate(X[:16], Y[:16], verbose=0)
    assert loss == pytest.approx(history_best, rel=1e-4)


def test_patience_counts_across_resumptions(tmp_path):
    model = _model()
    checkpoint = ResumableFit(tmp_path, monitor="loss", patience=1)
    checkpoint.best = -1.0  # nothing can improve on it: the first epoch ends the run
    _fit(model, checkpoint, EPOCHS)
    assert checkpoint.stopped and checkpoint.epoch == 1

    again = ResumableFit(tmp_path, monitor="loss", patience=1)
    assert again.restore(_model()) == 1 and again.stopped


def test_mismatches_are_named(tmp_path):
    _fit(_model(), ResumableFit(tmp_path), 1)
    with pytest.raises(ValueError, match="monitored 'val_loss'"):
        ResumableFit(tmp_path, monitor="loss").restore(_model())
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    other.compile("adam", "mse")
    with pytest.raises(ValueError, match="architecture"):
        ResumableFit(tmp_path).restore(other)
    with pytest.raises(ValueError, match="did not log"):
        _fit(_model(), ResumableFit(tmp_path / "x", monitor="val_mae"), 1)
    with pytest.raises(ValueError, match="patience"):
        ResumableFit(tmp_path, patience=0)
