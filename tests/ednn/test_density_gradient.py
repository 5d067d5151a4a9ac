import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.density_gradient import DensityGradientFit, density_error, density_from_energy
from ednn.losses import WeightedMAE
from ednn.model import build_ednn

(AREA, SCALE) = (0.25, 0.5)


def _linear_energy_model(n0: np.ndarray) -> keras.Model:
    # E = Σ v n0 ΔA with v = image / SCALE: its ∂E/∂v / ΔA is n0 exactly; a second output 0.
    (h, w) = n0.shape
    inputs = keras.Input((h, w, 2))
    outputs = keras.layers.Dense(2, use_bias=False, name="energy")(
        keras.layers.Flatten()(inputs[..., :1])
    )
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((h * w, 2), np.float32)
    kernel[:, 1] = (n0 * AREA / SCALE).ravel()
    model.get_layer("energy").set_weights([kernel])
    return model


def _images(rng, batch=6, size=8):
    return rng.normal(size=(batch, size, size, 2)).astype("float32")


def test_density_of_a_linear_energy_is_its_weights():
    rng = np.random.default_rng(0)
    n0 = rng.random((8, 8))
    fitted = density_from_energy(_linear_energy_model(n0), _images(rng), 1, AREA, SCALE)
    np.testing.assert_allclose(fitted, np.broadcast_to(n0, fitted.shape), rtol=1e-5)


def test_density_is_the_finite_difference_derivative_of_an_ednn():
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(1)
    model = build_ednn(4, 2, n_channels=2, n_targets=3, activation="softplus")
    images = _images(rng, batch=2)
    fitted = density_from_energy(model, images, 2, AREA, SCALE, batch_size=1)
    step = 1e-2
    for b, i, j in [(0, 0, 0), (0, 3, 5), (1, 7, 2)]:
        (up, down) = (images.copy(), images.copy())
        up[b, i, j, 0] += step
        down[b, i, j, 0] -= step
        slope = (
            np.float64(model(up[b : b + 1])[0, 2]) - np.float64(model(down[b : b + 1])[0, 2])
        ) / (2 * step)
        assert fitted[b, i, j] == pytest.approx(slope * SCALE / AREA, rel=2e-2, abs=1e-4)


def test_density_error_is_the_integrated_error_over_the_count():
    density = np.zeros((1, 4, 4))
    density[0, 1, 1] = 2.0
    fitted = density.copy()
    fitted[0, 1, 1] = 1.5
    fitted[0, 2, 2] = 0.5
    np.testing.assert_allclose(np.asarray(density_error(fitted, density)), [0.5])


def _fit(weight, validation_densities=True, epochs=30):
    rng = np.random.default_rng(2)
    n0 = rng.random((8, 8))
    images = _images(rng, batch=32)
    energies = np.stack(
        [np.zeros(32), (images[..., 0] * n0).sum(axis=(1, 2)) * AREA / SCALE], axis=1
    ).astype("float32")
    densities = np.broadcast_to(n0, (32, 8, 8)).astype("float32")
    keras.utils.set_random_seed(0)
    model = _linear_energy_model(n0)
    model.get_layer("energy").set_weights([0.01 * rng.normal(size=(64, 2)).astype("float32")])
    trainer = DensityGradientFit(model, 1, AREA, SCALE, weight=weight)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=WeightedMAE([1.0, 1.0]))
    validation = (images, (energies, densities) if validation_densities else energies)
    history = trainer.fit(
        images, (energies, densities), validation_data=validation, epochs=epochs, verbose=0
    )
    fitted = density_from_energy(model, images, 1, AREA, SCALE)
    error = float(np.mean(density_error(fitted, densities)))
    return trainer, history.history, error


def test_fit_learns_the_density_and_logs_its_error():
    (_, history, error) = _fit(weight=1.0)
    assert history["density_error"][-1] < 0.5 * history["density_error"][0]
    assert history["val_density_error"][-1] == pytest.approx(error, rel=1e-4)
    # The loss logged is the energy loss alone, comparable with runs without the density.
    assert history["loss"][-1] < history["loss"][0]


def test_validation_on_energies_alone_logs_no_density_error():
    (_, history, _) = _fit(weight=1.0, validation_densities=False, epochs=1)
    assert "val_loss" in history and "val_density_error" not in history


def test_fit_saves_and_loads_with_its_model(tmp_path):
    (trainer, _, _) = _fit(weight=0.5, epochs=1)
    trainer.save(tmp_path / "fit.keras")
    loaded = keras.saving.load_model(tmp_path / "fit.keras")
    assert isinstance(loaded, DensityGradientFit) and loaded.weight == 0.5
    images = _images(np.random.default_rng(3))
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), trainer.predict(images, verbose=0)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight": 0.0}, "`weight` must be a positive number"),
        ({"pixel_area": -1.0}, "`pixel_area` must be a positive area"),
        ({"input_scale": float("nan")}, "`input_scale` must be a positive factor"),
        ({"output_index": -1}, "`output_index` must be an output's index"),
    ],
)
def test_bad_options_are_refused(options, message):
    model = _linear_energy_model(np.ones((8, 8)))
    arguments = {"output_index": 1, "pixel_area": AREA, "input_scale": SCALE, **options}
    with pytest.raises(ValueError, match=message):
        DensityGradientFit(model, **arguments)


def test_images_without_the_potential_channel_are_refused():
    model = _linear_energy_model(np.ones((8, 8)))
    with pytest.raises(ValueError, match="with the potential in channel 2"):
        density_from_energy(model, np.zeros((1, 8, 8, 2)), 1, AREA, channel=2)
