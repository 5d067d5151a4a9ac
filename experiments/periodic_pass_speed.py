"""Halo against periodic fused pass: the same numbers, how much faster?

The fused network can see a periodic image in two ways: padded by the context on every side
(:meth:`ednn.fused.FusedTileNetwork.on_padded` after :func:`ednn.fused.pad_context`, what
the streaming path does for a band of a giant sheet) or as one period whose layers wrap
their own inputs (:meth:`~ednn.fused.FusedTileNetwork.on_periodic`, what a whole periodic
image now gets: training batches and sheets of one band).  This script times both side by
side in one process, for inference (forward pass) and for a training step (forward and
gradients of a squared loss), on images of the training cells' sizes and of small sheets,
with the default model's architecture, and checks that the outputs agree.

    python experiments/periodic_pass_speed.py [--repeats 7] [--output PATH]

Prints a table and writes ``experiments/results/periodic_pass_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from ednn._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
#: (batch, height, width) in pixels of 0.15 Å: training batches of the shipped dataset's
#: smallest and largest cells (160-280 atoms) and whole sheets of ~10^3 and ~3 x 10^3 atoms.
CASES = [(16, 80, 224), (16, 160, 192), (1, 352, 336), (1, 592, 592)]


def _side_by_side(first, second, images, repeats: int) -> tuple[float, float]:
    """Best seconds of two functions on ``images``, called alternately (a noisy neighbour
    slows both alike); the first call of each (tracing, oneDNN kernel setup) is not timed."""
    best = [np.inf, np.inf]
    for function in (first, second):
        _finish(function(images))
    for _ in range(repeats):
        for k, function in enumerate((first, second)):
            start = time.perf_counter()
            _finish(function(images))
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def _finish(outputs) -> None:
    for value in outputs if isinstance(outputs, list | tuple) else [outputs]:
        value.numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS / "periodic_pass_speed.json")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from ednn import raster
    from ednn.fused import DEFAULT_ARCHITECTURE as arch
    from ednn.fused import pad_context
    from ednn.model import build_ednn

    keras.utils.set_random_seed(0)
    spec = raster.RasterSpec(**arch["raster"], multiple_of=arch["focus"])
    model = build_ednn(
        arch["focus"], arch["context"], spec.n_channels, metadata={"raster": spec.to_dict()},
        **arch["tile_network"],
    )  # fmt: skip
    fused = model.fused_network
    variables = model.trainable_variables
    spec_in = [tf.TensorSpec([None, None, None, spec.n_channels], tf.float32)]

    @tf.function(input_signature=spec_in)
    def halo_forward(images):
        return fused.on_padded(pad_context(images, fused.context), training=False)

    @tf.function(input_signature=spec_in)
    def periodic_forward(images):
        return fused.on_periodic(images, training=False)

    def step(forward):
        @tf.function(input_signature=spec_in)
        def run(images):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.reduce_sum(forward(images), axis=(1, 2, 3)) ** 2)
            return tape.gradient(loss, variables)

        return run

    halo_step = step(lambda x: fused.on_padded(pad_context(x, fused.context), training=True))
    periodic_step = step(lambda x: fused.on_periodic(x, training=True))

    rows = []
    rng = np.random.default_rng(0)
    for batch, height, width in CASES:
        images = tf.constant(rng.random((batch, height, width, spec.n_channels), np.float32))
        a, b = halo_forward(images).numpy(), periodic_forward(images).numpy()
        difference = float(np.abs(a - b).max() / np.abs(a).max())
        row = {"batch": batch, "height": height, "width": width, "max_rel_difference": difference}
        for name, pair in {
            "forward": (halo_forward, periodic_forward),
            "train_step": (halo_step, periodic_step),
        }.items():
            t_halo, t_periodic = _side_by_side(*pair, images, args.repeats)
            row[name] = {"halo_ms": 1e3 * t_halo, "periodic_ms": 1e3 * t_periodic,
                         "speedup": t_halo / t_periodic}  # fmt: skip
        pixels = (height + 2 * fused.context[0]) * (width + 2 * fused.context[1])
        row["halo_pixels_ratio"] = pixels / (height * width)
        rows.append(row)
        print(
            f"{batch:3d} x {height:4d} x {width:4d}  halo/period pixels {row['halo_pixels_ratio']:.2f}"
            f"  forward {row['forward']['halo_ms']:8.2f} -> {row['forward']['periodic_ms']:8.2f} ms"
            f" ({row['forward']['speedup']:.2f}x)  train step {row['train_step']['halo_ms']:8.2f}"
            f" -> {row['train_step']['periodic_ms']:8.2f} ms ({row['train_step']['speedup']:.2f}x)"
            f"  max rel. difference {difference:.1e}",
            flush=True,
        )
    result = {
        "description": __doc__.split("\n\n")[0],
        "architecture": "ednn.fused.DEFAULT_ARCHITECTURE (random weights)",
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
