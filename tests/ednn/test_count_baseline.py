"""CountBaseline: an energy model plus a fixed reference per electron count (Ha)."""

import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.count_baseline import CountBaseline, count_reference
from ednn.model import build_ednn

COUNTS = [2, 4, 8]
REFERENCE = [[1.0, -2.0], [3.0, -5.0], [11.0, -6.0]]


class Zero(keras.Model):
    """A model whose outputs are zero, so that CountBaseline returns its reference."""

    def call(self, images):
        return keras.ops.zeros((keras.ops.shape(images)[0], 2))


def _density_images(counts, n=16, pixel_area=0.25):
    """Gaussian blobs integrating to `counts` electrons, shape (m, n, n, 1)."""
    x = np.arange(n) - n / 2
    blob = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / 8.0)
    blob /= blob.sum() * pixel_area
    return np.stack([c * blob for c in counts])[..., None].astype("float32")


def test_reference_is_exact_at_the_counts_linear_between_and_flat_outside():
    model = CountBaseline(Zero(), COUNTS, REFERENCE, count_from="channel", count_scale=1.0)
    counts = np.array([2, 3, 4, 6, 8, 1, 10], dtype="float32")
    expected = [[1, -2], [2, -3.5], [3, -5], [7, -5.5], [11, -6], [1, -2], [11, -6]]
    np.testing.assert_allclose(model.reference_at(counts), expected, rtol=1e-6)


def test_electron_count_from_the_integral_of_a_scaled_density():
    (pixel_area, scale) = (0.25, 4.0)
    images = scale * _density_images([2, 4, 8], pixel_area=pixel_area)
    model = CountBaseline(Zero(), COUNTS, REFERENCE, "integral", 0, pixel_area / scale)
    np.testing.assert_array_equal(model.electron_counts(images), [2, 4, 8])
    np.testing.assert_allclose(model(images), REFERENCE, rtol=1e-6)


def test_electron_count_from_spin_densities_sums_the_channels(tmp_path):
    # Spin-up and spin-down densities of N = 3 (2 + 1), 5 (3 + 2) and 8 (4 + 4) electrons.
    (pixel_area, scale) = (0.25, 4.0)
    (up, down) = (_density_images([2, 3, 4]), _density_images([1, 2, 4]))
    images = scale * np.concatenate([up, down], axis=-1)
    model = CountBaseline(Zero(), COUNTS, REFERENCE, "integral", (0, 1), pixel_area / scale)
    np.testing.assert_array_equal(model.electron_counts(images), [3, 5, 8])
    np.testing.assert_allclose(model(images), [[2, -3.5], [5, -5.25], [11, -6]], rtol=1e-6)
    assert model.get_config()["channel"] == [0, 1]
    ednn_model = build_ednn(8, 4, n_channels=2, n_targets=2, boundary="zero",
                            conv_layers=((4, 3, 1, 1),), dense_units=(8,))  # fmt: skip
    model = CountBaseline(ednn_model, COUNTS, REFERENCE, "integral", [0, 1], pixel_area / scale)
    expected = np.asarray(model(images))
    model.save(tmp_path / "spin.keras")
    loaded = keras.saving.load_model(tmp_path / "spin.keras")
    assert loaded.channels == (0, 1)
    np.testing.assert_allclose(loaded(images), expected, rtol=1e-6)


def test_electron_count_from_a_constant_count_channel():
    counts = np.array([4, 8, 2])
    potential = np.random.default_rng(0).normal(size=(3, 8, 8, 1))
    channel = np.broadcast_to(counts[:, None, None, None] / 8.0, potential.shape)
    images = np.concatenate([potential, channel], axis=-1).astype("float32")
    model = CountBaseline(Zero(), COUNTS, REFERENCE, "channel", channel=1, count_scale=8.0)
    np.testing.assert_array_equal(model.electron_counts(images), counts)
    np.testing.assert_allclose(model(images), np.asarray(REFERENCE)[[1, 2, 0]], rtol=1e-6)


def test_outputs_are_the_model_plus_the_reference_and_survive_a_keras_file(tmp_path):
    ednn_model = build_ednn(8, 4, n_channels=1, n_targets=2, boundary="zero",
                            conv_layers=((4, 3, 1, 1),), dense_units=(8,))  # fmt: skip
    model = CountBaseline(ednn_model, COUNTS, REFERENCE, "integral", 0, 0.25)
    images = _density_images([4, 8])
    expected = np.asarray(ednn_model(images)) + np.asarray(REFERENCE)[[1, 2]]
    np.testing.assert_allclose(model(images), expected, rtol=1e-5, atol=1e-6)
    path = tmp_path / "count_baseline.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CountBaseline)
    np.testing.assert_allclose(loaded(images), expected, rtol=1e-5, atol=1e-6)
    assert loaded.count_from == "integral" and loaded.count_scale == 0.25
    assert loaded.metadata == ednn_model.metadata  # units and target names read through


def test_gradients_reach_the_wrapped_model():
    ednn_model = build_ednn(8, 4, n_channels=1, n_targets=2, boundary="zero",
                            conv_layers=((4, 3, 1, 1),), dense_units=(8,))  # fmt: skip
    model = CountBaseline(ednn_model, COUNTS, REFERENCE, "integral", 0, 0.25)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mae")
    images = _density_images([2, 4, 8, 4])
    targets = np.asarray(REFERENCE)[[0, 1, 2, 1]] + 0.5
    before = model.evaluate(images, targets, verbose=0)
    model.fit(images, targets, epochs=30, verbose=0)
    assert model.evaluate(images, targets, verbose=0) < 0.5 * before


def test_count_reference_is_the_mean_per_count():
    counts = np.array([4, 2, 4, 2, 6])
    targets = np.array([[1.0, 10], [2, 20], [3, 30], [4, 40], [5, 50]])
    (distinct, reference) = count_reference(counts, targets)
    np.testing.assert_array_equal(distinct, [2, 4, 6])
    np.testing.assert_allclose(reference, [[3, 30], [2, 20], [5, 50]])
    with pytest.raises(ValueError, match="targets of shape"):
        count_reference(counts, targets[:3])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"counts": [4, 2, 8]}, "strictly increasing"),
        ({"counts": []}, "strictly increasing"),
        ({"reference": [[1.0, 2.0]]}, "reference.shape"),
        ({"reference": [[1.0, np.nan], [0, 0], [0, 0]]}, "finite"),
        ({"count_from": "sum"}, "count_from"),
        ({"count_scale": 0.0}, "count_scale"),
        ({"channel": ()}, "channel"),
        ({"channel": -1}, "channel"),
        ({"channel": 1.5}, "channel"),
    ],
)
def test_bad_arguments_are_named(options, match):
    arguments = {"counts": COUNTS, "reference": REFERENCE, **options}
    with pytest.raises(ValueError, match=match):
        CountBaseline(Zero(), **arguments)


def test_predict_with_other_channels_after_a_first_predict_names_the_shape():
    inner = build_ednn(4, 2, n_channels=2, n_targets=2, conv_layers=[(2, 3, 1, 1)], dense_units=[])
    model = CountBaseline(inner, COUNTS, REFERENCE, "integral", (0, 1), 0.25)
    images = np.concatenate([_density_images([2, 4])] * 2, axis=-1) / 2
    model.predict(images, verbose=0)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, height, width, 2\)"):
        model.predict(images[..., :1], verbose=0)
    with pytest.raises(ValueError, match="channels \\[0, 1\\] to count electrons from"):
        CountBaseline(Zero(), COUNTS, REFERENCE, "integral", (0, 1), 0.25)(images[..., :1])
