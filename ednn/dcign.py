"""A tiled convolutional inverse-graphics network (DCIGN): potential image -> density image.

After Ryczko, Strubbe & Tamblyn, Phys. Rev. A 100, 022512 (2019), where an encoder–decoder
maps the external potential ``v(x, y)`` of a 2D model system to its Kohn–Sham density.
Here the encoder–decoder is the shared tile network of the EDNN tiling, so one model runs on
any image whose size is a multiple of the focus::

    v (B, H, W, 1) -> ExtractTiles(focus, context, "zero")  (B·nH·nW, T, T, 1)
                   -> encoder–decoder, centre crop           (B·nH·nW, f, f, 1)
                   -> StitchTiles                            (B, H, W, 1)
                   -> softplus, rescaled so that ∫ n d²r = N (B, H, W, 1)

Each focus pixel sees only its tile (focus plus ``context`` pixels on each side, zeros
beyond the image as for an isolated system); the normalisation to ``N`` electrons is the
only global step, one scalar per image. Hartree atomic units: ``v`` in Ha, ``n`` in
bohr⁻², ``pixel_area`` in bohr².
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn._validation import as_int_pair
from ednn.layers import ExtractTiles


@keras.saving.register_keras_serializable(package="ednn")
class StitchTiles(keras.layers.Layer):
    """Puts per-tile focus outputs back together into images (inverse of the tile order).

    The in-graph twin of :func:`tiling.stitch_tiles` for focus regions: tiles arrive image
    by image, each image's tiles in row-major order, as :class:`ednn.layers.ExtractTiles`
    returns them.

    Args:
        focus: Size in pixels of each focus region, an int or a pair `(height, width)`.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        tiles: `(batch * nH * nW, focus[0], focus[1], channels)`.
        grid_shape: int32 tensor `[nH, nW]` (`ExtractTiles.grid_shape(images)`).

    Returns:
        Images `(batch, nH * focus[0], nW * focus[1], channels)`.
    """

    def __init__(self, focus: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.focus = as_int_pair(focus, "focus")

    def call(self, tiles, grid_shape):
        (f0, f1) = self.focus
        channels = tiles.shape[-1]
        (n_h, n_w) = tf.unstack(tf.cast(grid_shape, tf.int32))
        images = tf.reshape(tiles, [-1, n_h, n_w, f0, f1, channels])
        images = tf.transpose(images, [0, 1, 3, 2, 4, 5])
        return tf.reshape(images, [-1, n_h * f0, n_w * f1, channels])

    def compute_output_shape(self, tiles_shape, grid_shape_shape=None):
        return (None, None, None, tiles_shape[-1])

    def get_config(self):
        return {**super().get_config(), "focus": list(self.focus)}


def encoder_decoder(
    tile_shape: int | Sequence[int],
    focus: int | Sequence[int],
    filters: Sequence[int] = (16, 32, 64),
    *,
    activation: str = "swish",
    n_channels: int = 1,
    name: str = "encoder_decoder",
) -> keras.Model:
    """A fully convolutional encoder–decoder from a tile to its focus region.

    Level ``i`` of the encoder is two 3×3 convolutions with ``filters[i]`` channels followed
    by a stride-2 convolution (except the last, the bottleneck); the decoder mirrors it with
    stride-2 transposed convolutions and skip connections (a small U-Net). The output is the
    centre ``focus`` crop of a one-channel map, before any positivity transform.

    Args:
        tile_shape: `(T0, T1)`; each must be divisible by `2 ** (len(filters) - 1)`.
        focus: `(f0, f1)`, at most `tile_shape` with `T - f` even.
        filters: Channels per level, coarsest last.
        activation: Activation of the hidden convolutions.
        n_channels: Channels of the input tiles.
        name: Name of the model.

    Returns:
        A Keras model `(None, T0, T1, n_channels) -> (None, f0, f1, 1)`.
    """
    tile_shape = as_int_pair(tile_shape, "tile_shape")
    focus = as_int_pair(focus, "focus")
    if not filters:
        raise ValueError(f"`filters` must name at least one level. Received: filters={filters}")
    step = 2 ** (len(filters) - 1)
    for axis in (0, 1):
        if tile_shape[axis] % step:
            raise ValueError(
                f"`tile_shape` must be divisible by 2**(len(filters) - 1) = {step} along axis "
                f"{axis}. Received: tile_shape={tile_shape}, filters={tuple(filters)}"
            )
        if focus[axis] > tile_shape[axis] or (tile_shape[axis] - focus[axis]) % 2:
            raise ValueError(
                "`focus` must fit in the tile with equal context on both sides. "
                f"Received: focus={focus}, tile_shape={tile_shape}"
            )
    inputs = keras.Input((*tile_shape, n_channels))
    x = inputs
    skips = []
    for level, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", activation=activation)(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation=activation)(x)
        if level < len(filters) - 1:
            skips.append(x)
            x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation=activation)(x)
    for width, skip in zip(reversed(filters[:-1]), reversed(skips), strict=True):
        x = keras.layers.Conv2DTranspose(width, 2, strides=2, activation=activation)(x)
        x = keras.layers.Concatenate()([x, skip])
        x = keras.layers.Conv2D(width, 3, padding="same", activation=activation)(x)
    x = keras.layers.Conv2D(1, 1)(x)
    crop = tuple((t - f) // 2 for t, f in zip(tile_shape, focus, strict=True))
    outputs = keras.layers.Cropping2D(crop)(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="ednn")
class DensityDCIGN(keras.Model):
    """Maps external-potential images to electron densities normalised to `N` electrons.

    Args:
        focus: Focus region of each tile in pixels, an int or a pair.
        context: Context pixels on each side of the focus region, an int or a pair.
        pixel_area: Area of one pixel (bohr²), so that `sum(n) * pixel_area = N`.
        filters: Channels per level of the encoder–decoder (`encoder_decoder`).
        input_scale: Fixed factor applied to the potential (1/Ha) before the network; the
            potentials of a dataset span tens of Ha, so about `1 / std(v)`.
        activation: Activation of the hidden convolutions.
        electron_scale: `None`: the network sees the potential only, and `N` enters through
            the normalisation. A float: a second, constant channel `N * electron_scale` is
            added to the potential image (zero beyond the image, like the potential), so
            that the shape of the density may depend on `N` (shell filling).
        tile_network: A prebuilt tile network `(T0, T1, C) -> (f0, f1, 1)` (or its config),
            replacing the default encoder–decoder.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        inputs: A pair `(v_ext, n_electrons)`: potentials `(B, H, W, 1)` (Ha), `H` and `W`
            multiples of `focus`, and electron counts `(B,)` or `(B, 1)`.

    Returns:
        Densities `(B, H, W, 1)` in bohr⁻², positive, each integrating to its `N`.
    """

    def __init__(
        self,
        focus: int | Sequence[int],
        context: int | Sequence[int],
        pixel_area: float,
        filters: Sequence[int] = (16, 32, 64),
        input_scale: float = 1.0,
        activation: str = "swish",
        electron_scale: float | None = None,
        tile_network: keras.Model | dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not pixel_area > 0:
            raise ValueError(f"`pixel_area` must be > 0 (bohr²). Received: pixel_area={pixel_area}")
        self.extract_tiles = ExtractTiles(focus, context, "zero", name="extract_tiles")
        self.stitch_tiles = StitchTiles(self.extract_tiles.focus, name="stitch_tiles")
        self.pixel_area = float(pixel_area)
        self.filters = tuple(int(f) for f in filters)
        self.input_scale = float(input_scale)
        self.activation = activation
        self.electron_scale = None if electron_scale is None else float(electron_scale)
        if isinstance(tile_network, dict):
            tile_network = keras.saving.deserialize_keras_object(tile_network)
        if tile_network is None:
            tile_network = encoder_decoder(
                self.extract_tiles.tile_shape,
                self.focus,
                self.filters,
                activation=activation,
                n_channels=1 if self.electron_scale is None else 2,
            )
        self.tile_network = tile_network

    @property
    def focus(self) -> tuple[int, int]:
        return self.extract_tiles.focus

    @property
    def context(self) -> tuple[int, int]:
        return self.extract_tiles.context

    def call(self, inputs, training=None):
        (potential, n_electrons) = inputs
        potential = tf.convert_to_tensor(potential, self.compute_dtype)
        n_electrons = tf.reshape(tf.cast(n_electrons, potential.dtype), [-1, 1, 1, 1])
        image = potential * self.input_scale
        if self.electron_scale is not None:
            counts = tf.ones_like(potential) * (n_electrons * self.electron_scale)
            image = tf.concat([image, counts], axis=-1)
        focus = self.tile_network(self.extract_tiles(image), training=training)
        raw = tf.nn.softplus(self.stitch_tiles(focus, self.extract_tiles.grid_shape(potential)))
        total = tf.reduce_sum(raw, axis=[1, 2, 3], keepdims=True) * self.pixel_area
        return raw * (n_electrons / total)

    def get_config(self):
        return {
            **super().get_config(),
            "focus": list(self.focus),
            "context": list(self.context),
            "pixel_area": self.pixel_area,
            "filters": list(self.filters),
            "input_scale": self.input_scale,
            "activation": self.activation,
            "electron_scale": self.electron_scale,
            "tile_network": keras.saving.serialize_keras_object(self.tile_network),
        }


@keras.saving.register_keras_serializable(package="ednn")
class IntegratedDensityError(keras.metrics.Mean):
    """Mean over images of `∫|n_pred - n_true| d²r / ∫ n_true d²r` (= `∫|Δn| / N`).

    Dimensionless; 0 for a perfect density, at most 2 for two densities of the same `N`.

    Args:
        name: Name of the metric.
        **kwargs: Base metric keyword arguments.
    """

    def __init__(self, name: str = "integrated_density_error", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, self.dtype)
        y_pred = tf.cast(y_pred, self.dtype)
        axes = list(range(1, len(y_true.shape)))
        error = tf.reduce_sum(tf.abs(y_pred - y_true), axis=axes)
        return super().update_state(error / tf.reduce_sum(y_true, axis=axes), sample_weight)


def density_errors(true: np.ndarray, predicted: np.ndarray) -> dict:
    """Density errors of a batch of images (numpy, float64).

    Parameters
    ----------
    true, predicted : ndarray, shape (B, H, W) or (B, H, W, 1)
        Densities in bohr⁻² on the same grid (the pixel area cancels in the ratio).

    Returns
    -------
    dict
        ``mae`` (bohr⁻², mean absolute error over all pixels), ``integrated`` (mean over
        images of ``∫|Δn| d²r / N``, dimensionless) and ``integrated_per_image`` (B,).
    """
    true = np.asarray(true, np.float64).reshape(len(true), -1)
    predicted = np.asarray(predicted, np.float64).reshape(len(predicted), -1)
    if true.shape != predicted.shape:
        raise ValueError(
            f"`predicted` must have the shape of `true` {true.shape}. Received: {predicted.shape}"
        )
    per_image = np.abs(predicted - true).sum(axis=1) / true.sum(axis=1)
    return {
        "mae": float(np.abs(predicted - true).mean()),
        "integrated": float(per_image.mean()),
        "integrated_per_image": per_image,
    }
