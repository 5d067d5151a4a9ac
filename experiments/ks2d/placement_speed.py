"""What averaging over tile placements costs: training steps of the ks2d energy EDNN.

`EDNN(placement_step=k)` averages the tile sum over the `(focus / k)²` tile grids shifted by
multiples of `k` and evaluates every placement in one fused pass (the trunk once over the
image padded by `focus - k` more pixels, the head `(focus / k)²` times per focus region).
This script times a training step (forward, gradients, Adam update) of the 2D Kohn–Sham
energy network (`train_models.py`'s architecture, dense head 256, 256) on a batch of 16
48 x 48 potential images, one core, for

* "same"-padded convolutions evaluated tile by tile (what the production models use),
* "valid" ones evaluated fused (`--padding valid`),
* "valid" ones averaged over placements every 8, 4 and 2 pixels (`--placement-step`; 2 is
  below the trunk's stride 4, so 4 passes of the trunk),

side by side in one process (each variant's steps interleaved with the others', best of
`--repeats` rounds), and reports each as a ratio to the fused plain model:

    OMP_NUM_THREADS=1 taskset -c 0 python experiments/ks2d/placement_speed.py

Prints a table and writes ``experiments/ks2d/results/placement_speed.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import keras
import numpy as np

from ednn._io import atomic_write_text
from ednn.model import build_ednn

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

VARIANTS = {
    "same, tiles": ("same", None),
    "valid, fused": ("valid", None),
    "valid, placements every 8": ("valid", 8),
    "valid, placements every 4": ("valid", 4),
    "valid, placements every 2": ("valid", 2),
}
(BATCH, SIZE, FOCUS, CONTEXT, CHANNELS) = (16, 48, 16, 8, 2)


def build(padding: str, step: int | None) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_ednn(
        FOCUS, CONTEXT, CHANNELS, len(tm.TARGETS), boundary="zero", padding=padding,
        placement_step=step, **tm.energy_architecture(dense_units=(256, 256)),
    )  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-4), "mae")
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (best is kept)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "placement_speed.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZE, SIZE, CHANNELS), dtype=np.float32)
    y = rng.random((BATCH, len(tm.TARGETS)), dtype=np.float32)
    models = {name: build(*options) for name, options in VARIANTS.items()}
    for model in models.values():
        model.train_on_batch(x, y)  # trace and set up the kernels, untimed
    best = dict.fromkeys(models, np.inf)
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    reference = best["valid, fused"]
    rows = {
        name: {"ms_per_step": round(1000 * seconds, 2), "ratio": round(seconds / reference, 2)}
        for name, seconds in best.items()
    }
    print(f"training step, batch {BATCH} of {SIZE}² images, tiles {FOCUS}+2x{CONTEXT}:")
    print("| variant | ms per step | x valid, fused |\n|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['ms_per_step']:.1f} | {row['ratio']:.2f} |")
    result = {"batch": BATCH, "image": SIZE, "focus": FOCUS, "context": CONTEXT, "rows": rows}
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
