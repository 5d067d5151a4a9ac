"""Averaging a model over the symmetries of the square grid (test-time symmetrisation).

An EDNN is not invariant under the mirrors and the diagonal swap of its image, even when
the quantity it predicts is: the tiles cut the image at fixed places, so a mirrored image
is cut differently, and nothing in the weights ties the outputs of the images together.
Training on randomly transformed images (data augmentation) only teaches the invariance
approximately. :class:`SymmetryAverage` makes it exact: the output is the mean of the
model over the images of the input under a group of symmetries,

    f_sym(x) = mean over g in G of f(g x),

so `f_sym(h x) = f_sym(x)` for every `h` in `G` and whatever the weights. A model whose
output is an image on the same grid (a density from a potential, :mod:`ednn.dcign`) is
averaged with each output mapped back first, `mean over g of g⁻¹ f(g x)`, and is then
exactly equivariant: `f_sym(h x) = h f_sym(x)`. The averaging also removes the part of
the model's error that changes from one image of a sample to another, as an ensemble of
`|G|` members sharing their weights would (on the 2D Kohn–Sham energies from the
potential, 1.3–1.9x lower test error with the same weights; docs/ks2d.md).

The group elements are numbered as by :func:`ednn.ks2d.grid.apply_symmetry`: bit 0
mirrors the first image axis, bit 1 the second, bit 2 swaps the two axes (applied last).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn.model import ChecksImageArrays

# The 8 symmetries of the square: the identity, mirrors, the swap and their compositions.
SQUARE_GROUP = tuple(range(8))


def _transform(images, element: int, mirror_shift: int, axes=(1, 2)):
    """The image of `images` under `element`; numpy arrays or tensors, axes as given."""
    module = tf if tf.is_tensor(images) else np
    for bit, axis in ((1, axes[0]), (2, axes[1])):
        if element & bit:
            images = module.flip(images, axis) if module is np else tf.reverse(images, [axis])
            if mirror_shift:
                images = module.roll(images, mirror_shift, axis)
    if element & 4:
        order = list(range(len(images.shape)))
        (order[axes[0]], order[axes[1]]) = (order[axes[1]], order[axes[0]])
        images = module.transpose(images, order)
    return images


def transform_images(images, element: int, mirror_shift: int = 0):
    """The images `(batch, H, W, C)` under one element of the square's symmetry group.

    Args:
        images: Array or tensor of images, shape `(batch, H, W, C)`.
        element: 0 to 7; bit 0 mirrors axis 1, bit 1 mirrors axis 2, bit 2 swaps axes 1
            and 2 (applied last; the result then has shape `(batch, W, H, C)`).
        mirror_shift: Pixels each mirrored axis is rolled by after flipping: 0 mirrors
            about the image centre (`i -> n - 1 - i`); 1 mirrors about pixel 0 of a periodic
            grid (`i -> -i mod n`), as for the 2D Kohn–Sham grid, whose pixel 0 lies at
            `-box/2` and pixel `n/2` at the origin (:func:`ednn.ks2d.grid.apply_symmetry`).

    Returns:
        The transformed images, of the input's kind (array or tensor).
    """
    element = _check_element(element)
    return _transform(images, element, int(mirror_shift))


def inverse_element(element: int) -> int:
    """The element undoing `element`: itself, or with the two mirrors exchanged if it swaps.

    Mirrors are their own inverses and commute; a swap applied after mirroring axis 0 is
    undone by a swap and then the same mirror, which the numbering (mirrors first) calls a
    mirror of axis 1 followed by the swap.
    """
    element = _check_element(element)
    if element & 4:
        return 4 | ((element & 1) << 1) | ((element & 2) >> 1)
    return element


def _check_element(element) -> int:
    if isinstance(element, bool) or int(element) != element or not 0 <= element <= 7:
        raise ValueError(f"a symmetry element must be an integer 0 to 7. Received: {element!r}")
    return int(element)


def check_group(elements: Sequence[int], mirror_shift: int = 0) -> tuple[int, ...]:
    """`elements` as a sorted tuple, checked to hold the identity and be closed (a group).

    Raises:
        ValueError: If an element is not 0 to 7, the identity 0 is missing or the
            composition of two elements is not among them (the average of a model over
            such a set is not invariant).
    """
    group = tuple(sorted({_check_element(e) for e in elements}))
    if 0 not in group:
        raise ValueError(
            f"`elements` must hold the identity 0. Received: elements={list(elements)}"
        )
    probe = np.arange(25).reshape(1, 5, 5, 1)
    images = {e: _transform(probe, e, mirror_shift) for e in group}
    for g, h in itertools.product(group, repeat=2):
        composed = _transform(images[h], g, mirror_shift)
        if not any(np.array_equal(composed, image) for image in images.values()):
            raise ValueError(
                "`elements` must be closed under composition (a group), or the average is "
                f"not invariant: {g} after {h} is missing. Received: elements={list(elements)}"
            )
    return group


class ImageAverage(ChecksImageArrays, keras.Model):
    """Base of the models that average a wrapped model over moved copies of its images.

    A subclass gives the moves, :meth:`moves`: pairs `(forward, back)` of functions on
    image tensors `(batch, H, W, C)`. The output is `mean over moves of model(forward(x))`
    for outputs `(batch, n_targets)`, and `mean over moves of back(model(forward(x)))` for
    image outputs on the input's grid. The wrapped model's weights are shared, not copied.
    """

    def __init__(self, model: keras.Model | dict, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        self.model = model
        # No weights of its own: built when the model is (saved without a first call).
        self.built = bool(getattr(model, "built", False))

    def moves(self) -> list:
        """The `(forward, back)` pairs of image maps to average over (one per copy)."""
        raise NotImplementedError

    def build(self, input_shape):
        self.built = True  # the model builds itself on its first call, inside `call`

    @property
    def n_targets(self) -> int | None:
        return getattr(self.model, "n_targets", None)

    @property
    def metadata(self) -> dict:
        """The wrapped model's metadata (a fresh copy; ``{}`` if it has none, e.g. a DCIGN)."""
        return dict(getattr(self.model, "metadata", {}))

    def call(self, inputs, training=None):
        paired = isinstance(inputs, (tuple, list))
        images = tf.convert_to_tensor(inputs[0] if paired else inputs)
        self._check_images_shape(tuple(images.shape))
        outputs = []
        for forward, back in self.moves():
            moved = forward(images)
            output = self.model((moved, *inputs[1:]) if paired else moved, training=training)
            if len(output.shape) == 4:  # an image on the grid: map it back
                output = back(output)
            elif len(output.shape) != 2:
                raise ValueError(
                    f"{type(self).__name__} averages outputs of shape (batch, n_targets) or "
                    f"images (batch, H, W, C). Received: model output shape={tuple(output.shape)}"
                )
            outputs.append(output)
        return tf.add_n(outputs) / len(outputs)

    def _check_images_shape(self, shape) -> None:
        if len(shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expected images of shape (batch, height, width, C). "
                f"Received: images.shape={shape}"
            )
        check = getattr(self.model, "_check_images_shape", None)
        if check is not None:
            check(shape)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)

    def _check_array_images(self, x) -> None:
        super()._check_array_images(x[0] if isinstance(x, (tuple, list)) else x)

    def get_config(self):
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model)}


@keras.saving.register_keras_serializable(package="ednn")
class SymmetryAverage(ImageAverage):
    """A model averaged over a group of image symmetries: exactly invariant (equivariant).

    `outputs = mean over g in elements of model(g images)` for outputs of shape
    `(batch, n_targets)` (energies: invariant); `mean over g of g⁻¹ model(g images)` for
    image outputs `(batch, H, W, C')` on the input's grid (densities: equivariant).

    Args:
        model: The model to average, mapping images `(batch, H, W, C)` (or a tuple whose
            first entry they are, e.g. the DCIGN's `(v_ext, n_electrons)`) to
            `(batch, n_targets)` (an :class:`ednn.model.EDNN`, an
            :class:`ednn.count_baseline.CountBaseline`) or to images on the same grid (an
            :class:`ednn.dcign.DensityDCIGN`), or its serialized config. Its weights are
            shared, not copied: training the average trains `model`.
        elements: The group, elements 0 to 7 as in :func:`transform_images`; by default
            all 8 symmetries of the square. It must hold 0 and be closed.
        mirror_shift: See :func:`transform_images`; 1 for the 2D Kohn–Sham grid.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        inputs: Images `(batch, H, W, C)`, square when `elements` swap the axes unless
            `model` takes images of any size; or a tuple of them and further per-sample
            inputs, which are passed on unchanged.
        training: Whether `model` runs in training mode.

    Returns:
        The mean of the model's outputs over the images' symmetries, of the model's shape.
    """

    def __init__(
        self,
        model: keras.Model | dict,
        elements: Sequence[int] = SQUARE_GROUP,
        mirror_shift: int = 0,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if isinstance(mirror_shift, bool) or mirror_shift not in (0, 1):
            raise ValueError(
                f"`mirror_shift` must be 0 or 1. Received: mirror_shift={mirror_shift!r}"
            )
        self.mirror_shift = int(mirror_shift)
        self.elements = check_group(elements, self.mirror_shift)

    def moves(self) -> list:
        shift = self.mirror_shift
        return [
            (
                lambda x, g=g: _transform(x, g, shift),
                lambda y, g=g: _transform(y, inverse_element(g), shift),
            )
            for g in self.elements
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "elements": list(self.elements),
            "mirror_shift": self.mirror_shift,
        }
