"""Losses that are saved with a model: a `.keras` file trained with them loads plainly."""

from __future__ import annotations

from collections.abc import Sequence

import keras


@keras.saving.register_keras_serializable(package="ednn")
class WeightedMAE(keras.losses.Loss):
    """Mean absolute error with a fixed weight per target.

    With weights `1 / std` of each target (e.g. each energy term, Ha) every target weighs
    the same however different their spreads.

    Args:
        weights: One weight per target (the last axis of `y_true`), positive.
        **kwargs: Base loss keyword arguments, such as `name`.
    """

    def __init__(self, weights: Sequence[float], name: str = "weighted_mae", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weights = [float(w) for w in weights]
        if not self.weights or not all(w > 0 for w in self.weights):
            raise ValueError(
                f"`weights` must be a non-empty list of positive numbers. Received: {weights}"
            )

    def call(self, y_true, y_pred):
        weights = keras.ops.convert_to_tensor(self.weights, dtype=y_pred.dtype)
        return keras.ops.mean(keras.ops.abs((y_pred - y_true) * weights), axis=-1)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights}
