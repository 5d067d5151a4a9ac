"""ednn: extensive deep neural networks for energies of large 2D materials.

Data flows one way: structure -> Gaussian image (:mod:`ednn.raster`) -> focus/context
tiles (:mod:`tiling`, :mod:`ednn.layers`) -> one shared tile network -> sum
(:mod:`ednn.model`).  Importing :mod:`ednn` registers its Keras layers so that saved
``.keras`` files load with plain :func:`keras.saving.load_model`.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ednn import layers, model  # noqa: E402,F401  (registers Keras custom objects)

__version__ = "0.1.0"
