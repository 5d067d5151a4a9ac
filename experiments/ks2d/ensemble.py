"""Test MAE of saved ks2d energy models and of their average (an ensemble).

Models trained alike from different seeds err partly independently; the mean of their
predictions then errs less than each. How much less says whether an ensemble is worth its
cost. Prints a table (test MAE in mHa per term: each model, then their mean) and the
correlation of the models' E_total errors, and writes both next to the models
(``<dataset>_ensemble_<input>[_<label>].{md,json}``):

    python experiments/ks2d/ensemble.py --data data/ks2d-sho-lda-2k --input v_ext \\
        --names sho-lda-2k-count-short sho-lda-2k-count-short-seed1

With ``--average-symmetries`` every model is first averaged over the 8 symmetries of the
grid (``ednn.symmetry.SymmetryAverage``, as ``symmetrize.py`` scores them).

By convexity the MAE of the mean is at most the mean of the members' MAEs, whatever the
models; it is as low as the members' MAE over √M only when their errors are uncorrelated.
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
from ednn.symmetry import SymmetryAverage

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--names", nargs="+", required=True, help="run names (--name), 2 or more")
    parser.add_argument("--input", default="v_ext", choices=tuple(tm.SCALES))
    parser.add_argument(
        "--label", default=None, help="suffix of the output files, to keep several ensembles"
    )
    parser.add_argument(
        "--average-symmetries",
        action="store_true",
        help="average each model over the 8 symmetries of the grid first",
    )
    args = parser.parse_args(argv)
    if len(set(args.names)) < 2:
        parser.error(f"--names needs two or more different runs. Received: {args.names}")
    paths = [args.out / f"{name}_ednn_energies_from_{args.input}.keras" for name in args.names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        parser.error(f"no saved model at {', '.join(missing)}")
    (splits, _, _) = tm.load_splits(args.data)
    test = splits["test"]
    images = tm.image(test, args.input, tm.SCALES[args.input])
    truths = tm.energies(test).astype(np.float64)
    models = [keras.saving.load_model(p, compile=False) for p in paths]
    if args.average_symmetries:
        models = [
            m if isinstance(m, SymmetryAverage) else SymmetryAverage(m, mirror_shift=1)
            for m in models
        ]
    predictions = [
        np.asarray(m.predict(images, batch_size=64, verbose=0), np.float64) for m in models
    ]
    rows = {name: tm.mae_mHa(truths, p) for name, p in zip(args.names, predictions, strict=True)}
    rows["mean of the models"] = tm.mae_mHa(truths, np.mean(predictions, axis=0))
    errors = np.stack([p[:, -1] - truths[:, -1] for p in predictions])
    correlation = np.corrcoef(errors)
    result = {
        "data": str(args.data),
        "input": args.input,
        "average_symmetries": args.average_symmetries,
        "test_mae_mHa": rows,
        "e_total_error_correlation": correlation.round(4).tolist(),
    }
    lines = [
        f"Test MAE in mHa, `{args.data}`, energies from {args.input}"
        + (
            ", each model averaged over the grid's 8 symmetries."
            if args.average_symmetries
            else "."
        ),
        "",
        "| model | " + " | ".join(tm.LABELS) + " |",
        "|---" * (1 + len(tm.LABELS)) + "|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[t]:.1f}" for t in tm.TARGETS) + " |")
    off_diagonal = correlation[~np.eye(len(paths), dtype=bool)]
    lines += ["", f"Correlation of the models' E_total errors: {off_diagonal.mean():.2f} (mean)."]
    table = "\n".join(lines) + "\n"
    print(table)
    stem = f"{args.data.name}_ensemble_{args.input}" + (f"_{args.label}" if args.label else "")
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return result


if __name__ == "__main__":
    main()
