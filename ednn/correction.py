"""A trained model's systematic error, learned from its own outputs (a stacked corrector).

A network that underfits errs systematically: on the 2D Kohn–Sham SHO sets the best
potential models miss E_total by as much on their training samples as on the test split
(docs/ks2d.md, session 22), and the error of a sample is close to that of samples whose
predicted energies are close. :class:`KernelCorrection` learns that error as a smooth
function of the model's own outputs, per electron count `N`, by Gaussian-kernel ridge
regression on the training split, and adds it:

    y(x) = f(x) + r̄_N + Σ_i α_i exp(-|z(x) - z_i|² / 2ℓ²),    z = (f(x) - μ_N) / σ_N,

with `z_i` the standardised outputs of the training samples of the same `N`, `α` the ridge
solution for their residuals `y_i - f(x_i) - r̄_N` and `r̄_N` their mean residual. This is
stacked generalisation with a kernel second stage. Nothing in it is specific to a family of
systems, but it only helps where the outputs locate a sample well in the space the error
varies over: for the SHO sets, whose energies are functions of two frequencies per `N`
(``experiments/ks2d/sho_oracle.py``), the six predicted energies do.

:func:`fit_kernel_correction` fits the corrector on predictions and labels (train split
only; choose `length_scale` and `ridge` on the validation split);
``experiments/ks2d/kernel_correction.py`` does both and scores the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn.count_baseline import ReadsElectronCounts
from ednn.model import ChecksImageArrays

__all__ = ["KernelCorrection", "fit_kernel_correction"]


def _gaussian_kernel(a: np.ndarray, b: np.ndarray, length_scale: float) -> np.ndarray:
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(squared, 0.0) / (2.0 * length_scale**2))


def fit_kernel_correction(
    predictions: np.ndarray,
    targets: np.ndarray,
    counts: np.ndarray,
    *,
    length_scale: float,
    ridge: float,
    features: Sequence[int] | None = None,
) -> dict:
    """Fits the residuals of a model by kernel ridge regression, per electron count.

    Parameters
    ----------
    predictions : ndarray, shape (m, n_targets)
        The model's outputs on the training samples (Ha for the 2D Kohn–Sham energies).
    targets : ndarray, shape (m, n_targets)
        Their labels, same units.
    counts : ndarray, shape (m,)
        The electron count `N` of each sample; one regression per distinct count, each
        needing at least two samples.
    length_scale : float
        Width `ℓ` of the Gaussian kernel in standardised output units (each feature
        divided by its standard deviation over the samples of that `N`).
    ridge : float
        Ridge added to the kernel matrix's diagonal (in units of the kernel, whose
        diagonal is 1); larger is smoother.
    features : sequence of int, optional
        Which outputs describe a sample (default: all of them).

    Returns
    -------
    dict
        The keyword arguments of :class:`KernelCorrection` other than `model` and how to
        read `N` from an image: `counts`, `centres`, `coefficients`, `offsets`,
        `feature_mean`, `feature_scale`, `length_scale`, `ridge`, `features`.

    Raises
    ------
    ValueError
        For mismatched shapes, non-finite values, a non-positive `length_scale`, a negative
        `ridge`, a feature index out of range, or a count with fewer than two samples.

    Notes
    -----
    The fit solves one dense `(m_N, m_N)` system per count: O(m_N³) time and O(m_N²)
    memory, a few seconds for the ~1,700 training samples per count of the SHO sets.
    """
    predictions = np.asarray(predictions, dtype="float64")
    targets = np.asarray(targets, dtype="float64")
    counts = np.asarray(counts)
    if predictions.ndim != 2 or targets.shape != predictions.shape:
        raise ValueError(
            "`predictions` and `targets` must have the same shape (m, n_targets). "
            f"Received: {predictions.shape} and {targets.shape}"
        )
    if counts.shape != (len(predictions),):
        raise ValueError(
            f"`counts` must have shape ({len(predictions)},), one per sample. "
            f"Received: {counts.shape}"
        )
    if not (np.all(np.isfinite(predictions)) and np.all(np.isfinite(targets))):
        raise ValueError("`predictions` and `targets` must be finite. Received: NaN or inf")
    if not (np.isfinite(length_scale) and length_scale > 0):
        raise ValueError(f"`length_scale` must be positive. Received: {length_scale}")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"`ridge` must be non-negative. Received: {ridge}")
    n_targets = predictions.shape[1]
    features = list(range(n_targets)) if features is None else [int(f) for f in features]
    if not features or any(f < 0 or f >= n_targets for f in features):
        raise ValueError(
            f"`features` must be indices of the {n_targets} outputs. Received: {features}"
        )
    fitted = {
        "counts": [],
        "centres": [],
        "coefficients": [],
        "offsets": [],
        "feature_mean": [],
        "feature_scale": [],
    }
    for count in np.unique(counts):
        members = counts == count
        if members.sum() < 2:
            raise ValueError(
                f"Each electron count needs two or more samples. Received: one with N = {count}"
            )
        outputs = predictions[members]
        raw = outputs[:, features]
        mean = raw.mean(axis=0)
        scale = raw.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        centres = (raw - mean) / scale
        residuals = targets[members] - outputs
        offset = residuals.mean(axis=0)
        gram = _gaussian_kernel(centres, centres, length_scale)
        gram[np.diag_indices_from(gram)] += ridge
        coefficients = np.linalg.solve(gram, residuals - offset)
        fitted["counts"].append(int(count) if float(count).is_integer() else float(count))
        fitted["centres"].append(centres)
        fitted["coefficients"].append(coefficients)
        fitted["offsets"].append(offset)
        fitted["feature_mean"].append(mean)
        fitted["feature_scale"].append(scale)
    return {
        **fitted,
        "length_scale": float(length_scale),
        "ridge": float(ridge),
        "features": features,
    }


@keras.saving.register_keras_serializable(package="ednn")
class KernelCorrection(ReadsElectronCounts, ChecksImageArrays, keras.Model):
    """`model(x)` plus its systematic error, kernel-regressed on its own outputs per `N`.

    The fitted arrays come from :func:`fit_kernel_correction` (pass its dict as keyword
    arguments); they are stored in the config, so a saved model loads with plain
    :func:`keras.saving.load_model` after ``import ednn``. `N` is read from the image as by
    :class:`ednn.count_baseline.CountBaseline` (`count_from`, `channel`, `count_scale`).
    The correction is computed in float64.

    Args:
        model: The model corrected (any Keras model mapping images to `(batch, n_targets)`,
            e.g. a :class:`ednn.translation.ShiftAverage`), or its serialized config.
        counts: The electron counts fitted, one per group below.
        centres: Per count, the standardised features of its training samples `(m_N, F)`.
        coefficients: Per count, the ridge coefficients `(m_N, n_targets)`.
        offsets: Per count, the mean training residual `(n_targets,)`.
        feature_mean: Per count, the mean of each feature `(F,)`.
        feature_scale: Per count, the standard deviation of each feature `(F,)`.
        length_scale: Kernel width in standardised units.
        ridge: The ridge the coefficients were solved with (recorded, not used).
        features: Which outputs of `model` are the features (default: all).
        count_from: `"integral"` or `"channel"`, see `CountBaseline`.
        channel: The channel (or channels) `N` is read from.
        count_scale: See `CountBaseline`.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        images: Images `(batch, height, width, C)`, as `model` takes them.
        training: Passed to `model`.

    Returns:
        `(batch, n_targets)`: the model's outputs plus the correction. An image whose `N`
        is not one of `counts` raises `InvalidArgumentError` (the corrector knows nothing
        of that count).

    Raises:
        ValueError: Inconsistent fitted arrays (the message names which), or invalid
            counting arguments.
    """

    def __init__(
        self,
        model: keras.Model | dict,
        counts: Sequence[float],
        centres: Sequence,
        coefficients: Sequence,
        offsets: Sequence,
        feature_mean: Sequence,
        feature_scale: Sequence,
        length_scale: float,
        ridge: float = 0.0,
        features: Sequence[int] | None = None,
        count_from: str = "integral",
        channel: int | Sequence[int] = 0,
        count_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        self.model = model
        self.counts = [int(c) if float(c).is_integer() else float(c) for c in counts]
        groups = len(self.counts)
        if groups == 0 or len(set(self.counts)) != groups:
            raise ValueError(f"`counts` must be distinct and non-empty. Received: {counts}")
        arrays = {
            "centres": [np.asarray(a, "float64") for a in centres],
            "coefficients": [np.asarray(a, "float64") for a in coefficients],
            "offsets": [np.asarray(a, "float64") for a in offsets],
            "feature_mean": [np.asarray(a, "float64") for a in feature_mean],
            "feature_scale": [np.asarray(a, "float64") for a in feature_scale],
        }
        for key, values in arrays.items():
            if len(values) != groups:
                raise ValueError(
                    f"`{key}` must hold one array per count ({groups}). Received: {len(values)}"
                )
            if not all(np.all(np.isfinite(v)) for v in values):
                raise ValueError(f"`{key}` must be finite. Received: NaN or inf values")
        n_features = arrays["centres"][0].shape[-1] if arrays["centres"][0].ndim == 2 else -1
        n_targets = arrays["offsets"][0].shape[-1] if arrays["offsets"][0].ndim == 1 else -1
        self.features = list(range(n_targets)) if features is None else [int(f) for f in features]
        if any(f < 0 or f >= n_targets for f in self.features):
            raise ValueError(
                f"`features` must be indices of the {n_targets} outputs. Received: {self.features}"
            )
        for k in range(groups):
            shapes = {key: values[k].shape for key, values in arrays.items()}
            m = shapes["centres"][0] if len(shapes["centres"]) == 2 else -1
            expected = {
                "centres": (m, n_features),
                "coefficients": (m, n_targets),
                "offsets": (n_targets,),
                "feature_mean": (n_features,),
                "feature_scale": (n_features,),
            }
            if m < 1 or n_features != len(self.features) or shapes != expected:
                raise ValueError(
                    f"The fitted arrays of N = {self.counts[k]} do not fit together: expected "
                    f"shapes {expected} with {len(self.features)} features. Received: {shapes}"
                )
            if np.any(arrays["feature_scale"][k] <= 0):
                raise ValueError("`feature_scale` must be positive. Received: a value <= 0")
        if not (np.isfinite(length_scale) and length_scale > 0):
            raise ValueError(f"`length_scale` must be positive. Received: {length_scale}")
        self.set_counting(count_from, channel, count_scale)
        self.arrays = arrays
        self.length_scale = float(length_scale)
        self.ridge = float(ridge)
        self._tensors = [
            {key: tf.constant(values[k], tf.float64) for key, values in arrays.items()}
            for k in range(groups)
        ]
        self.built = bool(getattr(model, "built", False))

    def build(self, input_shape):
        self.built = True  # the model builds itself on its first call, inside `call`

    @property
    def n_targets(self) -> int:
        return int(self.arrays["offsets"][0].shape[0])

    @property
    def metadata(self) -> dict:
        """The wrapped model's metadata (a fresh copy; ``{}`` if it has none)."""
        return dict(getattr(self.model, "metadata", {}))

    def correction(self, outputs, counts) -> tf.Tensor:
        """The correction `(batch, n_targets)` (float64) for `outputs` at electron `counts`."""
        outputs = tf.cast(outputs, tf.float64)
        counts = tf.cast(counts, tf.float64)
        z = tf.gather(outputs, self.features, axis=1)
        total = tf.zeros_like(outputs)
        for count, group in zip(self.counts, self._tensors, strict=True):
            standard = (z - group["feature_mean"]) / group["feature_scale"]
            centres = group["centres"]
            squared = (
                tf.reduce_sum(standard**2, axis=1, keepdims=True)
                + tf.reduce_sum(centres**2, axis=1)[None, :]
                - 2.0 * tf.matmul(standard, centres, transpose_b=True)
            )
            kernel = tf.exp(-tf.maximum(squared, 0.0) / (2.0 * self.length_scale**2))
            value = tf.matmul(kernel, group["coefficients"]) + group["offsets"]
            total += tf.where(tf.equal(counts, float(count))[:, None], value, 0.0)
        return total

    def call(self, images, training=None):
        images = tf.convert_to_tensor(images)
        self._check_images_shape(tuple(images.shape))
        outputs = self.model(images, training=training)
        counts = self.electron_counts(images)
        known = tf.reduce_any(
            tf.equal(tf.cast(counts, tf.float64)[:, None], tf.constant(self.counts, tf.float64)),
            axis=1,
        )
        check = tf.debugging.Assert(
            tf.reduce_all(known),
            [
                f"KernelCorrection was fitted at electron counts {self.counts}; images have N =",
                counts,
            ],
            summarize=16,
        )
        with tf.control_dependencies([check]):
            correction = self.correction(outputs, counts)
        return outputs + tf.cast(correction, outputs.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_targets)

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "counts": list(self.counts),
            **{key: [v.tolist() for v in values] for key, values in self.arrays.items()},
            "length_scale": self.length_scale,
            "ridge": self.ridge,
            "features": list(self.features),
            "count_from": self.count_from,
            "channel": self.channels[0] if len(self.channels) == 1 else list(self.channels),
            "count_scale": self.count_scale,
        }
