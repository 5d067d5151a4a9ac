"""MultiScaleEDNN: EDNNs on the image average-pooled by their own factors, summed."""

import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.count_baseline import CountBaseline
from ednn.model import build_ednn
from ednn.multiscale import MultiScaleEDNN
from ednn.symmetry import SymmetryAverage

SMALL = {"conv_layers": ((4, 3, 1, 1),), "dense_units": (8,)}


def branches(boundary="periodic", channels=2, targets=3):
    keras.utils.set_random_seed(0)
    fine = build_ednn(4, 2, channels, targets, boundary=boundary, **SMALL)
    coarse = build_ednn(2, 2, channels, targets, boundary=boundary, name="coarse", **SMALL)
    return fine, coarse


def images(shape=(2, 8, 8, 2), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_the_output_is_the_sum_of_the_branches_on_their_pooled_images():
    (fine, coarse) = branches()
    model = MultiScaleEDNN([fine, coarse], pools=[1, 2])
    x = images()
    pooled = x.reshape(2, 4, 2, 4, 2, 2).mean(axis=(2, 4))  # 2x2 blocks of pixels
    expected = fine(x).numpy() + coarse(pooled).numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (model.n_channels, model.n_targets, model.multiple) == (2, 3, (4, 4))


def test_a_periodic_supercell_gives_the_multiple_of_the_output():
    model = MultiScaleEDNN(list(branches()), pools=[1, 2])
    x = images()
    supercell = np.tile(x, (1, 2, 3, 1))  # 2x3 periodic copies
    np.testing.assert_allclose(model(supercell).numpy(), 6 * model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_saved_models_load_with_plain_keras_and_wrap_like_an_ednn(tmp_path):
    model = MultiScaleEDNN(list(branches("zero", channels=1)), pools=[1, 2])
    wrapped = SymmetryAverage(
        CountBaseline(model, [1, 2], np.zeros((2, 3)), "integral", 0, 1.0), mirror_shift=1
    )
    x = np.abs(images((3, 8, 8, 1)))
    wrapped.compile(optimizer="adam", loss="mae")
    wrapped.fit(x, np.ones((3, 3), "float32"), epochs=1, verbose=0)  # trains through both
    path = tmp_path / "multiscale.keras"
    wrapped.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0),
                               rtol=1e-6)  # fmt: skip
    inner = loaded.model.model
    assert isinstance(inner, MultiScaleEDNN) and inner.pools == [1, 2]


def test_bad_branches_and_images_are_refused():
    (fine, coarse) = branches()
    with pytest.raises(ValueError, match="same length"):
        MultiScaleEDNN([fine, coarse], pools=[1])
    with pytest.raises(ValueError, match=">= 1"):
        MultiScaleEDNN([fine, coarse], pools=[1, 0])
    with pytest.raises(TypeError, match=r"ednn\.model\.EDNN"):
        MultiScaleEDNN([fine, keras.Sequential([keras.layers.Dense(3)])], pools=[1, 2])
    with pytest.raises(ValueError, match="same channels"):
        MultiScaleEDNN([fine, build_ednn(2, 2, 1, 3, **SMALL)], pools=[1, 2])
    model = MultiScaleEDNN([fine, coarse], pools=[1, 2])
    with pytest.raises(ValueError, match=r"multiples of \(4, 4\).*\(1, 6, 8, 2\)"):
        model.predict(images((1, 6, 8, 2)), verbose=0)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 2\)"):
        model.predict(images((1, 8, 8, 1)), verbose=0)
