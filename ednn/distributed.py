"""Process-parallel backends: a single process, or Horovod (when installed and launched).

Training and giant-sheet evaluation talk only to this small interface, so that without
horovod installed, or when run without ``horovodrun``, they behave exactly as a single
process.  Horovod's Keras integration does not work with Keras 3 (horovod#4290); only the
low-level ``horovod.tensorflow`` ops are used here, on the backing ``tf.Variable`` of each
Keras variable (``variable.value``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SingleProcess:
    """The trivial backend: rank 0 of 1; every collective is the identity."""

    name = "single"
    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_chief(self) -> bool:
        """Whether this process writes logs, checkpoints and prints results."""
        return self.rank == 0

    def allreduce_mean(self, tensors: Sequence[Any]) -> list:
        """Average each tensor over processes (gradients, metrics)."""
        return list(tensors)

    def allreduce_sum(self, value: Any) -> Any:
        """Sum a tensor or number over processes (partial energies)."""
        return value

    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        """Copy variables (Keras or tf) from ``root`` to every process."""

    def barrier(self) -> None:
        """Wait for every process."""


class Horovod(SingleProcess):
    """Horovod with the TensorFlow ops (Gloo or MPI controller)."""

    name = "horovod"

    def __init__(self) -> None:
        import horovod.tensorflow as hvd

        hvd.init()
        self._hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()

    def allreduce_mean(self, tensors: Sequence[Any]) -> list:
        if self.size == 1:
            return list(tensors)
        return list(self._hvd.grouped_allreduce(list(tensors), op=self._hvd.Average))

    def allreduce_sum(self, value: Any) -> Any:
        if self.size == 1:
            return value
        import tensorflow as tf

        return self._hvd.allreduce(tf.convert_to_tensor(value), op=self._hvd.Sum)

    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        if self.size == 1:
            return
        backing = [getattr(v, "value", v) for v in variables]
        self._hvd.broadcast_variables(backing, root_rank=root)

    def barrier(self) -> None:
        if self.size > 1:
            self._hvd.join()


_BACKEND: SingleProcess | None = None


def get_backend(kind: str = "auto") -> SingleProcess:
    """The process backend: ``"auto"`` uses Horovod when it imports, else a single process.

    A Gloo-only Horovod build run as plain ``python`` (no ``horovodrun``) acts as one
    process of size 1, so ``auto`` is always safe.
    """
    global _BACKEND
    if _BACKEND is not None and kind in ("auto", _BACKEND.name):
        return _BACKEND
    if kind == "single":
        _BACKEND = SingleProcess()
    elif kind in ("auto", "horovod"):
        try:
            _BACKEND = Horovod()
        except ImportError:
            if kind == "horovod":
                raise ImportError(
                    "horovod is not installed; build it with `bash scripts/install_horovod.sh` "
                    "(see README, 'Distributed runs')"
                ) from None
            _BACKEND = SingleProcess()
    else:
        raise ValueError(f"`kind` must be 'auto', 'single' or 'horovod'. Received: kind={kind!r}")
    return _BACKEND
