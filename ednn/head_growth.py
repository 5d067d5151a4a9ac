"""Growing the dense head of a trained tile network without changing what it computes.

A tile network of :func:`ednn.model.default_tile_network` ends in hidden dense layers
``dense0, dense1, ...`` and a linear ``output`` layer. :func:`grown_head_weights` maps the
weights of a trained network onto a network with wider and/or more hidden dense layers
(Net2Net-style, after Chen, Goodfellow and Shlens, ICLR 2016) so that the larger network
gives exactly the outputs of the trained one:

- a widened layer keeps the trained units; the new units get fresh random input weights
  and zero output weights, so they change nothing yet but receive gradients at once;
- an added layer passes the trained last hidden layer through an identity block (exact
  for ReLU, whose outputs are non-negative: ``relu(a) = a`` for ``a >= 0``); its new units
  again have random inputs and zero outputs.

Training then goes on from the trained function with the capacity of the larger head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_HEAD = re.compile(r"(?:^|/)(dense(\d+)|output)/(kernel|bias)$")


def _head_index(path: str) -> int | None:
    """The position of a head weight: dense layer ``i`` -> ``i``, output -> a large int."""
    match = _HEAD.search(path)
    if match is None:
        return None
    return 1 << 30 if match.group(1) == "output" else int(match.group(2))


def _split(paths: Sequence[str], what: str) -> int:
    """The index where the head (hidden dense layers + output) starts in ``paths``."""
    head = [i for (i, p) in enumerate(paths) if _head_index(p) is not None]
    if not head or head != list(range(head[0], len(paths))) or len(head) % 2:
        raise ValueError(
            f"The {what} network must end in dense layers `dense0`, `dense1`, ... and "
            f"`output` (kernel and bias each), as `default_tile_network` builds it, with one "
            f"tile network. Received weights: {list(paths)[-4:]}..."
        )
    return head[0]


def head_units(paths: Sequence[str], arrays: Sequence[np.ndarray]) -> list[int]:
    """The hidden dense units of a network's head, from its weight paths and arrays."""
    start = _split(paths, "given")
    return [
        a.shape[-1] for (p, a) in zip(paths[start:], arrays[start:], strict=True) if _is_hidden(p)
    ]


def check_head_growth(units_old: Sequence[int], units_new: Sequence[int]) -> None:
    """Raises a ``ValueError`` unless hidden dense layers ``units_old`` can grow into ``units_new``.

    Each layer of ``units_new`` must be at least as wide as that of ``units_old`` at its
    depth, and each added layer at least as wide as the last of ``units_old``.
    """
    (units_old, units_new) = (list(units_old), list(units_new))
    padded = units_old + [units_old[-1]] * len(units_new)
    if len(units_new) < len(units_old) or any(
        n < o for (n, o) in zip(units_new, padded, strict=False)
    ):
        raise ValueError(
            "Each hidden dense layer of the grown head must be at least as wide as the "
            "trained one at its depth, and each added layer at least as wide as the trained "
            f"last one ({units_old[-1]}). Received: trained {units_old}, grown {units_new}"
        )


def _is_hidden(path: str) -> bool:
    return path.endswith("/kernel") and _head_index(path) != 1 << 30


def grown_head_weights(
    old_paths: Sequence[str],
    old: Sequence[np.ndarray],
    new_paths: Sequence[str],
    new: Sequence[np.ndarray],
) -> list[np.ndarray]:
    """The weights of a larger-headed network that computes what a trained one computes.

    Parameters
    ----------
    old_paths, old : sequence of str, sequence of ndarray
        Weight paths (``layer/kernel``) and values of the trained network, in model order.
    new_paths, new : sequence of str, sequence of ndarray
        Those of the larger network, freshly initialised: its new units keep these random
        input weights. Everything before the head (the convolutions) must have the trained
        network's shapes; every hidden layer must be at least as wide as the trained one
        at the same depth, and each added layer at least as wide as the trained last one.
        The hidden layers must use ReLU activations for an added layer to be exact.

    Returns
    -------
    list of ndarray
        The new network's weights, for ``model.set_weights``.

    Raises
    ------
    ValueError
        If the trained network's weights do not fit in the larger one as described.
    """
    (i_old, i_new) = (_split(old_paths, "trained"), _split(new_paths, "new"))
    trunk_old = [a.shape for a in old[:i_old]]
    trunk_new = [a.shape for a in new[:i_new]]
    if trunk_old != trunk_new:
        raise ValueError(
            "The layers before the dense head must have the same weight shapes in both "
            f"networks. Received: {len(trunk_old)} arrays for {len(trunk_new)}, "
            f"first difference at {_first_difference(trunk_old, trunk_new)}"
        )
    units_old = head_units(old_paths, old)
    units_new = head_units(new_paths, new)
    check_head_growth(units_old, units_new)
    grown = [np.array(a) for a in old[:i_old]]
    head_old = list(old[i_old:])
    head_new = [np.array(a, copy=True) for a in new[i_new:]]
    # Units of the previous layer that carry the trained network's activations.
    carried = None
    for layer in range(len(units_new)):
        (kernel, bias) = (head_new[2 * layer], head_new[2 * layer + 1])
        if layer < len(units_old):
            (k_old, b_old) = (head_old[2 * layer], head_old[2 * layer + 1])
            (rows, cols) = k_old.shape
            kernel[:rows, :cols] = k_old
            kernel[rows:, :cols] = 0.0
            bias[:cols] = b_old
            bias[cols:] = 0.0
        else:
            cols = carried
            kernel[:, :cols] = 0.0
            kernel[:cols, :cols] = np.eye(cols, dtype=kernel.dtype)
            bias[:] = 0.0
        carried = cols
        grown += [kernel, bias]
    (kernel, bias) = (head_new[-2], head_new[-1])
    kernel[:] = 0.0
    kernel[:carried] = head_old[-2]
    bias[:] = head_old[-1]
    return [*grown, kernel, bias]


def _first_difference(a: list, b: list) -> str:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"array {index}: {x} vs {y}"
    return f"array {min(len(a), len(b))}"
