"""Argument checks shared by the modules of :mod:`ednn.ks2d`.

Each check raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a
value of the right type that is out of range, with a message that says what was
expected and then what was received.
"""

from __future__ import annotations

import numbers

import numpy as np


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def integer(value: object, name: str, minimum: int | None = None) -> int:
    """Check that ``value`` is an int (at least ``minimum``) and return it.

    Example
    -------
    >>> integer(64, "n", minimum=8)
    64
    """
    if not _is_int(value):
        raise TypeError(
            f"`{name}` must be an int. Received: {name}={value!r} of type {type(value).__name__}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}. Received: {name}={value!r}")
    return int(value)


def positive(value: object, name: str, allow_zero: bool = False) -> float:
    """Check that ``value`` is a real number > 0 (or >= 0) and return it as a float.

    Example
    -------
    >>> positive(20.0, "box")
    20.0
    """
    if not _is_real(value):
        raise TypeError(
            f"`{name}` must be a real number. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a finite {kind} number. Received: {name}={value!r}")
    return value


def interval(value: object, name: str) -> tuple[float, float]:
    """Check a ``(low, high)`` pair of finite reals with ``low <= high`` and return it.

    Example
    -------
    >>> interval([0.2, 1.0], "omega")
    (0.2, 1.0)
    """
    if _is_real(value):
        return (float(value), float(value))
    try:
        low, high = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a number or a (low, high) pair. Received: {name}={value!r}"
        ) from None
    if not (_is_real(low) and _is_real(high)):
        raise TypeError(f"`{name}` must be a pair of real numbers. Received: {name}={value!r}")
    if not (np.isfinite(low) and np.isfinite(high)) or low > high:
        raise ValueError(
            f"`{name}` must be a finite (low, high) pair with low <= high. "
            f"Received: {name}={value!r}"
        )
    return (float(low), float(high))


def choice(value: object, name: str, options: tuple[str, ...]) -> str:
    """Check that ``value`` is one of the strings ``options`` and return it.

    Example
    -------
    >>> choice("lda", "functional", ("lda", "gga", "hybrid"))
    'lda'
    """
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a string, one of {options}. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options}. Received: {name}={value!r}")
    return value


def field(array: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return ``array`` as a finite float64 array of the given grid ``shape``.

    Example
    -------
    >>> field(np.zeros((4, 4)), "v_ext", (4, 4)).dtype
    dtype('float64')
    """
    out = np.asarray(array, dtype=np.float64)
    if out.shape != shape:
        raise ValueError(
            f"`{name}` must have the grid shape {shape}. Received: {name}.shape={out.shape}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(f"`{name}` must be finite everywhere. Received: {name} with NaN or inf")
    return out


def spin_counts(value: object, n_electrons: int, name: str = "spin") -> tuple[int, int]:
    """Check electrons per spin channel ``(n_up, n_down)`` against ``n_electrons``.

    Both must be non-negative ints that add up to ``n_electrons``.

    Example
    -------
    >>> spin_counts((2, 1), 3)
    (2, 1)
    """
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(
            f"`{name}` must be a pair (n_up, n_down) of ints. Received: {name}={value!r}"
        )
    up, down = value
    if not (_is_int(up) and _is_int(down)):
        raise TypeError(
            f"`{name}` must be a pair (n_up, n_down) of ints. Received: {name}={value!r}"
        )
    if up < 0 or down < 0:
        raise ValueError(
            f"`{name}` must hold non-negative electron counts (n_up, n_down). "
            f"Received: {name}={value!r}"
        )
    if up + down != n_electrons:
        raise ValueError(
            f"`{name}` = (n_up, n_down) must add up to n_electrons={n_electrons}. "
            f"Received: {name}={value!r}"
        )
    return int(up), int(down)
