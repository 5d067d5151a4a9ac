"""An energy model plus a fixed reference energy per electron count (Δ-learning).

The energies of the 2D Kohn–Sham systems grow steeply with the electron count `N`: over a
dataset with `N = 2..8` the spread of E_total about its mean is ~7 Ha, about its mean *for
the same N* ~1.7 Ha (``data/ks2d-sho-lda-2k``). :class:`CountBaseline` wraps an extensive
model so that its network only learns what the count does not explain, like the per-species
reference energies of atomistic models:

    E(x) = model(x) + E_ref(N(x)),

with `E_ref` the fixed per-count reference (e.g. the training mean of each `N`),
interpolated linearly between the counts it was given and constant beyond them. `N` is read
from the input image itself, so a saved model needs nothing but the image: the rounded
integral of a density channel, or of the sum of several (spin-up and spin-down densities;
``count_from="integral"``), or the value of a constant electron-count channel
(``count_from="channel"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn.model import ChecksImageArrays

COUNT_SOURCES = ("integral", "channel")


def electron_counts(
    images, channels: Sequence[int], count_from: str, count_scale: float
) -> keras.KerasTensor:
    """`N` of each image `(batch, H, W, C)`, shape `(batch,)`, as float (whole numbers).

    `count_from="integral"`: the rounded `count_scale` times the sum over pixels of the
    `channels` added together; `"channel"`: the same with the mean over pixels (a constant
    channel holding `N / count_scale`).
    """
    images = keras.ops.convert_to_tensor(images)
    values = sum(images[..., c] for c in channels)
    reduce = keras.ops.sum if count_from == "integral" else keras.ops.mean
    return keras.ops.round(count_scale * reduce(values, axis=(1, 2)))


class ReadsElectronCounts:
    """Mixin for wrappers that read `N` from the images they pass to `self.model`.

    `set_counting` checks and stores how (`count_from`, `channels`, `count_scale`);
    `electron_counts` reads it; `_check_images_shape` also checks that the channels it is
    read from exist (after the wrapped model's own check).
    """

    def set_counting(self, count_from: str, channel, count_scale: float) -> None:
        if count_from not in COUNT_SOURCES:
            raise ValueError(
                f"`count_from` must be one of {COUNT_SOURCES}. Received: count_from={count_from!r}"
            )
        channels = (channel,) if np.ndim(channel) == 0 else tuple(channel)
        if not channels or any(int(c) != c or c < 0 for c in channels):
            raise ValueError(
                "`channel` must be a channel index or a non-empty sequence of them. "
                f"Received: channel={channel!r}"
            )
        if not (np.isfinite(count_scale) and count_scale > 0):
            raise ValueError(
                f"`count_scale` must be a positive number. Received: count_scale={count_scale}"
            )
        self.count_from = count_from
        self.channels = tuple(int(c) for c in channels)
        self.count_scale = float(count_scale)

    def electron_counts(self, images) -> keras.KerasTensor:
        """`N` of each image, shape `(batch,)`, as float (whole numbers)."""
        return electron_counts(images, self.channels, self.count_from, self.count_scale)

    def _check_images_shape(self, shape) -> None:
        check = getattr(self.model, "_check_images_shape", None)
        if check is not None:
            check(shape)  # names the channel count the model takes
        n_channels = shape[-1] if len(shape) == 4 else None
        if len(shape) != 4 or (n_channels is not None and max(self.channels) >= n_channels):
            raise ValueError(
                f"{type(self).__name__} expected images of shape (batch, height, width, C) with "
                f"channels {list(self.channels)} to count electrons from. "
                f"Received: images.shape={shape}"
            )


@keras.saving.register_keras_serializable(package="ednn")
class CountBaseline(ReadsElectronCounts, ChecksImageArrays, keras.Model):
    """`model(images) + reference(N)`, with `N` read from the images.

    Args:
        model: The learned part, a Keras model mapping images `(batch, H, W, C)` to
            `(batch, n_targets)` (an :class:`ednn.model.EDNN`), or its serialized config.
        counts: The electron counts at which the reference is given, strictly increasing.
        reference: The reference outputs, shape `(len(counts), n_targets)`, in the model's
            output units (Ha for the 2D Kohn–Sham data).
        count_from: `"integral"`: `N = round(count_scale * sum over pixels of channel)`,
            e.g. `count_scale = pixel_area / input_scale` for a scaled density image;
            `"channel"`: `N = round(count_scale * mean over pixels of channel)` for a
            constant channel holding the count, e.g. `count_scale = 8` for `N / 8`.
        channel: The image channel `N` is read from, or a sequence of channels whose sum
            it is read from (e.g. `(0, 1)` for spin-up and spin-down densities).
        count_scale: See `count_from`.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        images: Images of shape `(batch, height, width, C)`, as `model` takes them.
        training: Whether `model` runs in training mode.

    Returns:
        `(batch, n_targets)`: the model's outputs plus the reference at each image's `N`.
    """

    def __init__(
        self,
        model: keras.Model | dict,
        counts: Sequence[int],
        reference: Sequence[Sequence[float]],
        count_from: str = "integral",
        channel: int | Sequence[int] = 0,
        count_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        counts = np.asarray(counts, dtype="float64")
        reference = np.asarray(reference, dtype="float64")
        if counts.ndim != 1 or counts.size == 0 or np.any(np.diff(counts) <= 0):
            raise ValueError(
                "`counts` must be a non-empty, strictly increasing list of electron counts. "
                f"Received: counts={counts.tolist()}"
            )
        if reference.ndim != 2 or reference.shape[0] != counts.size:
            raise ValueError(
                f"`reference` must have shape (len(counts), n_targets) = ({counts.size}, "
                f"n_targets). Received: reference.shape={reference.shape}"
            )
        if not np.all(np.isfinite(reference)):
            raise ValueError("`reference` must be finite. Received: NaN or inf values")
        self.model = model
        self.counts = counts
        self.reference = reference
        self.set_counting(count_from, channel, count_scale)
        # Piecewise linear E_ref(N) = reference[0] + sum_k slope_k * clip(N - c_k, 0, width_k).
        widths = np.diff(counts)
        slopes = np.diff(reference, axis=0) / widths[:, None]
        self._start = keras.ops.convert_to_tensor(counts[:-1], "float32")
        self._widths = keras.ops.convert_to_tensor(widths, "float32")
        self._slopes = keras.ops.convert_to_tensor(slopes, "float32")
        self._first = keras.ops.convert_to_tensor(reference[0], "float32")
        # No weights of its own: built when the model is (saved without a first call).
        self.built = bool(getattr(model, "built", False))

    def build(self, input_shape):
        self.built = True  # the model builds itself on its first call, inside `call`

    @property
    def n_targets(self) -> int:
        return self.reference.shape[1]

    @property
    def metadata(self) -> dict:
        """The wrapped model's metadata (a fresh copy; ``{}`` if it has none)."""
        return dict(getattr(self.model, "metadata", {}))

    def reference_at(self, counts) -> keras.KerasTensor:
        """The reference outputs at electron counts `counts` `(batch,)`: `(batch, n_targets)`."""
        counts = keras.ops.cast(counts, "float32")
        steps = keras.ops.clip(counts[:, None] - self._start, 0.0, self._widths)
        return self._first + keras.ops.matmul(steps, self._slopes)

    def call(self, images, training=None):
        images = tf.convert_to_tensor(images)
        self._check_images_shape(tuple(images.shape))
        n_channels = getattr(self.model, "n_channels", None)
        if n_channels is not None:
            # Fails with the expected shape, not inside the slices of `electron_counts`, when
            # a graph traced with unknown channels gets the wrong number.
            images = tf.ensure_shape(images, [None, None, None, n_channels])
        return self.model(images, training=training) + self.reference_at(
            self.electron_counts(images)
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_targets)

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "counts": [int(c) if float(c).is_integer() else float(c) for c in self.counts],
            "reference": self.reference.tolist(),
            "count_from": self.count_from,
            "channel": self.channels[0] if len(self.channels) == 1 else list(self.channels),
            "count_scale": self.count_scale,
        }


def count_reference(counts: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean targets per electron count: the reference of :class:`CountBaseline`.

    Parameters
    ----------
    counts : ndarray, shape (m,)
        Electron count of each sample.
    targets : ndarray, shape (m, n_targets)
        Its energies (Ha).

    Returns
    -------
    (counts, reference) : the distinct counts, increasing, shape (k,), and the mean
        targets of the samples with each, shape (k, n_targets), float64.
    """
    counts = np.asarray(counts)
    targets = np.asarray(targets, dtype="float64")
    if targets.ndim != 2 or targets.shape[0] != counts.shape[0]:
        raise ValueError(
            f"expected targets of shape (len(counts), n_targets) = ({counts.shape[0]}, "
            f"n_targets). Received: targets.shape={targets.shape}"
        )
    distinct = np.unique(counts)
    reference = np.stack([targets[counts == c].mean(axis=0) for c in distinct])
    return distinct, reference
