"""An ensemble of models saved as one: the weighted mean of their outputs.

Models trained alike from different seeds (or of different architectures) err partly
independently, so the mean of their predictions errs less than each: for the 2D Kohn–Sham
energy models, independently trained members' E_total errors correlate 0.07–0.25
(docs/ks2d.md, session 27), against 0.5–0.9 for models of one training chain.
:class:`ModelAverage` keeps such an ensemble in one ``.keras`` file that loads with plain
``keras.saving.load_model`` after ``import ednn``, and takes the same inputs as its members.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from ednn.model import ChecksImageArrays

__all__ = ["ModelAverage"]


@keras.saving.register_keras_serializable(package="ednn")
class ModelAverage(ChecksImageArrays, keras.Model):
    """The weighted mean of several models' outputs (an ensemble).

    `outputs = sum_i weights[i] * members[i](inputs)`, the weights normalised to sum to
    one. The members' weights are their own (shared, not copied); nothing is trained here.

    Args:
        members: Two or more Keras models taking the same inputs and giving outputs of the
            same shape and units (e.g. :class:`ednn.model.EDNN`,
            :class:`ednn.count_baseline.CountBaseline` or
            :class:`ednn.symmetry.SymmetryAverage` models of one quantity), or their
            serialized configs.
        weights: One non-negative weight per member, not all zero (normalised to sum to
            one); `None` for equal weights.  Fit them on validation data, never on the test
            split.
        **kwargs: Base model keyword arguments, such as `name`.

    Raises:
        ValueError: Fewer than two members, a wrong number of weights, a negative or
            non-finite weight, all weights zero, or members whose `metadata` disagree on
            `units` or `target_names` or whose `n_targets` differ.
    """

    def __init__(
        self,
        members: Sequence[keras.Model | dict],
        weights: Sequence[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        members = [
            keras.saving.deserialize_keras_object(m) if isinstance(m, dict) else m for m in members
        ]
        if len(members) < 2:
            raise ValueError(
                f"`members` must hold two or more models. Received: {len(members)} member(s)"
            )
        if weights is None:
            weights = [1.0] * len(members)
        weights = [float(w) for w in weights]
        if len(weights) != len(members):
            raise ValueError(
                f"`weights` must give one weight per member ({len(members)}). "
                f"Received: {len(weights)} weights"
            )
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(
                f"`weights` must be finite, non-negative and not all zero. Received: {weights}"
            )
        self._check_members_agree(members)
        self.members = members
        self.member_weights = [w / sum(weights) for w in weights]
        self.built = all(getattr(m, "built", False) for m in members)

    @staticmethod
    def _check_members_agree(members) -> None:
        for attribute in ("n_targets",):
            values = {getattr(m, attribute, None) for m in members} - {None}
            if len(values) > 1:
                raise ValueError(
                    f"The members must have the same {attribute}. Received: {sorted(values)}"
                )
        for key in ("units", "target_names"):
            values = [getattr(m, "metadata", {}).get(key) for m in members]
            known = [v for v in values if v is not None]
            if any(v != known[0] for v in known):
                raise ValueError(f"The members' metadata must agree on {key!r}. Received: {values}")

    def build(self, input_shape):
        self.built = True  # the members are built (or build themselves in `call`)

    @property
    def n_targets(self) -> int | None:
        return getattr(self.members[0], "n_targets", None)

    @property
    def metadata(self) -> dict:
        """The first member's metadata (a fresh copy; ``{}`` if it has none)."""
        return dict(getattr(self.members[0], "metadata", {}))

    def call(self, inputs, training=None):
        outputs = [
            tf.cast(w, self.compute_dtype) * member(inputs, training=training)
            for member, w in zip(self.members, self.member_weights, strict=True)
        ]
        return tf.add_n(outputs)

    def compute_output_shape(self, input_shape):
        return self.members[0].compute_output_shape(input_shape)

    def _check_images_shape(self, shape) -> None:
        for member in self.members:
            check = getattr(member, "_check_images_shape", None)
            if check is not None:
                check(shape)

    def _check_array_images(self, x) -> None:
        super()._check_array_images(x[0] if isinstance(x, (tuple, list)) else x)

    def get_config(self):
        return {
            **super().get_config(),
            "members": [keras.saving.serialize_keras_object(m) for m in self.members],
            "weights": list(self.member_weights),
        }
