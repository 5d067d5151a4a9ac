"""Cut an image into overlapping focus/context tiles and stitch per-tile outputs back.

An image of spatial shape ``(n_0 f_0, n_1 f_1[, n_2 f_2])`` is divided into a grid of
``n_0 x n_1 [x n_2]`` non-overlapping *focus* regions of size ``f``. Each tile is its
focus region grown by a *context* margin ``c`` on both sides of every spatial axis,
so that a network applied to the tile sees the neighbourhood of every focus pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tiling._validation import boundary_name, flag, image_array, per_axis, spatial_shape


def tile_grid(
    image_shape: Sequence[int],
    focus: int | Sequence[int],
    *,
    pad_to_focus: bool = False,
) -> tuple[int, ...]:
    """Number of focus regions along each spatial axis.

    Parameters
    ----------
    image_shape : sequence of int
        Spatial shape of the image, ``(H, W)`` or ``(D, H, W)``, *without* the channel
        axis (pass ``image.shape[:-1]``).
    focus : int or sequence of int
        Focus size, one for every axis or one per axis.
    pad_to_focus : bool, default False
        If True, count the regions of the image zero-padded up to a multiple of the
        focus (as :func:`extract_tiles` does with ``pad_to_focus=True``).

    Returns
    -------
    tuple of int
        ``n_i = image_shape[i] // focus[i]`` per axis (rounded up with
        ``pad_to_focus=True``). The number of tiles is their product.

    Raises
    ------
    ValueError
        If the focus does not divide the image size along some axis and
        ``pad_to_focus`` is False, or a size is not positive.

    Example
    -------
    >>> tile_grid((256, 128), focus=64)
    (4, 2)
    >>> tile_grid((250, 128), focus=64, pad_to_focus=True)
    (4, 2)
    """
    shape = spatial_shape(image_shape, "image_shape")
    focus_sizes = per_axis(focus, "focus", ndim=len(shape), minimum=1)
    flag(pad_to_focus, "pad_to_focus")
    for axis, (size, f) in enumerate(zip(shape, focus_sizes, strict=True)):
        if size % f and not pad_to_focus:
            raise ValueError(
                f"`focus` must divide the image size {size} along axis {axis}. "
                f"Received: focus={focus!r}, image_shape={shape}. "
                "Pass pad_to_focus=True to pad the image with zeros up to a multiple "
                "of the focus."
            )
    return tuple(-(-size // f) for size, f in zip(shape, focus_sizes, strict=True))


def extract_tiles(
    image: np.ndarray,
    focus: int | Sequence[int],
    context: int | Sequence[int],
    *,
    boundary: str = "periodic",
    pad_to_focus: bool = False,
) -> np.ndarray:
    """Cut an image into focus regions, each with a margin of context around it.

    Tile ``(i, j)`` of a 2D image is
    ``padded[i*f0 : i*f0 + f0 + 2*c0, j*f1 : j*f1 + f1 + 2*c1, :]``, where ``padded``
    is the image padded by the context on both sides of every spatial axis (the 3D
    case is analogous). Every pixel lies in exactly one focus region.

    Parameters
    ----------
    image : array_like, shape (H, W, C) or (D, H, W, C)
        2D or 3D image with a trailing channel axis.
    focus : int or sequence of int
        Focus size, one for every spatial axis or one per axis. Must be positive and
        divide the image size along each axis (see ``pad_to_focus``).
    context : int or sequence of int
        Context margin added on each side, one for every spatial axis or one per axis.
        May be 0, and may exceed the image size.
    boundary : {"periodic", "zero"}, default "periodic"
        How the context is filled beyond the image edges. ``"periodic"`` wraps around
        exactly as ``np.pad(mode="wrap")`` does, also when the context is larger than
        the image and wraps more than once. ``"zero"`` pads with zeros.
    pad_to_focus : bool, default False
        If True, an image whose size is not a multiple of the focus is first
        zero-padded at the high end of each such axis up to the next multiple. This
        breaks periodicity: with ``boundary="periodic"`` the wrapped context then
        contains the padding zeros, not the opposite edge of the original image.

    Returns
    -------
    numpy.ndarray, shape (n_tiles, f0 + 2*c0, f1 + 2*c1, C) or 3D analogue
        The tiles, in row-major (C) order over the grid given by :func:`tile_grid`;
        a new array with the image's dtype.

    Raises
    ------
    ValueError
        If the image is not 2D/3D with a channel axis, a focus is not positive, a
        context is negative, a tuple has the wrong length, the boundary is unknown, or
        the focus does not divide the image size and ``pad_to_focus`` is False.
    TypeError
        If a size is not an int or a tuple of ints, or ``boundary`` is not a string.

    See Also
    --------
    stitch_tiles : The inverse for per-tile outputs.
    tile_grid : The grid shape.

    Notes
    -----
    Memory: tiles overlap, so the result holds ``prod((f + 2c) / f)`` times as many
    elements as the image, e.g. ``(f + 2c)^2 / f^2`` in 2D: 4x for ``f=64, c=32``, 9x
    for ``c=f``. With ``boundary="zero"`` a padded copy of the image is also made.
    The tiles are gathered with one vectorised fancy-indexing copy (no Python loop
    over tiles); periodic indices are taken modulo the image size, so the result is
    exact for any context.

    Example
    -------
    >>> image = np.zeros((256, 128, 3))
    >>> tiles = extract_tiles(image, focus=64, context=16)
    >>> tiles.shape  # grid (4, 2), tiles of 64 + 2*16
    (8, 96, 96, 3)
    """
    array = image_array(image)
    ndim = array.ndim - 1
    focus_sizes = per_axis(focus, "focus", ndim=ndim, minimum=1)
    context_sizes = per_axis(context, "context", ndim=ndim, minimum=0)
    boundary = boundary_name(boundary)
    grid = tile_grid(array.shape[:-1], focus, pad_to_focus=pad_to_focus)

    if pad_to_focus:
        sizes = zip(grid, focus_sizes, array.shape[:-1], strict=True)
        high = [n * f - size for n, f, size in sizes]
        if any(high):
            array = np.pad(array, [(0, h) for h in high] + [(0, 0)])
    if boundary == "zero":
        array = np.pad(array, [(c, c) for c in context_sizes] + [(0, 0)])

    # One index array per spatial axis, shaped to broadcast to (n_0, ..., t_0, ..., ):
    # the grid axes first, then the within-tile axes, then the channel axis untouched.
    indices = []
    for axis, (n, f, c) in enumerate(zip(grid, focus_sizes, context_sizes, strict=True)):
        index = np.arange(n)[:, None] * f + np.arange(f + 2 * c)[None, :]
        if boundary == "periodic":
            index = (index - c) % array.shape[axis]
        shape = [1] * (2 * ndim)
        shape[axis], shape[ndim + axis] = n, f + 2 * c
        indices.append(index.reshape(shape))
    tiles = array[tuple(indices)]
    return tiles.reshape((math.prod(grid), *tiles.shape[ndim:]))


def stitch_tiles(
    tiles: np.ndarray,
    grid: int | Sequence[int],
    context: int | Sequence[int] = 0,
) -> np.ndarray:
    """Crop the context from per-tile outputs and place the focus blocks on the grid.

    The inverse of :func:`extract_tiles` for outputs with one value per pixel of the
    tile (e.g. densities): ``stitch_tiles(extract_tiles(x, f, c), grid, context=c)``
    equals ``x`` exactly.

    Parameters
    ----------
    tiles : array_like, shape (n_tiles, T0, T1, C) or (n_tiles, T0, T1, T2, C)
        Tiles in row-major (C) order over the grid, as returned by
        :func:`extract_tiles`.
    grid : int or sequence of int
        Number of tiles along each spatial axis, e.g. from :func:`tile_grid`.
    context : int or sequence of int, default 0
        Margin cropped from each side of every tile. The focus is ``T - 2*context``
        per axis and must be positive. Use 0 for outputs already of focus size.

    Returns
    -------
    numpy.ndarray, shape (n0*f0, n1*f1, C) or (n0*f0, n1*f1, n2*f2, C)
        The stitched image, a new array with the tiles' dtype. After
        ``extract_tiles(..., pad_to_focus=True)`` this is the padded image: crop it
        with ``[:H, :W]``.

    Raises
    ------
    ValueError
        If the tiles are not 2D/3D with a channel axis, the number of tiles does not
        match the grid, a grid size is not positive, a context is negative, a tuple has
        the wrong length, or the context leaves no focus.
    TypeError
        If a size is not an int or a tuple of ints.

    Example
    -------
    >>> image = np.random.default_rng(0).normal(size=(256, 128, 1))
    >>> tiles = extract_tiles(image, focus=64, context=16)  # (8, 96, 96, 1)
    >>> stitched = stitch_tiles(tiles, grid=(4, 2), context=16)
    >>> stitched.shape
    (256, 128, 1)
    >>> bool(np.array_equal(stitched, image))
    True
    """
    array = np.asarray(tiles)
    if array.ndim not in (4, 5):
        raise ValueError(
            "`tiles` must have shape (n_tiles, H, W, C) or (n_tiles, D, H, W, C). "
            f"Received: tiles.shape={array.shape}"
        )
    ndim = array.ndim - 2
    grid_sizes = per_axis(grid, "grid", ndim=ndim, minimum=1)
    context_sizes = per_axis(context, "context", ndim=ndim, minimum=0)
    if math.prod(grid_sizes) != array.shape[0]:
        raise ValueError(
            f"`tiles` must hold one tile per grid cell, {math.prod(grid_sizes)} for "
            f"grid={grid_sizes}. Received: tiles.shape={array.shape}, grid={grid!r}"
        )
    tile_shape = array.shape[1:-1]
    focus_sizes = tuple(t - 2 * c for t, c in zip(tile_shape, context_sizes, strict=True))
    if any(f < 1 for f in focus_sizes):
        raise ValueError(
            "`context` must leave a focus of at least one pixel: the tile size must "
            f"exceed 2 * context along every axis. Received: context={context!r}, "
            f"tiles.shape={array.shape}"
        )

    # Split the tile axis into the grid (a view), crop, then interleave grid and focus
    # axes, (n0, n1, f0, f1, C) -> (n0, f0, n1, f1, C), so that one reshape copies.
    blocks = array.reshape((*grid_sizes, *array.shape[1:]))
    crop = (slice(None),) * ndim + tuple(
        slice(c, c + f) for c, f in zip(context_sizes, focus_sizes, strict=True)
    )
    blocks = blocks[crop]
    order = [i for axis in range(ndim) for i in (axis, ndim + axis)] + [2 * ndim]
    image_shape = tuple(n * f for n, f in zip(grid_sizes, focus_sizes, strict=True))
    image = blocks.transpose(order).reshape((*image_shape, array.shape[-1]))
    # With a single tile and no context the reshape is a view; return a copy as documented.
    return image.copy() if np.may_share_memory(image, array) else image
