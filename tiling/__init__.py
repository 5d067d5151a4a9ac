"""Focus/context tiling of 2D and 3D images with a trailing channel axis.

A small, function-first library that imports numpy only (never TensorFlow):

- :func:`extract_tiles` cuts an image into non-overlapping focus regions, each grown by a
  context margin (periodic or zero boundary);
- :func:`stitch_tiles` crops the context from per-tile outputs and places them back;
- :func:`tile_grid` gives the number of tiles along each axis.

Example
-------
>>> import numpy as np
>>> import tiling
>>> image = np.zeros((128, 128, 1))
>>> tiles = tiling.extract_tiles(image, focus=32, context=8)  # (16, 48, 48, 1)
>>> grid = tiling.tile_grid(image.shape[:-1], focus=32)  # (4, 4)
>>> tiling.stitch_tiles(tiles, grid, context=8).shape
(128, 128, 1)
"""

from tiling._tiles import extract_tiles, stitch_tiles, tile_grid

__all__ = ["extract_tiles", "stitch_tiles", "tile_grid"]
