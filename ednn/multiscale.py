"""Several EDNNs, each on the image average-pooled by its own factor, summed.

An EDNN's tiles see `focus + 2 * context` pixels; a term that depends on the whole density,
such as the Hartree energy `½ ∫∫ n(r) n(r') / |r - r'|`, asks for a wide view, and a wider
tile at full resolution makes a bigger tile network that trains slower. A second EDNN on
the image coarsened 2x sees twice as far for the same tile size in pixels:

    E(x) = Σ_k EDNN_k(pool_k(x)),

with `pool_k` the mean over `p_k x p_k` blocks of pixels (`p = 1`: the image itself). Each
branch is a sum over its own tiles, so the sum is as extensive as the branches are. With
`focus_k = focus_1 / p_k` every branch tiles the same focus regions, each seen once at full
resolution with a narrow context and once coarsened with a wide one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from ednn.model import EDNN, ChecksImageArrays


@keras.saving.register_keras_serializable(package="ednn")
class MultiScaleEDNN(ChecksImageArrays, keras.Model):
    """The sum of EDNNs, each on the image average-pooled by its own factor.

    Args:
        branches: The EDNNs (or their serialized configs), all with the same channel and
            target counts.
        pools: Pooling factor of each branch's input, a positive int per branch (1: the
            image as it is). Images must have heights and widths that are multiples of
            `pool * focus` for every branch.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        images: Images of shape `(batch, height, width, C)`.
        training: Whether the branches run in training mode.

    Returns:
        `(batch, n_targets)`: the sum of the branches' outputs, in their units.

    Example:
        >>> import numpy as np
        >>> from ednn.model import build_ednn
        >>> fine = build_ednn(4, 2, n_channels=1)
        >>> coarse = build_ednn(2, 2, n_channels=1)
        >>> model = MultiScaleEDNN([fine, coarse], pools=[1, 2])
        >>> tuple(model(np.zeros((1, 8, 8, 1), "float32")).shape)
        (1, 1)
    """

    def __init__(self, branches: Sequence[EDNN | Mapping], pools: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        branches = [
            keras.saving.deserialize_keras_object(b) if isinstance(b, Mapping) else b
            for b in branches
        ]
        pools = [int(p) for p in pools]
        if not branches or len(pools) != len(branches):
            raise ValueError(
                "`branches` and `pools` must be non-empty and of the same length. Received: "
                f"{len(branches)} branches, pools={pools}"
            )
        if any(not isinstance(b, EDNN) for b in branches):
            raise TypeError(
                "Every branch must be an `ednn.model.EDNN`. Received: "
                f"{[type(b).__name__ for b in branches]}"
            )
        if any(p < 1 for p in pools):
            raise ValueError(f"Every pooling factor must be >= 1. Received: pools={pools}")
        shapes = {(b.n_channels, b.n_targets) for b in branches}
        if len(shapes) != 1:
            raise ValueError(
                "Every branch must take the same channels and give the same targets. Received "
                f"(channels, targets) per branch: {[(b.n_channels, b.n_targets) for b in branches]}"
            )
        self.branches = branches
        self.pools = pools
        (self.n_channels, self.n_targets) = shapes.pop()
        self.built = True  # the branches are built; no weights of its own

    @property
    def metadata(self) -> dict:
        """The first branch's metadata (a fresh copy)."""
        return self.branches[0].metadata

    @property
    def multiple(self) -> tuple[int, int]:
        """Image heights and widths must be multiples of these (pixels)."""
        (h, w) = (1, 1)
        for branch, pool in zip(self.branches, self.pools, strict=True):
            h = math.lcm(h, pool * branch.focus[0])
            w = math.lcm(w, pool * branch.focus[1])
        return (h, w)

    def call(self, images, training=None):
        images = tf.convert_to_tensor(images)
        self._check_images_shape(images.shape)
        total = 0.0
        for branch, pool in zip(self.branches, self.pools, strict=True):
            x = images
            if pool > 1:
                x = keras.ops.average_pool(x, pool, strides=pool, padding="valid")
            total = total + branch(x, training=training)
        return total

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_targets)

    def get_config(self):
        return {
            **super().get_config(),
            "branches": [keras.saving.serialize_keras_object(b) for b in self.branches],
            "pools": list(self.pools),
        }

    def _check_images_shape(self, shape) -> None:
        multiple = self.multiple
        if (
            len(shape) != 4
            or shape[-1] not in (None, self.n_channels)
            or any(s is not None and s % m for s, m in zip(shape[1:3], multiple, strict=True))
        ):
            raise ValueError(
                f"MultiScaleEDNN expected images of shape (batch, height, width, "
                f"{self.n_channels}), height and width multiples of {multiple}. "
                f"Received: images.shape={tuple(shape)}"
            )
