"""KernelCorrection: a model plus its residual, kernel-regressed on its outputs per count."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ednn  # noqa: F401
from ednn.correction import KernelCorrection, fit_kernel_correction


def _toy_model(weights) -> keras.Model:
    """Images (batch, 8, 8, 2) -> (batch, 3): a fixed linear map of the channel means."""
    inputs = keras.Input((8, 8, 2))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, name="out")
    outputs = dense(pooled)
    dense.set_weights([np.asarray(weights, "float32"), np.zeros(3, "float32")])
    return keras.Model(inputs, outputs)


def _images(rng, counts) -> np.ndarray:
    """Images whose channel 0 is a random level and channel 1 holds N / 8."""
    level = rng.uniform(-1.0, 1.0, len(counts))
    images = np.empty((len(counts), 8, 8, 2), "float32")
    images[..., 0] = level[:, None, None]
    images[..., 1] = (np.asarray(counts) / 8.0)[:, None, None]
    return images


def _smooth_error(outputs, counts):
    """A systematic error: smooth in the outputs, different for each count."""
    return 0.01 * np.sin(3.0 * outputs[:, :1]) * (1.0 + 0.1 * np.asarray(counts)[:, None])


def test_fit_learns_a_smooth_residual_and_interpolates_the_training_samples():
    rng = np.random.default_rng(0)
    counts = np.repeat([2, 4], 60)
    outputs = np.stack([rng.uniform(-1, 1, 120), rng.uniform(-1, 1, 120)], axis=1)
    targets = outputs + _smooth_error(outputs, counts) + 0.003 * counts[:, None]
    fitted = fit_kernel_correction(outputs, targets, counts, length_scale=0.5, ridge=1e-8)
    assert fitted["counts"] == [2, 4] and fitted["features"] == [0, 1]
    corrector = KernelCorrection(keras.Sequential([keras.layers.Identity()]), **fitted)
    # Nearly no ridge: the training residuals are reproduced.
    on_train = outputs + corrector.correction(outputs, counts).numpy()
    np.testing.assert_allclose(on_train, targets, atol=1e-5)
    # New samples: the error left is far below the error before.
    new_counts = np.repeat([2, 4], 20)
    new = np.stack([rng.uniform(-0.9, 0.9, 40), rng.uniform(-0.9, 0.9, 40)], axis=1)
    truth = new + _smooth_error(new, new_counts) + 0.003 * new_counts[:, None]
    before = np.abs(new - truth).mean()
    after = np.abs(new + corrector.correction(new, new_counts).numpy() - truth).mean()
    assert after < before / 20
    # A large ridge leaves only the mean residual of each count.
    flat = KernelCorrection(
        keras.Sequential([keras.layers.Identity()]),
        **fit_kernel_correction(outputs, targets, counts, length_scale=0.5, ridge=1e9),
    )
    shifts = flat.correction(new, new_counts).numpy()
    for count in (2, 4):
        mean_residual = (targets - outputs)[counts == count].mean(axis=0)
        np.testing.assert_allclose(shifts[new_counts == count], mean_residual[None].repeat(20, 0),
                                   atol=1e-8)  # fmt: skip


def test_a_corrected_model_reads_n_from_the_image_and_saves_and_loads(tmp_path):
    rng = np.random.default_rng(1)
    model = _toy_model([[1.0, 0.5, -1.0], [2.0, 0.0, 1.0]])
    counts = np.repeat([2, 4, 6], 15)
    images = _images(rng, counts)
    outputs = np.asarray(model(images), "float64")
    targets = outputs + _smooth_error(outputs, counts)
    fitted = fit_kernel_correction(
        outputs, targets, counts, length_scale=0.7, ridge=1e-6, features=[0, 2]
    )
    corrected = KernelCorrection(
        model, **fitted, count_from="channel", channel=1, count_scale=8.0, name="corrected"
    )
    expected = outputs + corrected.correction(outputs, counts).numpy()
    predicted = corrected.predict(images, verbose=0)
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    assert np.abs(predicted - targets).mean() < np.abs(outputs - targets).mean() / 10
    path = tmp_path / "corrected.keras"
    corrected.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, KernelCorrection) and loaded.features == [0, 2]
    np.testing.assert_allclose(loaded.predict(images, verbose=0), predicted, atol=1e-7)
    # An electron count the corrector was not fitted at is an error, not a silent guess.
    with pytest.raises(tf.errors.InvalidArgumentError, match="fitted at electron counts"):
        loaded(_images(rng, [2, 3]))
    # So is an image without the channel N is read from.
    with pytest.raises(ValueError, match="channels \\[1\\] to count electrons from"):
        corrected.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"length_scale": 0.0}, "`length_scale` must be positive"),
        ({"counts": [2, 2]}, "`counts` must be distinct"),
        ({"offsets": [[0.0, 0.0, 0.0]]}, "`offsets` must hold one array per count"),
        ({"centres": [np.zeros((4, 3)), np.zeros((4, 3))]}, "do not fit together"),
        ({"feature_scale": [[1.0, 0.0], [1.0, 1.0]]}, "`feature_scale` must be positive"),
        ({"coefficients": [np.full((4, 3), np.nan), np.zeros((4, 3))]}, "must be finite"),
        ({"count_from": "sum"}, "`count_from` must be one of"),
        ({"features": [0, 3]}, "`features` must be indices of the 3 outputs"),
    ],
)
def test_inconsistent_fitted_arrays_are_refused(change, message):
    good = {
        "counts": [2, 4],
        "centres": [np.zeros((4, 2)), np.zeros((4, 2))],
        "coefficients": [np.zeros((4, 3)), np.zeros((4, 3))],
        "offsets": [np.zeros(3), np.zeros(3)],
        "feature_mean": [np.zeros(2), np.zeros(2)],
        "feature_scale": [np.ones(2), np.ones(2)],
        "length_scale": 0.5,
        "features": [0, 1],
    }
    KernelCorrection(keras.Sequential([keras.layers.Identity()]), **good)
    with pytest.raises(ValueError, match=message):
        KernelCorrection(keras.Sequential([keras.layers.Identity()]), **{**good, **change})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"targets": np.zeros((5, 2))}, "must have the same shape"),
        ({"counts": np.array([2, 2, 2, 2])}, "`counts` must have shape"),
        ({"counts": np.array([2, 2, 2, 2, 4])}, "two or more samples"),
        ({"predictions": np.full((5, 3), np.nan)}, "must be finite"),
        ({"length_scale": -1.0}, "`length_scale` must be positive"),
        ({"ridge": -1.0}, "`ridge` must be non-negative"),
        ({"features": [3]}, "`features` must be indices"),
    ],
)
def test_bad_fits_are_refused(kwargs, message):
    args = {
        "predictions": np.arange(15.0).reshape(5, 3),
        "targets": np.arange(15.0).reshape(5, 3) + 1.0,
        "counts": np.array([2, 2, 2, 2, 2]),
        "length_scale": 1.0,
        "ridge": 1e-3,
    }
    fit_kernel_correction(**args)
    with pytest.raises(ValueError, match=message):
        fit_kernel_correction(**{**args, **kwargs})
