"""Process-parallel backends: a single process, or Horovod (when installed and launched).

Training and giant-sheet evaluation talk only to this small interface, so that without
horovod installed, or when run without ``horovodrun``, they behave exactly as a single
process.  Horovod's Keras integration does not work with Keras 3 (horovod#4290); only the
low-level ``horovod.tensorflow`` ops are used here, on the backing ``tf.Variable`` of each
Keras variable (``variable.value``).

Build horovod with ``bash scripts/install_horovod.sh``; launch with
``horovodrun -np K python ...`` (see docs/distributed.md).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["Horovod", "SingleProcess", "get_backend", "launcher_size"]

#: Environment variables that process launchers set to the number of processes:
#: horovodrun (Gloo), Open MPI, MPICH and Intel MPI (PMI).
_LAUNCHER_SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


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
        """Average each tensor over processes (gradients, metrics); ``None`` stays ``None``."""
        return list(tensors)

    def allreduce_sum(self, value: Any) -> Any:
        """Sum a tensor, array or number over processes (partial energies).

        A ``tf.Tensor`` comes back as a tensor; anything else as a numpy array (a number
        as a 0-d array), on every backend.
        """
        return value

    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        """Copy variables (Keras or tf) from ``root`` to every process."""

    def barrier(self) -> None:
        """Wait for every process."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


def _backing_variable(variable: Any):
    """The ``tf.Variable`` behind a Keras 3 variable (or the ``tf.Variable`` itself)."""
    import tensorflow as tf

    if isinstance(variable, tf.Variable):
        return variable
    backing = getattr(variable, "value", None)
    if isinstance(backing, tf.Variable):
        return backing
    raise TypeError(
        "`variables` must be Keras variables (TensorFlow backend) or tf.Variable objects. "
        f"Received: {type(variable).__name__} {getattr(variable, 'path', variable)!r}"
    )


class Horovod(SingleProcess):
    """Horovod with the TensorFlow ops (Gloo or MPI controller).

    Constructing it calls ``hvd.init()`` and, where TensorFlow sees GPUs, makes only the
    GPU of this process's ``local_rank`` visible (TensorFlow must not have used a GPU yet).
    """

    name = "horovod"

    def __init__(self) -> None:
        import horovod.tensorflow as hvd

        hvd.init()
        self._hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()
        if self.size > 1:
            self._pin_gpu(hvd.local_size())

    def _pin_gpu(self, local_size: int) -> None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return
        if len(gpus) < local_size:
            warnings.warn(
                f"{local_size} processes on this node share {len(gpus)} GPU(s); "
                "launch one process per GPU (horovodrun -np ... -H host:GPUS).",
                stacklevel=3,
            )
        try:
            gpu = gpus[self.local_rank % len(gpus)]
            tf.config.set_visible_devices(gpu, "GPU")
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:  # TensorFlow already initialised its devices
            warnings.warn(
                f"could not pin this process to GPU {self.local_rank} ({error}); call "
                "ednn.distributed.get_backend() before anything runs TensorFlow.",
                stacklevel=3,
            )

    def allreduce_mean(self, tensors: Sequence[Any]) -> list:
        tensors = list(tensors)
        if self.size == 1:
            return tensors
        # Gradients of unused variables are None on every rank alike: leave them out.
        present = [i for i, t in enumerate(tensors) if t is not None]
        if not present:
            return tensors
        reduced = self._hvd.grouped_allreduce([tensors[i] for i in present], op=self._hvd.Average)
        for i, value in zip(present, reduced, strict=True):
            tensors[i] = value
        return tensors

    def allreduce_sum(self, value: Any) -> Any:
        if self.size == 1:
            return value
        import tensorflow as tf

        if tf.is_tensor(value):
            return self._hvd.allreduce(value, op=self._hvd.Sum)
        return self._hvd.allreduce(tf.convert_to_tensor(value), op=self._hvd.Sum).numpy()

    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        if self.size == 1:
            return
        backing = [_backing_variable(v) for v in variables]
        if backing:
            self._hvd.broadcast_variables(backing, root_rank=root)

    def barrier(self) -> None:
        if self.size == 1:
            return
        import tensorflow as tf

        # Not hvd.join(): in horovod 0.28.1 only its first call waits for every rank.
        self._hvd.allreduce(tf.zeros([], tf.int32), op=self._hvd.Sum).numpy()

    def __repr__(self) -> str:
        return f"Horovod(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


def launcher_size() -> int:
    """The number of processes a launcher (horovodrun, mpirun, srun) started; 1 if none."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


_BACKEND: SingleProcess | None = None


def get_backend(kind: str = "auto") -> SingleProcess:
    """The process backend: ``"auto"`` uses Horovod when it imports, else a single process.

    A Gloo-only Horovod build run as plain ``python`` (no ``horovodrun``) acts as one
    process of size 1, so ``auto`` is always safe.  When a launcher started several
    processes but horovod cannot be imported, ``auto`` raises rather than letting each
    process train alone into the same run directory.

    Args:
        kind: ``"auto"``, ``"single"`` or ``"horovod"``.

    Returns:
        The backend, created once per process and shared afterwards.
    """
    global _BACKEND
    if kind not in ("auto", "single", "horovod"):
        raise ValueError(f"`kind` must be 'auto', 'single' or 'horovod'. Received: kind={kind!r}")
    if _BACKEND is not None and kind in ("auto", _BACKEND.name):
        return _BACKEND
    if kind == "single":
        _BACKEND = SingleProcess()
        return _BACKEND
    try:
        _BACKEND = Horovod()
    except ImportError as error:
        launched = launcher_size()
        if kind == "horovod" or launched > 1:
            reason = f"{launched} processes were launched, but " if launched > 1 else ""
            raise ImportError(
                f"{reason}horovod is not importable ({error}); build it with "
                "`bash scripts/install_horovod.sh` (see docs/distributed.md)"
            ) from None
        _BACKEND = SingleProcess()
    return _BACKEND
