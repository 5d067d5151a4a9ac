"""Saved ks2d potential models averaged over whole-pixel moves of the well, scored.

An EDNN's prediction moves with where the well sits on its tiles (``translation_check.py``,
docs/ks2d.md session 25). :class:`ednn.translation.ShiftAverage` averages a model over the
image shifted by up to ``--max-shift`` pixels along each axis, the lines a shift exposes
extrapolated quadratically (exact for the SHO sets' harmonic wells, so every shifted image
is that of the moved well), each move used only while the potential's minimum stays in the
range of the training images' minima. This script wraps each saved potential model of the
runs named, scores it on the validation and test splits, and writes
``<name>_shift_average_m<max shift>.{md,json}`` beside the model:

    python experiments/ks2d/shift_average.py --data data/ks2d-sho-lda-2k \\
        --names sho-lda-2k-big2-head256x2-restart --max-shift 3

A model averaged this way calls its network ``(2 max_shift + 1)²`` times per image (49 at
3), on top of the 8 of a symmetry-averaged one. Without a script it is one line:

    ShiftAverage(keras.saving.load_model(path), 3, centre_range)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import keras
import numpy as np

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_write_text
from ednn.translation import ShiftAverage

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

SPLITS = ("val", "test")


def minimum_range(potentials: np.ndarray) -> list[list[int]]:
    """``[[lo_row, hi_row], [lo_col, hi_col]]``: where the potentials' minima lie (pixels)."""
    flat = potentials.reshape(len(potentials), -1).argmin(axis=1)
    where = np.stack(np.unravel_index(flat, potentials.shape[1:]), axis=1)
    return [[int(where[:, a].min()), int(where[:, a].max())] for a in (0, 1)]


def write_results(out: Path, stem: str, caption: str, rows: dict, result: dict) -> str:
    """Prints and writes ``stem.md`` (a caption, then MAE by model and split) and ``stem.json``.

    ``rows`` maps a model label to ``{split: {target: MAE in mHa}}``. Returns the table.
    """
    lines = [caption, "", "| model | split | " + " | ".join(tm.LABELS) + " |",
             "|---" * (2 + len(tm.LABELS)) + "|"]  # fmt: skip
    for label, by_split in rows.items():
        for split, row in by_split.items():
            cells = " | ".join(f"{row[t]:.2f}" for t in tm.TARGETS)
            lines.append(f"| {label} | {split} | {cells} |")
    table = "\n".join(lines) + "\n"
    print(table, flush=True)
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / f"{stem}.md", table)
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--names", nargs="+", required=True, help="run names (--name)")
    parser.add_argument(
        "--max-shift", type=int, default=3, help="largest move per axis in pixels (default 3)"
    )
    args = parser.parse_args(argv)
    if args.max_shift < 1:
        parser.error(f"--max-shift must be at least 1. Received: {args.max_shift}")
    paths = [args.out / f"{name}_ednn_energies_from_v_ext.keras" for name in args.names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        parser.error(f"no saved potential model at {', '.join(missing)}")
    (splits, _, _) = tm.load_splits(args.data)
    centre_range = minimum_range(splits["train"]["v_ext"])
    scale = tm.SCALES["v_ext"]
    results = {}
    for name, path in zip(args.names, paths, strict=True):
        model = keras.saving.load_model(path, compile=False)
        averaged = ShiftAverage(model, args.max_shift, centre_range)
        rows: dict = {"as saved": {}, "shift-averaged": {}}
        start = time.perf_counter()
        for split in SPLITS:
            images = tm.image(splits[split], "v_ext", scale)
            truth = tm.energies(splits[split]).astype(np.float64)
            for label, m in (("as saved", model), ("shift-averaged", averaged)):
                predicted = np.asarray(m.predict(images, batch_size=16, verbose=0), np.float64)
                rows[label][split] = tm.mae_mHa(truth, predicted)
        result = {
            "data": str(args.data),
            "input": "v_ext",
            "run": name,
            "max_shift": args.max_shift,
            "centre_range_px": centre_range,
            "mae_mHa": rows,
            "seconds": round(time.perf_counter() - start, 1),
        }
        caption = (
            f"`{name}` on `{args.data}`: MAE in mHa as saved and averaged over moves of the "
            f"well by up to {args.max_shift} px along each axis (`ShiftAverage`, minima kept "
            f"in rows {centre_range[0]} and columns {centre_range[1]}, those of the training "
            "potentials)."
        )
        write_results(args.out, f"{name}_shift_average_m{args.max_shift}", caption, rows, result)
        results[name] = result
    return results


if __name__ == "__main__":
    main()
