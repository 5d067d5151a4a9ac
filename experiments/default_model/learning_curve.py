"""Learning curve of the default model: test error against the amount of training data.

Trains the model of ``configs/train_default.yaml`` on 10, 25, 50 and 100 % of the training
split (a seeded subset, ``data.train_fraction``; validation and test splits unchanged) and
reports the best model's MAE and RMSE in meV/atom on the test and independent-MD splits.
Each run lives in ``OUT/fraction-XXX`` and is resumed if it exists, so the script can be
stopped and rerun.

    python experiments/default_model/learning_curve.py \
        --config configs/train_default.yaml --out runs/learning_curve

Writes ``experiments/results/default_model_learning_curve.json`` and ``.png``;
``--overlay LABEL=NAME ...`` plots saved results of several curves in one figure, e.g.

    python experiments/default_model/learning_curve.py --name default_model_learning_curves \
        --overlay scratch=default_model_learning_curve_scratch \
                  pre-trained=default_model_learning_curve_pretrained
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from ednn import _io
from ednn.config import load_yaml
from ednn.train import train

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPLITS = ("test", "independent_md")


def learning_curve(
    config: dict, fractions, out: Path, epochs: int | None, equal_steps: bool = False
) -> dict:
    """Train one model per fraction; returns the errors per fraction and split.

    With ``equal_steps`` a fraction f trains for ``epochs / f`` epochs, so that every point
    gets the same number of optimizer steps and differs only in the data it sees.
    """
    points = []
    epochs = epochs or config.get("training", {}).get("epochs")
    for fraction in fractions:
        run = copy.deepcopy(config)
        run.setdefault("data", {})["train_fraction"] = fraction
        run_dir = out / f"fraction-{round(100 * fraction):03d}"
        run_epochs = round(epochs / fraction) if equal_steps and epochs else epochs
        if equal_steps:
            run.setdefault("training", {}).setdefault("early_stopping", {})["patience"] = run_epochs
        summary = train(run, run_dir, resume=True, epochs=run_epochs)
        counts = json.loads((run_dir / "metrics.json").read_text())["n_structures"]
        points.append(
            {
                "fraction": fraction,
                "n_train": counts["train"],
                "epochs": run_epochs,
                "best_epoch": summary["best_epoch"],
                "run_dir": str(run_dir),
                **{split: summary["metrics"].get(split) for split in SPLITS},
            }
        )
    return {"config": config, "epochs": epochs, "points": points}


def plot(results: dict[str, dict], path: Path) -> None:
    """Log-log MAE against training structures; one line per result and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4))
    for index, (label, result) in enumerate(results.items()):
        for split, style in zip(SPLITS, ("o-", "s--"), strict=True):
            points = [p for p in result["points"] if p.get(split) and "mae" in p[split]]
            if points:
                axis.loglog(
                    [p["n_train"] for p in points],
                    [p[split]["mae"] for p in points],
                    style,
                    color=f"C{index}" if len(results) > 1 else None,
                    label=f"{label}: {split} MAE" if label else f"{split} MAE",
                )
    axis.set_xlabel("training structures")
    axis.set_ylabel("MAE (meV/atom)")
    axis.set_title("Default EDNN: learning curve")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with _io.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/train_default.yaml")
    parser.add_argument("--out", default="runs/learning_curve", help="parent of the run dirs")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--name", default="default_model_learning_curve", help="results name")
    parser.add_argument(
        "--equal-steps",
        action="store_true",
        help="train fraction f for epochs/f epochs: the same optimizer steps for every point",
    )
    parser.add_argument(
        "--overlay",
        nargs="+",
        metavar="LABEL=NAME",
        help="no training: plot the saved results NAME.json of earlier runs together in --name.png",
    )
    args = parser.parse_args(argv)
    if args.overlay:
        pairs = [item.split("=", 1) for item in args.overlay]
        saved = {label: json.loads((RESULTS / f"{name}.json").read_text()) for label, name in pairs}
        plot(saved, RESULTS / f"{args.name}.png")
        return
    config = load_yaml(args.config)
    result = learning_curve(config, args.fractions, Path(args.out), args.epochs, args.equal_steps)
    result["equal_steps"] = args.equal_steps
    result["command"] = " ".join(["python", *sys.argv])
    RESULTS.mkdir(exist_ok=True)
    _io.atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(result, indent=1))
    plot({"": result}, RESULTS / f"{args.name}.png")
    for point in result["points"]:
        mae = (point.get("test") or {}).get("mae", float("nan"))
        print(f"{point['n_train']:6d} training structures: test MAE {mae:.2f} meV/atom")


if __name__ == "__main__":
    main()
