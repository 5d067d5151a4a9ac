"""Test MAE of saved ks2d energy models and of their average (an ensemble).

Models trained alike from different seeds err partly independently; the mean of their
predictions then errs less than each. How much less says whether an ensemble is worth its
cost. Prints a table (test MAE in mHa per term: each model, then their mean) and the
correlation of the models' E_total errors, and writes both next to the models
(``<dataset>_ensemble_<input>[_<label>].{md,json}``):

    python experiments/ks2d/ensemble.py --data data/ks2d-sho-lda-2k --input v_ext \\
        --names sho-lda-2k-count-short sho-lda-2k-count-short-seed1

With ``--average-symmetries`` every model is first averaged over the 8 symmetries of the
grid (``ednn.symmetry.SymmetryAverage``, as ``symmetrize.py`` scores them). With
``--fit-weights`` the mean is weighted, the weights chosen on the validation split (the sum
of the six terms' validation MAE, least; the test split only scores them), so a weaker
member counts less. ``--save NAME`` writes the ensemble as one model
(:class:`ednn.ensemble.ModelAverage`), ``<NAME>_ednn_energies_from_<input>.keras`` in
``--out``, which loads with plain ``keras.saving.load_model`` after ``import ednn``.

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
from scipy.optimize import minimize

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_write_text
from ednn.checkpoint import save_model_atomic
from ednn.ensemble import ModelAverage
from ednn.symmetry import SymmetryAverage

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)


def fit_weights(predictions: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimise the summed MAE of the weighted mean.

    ``predictions``: ``(members, samples, terms)``; ``truths``: ``(samples, terms)`` (Ha).
    The weights are a softmax of free parameters, searched by Nelder–Mead from equal ones
    (the MAE is not smooth); deterministic.
    """
    members = len(predictions)

    def weights(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def loss(z):
        mean = np.tensordot(weights(z), predictions, axes=1)
        return np.abs(mean - truths).mean(axis=0).sum()

    best = minimize(loss, np.zeros(members), method="Nelder-Mead",
                    options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 2000 * members})  # fmt: skip
    return weights(best.x)


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
    parser.add_argument(
        "--fit-weights",
        action="store_true",
        help="weight the members, the weights fit on the validation split",
    )
    parser.add_argument(
        "--save",
        default=None,
        metavar="NAME",
        help="save the ensemble as one model, NAME_ednn_energies_from_<input>.keras in --out",
    )
    args = parser.parse_args(argv)
    if len(set(args.names)) < 2:
        parser.error(f"--names needs two or more different runs. Received: {args.names}")
    paths = [args.out / f"{name}_ednn_energies_from_{args.input}.keras" for name in args.names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        parser.error(f"no saved model at {', '.join(missing)}")
    (splits, _, _) = tm.load_splits(args.data)
    models = [keras.saving.load_model(p, compile=False) for p in paths]
    if args.average_symmetries:
        models = [
            m if isinstance(m, SymmetryAverage) else SymmetryAverage(m, mirror_shift=1)
            for m in models
        ]
    (predicted, truth) = ({}, {})
    for split in ("val", "test"):
        images = tm.image(splits[split], args.input, tm.SCALES[args.input])
        truth[split] = tm.energies(splits[split]).astype(np.float64)
        predicted[split] = np.stack(
            [np.asarray(m.predict(images, batch_size=64, verbose=0), np.float64) for m in models]
        )
    weights = np.full(len(models), 1 / len(models))
    if args.fit_weights:
        weights = fit_weights(predicted["val"], truth["val"])
    (predictions, truths) = (predicted["test"], truth["test"])
    label = "weighted mean (weights fit on val)" if args.fit_weights else "mean of the models"

    def scored(split: str) -> dict:
        # Each member's MAE (mHa) on the split, then the (weighted) mean's.
        outputs = dict(zip(args.names, predicted[split], strict=True))
        outputs[label] = np.tensordot(weights, predicted[split], axes=1)
        return {name: tm.mae_mHa(truth[split], p) for name, p in outputs.items()}

    rows = scored("test")
    val_mae = {name: mae["e_total"] for name, mae in scored("val").items()}
    errors = np.stack([p[:, -1] - truths[:, -1] for p in predictions])
    correlation = np.corrcoef(errors)
    result = {
        "data": str(args.data),
        "input": args.input,
        "average_symmetries": args.average_symmetries,
        "weights": dict(zip(args.names, weights.round(4).tolist(), strict=True)),
        "test_mae_mHa": rows,
        "val_e_total_mae_mHa": val_mae,
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
        "| model | weight | " + " | ".join(tm.LABELS) + " | val E_total |",
        "|---" * (3 + len(tm.LABELS)) + "|",
    ]
    weight_of = dict(zip(args.names, weights, strict=True))
    for name, row in rows.items():
        weight = weight_of.get(name)
        lines.append(
            f"| {name} | {'' if weight is None else f'{weight:.2f}'} | "
            + " | ".join(f"{row[t]:.2f}" for t in tm.TARGETS)
            + f" | {val_mae[name]:.2f} |"
        )
    off_diagonal = correlation[~np.eye(len(paths), dtype=bool)]
    lines += ["", f"Correlation of the models' E_total errors: {off_diagonal.mean():.2f} (mean)."]
    table = "\n".join(lines) + "\n"
    print(table)
    stem = f"{args.data.name}_ensemble_{args.input}" + (f"_{args.label}" if args.label else "")
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    if args.save is not None:
        ensemble = ModelAverage(models, weights.tolist(), name=f"ensemble_{args.input}")
        save_model_atomic(ensemble, args.out / f"{args.save}_ednn_energies_from_{args.input}.keras")
    return result


if __name__ == "__main__":
    main()
