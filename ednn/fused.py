"""Fused evaluation: the tile network run once over the whole image instead of tile by tile.

Neighbouring tiles share their context, so plain tiling computes every convolution of a
context pixel again in each tile that holds it: ``(focus + 2 context)² / focus²`` times the
work of one pass, 9x for a 48-pixel tile with a 16-pixel focus.  For a tile network that is a
plain stack of

* convolutions and poolings with ``padding="valid"`` (the "trunk"),
* element-wise layers (activations, ``Dense`` on the channel axis, ``LayerNormalization`` over
  channels, ``Dropout``) anywhere,
* then ``Flatten`` + ``Dense`` (or a global pooling) and more ``Dense`` layers (the "head"),

the same numbers come out of one pass of the trunk over the image padded by the context
(periodically or with zeros), followed by the head as convolutions: ``Flatten`` + the first
``Dense`` is a convolution whose kernel is the tile's final feature map ``(K0, K1)`` (the
``Dense`` kernel reshaped to ``(K0, K1, C, units)``: Keras flattens row-major ``(h, w, c)``)
with stride ``focus / S`` (``S`` the trunk's total stride), and the later ``Dense`` layers act
on the channel axis of the resulting ``(nH, nW)`` map of focus regions.  This is exact (up to
float summation order) when ``S`` divides the focus: the tile of focus region ``(i, j)`` then
starts on the trunk's output grid of every layer.  The fused pass uses the very variables of
the tile network (no copies), so it is differentiable and trains the tile network.

:func:`can_fuse` says whether a network qualifies and why not; :class:`FusedTileNetwork` runs
it.  :class:`ednn.model.EDNN` uses it by default where it can (``evaluation="auto"``).

The same pass with a head of a smaller stride evaluates the tile network at every tile
placement whose origin is a multiple of a ``step`` (dividing the focus) instead of the focus:
the tiles of all ``(focus / step)²`` shifted tile grids at once (:class:`ednn.model.EDNN`'s
``placement_step``).  A step that is a multiple of ``S`` takes one pass of the trunk, for about
the trunk's work of one grid; a step ``k`` that divides ``S`` takes ``(S / k)²`` passes, each
over the image shifted by a multiple of ``k``, their maps interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from ednn._validation import as_int_pair
from ednn.layers import tiling_arguments

__all__ = [
    "COARSE_ARCHITECTURE",
    "DEFAULT_ARCHITECTURE",
    "FusedTileNetwork",
    "NotFusableError",
    "apply_energy_affine",
    "can_fuse",
    "pad_context",
]

#: The default model's architecture (graphene/h-BN/C|BN sheets), in the form the training
#: config can pass on: ``build_ednn(focus, context, n_channels, **tile_network)`` with a
#: ``RasterSpec(**raster, multiple_of=focus)``.  0.15 Å pixels and 0.15 Å Gaussians resolve the
#: thermal displacements that carry most of the energy spread of MD snapshots (a 0.25 Å /
#: 0.3 Å raster learnt them more slowly, see experiments/default_model/README.md).  Every
#: convolution is "valid" and the total stride 8 divides the 16-pixel focus, so the network
#: fuses.  2.4 Å of focus plus 4.8 Å of context on each side gives each focus region a
#: 12 Å x 12 Å field of view (the xTB interactions of interest reach 2-5 Å).  See
#: experiments/architecture_speed.py and docs/giant_sheets.md for the speed of this and the
#: alternatives.
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "raster": {
        "species": ["C", "B", "N"],
        "spacing": 0.15,
        "sigma": 0.15,
        "height_channel": True,
        "spacing_channels": True,
    },
    "focus": 16,
    "context": 32,
    "boundary": "periodic",
    "tile_network": {
        "conv_layers": [
            [32, 4, 2, 1],
            [64, 3, 2, 1],
            [64, 3, 2, 1],
            [64, 3, 1, 1],
            [32, 3, 1, 1],
        ],
        "dense_units": [256, 64],
        "activation": "relu",
        "padding": "valid",
    },
}

#: The first session's trunk on a coarser raster (0.25 Å pixels, 0.3 Å Gaussians, total
#: stride 4; 2 Å focus, 5 Å context), the fast end of the speed/accuracy trade-off
#: (docs/giant_sheets.md).
COARSE_ARCHITECTURE: dict[str, Any] = {
    "raster": {**DEFAULT_ARCHITECTURE["raster"], "spacing": 0.25, "sigma": 0.3},
    "focus": 8,
    "context": 20,
    "boundary": "periodic",
    "tile_network": {
        **DEFAULT_ARCHITECTURE["tile_network"],
        "conv_layers": [[32, 4, 2, 1], [64, 3, 2, 1], [64, 3, 1, 2], [32, 3, 1, 1]],
    },
}


class NotFusableError(ValueError):
    """A tile network cannot be evaluated fused; the message says which layer and why."""


# Layers that act on each pixel (the last axis) alone, so that they commute with tiling.
_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Identity,
    keras.layers.Dropout,
)
# Activations that couple the values along an axis: not per pixel once flattened.
_ALONG_AXIS = ("softmax", "log_softmax")
_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def pad_context(images, context: int | Sequence[int], boundary: str = "periodic") -> tf.Tensor:
    """Pads a batch of images by the context on every side, as tiling sees them.

    Args:
        images: Images of shape `(batch, H, W, C)`.
        context: Pixels added on each side, an int or a pair `(rows, cols)`.
        boundary: `"periodic"` (wrapped, as many times as needed when the context exceeds
            the image) or `"zero"`.

    Returns:
        The padded images, `(batch, H + 2 context[0], W + 2 context[1], C)`.
    """
    _, context, boundary = tiling_arguments(1, context, boundary)
    return _pad(images, context, context, boundary)


def _pad(images, low, high, boundary: str) -> tf.Tensor:
    # Pads axes 1 and 2 by low[i] pixels before and high[i] after, zeros or wrapped round.
    images = tf.convert_to_tensor(images)
    if boundary == "zero":
        return tf.pad(images, [[0, 0], [low[0], high[0]], [low[1], high[1]], [0, 0]])
    shape = tf.shape(images)
    for axis, before, after in ((1, low[0], high[0]), (2, low[1], high[1])):
        if before or after:
            size = shape[axis]
            index = tf.math.floormod(tf.range(-before, size + after), size)
            images = tf.gather(images, index, axis=axis)
    return images


def apply_energy_affine(values, scale, shift):
    """`values * scale + shift` with an EDNN's `energy_scale` and `energy_shift_per_tile`.

    Skips the multiplication by 1 and the addition of 0 so that the fused and the tiled
    evaluations round alike.
    """
    if scale != 1.0:
        values = values * tf.constant(scale, values.dtype)
    if shift != 0.0:
        values = values + tf.constant(shift, values.dtype)
    return values


def _chain(tile_network) -> list:
    """The layers of a linear stack in order, or NotFusableError."""
    if isinstance(tile_network, keras.Sequential):
        return list(tile_network.layers)
    if not isinstance(tile_network, keras.Model) or not hasattr(tile_network, "_inbound_nodes"):
        raise NotFusableError(
            f"the tile network is a {type(tile_network).__name__}, not a Sequential or "
            "functional Keras model"
        )
    layers = [
        layer for layer in tile_network.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    previous = None
    for layer in layers:
        nodes = getattr(layer, "_inbound_nodes", [])
        inputs = [t for node in nodes for t in node.input_tensors] if len(nodes) == 1 else []
        sources = [t._keras_history.operation for t in inputs]
        expected_ok = len(sources) == 1 and (
            isinstance(sources[0], keras.layers.InputLayer)
            if previous is None
            else sources[0] is previous
        )
        if not expected_ok:
            raise NotFusableError(
                f"layer {layer.name!r} is not fed by the layer before it alone: the tile "
                "network is not a simple stack of layers"
            )
        previous = layer
    outputs = getattr(tile_network, "outputs", None) or []
    if len(outputs) != 1 or outputs[0]._keras_history.operation is not previous:
        raise NotFusableError("the tile network's output is not its last layer's output")
    return layers


def _pair(value) -> tuple[int, int]:
    return as_int_pair(tuple(value) if isinstance(value, Sequence) else value, "size")


class FusedTileNetwork:
    """Runs a tile network over a whole (padded) image at once; see the module docstring.

    Args:
        tile_network: The EDNN's tile network (a Keras Sequential or a functional model that
            is a linear stack of layers).
        focus: Focus region in pixels, an int or a pair.
        context: Context in pixels on each side, an int or a pair.
        boundary: `"periodic"` or `"zero"`, for :meth:`__call__`.
        step: Pixels between the tile origins evaluated, an int or a pair dividing the
            focus.  `None` (the focus): one tile per focus region.  A smaller step evaluates
            every placement of the tile grid shifted by multiples of it (:meth:`__call__`):
            in one pass of the trunk when the trunk's total stride `S` divides it, in
            `S / k` passes per axis (attribute `phases`) when it divides `S`.

    Raises:
        NotFusableError: (a `ValueError`) naming the layer that prevents fusion and why.

    Call arguments (:meth:`__call__`):
        images: `(batch, H, W, C)` with H and W multiples of the focus.
        training: Passed to the layers.

    Returns:
        The raw tile-network outputs per focus region, `(batch, H // f0, W // f1, n_targets)`,
        the same numbers as the tile network applied to each tile (before an EDNN's energy
        scale and shift).  With a `step` `k` smaller than the focus `f`, the outputs of the
        tiles whose focus region starts at `(k0 i - (f0 - k0), k1 j - (f1 - k1))`: every
        placement whose focus region overlaps the image, `((H + f0) / k0 - 1, (W + f1) / k1
        - 1)` of them, the image padded as the boundary says; with a periodic boundary the
        `(H / k0, W / k1)` placements starting at `(k0 i, k1 j)` (the others repeat them).
        Each of the `(f0 / k0) (f1 / k1)` shifted grids is a subset of these that covers
        the image once.
    """

    def __init__(self, tile_network, focus, context, boundary: str = "periodic", step=None) -> None:
        self.tile_network = tile_network
        self.focus, self.context, self.boundary = tiling_arguments(focus, context, boundary)
        self.tile_shape = tuple(f + 2 * c for f, c in zip(self.focus, self.context, strict=True))
        self.step = self.focus if step is None else as_int_pair(step, "step")
        if any(f % k for f, k in zip(self.focus, self.step, strict=True)):
            raise ValueError(f"`step` must divide the focus {self.focus}. Received: step={step!r}")
        # Passes of the trunk per axis: S / k for a step k below the trunk's stride S.
        self.phases = (1, 1)
        self._plan()

    def _plan(self) -> None:
        # Walk the stack tracking the tile's spatial size and the total stride, and record the
        # steps of the fused pass, each with the pixels it reads past one period of its input
        # (its "overhang", for on_periodic): ("layer", layer, overhang, strides) runs the
        # layer as it is on the big map; ("dense", layer, overhang, kernel_size, stride) runs
        # Flatten + Dense as a convolution; ("pool", layer, overhang, kernel_size, stride)
        # runs a global pooling as a strided pooling.
        size = self.tile_shape
        stride = (1, 1)
        steps: list[tuple] = []
        in_head = False  # past the Flatten or global pooling
        flattened = False  # a Flatten waits for its Dense
        for layer in _chain(self.tile_network):
            kind = type(layer)
            label = f"layer {layer.name!r} ({kind.__name__})"
            if getattr(layer, "quantization_mode", None):
                raise NotFusableError(f"{label} is quantized")
            if not in_head and kind in (keras.layers.Conv2D, *_POOLING):
                (kernel, strides) = _valid_window(layer, label)
                size = _valid_size(size, kernel, strides, label)
                stride = (stride[0] * strides[0], stride[1] * strides[1])
                steps.append(("layer", layer, _overhang(kernel, strides), strides))
            elif not in_head and kind is keras.layers.Flatten:
                in_head = flattened = True
            elif not in_head and kind in _GLOBAL_POOLING:
                if getattr(layer, "keepdims", False):
                    raise NotFusableError(f"{label} has keepdims=True")
                in_head = True
                head = self._head_stride(stride, label)
                steps.append(("pool", layer, _overhang(size, head), size, head))
            elif kind is keras.layers.Dense and flattened:
                head = self._head_stride(stride, label)
                steps.append(("dense", layer, _overhang(size, head), size, head))
                flattened = False
            elif kind is keras.layers.Dense or (
                kind in _ELEMENTWISE and _activation_name(layer) not in _ALONG_AXIS
            ):
                # Per-pixel layers commute with cropping tiles and with flattening.
                steps.append(("layer", layer, (0, 0), (1, 1)))
            else:
                raise NotFusableError(
                    f"{label} is not one the fused evaluation handles: valid Conv2D and "
                    "pooling, Flatten + Dense, global pooling, Dense and element-wise "
                    "activations or Dropout"
                )
        if not in_head:
            raise NotFusableError("the tile network has no Flatten or global pooling")
        if flattened:
            raise NotFusableError("the Flatten layer is not followed by a Dense layer")
        self.total_stride = stride
        self.final_size = size
        self._steps = steps
        # on_periodic: the trunk's layers up to its last strided one (big maps, small
        # overhangs) read one halo of their summed overhangs, in input pixels, added once to
        # the input; the later layers (maps downsampled by the total stride, larger overhangs)
        # wrap their own inputs.  Wrapping every layer copies the big early maps twice each:
        # 1.3x slower than the plain halo for the default model on a 1088-pixel image.
        self._periodic_prefix, self._periodic_halo = 0, (0, 0)
        scale, halo = (1, 1), (0, 0)
        for index, step in enumerate(steps):
            if step[0] != "layer":
                break
            halo = tuple(h + o * c for h, o, c in zip(halo, step[2], scale, strict=True))
            scale = tuple(c * t for c, t in zip(scale, step[3], strict=True))
            if step[3] != (1, 1):
                self._periodic_prefix, self._periodic_halo = index + 1, halo

    def _head_stride(self, stride, label) -> tuple[int, int]:
        if self.step == self.focus:
            for axis in (0, 1):
                if self.focus[axis] % stride[axis]:
                    raise NotFusableError(
                        f"the trunk before {label} has total stride {stride}, which must "
                        f"divide the focus {self.focus} so that every tile starts on its "
                        "output grid"
                    )
            return (self.focus[0] // stride[0], self.focus[1] // stride[1])
        for axis in (0, 1):
            if self.step[axis] % stride[axis] and stride[axis] % self.step[axis]:
                raise NotFusableError(
                    f"the trunk before {label} has total stride {stride}, which must divide "
                    f"the placement step {self.step} or be a multiple of it, so that the "
                    "tiles of each pass start on its output grid"
                )
        # A step k >= S: one pass, a head of stride k / S.  A step k < S: S / k passes, each
        # over the image shifted by a multiple of k, a head of stride 1 (_phased_placements).
        self.phases = tuple(max(s // k, 1) for k, s in zip(self.step, stride, strict=True))
        return tuple(max(k // s, 1) for k, s in zip(self.step, stride, strict=True))

    def __call__(self, images, training=None) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        with tf.control_dependencies(self._size_checks(images)):
            if self.phases != (1, 1):
                return self._phased_placements(images, training)
            if self.step != self.focus:
                # Tile origins k i from -(f - k) (zero; 0 when periodic) to H - k.
                high = [
                    c + f - k for c, f, k in zip(self.context, self.focus, self.step, strict=True)
                ]
                low = self.context if self.boundary == "periodic" else high
                padded = _pad(images, low, high, self.boundary)
            elif self.boundary == "periodic":
                return self.on_periodic(images, training)
            else:
                padded = pad_context(images, self.context, self.boundary)
        return self.on_padded(padded, training)

    def _phased_placements(self, images, training) -> tf.Tensor:
        # A step k below the trunk's stride S: the placement of origin index q (origin
        # k q - (f - k), or k q when periodic) falls in pass r = q mod R (R = S / k) as its
        # (q // R)-th tile; each pass runs the trunk over the image padded (or rolled) so that
        # its first tile starts at the pass's first origin.  The maps are interleaved back.
        shape = tf.shape(images)
        periodic = self.boundary == "periodic"
        counts = []  # per axis: all placements Q, and the tiles of each pass
        for axis in (0, 1):
            (f, k, R) = (self.focus[axis], self.step[axis], self.phases[axis])
            total = shape[axis + 1] // k if periodic else (shape[axis + 1] + f) // k - 1
            counts.append((total, [(total - r + R - 1) // R for r in range(R)]))
        passes = []
        for r0 in range(self.phases[0]):
            row = []
            for r1 in range(self.phases[1]):
                (low, high, x) = ([], [], images)
                for axis, r in ((0, r0), (1, r1)):
                    (f, k, c) = (self.focus[axis], self.step[axis], self.context[axis])
                    apart = k * self.phases[axis]  # the pass's tiles: S apart, or k if k >= S
                    if periodic:  # the H / apart tiles from origin k r, rolled to 0
                        x = tf.roll(x, shift=-k * r, axis=axis + 1)
                        (low, high) = ([*low, c], [*high, c + f - apart])
                        continue
                    first = k * r - (f - k)
                    last = first + apart * (counts[axis][1][r] - 1)
                    low.append(c - first)
                    high.append(last + f + c - shape[axis + 1])
                tile_map = self.on_padded(_pad(x, low, high, self.boundary), training)
                # Passes past the first hold one tile fewer where R does not divide Q.
                size = tf.shape(tile_map)
                missing = [counts[0][1][0] - size[1], counts[1][1][0] - size[2]]
                row.append(tf.pad(tile_map, [[0, 0], [0, missing[0]], [0, missing[1]], [0, 0]]))
            passes.append(tf.stack(row, axis=3))  # (batch, n0, n1, R1, T)
        stacked = tf.stack(passes, axis=2)  # (batch, n0, R0, n1, R1, T)
        s = tf.shape(stacked)
        interleaved = tf.reshape(stacked, [s[0], s[1] * s[2], s[3] * s[4], s[5]])
        return interleaved[:, : counts[0][0], : counts[1][0]]

    def _size_checks(self, images) -> list:
        # A size that the focus does not divide would silently drop the last partial region.
        checks = []
        for axis in (0, 1):
            size = images.shape[axis + 1]
            if size is not None:
                if size % self.focus[axis]:
                    raise ValueError(
                        f"`focus` must divide the image size {size} along axis {axis}. "
                        f"Received: focus={self.focus}."
                    )
                continue
            size = tf.shape(images)[axis + 1]
            message = tf.strings.format(
                "`focus` must divide the image size {} along axis {}. Received: focus={}.",
                (size, axis, self.focus),
            )
            checks.append(tf.debugging.Assert(tf.equal(size % self.focus[axis], 0), [message]))
        return checks

    def on_padded(self, padded, training=None) -> tf.Tensor:
        """Outputs per focus region of images already padded by the context.

        Args:
            padded: `(batch, nH * f0 + 2 c0, nW * f1 + 2 c1, C)`, e.g. a band of a giant
                sheet rasterized with its context halo.
            training: Passed to the layers.

        Returns:
            `(batch, nH, nW, n_targets)`; with a `step` smaller than the focus, the
            placements `k` apart whose tiles fit in `padded`.
        """
        return self._run(tf.convert_to_tensor(padded), training)

    def on_periodic(self, images, training=None) -> tf.Tensor:
        """Outputs per focus region of periodic images, without a context halo.

        A valid convolution or pooling (kernel ``k``, stride ``s``) needs ``k - s`` pixels past
        the end of one period of its input to give one period of output; they are the
        period's own first pixels.  The trunk's layers up to its last strided one get theirs
        at once, as one small halo added to the input (8 pixels for the default model); each
        later layer wraps its own input, so every layer computes about one period of its
        output and no context pixel is convolved twice.  The images are first rolled by the
        context so that region ``(i, j)`` sees the pixels its tile holds.  The result equals
        :meth:`__call__`'s with a periodic boundary (and plain tiling) exactly; the work is
        about ``H W`` pixels rather than ``(H + 2 c0)(W + 2 c1)``.  Measured with the default
        model (``experiments/periodic_pass_speed.py``): a training step on 80 x 224 images
        1.59x faster than with the halo, a 352 x 336 sheet 1.09x.

        Args:
            images: `(batch, H, W, C)`, H and W multiples of the focus (one period each).
            training: Passed to the layers.

        Returns:
            `(batch, H // f0, W // f1, n_targets)`.
        """
        if self.step != self.focus:
            raise ValueError(
                f"`on_periodic` gives one tile per focus region; call the network for the "
                f"placements of step {self.step}."
            )
        x = tf.roll(tf.convert_to_tensor(images), shift=self.context, axis=(1, 2))
        return self._run(_wrap_periodic(x, self._periodic_halo), training, self._periodic_prefix)

    def _run(self, x, training, wrap_from: int | None = None) -> tf.Tensor:
        # Steps from index `wrap_from` on wrap their input periodically (None: none do).
        for index, step in enumerate(self._steps):
            if wrap_from is not None and index >= wrap_from:
                x = _wrap_periodic(x, step[2])
            if step[0] == "layer":
                x = step[1](x, training=training)
            elif step[0] == "dense":
                x = _dense_as_conv(step[1], x, step[3], step[4])
            else:
                x = _global_pool_as_pool(step[1], x, step[3], step[4])
        return x


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _valid_window(layer, label) -> tuple[tuple[int, int], tuple[int, int]]:
    # Kernel extent (dilation included) and strides of a valid convolution or pooling.
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise NotFusableError(f"{label} is not channels_last")
    if layer.padding != "valid":
        raise NotFusableError(
            f'{label} has padding="{layer.padding}": only "valid" convolutions and poolings '
            "see the same pixels in a tile and in the whole image"
        )
    if isinstance(layer, keras.layers.Conv2D):
        dilation = _pair(layer.dilation_rate)
        kernel = tuple(
            (k - 1) * d + 1 for k, d in zip(_pair(layer.kernel_size), dilation, strict=True)
        )
    else:
        kernel = _pair(layer.pool_size)
    return kernel, _pair(layer.strides)


def _valid_size(size, kernel, strides, label) -> tuple[int, int]:
    # Output size of a valid window on a tile of `size`.
    if any(n < k for n, k in zip(size, kernel, strict=True)):
        raise NotFusableError(f"{label} needs more pixels than the tile has left")
    return tuple((n - k) // s + 1 for n, k, s in zip(size, kernel, strides, strict=True))


def _overhang(kernel, strides) -> tuple[int, int]:
    # Pixels past one period that a valid window of stride s needs to give one period of
    # output: the last window starts at P - s and ends at P - s + k.
    return tuple(max(k - s, 0) for k, s in zip(kernel, strides, strict=True))


def _wrap_periodic(x, overhang):
    # Appends the first `overhang` rows and columns of a periodic map after its end (as many
    # periods as needed when the overhang exceeds the map).
    for axis, extra in ((1, overhang[0]), (2, overhang[1])):
        if extra:
            size = tf.shape(x)[axis]
            head = tf.gather(x, tf.math.floormod(tf.range(extra), size), axis=axis)
            x = tf.concat([x, head], axis=axis)
    return x


def _dense_as_conv(dense, x, kernel_size, stride):
    # Flatten orders (h, w, c) row-major, so the Dense kernel (K0*K1*C, units) reshapes to a
    # (K0, K1, C, units) convolution kernel; `dense.kernel` is the variable itself (or its LoRA
    # sum), so gradients reach the tile network's weights.
    units = dense.units
    kernel = tf.reshape(tf.cast(dense.kernel, x.dtype), (*kernel_size, x.shape[-1] or -1, units))
    y = tf.nn.conv2d(x, kernel, strides=(1, *stride, 1), padding="VALID")
    if dense.use_bias:
        y = tf.nn.bias_add(y, tf.cast(dense.bias, y.dtype))
    return dense.activation(y) if dense.activation is not None else y


def _global_pool_as_pool(layer, x, kernel_size, stride):
    pool = (
        tf.nn.max_pool2d if isinstance(layer, keras.layers.GlobalMaxPooling2D) else tf.nn.avg_pool2d
    )
    return pool(x, ksize=kernel_size, strides=stride, padding="VALID")


def can_fuse(tile_network, focus, context) -> tuple[bool, str]:
    """Whether a tile network can be evaluated fused, and why (not).

    Args:
        tile_network: A Keras tile network.
        focus: Focus region in pixels, an int or a pair.
        context: Context in pixels on each side, an int or a pair.

    Returns:
        `(True, description)` or `(False, reason)`, e.g.
        `(False, 'layer "conv0_0" (Conv2D) has padding="same": ...')`.

    Example:

    >>> can_fuse(net, focus=16, context=16)
    (True, 'fusable: valid trunk of total stride (4, 4) divides the focus (16, 16); ...')
    """
    try:
        fused = FusedTileNetwork(tile_network, focus, context)
    except NotFusableError as error:
        return (False, str(error))
    work = math.prod(fused.tile_shape) / math.prod(fused.focus)
    return (
        True,
        f"fusable: valid trunk of total stride {fused.total_stride} divides the focus "
        f"{fused.focus}; tiling would redo the trunk ~{work:.1f}x",
    )
