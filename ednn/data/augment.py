"""Augmentations of Gaussian images that keep the energy exactly.

All rasterized images are of rectangular cells (:func:`ednn.cells.to_rectangular`), with
pixel centres at ``((i + 1/2) dx, (j + 1/2) dy)``.  Two operations on the image are then
exactly the image of a transformed structure:

* a periodic roll by whole pixels (:func:`roll`) is the image of the structure translated by
  ``(shift_x dx, shift_y dy)``: exact for a periodic sheet, whose image wraps; not used for a
  flake, whose image does not;
* reversing an image axis (:func:`mirror`) is the image of the structure mirrored across the
  cell's mid-line, ``x -> Lx - x`` (axis 1) or ``y -> Ly - y`` (axis 0), which maps the
  rectangular cell onto itself.  Both together are the 180° rotation about z.

A translation or a mirror is an isometry, so the energy is unchanged; out-of-plane heights
(the height channel) are unchanged by both.  The network is only approximately invariant to
them (tiles sit on a fixed grid), which is what these augmentations teach it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["augment_image", "mirror", "roll"]


def roll(image: np.ndarray, shift: int | Sequence[int]) -> np.ndarray:
    """Translate a periodic image by whole pixels.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W, C)
        A periodic image (axis 0 is y, axis 1 is x).
    shift : int or (int, int)
        Pixels along ``(y, x)``; positive moves content to larger indices.

    Returns
    -------
    numpy.ndarray, same shape and dtype
        The image of the structure translated by ``(shift[1] dx, shift[0] dy)`` Å.

    Example
    -------
    >>> roll(np.arange(4.0).reshape(1, 4, 1), (0, 1))[0, :, 0].tolist()
    [3.0, 0.0, 1.0, 2.0]
    """
    shift = (int(shift), int(shift)) if np.ndim(shift) == 0 else tuple(int(s) for s in shift)
    return np.roll(image, shift, axis=(0, 1))


def mirror(image: np.ndarray, axis: int) -> np.ndarray:
    """Mirror an image of a rectangular cell across its mid-line.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W, C)
    axis : {0, 1}
        0 mirrors y (``y -> Ly - y``), 1 mirrors x (``x -> Lx - x``).

    Returns
    -------
    numpy.ndarray, same shape and dtype (a copy)

    Example
    -------
    >>> mirror(np.arange(3.0).reshape(1, 3, 1), axis=1)[0, :, 0].tolist()
    [2.0, 1.0, 0.0]
    """
    if axis not in (0, 1):
        raise ValueError(f"`axis` must be 0 (y) or 1 (x). Received: axis={axis!r}.")
    return np.flip(image, axis=axis).copy()


def augment_image(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    periodic: bool = True,
    translate: bool = True,
    flip: bool = True,
) -> np.ndarray:
    """Apply a random energy-preserving symmetry to one image.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W, C)
    rng : numpy.random.Generator
        Source of the random shift and mirrors.
    periodic : bool, default True
        Whether the image is of a periodic sheet; only then is it translated.
    translate : bool, default True
        Roll by a uniform random whole-pixel shift along both axes (periodic images).
    flip : bool, default True
        Mirror x and y each with probability 1/2 (both: a 180° rotation).

    Returns
    -------
    numpy.ndarray, same shape and dtype
    """
    height, width = image.shape[:2]
    # Draw every number whatever the options, so that one seed gives the same stream.
    shift = (int(rng.integers(height)), int(rng.integers(width)))
    flips = rng.random(2) < 0.5
    if translate and periodic:
        image = roll(image, shift)
    if flip:
        for axis in (0, 1):
            if flips[axis]:
                image = mirror(image, axis)
    return image
