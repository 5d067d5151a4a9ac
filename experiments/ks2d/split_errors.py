"""Energy MAE of saved ks2d energy models on every split: how far a model underfits.

A model whose training error is as large as its test error is limited by its capacity or
its optimisation; one with a small training error and a large test error, by its data.
Prints a table (mHa per term and split) and writes it as JSON next to the models:

    python experiments/ks2d/split_errors.py --data data/ks2d-sho-lda-2k \\
        --names sho-lda-2k-count sho-lda-2k-count-short

The training split is scored as stored (no symmetry augmentation); for a run on a
``--train-fraction`` of it, only the samples it trained on (``train_ids`` of its results);
for a run with ``--extra-train``, the main dataset's training split (trained on as well).
Rows of runs scored before are kept in the files; scoring a run again replaces its rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import keras
import numpy as np

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_write_text

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

SPLITS = ("train", "val", "test")


def split_errors(model: keras.Model, splits: dict, key: str, train_ids=None) -> dict:
    """MAE in mHa per split and energy term of ``model`` fed ``key`` images.

    ``train_ids``: the samples a ``--train-fraction`` run trained on (its results JSON);
    the train row then scores those only.
    """
    scale = tm.SCALES[key]
    errors = {}
    for split in SPLITS:
        data = splits[split]
        if split == "train" and train_ids is not None:
            chosen = np.isin(data["id"], train_ids)
            data = {field: value[chosen] for field, value in data.items()}
        predicted = model.predict(tm.image(data, key, scale), batch_size=64, verbose=0)
        mae = 1000 * np.abs(np.asarray(predicted, np.float64) - tm.energies(data)).mean(0)
        errors[split] = dict(zip(tm.TARGETS, map(float, mae), strict=True))
    return errors


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--names", nargs="+", required=True, help="run names (--name)")
    parser.add_argument("--inputs", nargs="+", default=["v_ext", "density"])
    args = parser.parse_args(argv)
    (splits, _, _) = tm.load_splits(args.data)
    result = {}
    for name in args.names:
        results = args.out / f"{name}_train_models.json"
        train_ids = json.loads(results.read_text()).get("train_ids") if results.exists() else None
        for key in args.inputs:
            path = args.out / f"{name}_ednn_energies_from_{key}.keras"
            if not path.exists():
                print(f"{path}: missing, skipped")
                continue
            errors = split_errors(keras.saving.load_model(path), splits, key, train_ids)
            result[f"{name}/{key}"] = errors
    stem = f"{args.data.name}_split_errors"
    # The rows of runs scored before stay; a run scored again replaces its rows.
    stored_path = args.out / f"{stem}.json"
    stored = json.loads(stored_path.read_text()) if stored_path.exists() else {}
    rows = {**stored, **result}
    table = markdown(rows)
    print(table)
    atomic_write_text(stored_path, json.dumps(rows, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return result


def markdown(rows: dict) -> str:
    """The table of ``{"run/input": {split: {term: MAE in mHa}}}``, one line per split."""
    lines = ["| run | input | split | " + " | ".join(tm.LABELS) + " |"]
    lines.append("|---" * (3 + len(tm.LABELS)) + "|")
    for run_input, errors in rows.items():
        (name, key) = run_input.rsplit("/", 1)
        for split in SPLITS:
            values = " | ".join(f"{errors[split][t]:.1f}" for t in tm.TARGETS)
            lines.append(f"| {name} | {key} | {split} | {values} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
