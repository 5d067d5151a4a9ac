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
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ednn.symmetry import ImageAverage

__all__ = ["TranslationAverage", "safe_rolls", "tile_phases"]


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
