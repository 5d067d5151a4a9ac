"""Argument checks shared by the functions of :mod:`tiling`.

Each check raises ``TypeError`` for a value of the wrong type and ``ValueError`` for
a value of the right type that is out of range, with a message that says what was
expected and then what was received.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

BOUNDARIES = ("periodic", "zero")


def _is_int(value: object) -> bool:
    # bool is an Integral, but `focus=True` is a mistake, not a size of one.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def per_axis(value: int | Sequence[int], name: str, ndim: int, minimum: int) -> tuple[int, ...]:
    """Normalise an int or a tuple of ints to one int per spatial axis.

    Parameters
    ----------
    value : int or sequence of int
        One size for every axis, or one size per axis.
    name : str
        The argument's name, used in error messages.
    ndim : int
        Number of spatial axes.
    minimum : int
        Smallest allowed size (1 for `focus`, 0 for `context`).

    Returns
    -------
    tuple of int
        ``ndim`` sizes, each at least ``minimum``.

    Raises
    ------
    TypeError
        If ``value`` is neither an int nor a sequence of ints.
    ValueError
        If the sequence does not have ``ndim`` entries, or a size is below ``minimum``.

    Example
    -------
    >>> per_axis(4, "focus", ndim=3, minimum=1)
    (4, 4, 4)
    """
    if _is_int(value):
        sizes = (int(value),) * ndim
    elif isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes):
        items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
        if not all(_is_int(item) for item in items):
            raise TypeError(
                f"`{name}` must be an int or a tuple of ints, one per spatial axis. "
                f"Received: {name}={value!r}"
            )
        if len(items) != ndim:
            raise ValueError(
                f"`{name}` must be an int or a tuple of {ndim} ints, one per spatial axis. "
                f"Received: {name}={value!r} with {len(items)} entries"
            )
        sizes = tuple(int(item) for item in items)
    else:
        raise TypeError(
            f"`{name}` must be an int or a tuple of ints, one per spatial axis. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if any(size < minimum for size in sizes):
        kind = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"`{name}` must be {kind} along every axis. Received: {name}={value!r}")
    return sizes


def spatial_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    """Check a shape of 2 or 3 positive spatial sizes and return it as a tuple.

    Parameters
    ----------
    shape : sequence of int
        Spatial sizes, without the channel axis.
    name : str
        The argument's name, used in error messages.

    Returns
    -------
    tuple of int

    Example
    -------
    >>> spatial_shape((64, 32), "image_shape")
    (64, 32)
    """
    if not isinstance(shape, Sequence | np.ndarray) or isinstance(shape, str | bytes):
        raise TypeError(
            f"`{name}` must be a tuple of 2 or 3 spatial sizes. "
            f"Received: {name}={shape!r} of type {type(shape).__name__}"
        )
    if len(shape) not in (2, 3):
        raise ValueError(
            f"`{name}` must have 2 or 3 spatial sizes (no channel axis). "
            f"Received: {name}={tuple(shape)!r}"
        )
    return per_axis(shape, name, ndim=len(shape), minimum=1)


def image_array(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` as an array of shape ``(H, W, C)`` or ``(D, H, W, C)``.

    Parameters
    ----------
    image : array_like
        A 2D or 3D image with a trailing channel axis.
    name : str
        The argument's name, used in error messages.

    Returns
    -------
    numpy.ndarray
        A view of ``image`` where possible (no copy).

    Example
    -------
    >>> image_array(np.zeros((8, 8, 1))).shape
    (8, 8, 1)
    """
    array = np.asarray(image)
    if array.ndim not in (3, 4):
        raise ValueError(
            f"`{name}` must have shape (H, W, C) or (D, H, W, C): 2 or 3 spatial axes "
            f"and a trailing channel axis. Received: {name}.shape={array.shape}"
        )
    if any(size == 0 for size in array.shape[:-1]):
        raise ValueError(
            f"`{name}` must have a positive size along every spatial axis. "
            f"Received: {name}.shape={array.shape}"
        )
    return array


def boundary_name(boundary: object) -> str:
    """Check that ``boundary`` is one of :data:`BOUNDARIES` and return it.

    Example
    -------
    >>> boundary_name("periodic")
    'periodic'
    """
    if not isinstance(boundary, str):
        raise TypeError(
            f"`boundary` must be a string, one of {BOUNDARIES}. "
            f"Received: boundary={boundary!r} of type {type(boundary).__name__}"
        )
    if boundary not in BOUNDARIES:
        raise ValueError(f"`boundary` must be one of {BOUNDARIES}. Received: boundary={boundary!r}")
    return boundary


def flag(value: object, name: str) -> bool:
    """Check that ``value`` is a bool and return it.

    Example
    -------
    >>> flag(True, "pad_to_focus")
    True
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"`{name}` must be True or False. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    return bool(value)
