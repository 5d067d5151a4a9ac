"""How well the SHO labels follow from the wells' two frequencies: a floor for the models.

An SHO well `½ ω_x² (x - c_x)² + ½ ω_y² (y - c_y)²` fixes the energies through `N` and
the two frequencies (the centre only moves the density; the box is large enough that it
vanishes at the edges). Kernel ridge regression (Gaussian kernel) on the sorted
frequencies, one per `N` and energy term, fitted on the training split (with
``--extra-train`` sets), its length scale and regularisation chosen on the validation
split, scored on the test split: what a model that read the frequencies off the image
exactly could reach, and how noisy the labels are as functions of the well (grid, SCF
tolerance, smearing). Writes ``<dataset>_sho_oracle.{md,json}``:

    python experiments/ks2d/sho_oracle.py --data data/ks2d-sho-lda-2k \\
        --extra-train data/ks2d-sho-lda-wide data/ks2d-sho-lda-big data/ks2d-sho-lda-big2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ednn._io import atomic_write_text

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

LENGTHS = (0.025, 0.05, 0.1, 0.2)  # Ha, on the frequencies
RIDGES = (1e-8, 1e-6, 1e-4)


def frequencies(split: dict) -> np.ndarray:
    """``(m, 2)`` sorted SHO frequencies (Ha) of the samples; a ``ValueError`` otherwise."""
    params = [json.loads(p) for p in split["params"]]
    if any(p.get("kind") != "sho" for p in params):
        raise ValueError("the oracle needs SHO potentials (parameters of kind 'sho')")
    return np.sort(np.array([p["omega"] for p in params], np.float64), axis=1)


def kernel_ridge(train_x, train_y, length: float, ridge: float):
    """A predictor ``x -> y`` of Gaussian-kernel ridge regression (targets centred)."""

    def kernel(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * length**2))

    mean = train_y.mean(axis=0)
    factor = cho_factor(kernel(train_x, train_x) + ridge * np.eye(len(train_x)))
    weights = cho_solve(factor, train_y - mean)
    return lambda x: kernel(x, train_x) @ weights + mean


def oracle(splits: dict) -> dict:
    """Per N: the chosen length and ridge and the test MAE per term (mHa)."""
    result = {}
    for n in np.unique(splits["test"]["n_electrons"]):
        parts = {}
        for name, split in splits.items():
            chosen = split["n_electrons"] == n
            parts[name] = (
                frequencies({"params": split["params"][chosen]}),
                tm.energies({k: v[chosen] for k, v in split.items()}).astype(np.float64),
            )
        # Without validation samples of this N: the middle of the grid, not chosen.
        (best, best_error) = ((LENGTHS[2], RIDGES[1]), np.inf)
        for length in LENGTHS if len(parts["val"][0]) else ():
            for ridge in RIDGES:
                predict = kernel_ridge(*parts["train"], length, ridge)
                error = np.abs(predict(parts["val"][0]) - parts["val"][1]).mean()
                if error < best_error:
                    (best, best_error) = ((length, ridge), error)
        predict = kernel_ridge(*parts["train"], *best)
        mae = 1000 * np.abs(predict(parts["test"][0]) - parts["test"][1]).mean(axis=0)
        result[str(int(n))] = {
            "length_Ha": best[0],
            "ridge": best[1],
            "chosen_on_validation": bool(len(parts["val"][0])),
            "train_samples": len(parts["train"][0]),
            "test_samples": len(parts["test"][0]),
            "test_mae_mHa": dict(zip(tm.TARGETS, map(float, mae), strict=True)),
        }
    return result


def markdown(result: dict, data: str) -> str:
    lines = [
        f"Kernel ridge regression of the labels of `{data}` on the sorted SHO frequencies, "
        "per N (length scale and ridge chosen on the validation split): test MAE in mHa.",
        "",
        "| N | " + " | ".join(tm.LABELS) + " | length (Ha) | ridge | train / test samples |",
        "|---" * (len(tm.LABELS) + 4) + "|",
    ]
    for n, row in result.items():
        values = " | ".join(f"{row['test_mae_mHa'][t]:.3f}" for t in tm.TARGETS)
        lines.append(
            f"| {n} | {values} | {row['length_Ha']:g} | {row['ridge']:g} | "
            f"{row['train_samples']} / {row['test_samples']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--extra-train", type=Path, nargs="+", default=[])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    (splits, config, _) = tm.load_splits(args.data)
    try:
        if args.extra_train:
            (splits["train"], _) = tm.with_extra_training(splits["train"], config, args.extra_train)
        result = oracle(splits)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    table = markdown(result, str(args.data))
    print(table)
    stem = f"{args.data.name}_sho_oracle"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return result


if __name__ == "__main__":
    main()
