"""Averaging a model over periodic translations of its image (test-time translation).

An EDNN cuts its image into tiles at fixed places. With periodic tiles
(`boundary="periodic"`) it is exactly invariant under a roll of the image by whole tiles
(the tiles are only permuted), but with any tiles not under a roll by part of a tile: the
same system, moved by a few pixels, is cut differently.
On the 2D Kohn–Sham wells the best saved potential model changes its E_total by 3.2 mHa
on average, more than its error, when a test well is moved by 0.5–1 bohr (docs/ks2d.md,
session 25). Training on randomly rolled images teaches the invariance approximately;
:class:`TranslationAverage` makes it exact for a set of rolls, as
:class:`ednn.symmetry.SymmetryAverage` does for the mirrors:

    f_avg(x) = mean over s in shifts of f(roll(x, s)).

With the shifts of :func:`tile_phases` (every `stride`-th roll within one focus region) an
EDNN whose image is a whole number of focus regions becomes invariant under every roll by
a multiple of `stride`, and with `stride` 1 under every roll. A model whose output is an
image on the same grid is averaged with each output rolled back first.

A roll of a periodic image is a translation of what it shows. For an isolated system in a
box, whose image is not periodic, it is one too as long as nothing the quantity depends on
reaches the box edges: the 2D Kohn–Sham datasets store only samples whose density vanishes
there (`max_edge_density`), and their kinetic energy is periodic, so a rolled potential has
the same energies and the rolled density (:func:`safe_rolls` gives the rolls that keep a
density inside the box). A rolled potential image is not one the network has seen,
though: its walls are wrapped round into the image, and the ks2d potential models, whose
tiles see zeros beyond the image (`boundary="zero"`), lost 1.7–4.2x on E_total when
trained on such images (session 25); there, moving the well itself (`train_models.py
--move-wells`) is the translation that keeps the images those of wells.

:class:`ShiftAverage` moves the well itself at test time: it shifts the image by whole
pixels and fills the lines it exposes by extrapolating the three edge lines with a
quadratic (:func:`shift_extrapolated`), which is exact for a harmonic potential (and for a
constant channel), so a shifted SHO image is the image of the moved well. A shift is used
for an image only while the potential's minimum stays in the range the model was trained
on. On the best LDA model it lowers the test error 1.4–1.5x on every term (docs/ks2d.md,
session 27).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn.symmetry import ImageAverage

__all__ = ["ShiftAverage", "TranslationAverage", "safe_rolls", "shift_extrapolated", "tile_phases"]


def tile_phases(
    focus: int | Sequence[int], stride: int | Sequence[int] = 1, centred: bool = False
) -> list:
    """The rolls `(dy, dx)` by multiples of `stride` that cover one focus region.

    Parameters
    ----------
    focus : int or (int, int)
        Focus region `(height, width)` of the EDNN's tiles in pixels.
    stride : int or (int, int), default 1
        Pixels between rolls; it must divide the focus.
    centred : bool, default False
        Rolls in `[-focus/2, focus/2)` (the smallest moves of each tile phase, for images
        that are not periodic) instead of `[0, focus)`.

    Returns
    -------
    list of (int, int)
        `(focus_y / stride_y) · (focus_x / stride_x)` rolls, each tile phase once.

    Example
    -------
    >>> tile_phases(16, 8)
    [(0, 0), (0, 8), (8, 0), (8, 8)]
    >>> tile_phases(16, 8, centred=True)
    [(-8, -8), (-8, 0), (0, -8), (0, 0)]
    """
    (focus, stride) = (_pair(focus, "focus"), _pair(stride, "stride"))
    axes = []
    for f, s in zip(focus, stride, strict=True):
        if f % s:
            raise ValueError(
                f"`stride` must divide the focus. Received: focus={focus}, stride={stride}"
            )
        first = -((f // s) // 2) if centred else 0
        axes.append([k * s for k in range(first, first + f // s)])
    return [(dy, dx) for dy in axes[0] for dx in axes[1]]


def safe_rolls(fields: np.ndarray, max_shift: int, max_edge: float) -> np.ndarray:
    """Per image, the rolls that keep a field vanishing at the image edges.

    A roll of the image of an isolated system (a density that vanishes at the box edges)
    is a translation of the system only while the field stays inside the box: rolled by
    `s` pixels along an axis, the lines `-s` and `n - 1 - s` become the edges, and the
    field on them must stay at most `max_edge`.

    Parameters
    ----------
    fields : numpy.ndarray, shape (batch, H, W)
        Non-negative fields, e.g. electron densities.
    max_shift : int
        The largest roll considered along each axis, in pixels.
    max_edge : float
        The largest value allowed on the edge lines of a rolled field (the 2D Kohn–Sham
        datasets store densities of at most `max_edge_density` = 1e-6 bohr⁻² there).

    Returns
    -------
    numpy.ndarray of int, shape (batch, 2, 2)
        `[[lo_y, hi_y], [lo_x, hi_x]]`: the contiguous range of rolls around 0 along each
        axis, `-max_shift <= lo <= 0 <= hi <= max_shift`, whose edge lines stay at most
        `max_edge`.

    Example
    -------
    >>> field = np.zeros((1, 8, 8)); field[0, 3:5, 3:5] = 1.0
    >>> safe_rolls(field, 4, 1e-6)[0].tolist()
    [[-2, 2], [-2, 2]]
    """
    fields = np.asarray(fields)
    if fields.ndim != 3:
        raise ValueError(f"`fields` must be (batch, H, W). Received: shape={fields.shape}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"`max_shift` must be an int >= 0. Received: {max_shift!r}")
    limits = np.zeros((len(fields), 2, 2), int)
    for axis, lines in enumerate((np.abs(fields).max(2), np.abs(fields).max(1))):
        n = lines.shape[1]
        for side, step in ((0, -1), (1, 1)):
            open_ = np.ones(len(fields), bool)
            for shift in range(step, step * (max_shift + 1), step):
                edges = np.maximum(lines[:, (-shift) % n], lines[:, (n - 1 - shift) % n])
                open_ &= edges <= max_edge
                limits[open_, axis, side] = shift
    return limits


def _pair(value, name: str) -> tuple[int, int]:
    try:
        pair = (value, value) if isinstance(value, int) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise ValueError(f"`{name}` must be an int or two ints. Received: {name}={value!r}")
    if min(pair) < 1:
        raise ValueError(f"`{name}` must be positive. Received: {name}={value!r}")
    return (int(pair[0]), int(pair[1]))


def _check_shifts(shifts) -> tuple[tuple[int, int], ...]:
    try:
        pairs = [tuple(shift) for shift in shifts]
        whole = all(
            len(pair) == 2 and all(not isinstance(v, bool) and int(v) == v for v in pair)
            for pair in pairs
        )
    except (TypeError, ValueError):
        (pairs, whole) = ([], False)
    if not pairs or not whole:
        raise ValueError(
            f"`shifts` must be a non-empty list of (dy, dx) whole-pixel rolls. "
            f"Received: shifts={shifts!r}"
        )
    checked = tuple((int(dy), int(dx)) for (dy, dx) in pairs)
    if len(set(checked)) != len(checked):
        raise ValueError(f"`shifts` must not repeat a roll. Received: shifts={shifts!r}")
    return checked


@keras.saving.register_keras_serializable(package="ednn")
class TranslationAverage(ImageAverage):
    """A model averaged over periodic rolls of its input images.

    `outputs = mean over s in shifts of model(roll(images, s))` for outputs of shape
    `(batch, n_targets)` (energies: invariant under the rolls the shifts generate);
    `mean over s of roll(model(roll(images, s)), -s)` for image outputs `(batch, H, W, C')`
    on the input's grid (densities).

    Args:
        model: The model to average (an :class:`ednn.model.EDNN`, a wrapper of one such as
            :class:`ednn.count_baseline.CountBaseline` or
            :class:`ednn.symmetry.SymmetryAverage`, or a model of images to images), or its
            serialized config. Its weights are shared, not copied.
        shifts: The rolls `(dy, dx)` in pixels along the image's height and width, e.g.
            :func:`tile_phases` of the EDNN's focus.
        **kwargs: Base model keyword arguments, such as `name`.

    Call arguments:
        inputs: Images `(batch, H, W, C)`, or a tuple of them and further per-sample inputs,
            which are passed on unchanged.
        training: Whether `model` runs in training mode.

    Returns:
        The mean of the model's outputs over the rolled images, of the model's shape.
    """

    def __init__(self, model: keras.Model | dict, shifts: Sequence[Sequence[int]], **kwargs):
        super().__init__(model, **kwargs)
        self.shifts = _check_shifts(shifts)

    def moves(self) -> list:
        return [
            (
                lambda x, s=s: tf.roll(x, s, axis=(1, 2)),
                lambda y, s=s: tf.roll(y, (-s[0], -s[1]), axis=(1, 2)),
            )
            for s in self.shifts
        ]

    def get_config(self):
        return {**super().get_config(), "shifts": [list(shift) for shift in self.shifts]}


def shift_extrapolated(images, shift: Sequence[int]) -> tf.Tensor:
    """Images shifted by whole pixels, the exposed lines extrapolated by a quadratic.

    Pixel `i` of the result is pixel `i - d` of the input along each axis; the `|d|` lines
    that come from outside the image continue the quadratic through the three input lines
    nearest to that edge, so a field that is a polynomial of degree two or less along the
    axis (a harmonic potential, a constant channel) is shifted exactly.

    Parameters
    ----------
    images : array or tensor, shape (batch, H, W, C)
        Images, e.g. potentials in Hartree (any units: the map is linear).
    shift : (int, int)
        `(dy, dx)` in pixels along the height and the width, `|d| < H` (`W`).

    Returns
    -------
    tf.Tensor
        The shifted images, shape `(batch, H, W, C)`.

    Example
    -------
    >>> x = np.arange(5.0)[None, :, None, None] ** 2 * np.ones((1, 5, 3, 1))
    >>> shift_extrapolated(x, (1, 0))[0, :, 0, 0].numpy().tolist()
    [1.0, 0.0, 1.0, 4.0, 9.0]
    """
    x = tf.convert_to_tensor(images)
    if len(shift) != 2 or any(
        isinstance(d, bool) or not isinstance(d, int | np.integer) for d in shift
    ):
        raise ValueError(f"`shift` must be two ints (dy, dx). Received: shift={shift!r}")
    for axis, d in zip((1, 2), (int(shift[0]), int(shift[1])), strict=True):
        size = x.shape[axis]
        if size is not None and (size < 3 or abs(d) >= size):
            raise ValueError(
                f"`shift` must be smaller than the image and the image at least 3 pixels "
                f"along axis {axis}. Received: shift={shift}, images.shape={tuple(x.shape)}"
            )
        if d == 0:
            continue
        n = tf.shape(x)[axis]
        # Edge lines e0 (the edge), e1, e2; the line j past the edge is
        # (j+1)(j+2)/2 e0 - j(j+2) e1 + j(j+1)/2 e2, the quadratic through them.
        (e0, e1, e2) = (
            tf.gather(x, [i], axis=axis) for i in ((0, 1, 2) if d > 0 else (n - 1, n - 2, n - 3))
        )
        past = [
            (j + 1) * (j + 2) / 2 * e0 - j * (j + 2) * e1 + j * (j + 1) / 2 * e2
            for j in range(1, abs(d) + 1)
        ]
        if d > 0:  # the lines before the image, farthest first, then all but the last d
            kept = tf.gather(x, tf.range(n - d), axis=axis)
            x = tf.concat([*reversed(past), kept], axis=axis)
        else:
            kept = tf.gather(x, tf.range(-d, n), axis=axis)
            x = tf.concat([kept, *past], axis=axis)
    return x


@keras.saving.register_keras_serializable(package="ednn")
class ShiftAverage(ImageAverage):
    """A model averaged over whole-pixel moves of a confined system (test-time translation).

    `outputs = sum over s of w_s model(shift_extrapolated(images, s)) / sum over s of w_s`,
    `s` every `(dy, dx)` with `|dy|, |dx| <= max_shift`; `w_s` is 1 for the image as given
    and, per image, 1 if the minimum of channel `channel` (the potential's, which sits at
    the well's centre) moved by `s` stays inside `centre_range`, else 0: the moves keep the
    well where the training wells were. For an isolated system whose energies do not depend
    on where it sits and whose potential is quadratic out to the image edges (the 2D
    Kohn–Sham SHO sets) every move shows the same system; the average removes the part of
    the error that depends on where the well sits on the tiles.

    Args:
        model: The model to average, images `(batch, H, W, C)` to `(batch, n_targets)`
            (e.g. an :class:`ednn.symmetry.SymmetryAverage` of a ks2d potential model), or
            its serialized config. Its weights are shared, not copied.
        max_shift: The largest move along each axis, in pixels (`(2 max_shift + 1)²` model
            calls per image).
        centre_range: `((lo_y, hi_y), (lo_x, hi_x))`, the pixel indices between which the
            minimum of `channel` may lie after a move (inclusive), e.g. the range of the
            training images' minima.
        channel: The channel whose minimum locates the system (the potential).
        **kwargs: Base model keyword arguments, such as `name`.

    Raises:
        ValueError: A negative `max_shift`, a `centre_range` that is not two ordered
            pairs of integers, or (when called) a model whose output is not
            `(batch, n_targets)`.
    """

    def __init__(
        self,
        model: keras.Model | dict,
        max_shift: int,
        centre_range: Sequence[Sequence[int]],
        channel: int = 0,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if (
            isinstance(max_shift, bool)
            or not isinstance(max_shift, int | np.integer)
            or (max_shift < 0)
        ):
            raise ValueError(
                f"`max_shift` must be a non-negative integer. Received: max_shift={max_shift!r}"
            )
        try:
            bounds = tuple((int(lo), int(hi)) for (lo, hi) in centre_range)
        except (TypeError, ValueError):
            bounds = ()
        if len(bounds) != 2 or any(lo > hi for lo, hi in bounds):
            raise ValueError(
                "`centre_range` must be ((lo_y, hi_y), (lo_x, hi_x)) with lo <= hi. "
                f"Received: centre_range={centre_range!r}"
            )
        self.max_shift = int(max_shift)
        self.centre_range = bounds
        self.channel = int(channel)

    @property
    def shifts(self) -> list[tuple[int, int]]:
        """Every move `(dy, dx)`, the image as given `(0, 0)` first."""
        steps = range(-self.max_shift, self.max_shift + 1)
        return [(0, 0)] + [(dy, dx) for dy in steps for dx in steps if (dy, dx) != (0, 0)]

    def call(self, inputs, training=None):
        paired = isinstance(inputs, (tuple, list))
        images = tf.convert_to_tensor(inputs[0] if paired else inputs)
        self._check_images_shape(tuple(images.shape))
        field = images[..., self.channel]
        flat = tf.argmin(tf.reshape(field, [tf.shape(field)[0], -1]), axis=1, output_type=tf.int32)
        width = tf.shape(field)[2]
        where = tf.stack([flat // width, flat % width], axis=1)  # (batch, 2): row, column
        low = tf.constant([b[0] for b in self.centre_range], tf.int32)
        high = tf.constant([b[1] for b in self.centre_range], tf.int32)
        (total, count) = (0.0, 0.0)
        for shift in self.shifts:
            moved = shift_extrapolated(images, shift)
            output = self.model((moved, *inputs[1:]) if paired else moved, training=training)
            if len(output.shape) != 2:
                raise ValueError(
                    "ShiftAverage averages outputs of shape (batch, n_targets). Received: "
                    f"model output shape={tuple(output.shape)}"
                )
            centre = where + tf.constant(shift, tf.int32)
            inside = tf.reduce_all((centre >= low) & (centre <= high), axis=1)
            weight = tf.ones_like(output[:, :1]) if shift == (0, 0) else (
                tf.cast(inside, output.dtype)[:, None]
            )  # fmt: skip
            total += weight * output
            count += weight
        return total / count

    def get_config(self):
        return {
            **super().get_config(),
            "max_shift": self.max_shift,
            "centre_range": [list(b) for b in self.centre_range],
            "channel": self.channel,
        }
