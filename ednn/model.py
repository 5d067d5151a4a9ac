"""The EDNN model: tiles -> one shared tile network -> sum over tiles.

:class:`EDNN` wraps any Keras tile network that maps a tile ``(T0, T1, C)`` to
``n_targets`` values.  Its graph is the sum of the tile outputs and nothing else, which
makes it exactly extensive: a 2x2 periodic supercell gives 4x the output.  Per-species
reference energies stored in ``metadata`` are applied outside the graph, on atom counts,
by whoever turns predictions into total energies.

Saved ``.keras`` files hold the tile network, the tiling and the metadata, and load with
plain :func:`keras.saving.load_model` after ``import ednn``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import keras
import numpy as np
import tensorflow as tf

from ednn._validation import as_int_pair, check_positive_int
from ednn.fused import FusedTileNetwork, NotFusableError, apply_energy_affine
from ednn.layers import ChannelPermutation, ExtractTiles, SumTiles, as_permutation

# How an EDNN runs its tile network: tile by tile, fused over the whole image (ednn.fused), or
# fused whenever the tile network allows it.
EVALUATIONS = ("auto", "tiles", "fused")

# The convolutions of the original EDNN tile network, each (filters, kernel, stride, repeat).
DEFAULT_CONV_LAYERS = ((64, 3, 2, 2), (16, 4, 1, 6), (64, 3, 2, 1), (32, 3, 1, 4))
DEFAULT_DENSE_UNITS = (1024,)

# Keys that `EDNN.metadata` may hold.  Only `units`, `target_names`, `ednn_version` and
# `created` are filled in by ednn; the rest are written by whoever builds the model.
METADATA_KEYS = {
    "raster": "`ednn.raster.RasterSpec.to_dict()`: species, spacing (Å), sigma (Å), "
    "height_channel and the other rasterization settings",
    "units": 'units of the outputs; "eV" by default',
    "target_names": "name of each output, in output order",
    "reference_energies": "eV per atom by species, added outside the graph on atom counts",
    "provenance": "where the training data came from (dict)",
    "ednn_version": "version of ednn that built the model",
    "created": "UTC time the model was built, ISO 8601",
}


def default_tile_network(
    tile_shape: int | Sequence[int],
    n_channels: int,
    n_targets: int = 1,
    *,
    conv_layers: Sequence[Sequence] = DEFAULT_CONV_LAYERS,
    dense_units: Sequence[int] = DEFAULT_DENSE_UNITS,
    activation: str = "relu",
    padding: str = "same",
    initializer: str = "he_normal",
    output_initializer: str = "glorot_uniform",
    name: str = "tile_network",
) -> keras.Sequential:
    """Builds the convolutional tile network of the original EDNN.

    By default: two 3x3 convolutions with 64 filters and stride 2, six 4x4 convolutions with
    16 filters, one 3x3 convolution with 64 filters and stride 2, four 3x3 convolutions with
    32 filters, then a dense layer of 1024 units and a linear dense output of `n_targets`.

    Args:
        tile_shape: Tile size `(T0, T1)` in pixels (focus plus context on both sides), an
            int or a pair.
        n_channels: Number of image channels.
        n_targets: Number of values predicted per tile (e.g. 1 for the energy in eV).
        conv_layers: Convolution blocks, each `(filters, kernel, stride, repeat)`: `repeat`
            convolutions with `filters` filters of size `kernel` and stride `stride`.
            `kernel` and `stride` may be ints or pairs.
        dense_units: Units of each hidden dense layer after flattening.
        activation: Activation of every layer except the linear output.
        padding: Convolution padding, `"same"` or `"valid"`.
        initializer: Kernel initializer of the hidden layers.  `"he_normal"` keeps the
            signal's variance through ReLU layers; with Keras' default `"glorot_uniform"`
            it halves at each layer.
        output_initializer: Kernel initializer of the linear output layer.  `"zeros"` starts
            the network at zero energy for every tile (the reference energies alone), so
            that training does not first spend its steps undoing random tile energies.
        name: Name of the returned model.

    Returns:
        A built `keras.Sequential` mapping `(batch, T0, T1, n_channels)` to
        `(batch, n_targets)`.
    """
    spatial = as_int_pair(tile_shape, "tile_shape")
    check_positive_int(n_channels, "n_channels")
    check_positive_int(n_targets, "n_targets")
    if padding not in ("same", "valid"):
        raise ValueError(f'`padding` must be "same" or "valid". Received: padding={padding!r}')
    layers = [keras.Input(shape=(*spatial, n_channels), name="tiles")]
    for block, spec in enumerate(conv_layers):
        if not isinstance(spec, Sequence) or len(spec) != 4:
            raise TypeError(
                "Each entry of `conv_layers` must be (filters, kernel, stride, repeat). "
                f"Received: conv_layers[{block}]={spec!r}"
            )
        (filters, kernel, strides, repeat) = spec
        check_positive_int(filters, f"conv_layers[{block}] filters")
        check_positive_int(repeat, f"conv_layers[{block}] repeat")
        kernel = as_int_pair(kernel, f"conv_layers[{block}] kernel")
        strides = as_int_pair(strides, f"conv_layers[{block}] stride")
        for index in range(repeat):
            spatial = _conv_output_size(spatial, kernel, strides, padding, tile_shape)
            layers.append(
                keras.layers.Conv2D(
                    filters,
                    kernel,
                    strides=strides,
                    padding=padding,
                    activation=activation,
                    kernel_initializer=initializer,
                    name=f"conv{block}_{index}",
                )
            )
    layers.append(keras.layers.Flatten(name="flatten"))
    for index, units in enumerate(dense_units):
        check_positive_int(units, f"dense_units[{index}]")
        layers.append(
            keras.layers.Dense(
                units, activation=activation, kernel_initializer=initializer, name=f"dense{index}"
            )
        )
    layers.append(
        keras.layers.Dense(n_targets, kernel_initializer=output_initializer, name="output")
    )
    return keras.Sequential(layers, name=name)


def channel_symmetric(
    tile_network: keras.Model,
    permutations: Sequence[Sequence[int]],
    *,
    name: str = "channel_symmetric_tile_network",
) -> keras.Model:
    """A tile network averaged over a group of channel permutations, hence invariant to them.

    `f_sym(t) = mean over p in permutations of f(t with channels reordered by p)`.  When
    the permutations form a group (they hold the identity and every composition of two of
    them), `f_sym` gives the same output for a tile and for any of its permutations, exactly
    and whatever the weights, and so does the EDNN summing it over tiles.  The energies of
    spin densities `(n↑, n↓)` are invariant under the swap of the two channels (no magnetic
    field): `permutations=[(0, 1), (1, 0)]`.  The one network `f` is shared by all terms
    (same weights); it runs once per permutation.

    Args:
        tile_network: A Keras model with one defined input of shape `(T0, T1, C)`.
        permutations: The group, each a permutation of `range(C)` (see
            :class:`ednn.layers.ChannelPermutation`).
        name: Name of the returned model.

    Returns:
        A functional `keras.Model` with the input and output shapes of `tile_network`.
    """
    group = {as_permutation(p, "permutations") for p in permutations}
    n_channels = len(next(iter(group), ()))
    identity = tuple(range(n_channels))
    if identity not in group or any(len(p) != n_channels for p in group):
        raise ValueError(
            "`permutations` must hold the identity and permute the same channels. "
            f"Received: permutations={[list(p) for p in permutations]}"
        )
    if any(tuple(q[i] for i in p) not in group for p in group for q in group):
        raise ValueError(
            "`permutations` must be closed under composition (a group), or the average is "
            f"not invariant. Received: permutations={[list(p) for p in permutations]}"
        )
    try:
        (tiles,) = tile_network.inputs
    except (AttributeError, ValueError) as error:
        raise ValueError(
            "`tile_network` must be a Keras model with one defined input, the tiles."
        ) from error
    if tiles.shape[-1] != n_channels:
        raise ValueError(
            f"`permutations` permute {n_channels} channels; the tile network takes "
            f"{tiles.shape[-1]}. Received: tile input shape={tuple(tiles.shape[1:])}"
        )
    inputs = keras.Input(tiles.shape[1:], name="tiles")
    outputs = [
        tile_network(
            inputs if p == identity else ChannelPermutation(p, name=f"permute_{i}")(inputs)
        )
        for i, p in enumerate(sorted(group))
    ]
    output = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="average")(outputs)
    return keras.Model(inputs, output, name=name)


class ChecksImageArrays:
    """Mixin: `predict` and `evaluate` check the shape of array images before running.

    Once `predict` has traced a graph for one input shape, TensorFlow retraces a later call
    with a different channel count under a relaxed shape (channels unknown), and the wrong
    count then fails deep inside the graph.  Arrays and tensors are checked here first, by
    the model's `_check_images_shape`, which raises a `ValueError` naming the shape expected.
    """

    def predict(self, x, *args, **kwargs):
        self._check_array_images(x)
        return super().predict(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_array_images(x)
        return super().evaluate(x, *args, **kwargs)

    def _check_array_images(self, x) -> None:
        shape = getattr(x, "shape", None)
        if shape is not None and not isinstance(x, tf.data.Dataset):
            self._check_images_shape(tuple(shape))


@keras.saving.register_keras_serializable(package="ednn")
class EDNN(ChecksImageArrays, keras.Model):
    """Extensive deep neural network: the sum of one shared network over all tiles.

    The image is cut into focus/context tiles (:class:`ednn.layers.ExtractTiles`), every
    tile goes through `tile_network`, each tile output is mapped to
    `energy_scale * output + energy_shift_per_tile` and the results are summed per image.
    Nothing else is in the graph, so the model is exactly extensive.

    Args:
        tile_network: The shared tile network: a Keras model (or layer) mapping
            `(batch, T0, T1, C)` to `(batch, n_targets)`, a path to a `.keras` file holding
            one, or its serialized config.  Its input shape must be the tile shape
            `focus + 2 * context` with `C` channels; `None` dimensions are accepted.  A
            trained `EDNN` (or a path to one) stands for a copy of its own tile network,
            weights included: the new model starts from them (fine-tuning, e.g. after
            pre-training on cheap labels) and training it leaves the original unchanged.
        focus: Focus region of each tile in pixels, an int or a pair.
        context: Context pixels on each side of the focus region, an int or a pair.
        boundary: `"periodic"` (a periodic cell) or `"zero"` (vacuum around the image).
        metadata: JSON-serializable dict describing the model (see `METADATA_KEYS`).
            `units` ("eV"), `target_names`, `ednn_version` and `created` are filled in when
            missing.  NumPy scalars and arrays are converted to plain numbers and lists.
        energy_scale: Fixed (not trained) factor applied to every tile output, a float or
            one per target; lets the tile network learn normalised targets.
        energy_shift_per_tile: Fixed offset added to every tile output after scaling, in
            output units (eV) per tile, a float or one per target.
        n_channels: Number of image channels.  Taken from the tile network when `None`.
        n_targets: Number of outputs.  Taken from the tile network when `None`.
        evaluation: `"tiles"` runs the tile network on every tile; `"fused"` runs it once
            over the whole padded image (:mod:`ednn.fused`; same outputs, ~(T/f)² less work;
            a `ValueError` if the tile network cannot be fused); `"auto"` fuses when the
            tile network allows it.  `call_on_tiles` always works tile by tile.
        placement_step: `None`, or pixels (an int or a pair) by which the tile grid is
            shifted: the outputs are then the mean of the tile sums over the `(f0 / k0)
            (f1 / k1)` grids shifted by multiples of `k` (every grid whose tiles start
            `k` apart), `energy_shift_per_tile` counted once per focus region of the image.
            Cutting the image at fixed places makes an EDNN depend on where a feature sits
            on the tiles; the mean over the placements does not, for shifts by multiples
            of `k` (exactly for a periodic image rolled by them, and for an isolated
            feature in an otherwise empty zero-boundary image moved by them).  `k` must
            divide the focus and be a multiple of the tile network's total stride `S` or
            divide it; the placements are evaluated fused
            (:class:`ednn.fused.FusedTileNetwork` with `step=k`), for about the trunk's work
            of one grid (`(S / k)²` grids when `k < S`) and `(f/k)²` times the head's.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        images: Images of shape `(batch, height, width, C)`, height and width whole
            multiples of `focus` (they may differ from call to call).
        training: Whether the tile network runs in training mode.

    Returns:
        The extensive outputs, shape `(batch, n_targets)`, in the units of
        `metadata["units"]`.
    """

    def __init__(
        self,
        tile_network: keras.Layer | str | os.PathLike | dict,
        focus: int | Sequence[int],
        context: int | Sequence[int],
        boundary: str = "periodic",
        metadata: Mapping | None = None,
        energy_scale: float | Sequence[float] = 1.0,
        energy_shift_per_tile: float | Sequence[float] = 0.0,
        n_channels: int | None = None,
        n_targets: int | None = None,
        evaluation: str = "auto",
        placement_step: int | Sequence[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.extract_tiles = ExtractTiles(focus, context, boundary, name="extract_tiles")
        self.sum_tiles = SumTiles(return_tile_map=True, name="sum_tiles")
        tile_network = _as_tile_network(tile_network)
        (self.n_channels, self.n_targets) = _check_tile_network(
            tile_network, self.extract_tiles.tile_shape, n_channels, n_targets
        )
        self.tile_network = tile_network
        self.energy_scale = _normalize_affine(energy_scale, "energy_scale", self.n_targets)
        self.energy_shift_per_tile = _normalize_affine(
            energy_shift_per_tile, "energy_shift_per_tile", self.n_targets
        )
        self._metadata_json = _metadata_json(metadata, self.n_targets)
        if evaluation not in EVALUATIONS:
            raise ValueError(
                f"`evaluation` must be one of {EVALUATIONS}. Received: evaluation={evaluation!r}"
            )
        self.evaluation = evaluation
        self.placement_step = None
        self._fused = None
        if placement_step is not None:
            self.placement_step = as_int_pair(placement_step, "placement_step")
            if evaluation == "tiles":
                raise ValueError(
                    '`placement_step` evaluates the placements fused. Received: evaluation="tiles"'
                )
            try:
                self._fused = FusedTileNetwork(
                    tile_network, focus, context, boundary, step=self.placement_step
                )
            except NotFusableError as error:
                raise ValueError(
                    f"`placement_step` needs a tile network that can be fused: {error}. "
                    f"Received: placement_step={placement_step!r}"
                ) from error
        elif evaluation != "tiles":
            try:
                self._fused = FusedTileNetwork(tile_network, focus, context, boundary)
            except NotFusableError as error:
                if evaluation == "fused":
                    raise ValueError(
                        f'`evaluation="fused"` needs a tile network that can be fused: {error}. '
                        'Received: evaluation="fused"; use "auto" or "tiles".'
                    ) from error
        # All weights live in the tile network, which is built already, and the tiling
        # accepts any image size, so the model is complete before it first sees an image.
        self.build((None, None, None, self.n_channels))

    @property
    def focus(self) -> tuple[int, int]:
        """Focus region `(height, width)` of each tile in pixels."""
        return self.extract_tiles.focus

    @property
    def context(self) -> tuple[int, int]:
        """Context `(height, width)` in pixels on each side of the focus region."""
        return self.extract_tiles.context

    @property
    def boundary(self) -> str:
        """`"periodic"` or `"zero"`."""
        return self.extract_tiles.boundary

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        """Shape `(T0, T1, C)` of one tile in pixels."""
        return (*self.extract_tiles.tile_shape, self.n_channels)

    @property
    def fused_network(self) -> FusedTileNetwork | None:
        """The fused evaluation of the tile network in use, or `None` when tiling."""
        return self._fused

    @property
    def metadata(self) -> dict:
        """A fresh copy of the model's metadata dict (editing it does not change the model)."""
        return json.loads(self._metadata_json)

    def build(self, input_shape):
        self._check_images_shape(input_shape)
        self.extract_tiles.build(input_shape)
        self.sum_tiles.build((None, self.n_targets))

    def call(self, images, training=None):
        (sums, _) = self._sum_over_tiles(images, training)
        return sums

    def tile_outputs(self, images, training=None) -> tf.Tensor:
        """Returns each tile's contribution, shape `(batch, nH, nW, n_targets)`.

        The map sums to `self(images)` over its two grid axes; for an energy model it is
        the local energy in eV of each focus region.  With a `placement_step`, the map is
        that of every placement (:class:`ednn.fused.FusedTileNetwork`), each tile's output
        divided by the number of shifted grids and the energy shift spread evenly.
        """
        (_, tile_map) = self._sum_over_tiles(images, training)
        return tile_map

    def call_on_tiles(self, tiles, segment_ids, n_segments, training=None) -> tf.Tensor:
        """Sums tile outputs per structure for tiles of structures of different sizes.

        Args:
            tiles: Tiles of shape `(n_tiles, T0, T1, C)`, e.g. from `self.extract_tiles`
                or :func:`tiling.extract_tiles`, of several structures concatenated.
            segment_ids: int tensor `(n_tiles,)`, the structure each tile belongs to, in
                `[0, n_segments)`.
            n_segments: Number of structures.

        Returns:
            The extensive outputs, shape `(n_segments, n_targets)`.
        """
        tiles = tf.convert_to_tensor(tiles)
        expected = (None, *self.tile_shape)
        if len(tiles.shape) != 4 or not _shapes_compatible(tiles.shape, expected):
            raise ValueError(
                f"`call_on_tiles` expected tiles of shape {expected}. "
                f"Received: tiles.shape={tuple(tiles.shape)}"
            )
        values = self._tile_values(tiles, training)
        return tf.math.unsorted_segment_sum(values, segment_ids, n_segments)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_targets)

    def get_config(self):
        return {
            **super().get_config(),
            "tile_network": keras.saving.serialize_keras_object(self.tile_network),
            "focus": list(self.focus),
            "context": list(self.context),
            "boundary": self.boundary,
            "metadata": self.metadata,
            "energy_scale": _affine_config(self.energy_scale),
            "energy_shift_per_tile": _affine_config(self.energy_shift_per_tile),
            "n_channels": self.n_channels,
            "n_targets": self.n_targets,
            "evaluation": self.evaluation,
            "placement_step": None if self.placement_step is None else list(self.placement_step),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["tile_network"] = keras.saving.deserialize_keras_object(
            config["tile_network"], custom_objects=custom_objects
        )
        return cls(**config)

    def _sum_over_tiles(self, images, training):
        images = tf.convert_to_tensor(images)
        self._check_images_shape(images.shape)
        # A static channel count lets the tile network check its input shape when traced.
        images = tf.ensure_shape(images, [None, None, None, self.n_channels])
        if self.placement_step is not None:
            tile_map = self._placement_map(images, training)
            return (tf.reduce_sum(tile_map, axis=[1, 2]), tile_map)
        if self._fused is not None:
            tile_map = self._fused(images, training=training)
            tile_map = apply_energy_affine(tile_map, self.energy_scale, self.energy_shift_per_tile)
            return (tf.reduce_sum(tile_map, axis=[1, 2]), tile_map)
        values = self._tile_values(self.extract_tiles(images), training)
        return self.sum_tiles(values, self.extract_tiles.grid_shape(images))

    def _placement_map(self, images, training):
        # mean over grids of sum(scale * out) + shift per focus region of the image, spread
        # evenly over the placements' map.
        raw = self._fused(images, training=training)
        grids = math.prod(f // k for f, k in zip(self.focus, self.placement_step, strict=True))
        shape = tf.shape(images)
        regions = (shape[1] // self.focus[0]) * (shape[2] // self.focus[1])
        placements = tf.shape(raw)[1] * tf.shape(raw)[2]
        scale = tf.constant(self.energy_scale, raw.dtype) / grids
        shift = tf.constant(self.energy_shift_per_tile, raw.dtype) * tf.cast(
            regions / placements, raw.dtype
        )
        return raw * scale + shift

    def _tile_values(self, tiles, training):
        values = self.tile_network(tiles, training=training)
        return apply_energy_affine(values, self.energy_scale, self.energy_shift_per_tile)

    def _check_images_shape(self, shape) -> None:
        if len(shape) != 4 or shape[-1] not in (None, self.n_channels):
            raise ValueError(
                f"EDNN expected images of shape (batch, height, width, {self.n_channels}). "
                f"Received: images.shape={tuple(shape)}"
            )


def build_ednn(
    focus: int | Sequence[int],
    context: int | Sequence[int],
    n_channels: int | None = None,
    n_targets: int | None = None,
    *,
    tile_network: keras.Layer | str | os.PathLike | None = None,
    boundary: str = "periodic",
    metadata: Mapping | None = None,
    energy_scale: float | Sequence[float] = 1.0,
    energy_shift_per_tile: float | Sequence[float] = 0.0,
    evaluation: str = "auto",
    placement_step: int | Sequence[int] | None = None,
    name: str = "ednn",
    **tile_net_kwargs,
) -> EDNN:
    """Builds an EDNN, with the default tile network unless one is given.

    Args:
        focus: Focus region of each tile in pixels, an int or a pair.
        context: Context pixels on each side of the focus region, an int or a pair.
        n_channels: Number of image channels; required for the default tile network.
        n_targets: Number of outputs; 1 for the default tile network when `None`, else
            taken from `tile_network`.
        tile_network: `None` for :func:`default_tile_network`, or a Keras model or a path
            to a `.keras` file (see :class:`EDNN`).
        boundary: `"periodic"` or `"zero"`.
        metadata: Model metadata (see :class:`EDNN` and `METADATA_KEYS`).
        energy_scale: Fixed factor on every tile output, a float or one per target.
        energy_shift_per_tile: Fixed offset per tile (eV), a float or one per target.
        evaluation: `"auto"`, `"tiles"` or `"fused"` (see :class:`EDNN`).
        placement_step: `None`, or the step of the tile placements averaged over (see
            :class:`EDNN`).
        name: Name of the model.
        **tile_net_kwargs: Options of :func:`default_tile_network` (`conv_layers`,
            `dense_units`, `activation`, `padding`).

    Returns:
        An `EDNN`.
    """
    if tile_network is None:
        if n_channels is None:
            raise ValueError(
                "`n_channels` is needed to build the default tile network. "
                "Received: n_channels=None"
            )
        tile_shape = ExtractTiles(focus, context, boundary).tile_shape
        tile_network = default_tile_network(
            tile_shape, n_channels, 1 if n_targets is None else n_targets, **tile_net_kwargs
        )
    elif tile_net_kwargs:
        raise TypeError(
            "Tile-network options apply only to the default tile network (tile_network=None)."
            f" Received: {', '.join(sorted(tile_net_kwargs))}"
        )
    return EDNN(
        tile_network,
        focus,
        context,
        boundary=boundary,
        metadata=metadata,
        energy_scale=energy_scale,
        energy_shift_per_tile=energy_shift_per_tile,
        n_channels=n_channels,
        n_targets=n_targets,
        evaluation=evaluation,
        placement_step=placement_step,
        name=name,
    )


def load_ednn(path: str | os.PathLike, *, compile: bool = False) -> EDNN:
    """Loads an EDNN saved with `model.save(path)` and checks that it is one.

    Args:
        path: Path to a `.keras` file.
        compile: Whether to restore the training configuration too.

    Returns:
        The `EDNN`.
    """
    model = keras.saving.load_model(path, compile=compile)
    if not isinstance(model, EDNN):
        raise TypeError(
            f"Expected {os.fspath(path)!r} to hold an EDNN model. "
            f"Received: a {type(model).__name__}"
        )
    return model


def predict_image(
    model: EDNN, image: np.ndarray, *, tile_batch_size: int | None = None
) -> np.ndarray:
    """Predicts the extensive outputs of one image or a batch of equally sized images.

    Parameters
    ----------
    model : EDNN
        The model.
    image : np.ndarray
        One image `(H, W, C)` or a batch `(B, H, W, C)`; cast to float32.
    tile_batch_size : int, optional
        Run the tile network on at most this many tiles at a time, so that very large
        images fit in memory.  All tiles at once when `None`.

    Returns
    -------
    np.ndarray
        float32 outputs `(n_targets,)` for one image, `(B, n_targets)` for a batch, in the
        units of `model.metadata["units"]` (eV by default), without reference energies.

    Example
    -------
    >>> predict_image(model, np.zeros((64, 64, 3))).shape
    (1,)
    """
    images = np.asarray(image, dtype=np.float32)
    if images.ndim not in (3, 4):
        raise ValueError(
            "`image` must have shape (H, W, C) or (B, H, W, C). "
            f"Received: image.shape={images.shape}"
        )
    single = images.ndim == 3
    if single:
        images = images[None]
    if tile_batch_size is None:
        outputs = model(images, training=False)
    else:
        check_positive_int(tile_batch_size, "tile_batch_size")
        tiles = model.extract_tiles(images)
        n_tiles = tiles.shape[0] // len(images)
        segment_ids = np.arange(tiles.shape[0]) // n_tiles
        outputs = tf.zeros((len(images), model.n_targets))
        for start in range(0, tiles.shape[0], tile_batch_size):
            stop = start + tile_batch_size
            outputs += model.call_on_tiles(
                tiles[start:stop], segment_ids[start:stop], len(images), training=False
            )
    outputs = np.asarray(outputs, dtype=np.float32)
    return outputs[0] if single else outputs


def _as_tile_network(tile_network) -> keras.Layer:
    # A trained EDNN stands for a copy of its tile network, weights included: fine-tuning
    # starts there without changing the original model.
    if isinstance(tile_network, EDNN):
        source = tile_network.tile_network
        copy = keras.models.clone_model(source)
        copy.set_weights(source.get_weights())
        return copy
    if isinstance(tile_network, keras.Layer):
        return tile_network
    if isinstance(tile_network, str | os.PathLike):
        loaded = keras.saving.load_model(tile_network, compile=False)
        return loaded.tile_network if isinstance(loaded, EDNN) else loaded
    if isinstance(tile_network, dict):
        return keras.saving.deserialize_keras_object(tile_network)
    raise TypeError(
        "`tile_network` must be a Keras model or a path to a .keras file. "
        f"Received: tile_network of type {type(tile_network).__name__}"
    )


def _check_tile_network(
    tile_network: keras.Layer,
    spatial: tuple[int, int],
    n_channels: int | None,
    n_targets: int | None,
) -> tuple[int, int]:
    # Returns (n_channels, n_targets) once the network is known to map tiles to targets.
    if n_channels is not None:
        check_positive_int(n_channels, "n_channels")
    if n_targets is not None:
        check_positive_int(n_targets, "n_targets")
    try:
        inputs = tile_network.inputs
    except AttributeError:
        inputs = None
    if inputs is not None:
        if len(inputs) != 1:
            raise ValueError(
                "`tile_network` must take one input, the tiles. "
                f"Received: a network with {len(inputs)} inputs"
            )
        input_shape = tuple(inputs[0].shape[1:])
        if n_channels is None and len(input_shape) == 3:
            n_channels = input_shape[-1]
        expected = (*spatial, n_channels)
        if not _shapes_compatible(input_shape, expected):
            raise ValueError(
                f"`tile_network` must take tiles of shape {expected} (focus + 2 * context, "
                f"channels). Received: tile_network input shape={input_shape}"
            )
    if n_channels is None:
        raise ValueError(
            "`n_channels` is needed when the tile network has no defined input shape. "
            "Received: n_channels=None"
        )
    tiles = keras.KerasTensor((None, *spatial, n_channels))
    try:
        # A symbolic call builds an unbuilt network, sub-layers included.
        if tile_network.built:
            output = tile_network.compute_output_spec(tiles)
        else:
            output = tile_network(tiles)
    except Exception as error:
        raise ValueError(
            f"`tile_network` could not be applied to tiles of shape {(*spatial, n_channels)}: "
            f"{error}"
        ) from error
    output_shape = tuple(getattr(output, "shape", ()))
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ValueError(
            "`tile_network` must return one tensor of shape (batch, n_targets). "
            f"Received: output shape={output_shape if output_shape else output!r}"
        )
    if n_targets is not None and output_shape[-1] != n_targets:
        raise ValueError(
            f"`tile_network` must return {n_targets} values per tile. "
            f"Received: output shape={output_shape}"
        )
    return (int(n_channels), int(output_shape[-1]))


def _shapes_compatible(shape, expected) -> bool:
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected, strict=True)
    )


def _normalize_affine(value, name: str, n_targets: int) -> float | tuple[float, ...]:
    values = list(value) if isinstance(value, Sequence) else [value]
    if not all(isinstance(item, numbers.Real) and not isinstance(item, bool) for item in values):
        raise TypeError(f"`{name}` must be a float or a list of floats. Received: {name}={value!r}")
    if not all(math.isfinite(item) for item in values):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value!r}")
    if not isinstance(value, Sequence):
        return float(value)
    if len(values) != n_targets:
        raise ValueError(
            f"`{name}` must have one value per target ({n_targets}). Received: {name}={value!r}"
        )
    values = tuple(float(item) for item in values)
    # One value shared by all targets is stored as a float so that 1.0 and 0.0 are no-ops.
    return values[0] if len(set(values)) == 1 else values


def _affine_config(value: float | tuple[float, ...]) -> float | list[float]:
    return list(value) if isinstance(value, tuple) else value


def _metadata_json(metadata: Mapping | None, n_targets: int) -> str:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"`metadata` must be a dict. Received: metadata={metadata!r}")
    from ednn import __version__

    defaults = {
        "units": "eV",
        "target_names": ["energy"] if n_targets == 1 else [f"target_{i}" for i in range(n_targets)],
        "ednn_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metadata = {**defaults, **metadata}
    try:
        text = json.dumps(metadata, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`metadata` must be JSON-serializable ({error}). Received: metadata={metadata!r}"
        ) from error
    names = metadata["target_names"]
    if (
        not isinstance(names, Sequence)
        or isinstance(names, str)
        or len(names) != n_targets
        or not all(isinstance(item, str) for item in names)
    ):
        raise ValueError(
            f"`metadata['target_names']` must be a list of {n_targets} names, one per target. "
            f"Received: target_names={names!r}"
        )
    return text


def _json_default(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _conv_output_size(spatial, kernel, strides, padding, tile_shape) -> tuple[int, int]:
    # Keras would fail deep inside the graph if a "valid" convolution ran out of pixels.
    if padding == "same":
        return tuple(-(-n // s) for n, s in zip(spatial, strides, strict=True))
    if any(n < k for n, k in zip(spatial, kernel, strict=True)):
        raise ValueError(
            f'`tile_shape` is too small for the convolutions with padding="valid": a {kernel} '
            f"kernel meets a {spatial} feature map. Received: tile_shape={tile_shape!r}"
        )
    return tuple((n - k) // s + 1 for n, k, s in zip(spatial, kernel, strides, strict=True))
