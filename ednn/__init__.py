"""ednn: extensive deep neural networks for energies of large 2D materials.

Data flows one way: structure -> Gaussian image (:mod:`ednn.raster`) -> focus/context
tiles (:mod:`tiling`, :mod:`ednn.layers`) -> one shared tile network -> sum
(:mod:`ednn.model`).  Importing :mod:`ednn` registers its Keras layers so that saved
``.keras`` files load with plain :func:`keras.saving.load_model`.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# TensorFlow's C++ start-up notes (absl pre-init warning, oneDNN and CPU-feature notices)
# go straight to file descriptor 2 and ignore TF_CPP_MIN_LOG_LEVEL.  They are not
# actionable, so hide exactly those lines while TensorFlow loads and pass the rest through.
_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
    "To enable the following instructions",
)


# The modules whose import registers ednn's Keras custom objects.
_KERAS_MODULES = (
    "correction",
    "count_baseline",
    "dcign",
    "ensemble",
    "density_gradient",
    "layers",
    "losses",
    "model",
    "multiscale",
    "symmetry",
    "translation",
)


def _import_keras_layers() -> None:
    import importlib
    import sys
    import tempfile

    def register() -> None:
        for name in _KERAS_MODULES:
            importlib.import_module(f"ednn.{name}")

    try:
        sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError, AttributeError):
        register()
        return
    with tempfile.TemporaryFile() as sink:
        _os.dup2(sink.fileno(), 2)
        try:
            register()
        finally:
            _os.dup2(saved, 2)
            _os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if not any(noise in line for noise in _NOISE):
                    print(line, file=sys.stderr)


_import_keras_layers()
