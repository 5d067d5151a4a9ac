"""Shared argument checks with errors a person can act on.

Every check follows one pattern: say what was expected, then what was received, with the
argument's name ("`spacing` must be a positive number (Å). Received: spacing=-0.1").
``ValueError`` is raised for a bad value and ``TypeError`` for a bad type.  The helpers are
generic (numbers, arrays, symbol lists), so any ednn module can reuse them instead of copying
checks; they import numpy only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_int_pair",
    "check_allowed",
    "check_finite_rows",
    "check_nonempty",
    "check_nonnegative",
    "check_positive",
    "check_positive_int",
    "format_items",
]


def format_items(items: Iterable[Any], limit: int = 10) -> str:
    """Format items as a short comma-separated list, eliding after ``limit`` of them.

    Parameters
    ----------
    items : iterable
        Things to list (indices, symbols, ...).
    limit : int, default 10
        How many to show before writing ``"... (N in all)"``.

    Returns
    -------
    str
        For example ``"3, 7, 12"`` or ``"0, 1, 2, ... (250 in all)"``.

    Example
    -------
    >>> format_items(range(4), limit=2)
    '0, 1, ... (4 in all)'
    """
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items)} in all)"
    return shown


def _check_real(value: Any, name: str, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number{unit}. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number{unit}. Received: {name}={value!r}.")
    return value


def check_positive(value: Any, name: str, unit: str = "") -> float:
    """Return ``value`` as a float after checking that it is a finite number > 0.

    Parameters
    ----------
    value : Any
        The value to check.
    name : str
        The argument's name, used in the error message.
    unit : str, optional
        Unit written after the number in the message, e.g. ``"Å"``.

    Returns
    -------
    float
        ``float(value)``.

    Raises
    ------
    TypeError
        If ``value`` is not a real number (``bool`` is refused).
    ValueError
        If ``value`` is NaN, infinite, zero or negative.

    Example
    -------
    >>> check_positive(0.1, "spacing", "Å")
    0.1
    """
    unit_text = f" ({unit})" if unit else ""
    value = _check_real(value, name, unit_text)
    if value <= 0.0:
        raise ValueError(
            f"`{name}` must be a positive number{unit_text}. Received: {name}={value!r}."
        )
    return value


def check_nonnegative(value: Any, name: str, unit: str = "") -> float:
    """Return ``value`` as a float after checking that it is a finite number >= 0.

    Parameters
    ----------
    value : Any
        The value to check.
    name : str
        The argument's name, used in the error message.
    unit : str, optional
        Unit written after the number in the message, e.g. ``"Å"``.

    Returns
    -------
    float
        ``float(value)``.

    Example
    -------
    >>> check_nonnegative(0, "padding", "Å")
    0.0
    """
    unit_text = f" ({unit})" if unit else ""
    value = _check_real(value, name, unit_text)
    if value < 0.0:
        raise ValueError(
            f"`{name}` must be a non-negative number{unit_text}. Received: {name}={value!r}."
        )
    return value


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int after checking that it is an integer >= 1.

    Parameters
    ----------
    value : Any
        The value to check; numpy integers are accepted, floats and bools are not.
    name : str
        The argument's name, used in the error message.

    Returns
    -------
    int
        ``int(value)``.

    Example
    -------
    >>> check_positive_int(20000, "chunk_size")
    20000
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}.")
    return int(value)


def as_int_pair(value: Any, name: str) -> tuple[int, int]:
    """Return a positive int, or a pair of them, as a pair ``(n0, n1)``.

    Parameters
    ----------
    value : int or sequence of two ints
        A size per image axis; a single int applies to both axes.
    name : str
        The argument's name, used in the error message.

    Returns
    -------
    tuple of int
        ``(value, value)`` or ``tuple(value)``, each >= 1.

    Example
    -------
    >>> as_int_pair(8, "multiple_of")
    (8, 8)
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        n = check_positive_int(value, name)
        return (n, n)
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str) and len(value) == 2:
        return (
            check_positive_int(value[0], f"{name}[0]"),
            check_positive_int(value[1], f"{name}[1]"),
        )
    raise TypeError(
        f"`{name}` must be a positive int or a pair of them (one per image axis). "
        f"Received: {name}={value!r}."
    )


def check_nonempty(n_items: int, name: str, what: str = "atom") -> None:
    """Raise ``ValueError`` if a collection that must not be empty has no items.

    Parameters
    ----------
    n_items : int
        Length of the collection, e.g. ``len(atoms)``.
    name : str
        The argument's name, used in the error message.
    what : str, default "atom"
        What the items are.

    Example
    -------
    >>> check_nonempty(2, "atoms")
    """
    if n_items < 1:
        raise ValueError(
            f"`{name}` must contain at least one {what}. Received: len({name})={n_items}."
        )


def check_finite_rows(array: Any, name: str, what: str = "atom") -> np.ndarray:
    """Return ``array`` as a float64 array after checking that every entry is finite.

    The error names the offending rows (for positions: the atom indices), so a person can
    find them.

    Parameters
    ----------
    array : array_like, shape (n, ...)
        For example positions in Å, shape (n_atoms, 3).
    name : str
        The argument's name, used in the error message.
    what : str, default "atom"
        What a row is.

    Returns
    -------
    numpy.ndarray, float64, shape (n, ...)

    Example
    -------
    >>> check_finite_rows([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0]], "positions").shape
    (2, 3)
    """
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        rows = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1))
        raise ValueError(
            f"`{name}` must be finite (no NaN or inf). Received: non-finite values for "
            f"{what} indices {format_items(rows.tolist())}."
        )
    return array


def check_allowed(values: Iterable[str], allowed: Collection[str], name: str) -> None:
    """Raise ``ValueError`` naming every value that is not in ``allowed``.

    Parameters
    ----------
    values : iterable of str
        Values to check, e.g. the chemical symbols of a structure.
    allowed : collection of str
        The allowed values, e.g. the species list of a rasterizer.
    name : str
        What the values are, used in the error message.

    Example
    -------
    >>> check_allowed(["C", "C", "B"], ("C", "B", "N"), "chemical symbols")
    """
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(
            f"Every one of the {name} must be one of {list(allowed)}. "
            f"Received: {format_items(unknown)} (not in that list)."
        )
