"""The density as the derivative of the energy in the potential (Hellmann–Feynman).

The ground-state energy of electrons in an external potential `v` is stationary in their
density, so its derivative in the potential is the density itself:

    δE / δv(r) = n(r),     on a grid  ∂E / ∂v_i = n_i ΔA,

with `ΔA` the pixel area (bohr²). It holds for every Kohn–Sham functional the ks2d solver
uses, hybrids included (their energy is variational in the orbitals), and is tested on the
solver (``tests/ednn/ks2d/test_ks2d_scf.py``). An energy model that takes the potential
image then carries a density of its own, the gradient of its E_total in the potential
channel (:func:`density_from_energy`); a model fitted to energies alone need not get it
right, and :class:`DensityGradientFit` trains it to, beside the energies: each potential
image comes with ``2304`` numbers (a 48² density) on top of six energies, the labels the
solver computed anyway.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _check_options(pixel_area: float, input_scale: float, output_index: int) -> None:
    if not (np.isfinite(pixel_area) and pixel_area > 0):
        raise ValueError(f"`pixel_area` must be a positive area (bohr²). Received: {pixel_area}")
    if not (np.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"`input_scale` must be a positive factor. Received: {input_scale}")
    if int(output_index) != output_index or output_index < 0:
        raise ValueError(f"`output_index` must be an output's index. Received: {output_index}")


def energy_gradient_density(
    model: keras.Model,
    images: tf.Tensor,
    output_index: int,
    pixel_area: float,
    input_scale: float = 1.0,
    channel: int = 0,
    training: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The model's outputs and the density its energy implies, as tensors (differentiable).

    Returns ``(outputs, density)``: ``model(images)`` and ``∂E / ∂v_i / ΔA`` for
    ``E = outputs[:, output_index]`` and ``v = images[..., channel] / input_scale``,
    shape ``(batch, H, W)`` in electrons per bohr² (per unit area of the image).
    """
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = model(images, training=training)
        energy = tf.reduce_sum(outputs[:, output_index])
    slope = tape.gradient(energy, images)[..., channel]
    return outputs, slope * (input_scale / pixel_area)


def density_from_energy(
    model: keras.Model,
    images: np.ndarray,
    output_index: int,
    pixel_area: float,
    input_scale: float = 1.0,
    channel: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """The density ``∂E / ∂v / ΔA`` that an energy model's output implies (Hellmann–Feynman).

    Parameters
    ----------
    model : keras.Model
        Maps images ``(batch, H, W, C)`` to outputs ``(batch, n_targets)`` in Hartree, e.g. a
        saved ks2d energy model from the potential.
    images : ndarray, shape (batch, H, W, C)
        The model's input; channel ``channel`` is the potential in Hartree times
        ``input_scale``.
    output_index : int
        The output that is the total energy (Ha).
    pixel_area : float
        Area of one pixel (bohr²).
    input_scale : float
        The factor the potential channel was multiplied by (``train_models.py``: 0.25).
    channel : int
        The potential's channel.
    batch_size : int
        Images per gradient evaluation.

    Returns
    -------
    ndarray, shape (batch, H, W), float64
        Electrons per bohr². For the exact energy it is the ground-state density.
    """
    _check_options(pixel_area, input_scale, output_index)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or not 0 <= channel < images.shape[-1]:
        raise ValueError(
            f"`images` must have shape (batch, H, W, C) with the potential in channel {channel}. "
            f"Received: images.shape={images.shape}"
        )
    parts = [
        energy_gradient_density(
            model, images[i : i + batch_size], output_index, pixel_area, input_scale, channel
        )[1].numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


def density_error(fitted, density):
    """``∫ |n_fit - n| d²r / N`` per sample (``N = ∫ n``), a fraction; arrays or tensors.

    ``fitted`` and ``density``: shape ``(batch, H, W)`` on the same grid (any unit of area).
    """
    fitted = keras.ops.convert_to_tensor(fitted)
    density = keras.ops.cast(density, fitted.dtype)
    miss = keras.ops.sum(keras.ops.abs(fitted - density), axis=(1, 2))
    return miss / keras.ops.sum(density, axis=(1, 2))


@keras.saving.register_keras_serializable(package="ednn")
class DensityGradientFit(keras.Model):
    """Trains an energy model on energies and on its density ``∂E / ∂v`` (Hellmann–Feynman).

    Wraps ``model`` (which keeps its weights: train this, then use or save ``model``) and
    fits it to ``(images, (energies, densities))``: the compiled loss on the energies plus
    ``weight`` times the mean ``∫ |∂E/∂v / ΔA - n| / N`` of
    :func:`density_error`. Evaluation (``validation_data=(images, energies)``) is the
    compiled loss alone, so the kept best weights are those of the best energies; with
    ``validation_data=(images, (energies, densities))`` it also logs the density error.
    Logs the density error as ``density_error`` (``val_density_error``).

    Args:
        model: The energy model, images `(batch, H, W, C)` -> outputs `(batch, n_targets)`
            in Hartree, or its serialized config.
        output_index: The output that is the total energy.
        pixel_area: Area of one pixel (bohr²).
        input_scale: The factor the potential channel was multiplied by.
        channel: The potential's channel.
        weight: The density term's weight in the loss (> 0).
        **kwargs: Base model keyword arguments, such as `name`.
    """

    def __init__(
        self,
        model,
        output_index: int,
        pixel_area: float,
        input_scale: float = 1.0,
        channel: int = 0,
        weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        _check_options(pixel_area, input_scale, output_index)
        if not (np.isfinite(weight) and weight > 0):
            raise ValueError(f"`weight` must be a positive number. Received: {weight}")
        self.model = model
        (self.output_index, self.channel) = (int(output_index), int(channel))
        (self.pixel_area, self.input_scale) = (float(pixel_area), float(input_scale))
        self.weight = float(weight)
        self.density_tracker = keras.metrics.Mean(name="density_error")

    def call(self, images, training=None):
        return self.model(images, training=training)

    def train_step(self, data):
        (images, (energies, densities)) = data
        densities = tf.reshape(densities, tf.shape(images)[:3])
        with tf.GradientTape() as tape:
            (outputs, fitted) = energy_gradient_density(
                self, images, self.output_index, self.pixel_area, self.input_scale,
                self.channel, training=True,
            )  # fmt: skip
            loss = self._compute_loss(x=images, y=energies, y_pred=outputs, training=True)
            miss = tf.reduce_mean(density_error(fitted, densities))
            total = loss + self.weight * miss
        gradients = tape.gradient(total, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(images)[0])
        self.density_tracker.update_state(miss, sample_weight=tf.shape(images)[0])
        return self.compute_metrics(images, energies, outputs)

    def test_step(self, data):
        (images, targets) = data
        if not isinstance(targets, (tuple, list)):  # energies alone: the compiled loss
            logs = super().test_step(data)
            return {key: value for (key, value) in logs.items() if key != "density_error"}
        (energies, densities) = targets
        densities = tf.reshape(densities, tf.shape(images)[:3])
        (outputs, fitted) = energy_gradient_density(
            self, images, self.output_index, self.pixel_area, self.input_scale, self.channel
        )
        loss = self._compute_loss(x=images, y=energies, y_pred=outputs, training=False)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(images)[0])
        miss = tf.reduce_mean(density_error(fitted, densities))
        self.density_tracker.update_state(miss, sample_weight=tf.shape(images)[0])
        return self.compute_metrics(images, energies, outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "output_index": self.output_index,
            "pixel_area": self.pixel_area,
            "input_scale": self.input_scale,
            "channel": self.channel,
            "weight": self.weight,
        }
