"""Keras layers that cut images into focus/context tiles and sum the tiles' outputs.

An EDNN reads an image of shape ``(B, H, W, C)`` as a grid of ``nH x nW`` focus regions
(``nH = H // focus[0]``, ``nW = W // focus[1]``).  Each tile is its focus region plus
``context`` pixels on every side, so it has shape ``(T0, T1, C)`` with
``T = focus + 2 * context``.  One shared network maps every tile to ``n_targets`` values and
the structure's extensive quantity is the sum over tiles.

The tiling here is the in-graph twin of :func:`tiling.extract_tiles` (same tile order and
padding) and has no weights.  TensorFlow ops are used directly because the gathers must
accept images whose height and width are only known at run time.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn._validation import as_int_pair

BOUNDARIES = ("periodic", "zero")


def _as_context_pair(value) -> tuple[int, int]:
    # Like `as_int_pair`, but a context may be 0.
    pair = (value, value) if not isinstance(value, Sequence | np.ndarray) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(item, numbers.Integral) and not isinstance(item, bool) for item in pair
    ):
        raise TypeError(
            "`context` must be a non-negative int or a pair of them (one per image axis). "
            f"Received: context={value!r}."
        )
    if min(pair) < 0:
        raise ValueError(
            f"`context` must be >= 0 along each axis (pixels). Received: context={value!r}."
        )
    return (int(pair[0]), int(pair[1]))


def tiling_arguments(focus, context, boundary: str) -> tuple[tuple[int, int], tuple[int, int], str]:
    """Checked ``(focus, context, boundary)`` of a tiling, sizes as ``(y, x)`` pixel pairs."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"`boundary` must be one of {BOUNDARIES}. Received: boundary={boundary!r}")
    return as_int_pair(focus, "focus"), _as_context_pair(context), boundary


@keras.saving.register_keras_serializable(package="ednn")
class ExtractTiles(keras.layers.Layer):
    """Cuts a batch of images into overlapping focus/context tiles.

    Tile ``(i, j)`` of an image covers rows ``i * focus[0] - context[0]`` to
    ``(i + 1) * focus[0] + context[0]`` (exclusive) and the matching columns, read from the
    image extended periodically (``boundary="periodic"``, wrapping as many times as needed
    when the context is larger than the image) or with zeros (``boundary="zero"``).  Tiles
    are returned image by image, each image's tiles in row-major order, exactly as
    :func:`tiling.extract_tiles` orders them.

    The height and width may be unknown until run time.  They must be whole multiples of
    ``focus``: a ``ValueError`` is raised when the sizes are static and an
    ``InvalidArgumentError`` naming both sizes at run time otherwise (XLA-compiled functions
    drop run-time assertions, so check sizes in the data pipeline when using XLA).

    Args:
        focus: Size in pixels of the focus region of each tile, an int or a pair
            ``(height, width)``; at least 1.
        context: Pixels of context added on each side of the focus region, an int or a pair;
            at least 0.
        boundary: How the image is extended beyond its edges: `"periodic"` (a periodic cell)
            or `"zero"` (an isolated structure in vacuum).
        **kwargs: Base layer keyword arguments, such as `name`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch * n_tiles, focus[0] + 2 * context[0], focus[1] + 2 * context[1], channels)`
        with `n_tiles = (height // focus[0]) * (width // focus[1])`.

    Example:

    >>> layer = ExtractTiles(focus=4, context=2)
    >>> layer(np.zeros((3, 8, 12, 2), "float32")).shape
    TensorShape([18, 8, 8, 2])
    """

    def __init__(
        self,
        focus: int | Sequence[int],
        context: int | Sequence[int],
        boundary: str = "periodic",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.focus, self.context, self.boundary = tiling_arguments(focus, context, boundary)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Spatial shape `(T0, T1)` of a tile in pixels: focus plus context on both sides."""
        return tuple(f + 2 * c for f, c in zip(self.focus, self.context, strict=True))

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "`ExtractTiles` expected images of shape (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._check_static_sizes(input_shape)

    def call(self, images):
        images = tf.convert_to_tensor(images)
        self._check_static_sizes(images.shape)
        with tf.control_dependencies(self._size_assertions(images)):
            shape = tf.shape(images)
        (n_h, n_w) = tf.unstack(self.grid_shape(images))
        rows = self._source_indices(shape[1], axis=0)
        cols = self._source_indices(shape[2], axis=1)
        if self.boundary == "zero":
            (c0, c1) = self.context
            images = tf.pad(images, [[0, 0], [c0, c0], [c1, c1], [0, 0]])
        tiles = tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)
        (t0, t1) = self.tile_shape
        channels = images.shape[-1] if images.shape[-1] is not None else shape[3]
        tiles = tf.reshape(tiles, [-1, n_h, t0, n_w, t1, channels])
        tiles = tf.transpose(tiles, [0, 1, 3, 2, 4, 5])
        return tf.reshape(tiles, [-1, t0, t1, channels])

    def grid_shape(self, images) -> tf.Tensor:
        """Returns the tile grid `[nH, nW]` of `images` as an int32 tensor of shape `(2,)`."""
        shape = tf.shape(images)
        return tf.stack([shape[1] // self.focus[0], shape[2] // self.focus[1]])

    def compute_output_shape(self, input_shape):
        (batch, height, width, channels) = input_shape
        sizes = (batch, height, width)
        n_tiles = None
        if all(size is not None for size in sizes):
            n_tiles = batch * (height // self.focus[0]) * (width // self.focus[1])
        return (n_tiles, *self.tile_shape, channels)

    def get_config(self):
        return {
            **super().get_config(),
            "focus": list(self.focus),
            "context": list(self.context),
            "boundary": self.boundary,
        }

    def _source_indices(self, size: tf.Tensor, axis: int) -> tf.Tensor:
        # Row (or column) of the source image read by each pixel of each tile, tile by
        # tile: shape (n * T,).  Periodic images read modulo the size, which wraps as many
        # times as the context needs; zero-padded images are read after padding.
        focus = self.focus[axis]
        n_tiles = size // focus
        starts = tf.range(n_tiles) * focus
        offsets = tf.range(self.tile_shape[axis])
        indices = tf.reshape(starts[:, None] + offsets[None, :], [-1])
        if self.boundary == "periodic":
            indices = tf.math.floormod(indices - self.context[axis], size)
        return indices

    def _check_static_sizes(self, shape) -> None:
        for axis in (0, 1):
            size = shape[axis + 1]
            if size is not None and size % self.focus[axis] != 0:
                raise ValueError(
                    f"`focus` must divide the image size {size} along axis {axis}. "
                    f"Received: focus={self.focus}."
                )

    def _size_assertions(self, images) -> list:
        assertions = []
        for axis in (0, 1):
            if images.shape[axis + 1] is not None:
                continue
            size = tf.shape(images)[axis + 1]
            message = tf.strings.format(
                "`focus` must divide the image size {} along axis {}. Received: focus={}.",
                (size, axis, self.focus),
            )
            divides = tf.equal(size % self.focus[axis], 0)
            assertions.append(tf.debugging.Assert(divides, [message]))
        return assertions


@keras.saving.register_keras_serializable(package="ednn")
class SumTiles(keras.layers.Layer):
    """Sums per-tile outputs into one extensive value per structure.

    The tile outputs of a batch of equally sized images arrive flat, image by image and
    each image's tiles in row-major order (the order of :class:`ExtractTiles`).  They are
    reshaped to the tile grid and summed over it.

    Args:
        return_tile_map: Whether to also return the per-tile map of outputs, for example
            the local energy in eV of each focus region.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        tile_values: Tensor of shape `(batch * nH * nW, n_targets)`.
        grid_shape: The tile grid `(nH, nW)`: an int32 tensor, as given by
            `ExtractTiles.grid_shape(images)`, or a pair of ints passed by keyword.

    Returns:
        The sums, of shape `(batch, n_targets)`, or the tuple `(sums, tile_map)` with
        `tile_map` of shape `(batch, nH, nW, n_targets)` when `return_tile_map` is true.
    """

    def __init__(self, return_tile_map: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(return_tile_map, bool):
            raise TypeError(
                f"`return_tile_map` must be a bool. Received: return_tile_map={return_tile_map!r}"
            )
        self.return_tile_map = return_tile_map

    def build(self, tile_values_shape):
        if len(tile_values_shape) != 2 or tile_values_shape[-1] is None:
            raise ValueError(
                "`SumTiles` expected tile values of shape (n_tiles, n_targets) with a known "
                f"n_targets. Received: tile_values_shape={tuple(tile_values_shape)}"
            )

    def call(self, tile_values, grid_shape):
        (n_h, n_w) = tf.unstack(tf.cast(grid_shape, tf.int32))
        n_targets = tile_values.shape[-1]
        tile_map = tf.reshape(tile_values, [-1, n_h, n_w, n_targets])
        sums = tf.reduce_sum(tile_map, axis=[1, 2])
        return (sums, tile_map) if self.return_tile_map else sums

    def compute_output_shape(self, tile_values_shape, grid_shape_shape=None):
        sums_shape = (None, tile_values_shape[-1])
        if self.return_tile_map:
            return (sums_shape, (None, None, None, tile_values_shape[-1]))
        return sums_shape

    def get_config(self):
        return {**super().get_config(), "return_tile_map": self.return_tile_map}


@keras.saving.register_keras_serializable(package="ednn")
class ChannelCeiling(keras.layers.Layer):
    """Caps chosen image channels at a ceiling: `min(x, ceiling)`, pixel by pixel.

    An external potential is large where the electrons are not: over the 2D Kohn–Sham
    harmonic wells (``data/ks2d-sho-lda-2k``) half of the pixels lie above 17 Ha, while the
    densities are below 1e-7 bohr⁻² wherever the potential exceeds 13 Ha and the potential
    above 20 Ha contributes less than 1e-10 Ha to any `E_ext`.  Capping the potential
    channel keeps the values a network must resolve in the range that sets the energies.
    The cap is pixel-wise and leaves zeros unchanged for a positive ceiling, so it commutes
    with tiling (periodic or zero padding): as the first layer of a tile network it acts
    as if it were applied to the whole image.

    Args:
        ceiling: The cap, in the channels' (scaled) units; must be finite.
        channels: Indices of the capped channels; the others pass unchanged.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        images: Tensor of shape `(..., C)`.

    Returns:
        A tensor of the same shape.
    """

    def __init__(self, ceiling: float, channels: Sequence[int] = (0,), **kwargs):
        super().__init__(**kwargs)
        if isinstance(ceiling, bool) or not isinstance(ceiling, numbers.Real):
            raise TypeError(f"`ceiling` must be a number. Received: ceiling={ceiling!r}")
        if not np.isfinite(ceiling):
            raise ValueError(f"`ceiling` must be finite. Received: ceiling={ceiling}")
        channels = tuple(channels)
        if not channels or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in channels
        ):
            raise ValueError(
                "`channels` must be a non-empty sequence of non-negative channel indices. "
                f"Received: channels={channels!r}"
            )
        self.ceiling = float(ceiling)
        self.channels = tuple(int(c) for c in channels)

    def build(self, input_shape):
        n_channels = input_shape[-1]
        if n_channels is None or max(self.channels) >= n_channels:
            raise ValueError(
                f"`channels` {self.channels} must index the input's {n_channels} channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        mask = np.zeros(n_channels, dtype="float32")
        mask[list(self.channels)] = 1.0
        self._mask = keras.ops.convert_to_tensor(mask)

    def call(self, images):
        excess = keras.ops.relu(images - self.ceiling)
        return images - self._mask * excess

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ceiling": self.ceiling, "channels": list(self.channels)}


@keras.saving.register_keras_serializable(package="ednn")
class AppendSqrt(keras.layers.Layer):
    """Appends the square root of one image channel as a new last channel.

    For a density image `n` the root `√n` is the natural variable of the kinetic energy:
    the von Weizsäcker term `T_W = ½ ∫ |∇√n|²` is a local quadratic form in `√n` (and
    equals `T_s` for two electrons in one orbital), whereas in `n` itself it is a ratio.
    Negative values (round-off in a density) count as zero.  The map is pixel-wise and
    sends zero to zero, so it commutes with tiling (periodic or zero padding).

    Args:
        channel: Index of the channel whose root is appended.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        images: Tensor of shape `(..., C)`.

    Returns:
        A tensor of shape `(..., C + 1)`.
    """

    def __init__(self, channel: int = 0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 0:
            raise ValueError(f"`channel` must be a non-negative int. Received: channel={channel!r}")
        self.channel = int(channel)

    def build(self, input_shape):
        if input_shape[-1] is None or self.channel >= input_shape[-1]:
            raise ValueError(
                f"`channel` {self.channel} must index the input's {input_shape[-1]} channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, images):
        root = keras.ops.sqrt(keras.ops.relu(images[..., self.channel : self.channel + 1]))
        return keras.ops.concatenate([images, root], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] + 1)

    def get_config(self):
        return {**super().get_config(), "channel": self.channel}


@keras.saving.register_keras_serializable(package="ednn")
class ChannelPermutation(keras.layers.Layer):
    """Reorders image channels: output channel `i` is input channel `order[i]`.

    With `order = (1, 0)` it swaps the spin-up and spin-down densities of a two-channel
    image.  The map is pixel-wise and moves zeros to zeros, so it commutes with tiling
    (periodic or zero padding).

    Args:
        order: A permutation of `range(C)`, `C` the number of channels.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        images: Tensor of shape `(..., C)`.

    Returns:
        A tensor of the same shape, channels reordered.
    """

    def __init__(self, order: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.order = as_permutation(order, "order")

    def build(self, input_shape):
        if input_shape[-1] != len(self.order):
            raise ValueError(
                f"`order` {self.order} must permute the input's {input_shape[-1]} channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, images):
        return keras.ops.take(images, list(self.order), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "order": list(self.order)}


def as_permutation(order, name: str) -> tuple[int, ...]:
    """`order` as a tuple of ints after checking that it permutes `range(len(order))`."""
    values = tuple(order) if isinstance(order, Sequence | np.ndarray) else None
    if (
        not values
        or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in values)
        or sorted(int(i) for i in values) != list(range(len(values)))
    ):
        raise ValueError(
            f"`{name}` must be a permutation of 0 .. C-1 (C channels), e.g. (1, 0). "
            f"Received: {name}={order!r}"
        )
    return tuple(int(i) for i in values)
