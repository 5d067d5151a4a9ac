"""Do a saved SHO energy model's predictions obey the virial theorem, and does imposing it help?

In a harmonic well the self-consistent energies obey ``2 T_s - 2 E_ext + E_H + E_x +
dE_c/dγ = 0`` (:mod:`ednn.ks2d.virial`), and ``E_total = T_s + E_ext + E_H + E_x + E_c``.
A model predicting the six terms independently need not obey either; where it does not,
projecting its predictions onto the two relations (weighted by the covariance of its errors
on one split, the generalised least-squares correction) removes the part of the error that
breaks them. This script measures, on the pooled validation and test splits:

* the relation on the labels: ``dE_c/dγ`` from each stored density, the residual (the
  grid's discretisation), and how well ``dE_c/dγ`` follows from ``E_c`` and ``N`` alone
  (a quadratic in ``E_c`` per ``N``, fitted on the training labels), which a model that
  does not predict ``dE_c/dγ`` needs;
* the residual of the model's predictions (with ``dE_c/dγ`` from the predicted ``E_c``);
* every term's MAE before and after the projection, the covariance estimated on one split
  and scored on the other (both ways; never on the samples scored).

Writes ``<name>_virial_<input>.{md,json}`` beside the models:

    python experiments/ks2d/virial.py --data data/ks2d-sho-gga-2k --name sho-gga-2k-big2-restart
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
from ednn.ks2d.grid import Grid
from ednn.ks2d.virial import correlation_scaling_derivative, virial_residual

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

SPLITS = ("val", "test")
# The energy terms' order (tm.TARGETS) and the two relations as rows over it: the virial
# theorem (without its dE_c/dγ term, added per sample) and the sum rule.
VIRIAL = np.array([2.0, -2.0, 1.0, 1.0, 0.0, 0.0])
SUM_RULE = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0])


def scaling_features(e_c: np.ndarray, counts: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Columns ``[1, E_c, E_c²]`` per electron count in ``levels`` (zero for the others)."""
    columns = []
    for n in levels:
        mine = (counts == n).astype(float)
        columns += [mine, mine * e_c, mine * e_c**2]
    return np.stack(columns, axis=1)


class ScalingFit:
    """``dE_c/dγ`` as a quadratic in ``E_c`` per electron count, least squares (Hartree)."""

    def __init__(self, e_c: np.ndarray, counts: np.ndarray, de_c: np.ndarray) -> None:
        self.levels = np.unique(counts)
        features = scaling_features(e_c, counts, self.levels)
        (self.coefficients, *_) = np.linalg.lstsq(features, de_c, rcond=None)

    def __call__(self, e_c: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return scaling_features(e_c, counts, self.levels) @ self.coefficients

    def slope(self, e_c: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``d(dE_c/dγ)/dE_c`` of the fit at each sample."""
        h = 1e-6
        return (self(e_c + h, counts) - self(e_c - h, counts)) / (2 * h)


def project(predicted, counts, fit: ScalingFit, covariance, noise: float) -> np.ndarray:
    """Predictions moved onto the virial relation and the sum rule, weighted by ``covariance``.

    Generalised least squares: ``p' = p - Σ Aᵀ (A Σ Aᵀ + R)⁻¹ A(p)``, with ``A`` the two
    relations linearised at ``p`` (the virial's ``dE_c/dγ`` through :class:`ScalingFit`)
    and ``R`` their own spread on the labels (``noise`` for the virial, none for the sum).
    """
    out = np.empty_like(predicted)
    for i, p in enumerate(predicted):
        (e_c, n) = (p[4:5], counts[i : i + 1])
        virial_row = VIRIAL.copy()
        virial_row[4] = fit.slope(e_c, n)[0]
        rows = np.stack([virial_row, SUM_RULE])
        residuals = np.array([VIRIAL @ p + fit(e_c, n)[0], SUM_RULE @ p])
        gain = (
            covariance
            @ rows.T
            @ np.linalg.inv(rows @ covariance @ rows.T + np.diag([noise**2, 1e-12]))
        )
        out[i] = p - gain @ residuals
    return out


def mae_mHa(errors: np.ndarray) -> dict:
    return dict(zip(tm.TARGETS, map(float, 1000 * np.abs(errors).mean(axis=0)), strict=True))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", required=True, help="the run name (train_models.py --name)")
    args = parser.parse_args(argv)
    path = args.out / f"{args.name}_{tm.energy_filename('v_ext')}"
    if not path.exists():
        parser.error(f"no saved model at {path}")
    (splits, config, _) = tm.load_splits(args.data)
    if config.get("potential") != "sho" or config.get("magnetization") is not None:
        parser.error(f"needs a spin-unpolarised SHO dataset. Received: {args.data}")
    grid = Grid(config["grid"]["n"], config["grid"]["box"])
    functional = tm.functional_of(config)
    labels, de_c = {}, {}
    for split in ("train", *SPLITS):
        labels[split] = tm.energies(splits[split]).astype(np.float64)
        de_c[split] = np.array(
            [correlation_scaling_derivative(n, grid, functional) for n in splits[split]["density"]]
        )
    counts = {s: splits[s]["n_electrons"] for s in labels}
    fit = ScalingFit(labels["train"][:, 4], counts["train"], de_c["train"])
    label_residual = {
        s: 1000 * virial_residual(*labels[s][:, :4].T, de_c[s]) for s in labels
    }  # mHa
    noise = float(np.std(label_residual["train"])) / 1000
    model = keras.saving.load_model(path, compile=False)
    predicted = {
        s: np.asarray(
            model.predict(
                tm.image(splits[s], "v_ext", tm.SCALES["v_ext"]), batch_size=64, verbose=0
            ),
            np.float64,
        )
        for s in SPLITS
    }
    pooled = np.concatenate([predicted[s] - labels[s] for s in SPLITS])
    pooled_predicted = np.concatenate([predicted[s] for s in SPLITS])
    pooled_counts = np.concatenate([counts[s] for s in SPLITS])
    predicted_residual = 1000 * (
        pooled_predicted @ VIRIAL + fit(pooled_predicted[:, 4], pooled_counts)
    )
    projected = {}
    for estimate, score in (("val", "test"), ("test", "val")):
        covariance = np.cov((predicted[estimate] - labels[estimate]).T)
        moved = project(predicted[score], counts[score], fit, covariance, noise)
        projected[score] = {
            "covariance_from": estimate,
            "before_mHa": mae_mHa(predicted[score] - labels[score]),
            "after_mHa": mae_mHa(moved - labels[score]),
        }
    pooled_labels = np.concatenate([label_residual[s] for s in SPLITS])
    fit_error = np.concatenate(
        [fit(labels[s][:, 4], counts[s]) - de_c[s] for s in SPLITS]
    )  # fmt: skip
    result = {
        "data": str(args.data),
        "model": path.name,
        "splits": list(SPLITS),
        "de_c_dgamma_Ha": {
            "mean": float(np.mean(de_c["test"])),
            "std": float(np.std(de_c["test"])),
        },
        "label_residual_mHa": {
            "mean": float(pooled_labels.mean()),
            "std": float(pooled_labels.std()),
            "max_abs": float(np.abs(pooled_labels).max()),
        },
        "scaling_fit_mae_mHa": float(1000 * np.abs(fit_error).mean()),
        "predicted_residual_mae_mHa": float(np.abs(predicted_residual).mean()),
        "predicted_sum_rule_mae_mHa": float(1000 * np.abs(pooled_predicted @ SUM_RULE).mean()),
        # What the residual would be if the terms erred independently with these spreads
        # (Gaussian: MAE = √(2/π) RMS).
        "independent_residual_mae_mHa": float(
            1000 * np.sqrt(2 / np.pi) * np.sqrt(np.sum((VIRIAL * pooled.std(axis=0)) ** 2))
        ),
        "terms_mae_mHa": mae_mHa(pooled),
        "projected": projected,
    }
    table = markdown(result)
    print(table)
    stem = f"{args.name}_virial_v_ext"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return result


def markdown(result: dict) -> str:
    r = result
    lines = [
        f"The virial theorem and `{r['model']}` on `{r['data']}` (validation and test "
        "splits; energies in mHa).",
        "",
        f"- dE_c/dγ on the test labels: {r['de_c_dgamma_Ha']['mean']:.3f} ± "
        f"{r['de_c_dgamma_Ha']['std']:.3f} Ha; from E_c and N (fit on the training labels): "
        f"MAE {r['scaling_fit_mae_mHa']:.2f}.",
        f"- Residual `2 T_s − 2 E_ext + E_H + E_x + dE_c/dγ` of the labels: "
        f"{r['label_residual_mHa']['mean']:.2f} ± {r['label_residual_mHa']['std']:.2f} "
        f"(max {r['label_residual_mHa']['max_abs']:.2f}: the grid's discretisation).",
        f"- Of the predictions (mean absolute): {r['predicted_residual_mae_mHa']:.2f} (terms "
        f"erring independently with the same spreads: ~{r['independent_residual_mae_mHa']:.1f}); "
        "their sum rule `T_s + E_ext + E_H + E_x + E_c − E_total`: "
        f"{r['predicted_sum_rule_mae_mHa']:.2f}. Pooled E_total MAE: "
        f"{r['terms_mae_mHa']['e_total']:.2f}.",
        "",
        "Projected onto both relations (error covariance from the other split):",
        "",
        "| split | | " + " | ".join(tm.LABELS) + " |",
        "|---|---" + "|---" * len(tm.LABELS) + "|",
    ]
    for split, row in r["projected"].items():
        for key, label in (("before_mHa", "as predicted"), ("after_mHa", "projected")):
            cells = " | ".join(f"{row[key][t]:.2f}" for t in tm.TARGETS)
            lines.append(f"| {split} | {label} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
