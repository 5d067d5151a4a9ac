"""Accuracy against size: the default model against GFN1-xTB on held-out sheets of every size.

    python experiments/accuracy_vs_size.py [--model ednn/models/default.keras]
        [--data data/sheets-gfn1] [--splits test independent_md transfer]

Evaluates the model (``ednn.predict.Predictor``, the path ``ednn energy`` takes) on the
labelled structures of the held-out splits of an ``ednn generate`` dataset: the test and
independent-MD splits (160-280-atom cells) and the transfer split (>= 700-atom sheets that no
model trains on), and reports the error per atom and per structure by atom count.  An
extensive model's error per atom should not grow with the sheet: that is the claim checked
here.  Writes ``experiments/results/accuracy_vs_size.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ednn._io import atomic_path, atomic_write_text
from ednn.data import readers
from ednn.predict import Predictor, load_model

RESULTS = Path(__file__).resolve().parent / "results"
BINS = ((0, 200), (200, 300), (300, 700), (700, 10**9))


def evaluate(model_path: str | None, data: str, splits: list[str]) -> dict:
    """Per-structure predictions and errors (eV, meV/atom) on ``splits`` of ``data``."""
    predictor = Predictor(load_model(model_path))
    frames = [a for a in readers.read_dataset_dir(data, ["energy"]) if a.info["split"] in splits]
    rows = []
    for atoms in frames:
        predicted = float(predictor.predict(atoms).energy)
        true = float(readers.target_values(atoms, ["energy"], atoms.info["id"])[0])
        rows.append(
            {
                "id": atoms.info["id"],
                "split": atoms.info["split"],
                "n_atoms": len(atoms),
                "material": atoms.info.get("material"),
                "defect": atoms.info.get("defect"),
                "temperature_K": atoms.info.get("temperature_K"),
                "energy_eV": true,
                "predicted_eV": predicted,
                "error_meV_per_atom": 1000 * (predicted - true) / len(atoms),
            }
        )
    summary = []
    for low, high in BINS:
        for split in splits:
            errors = [
                r["error_meV_per_atom"]
                for r in rows
                if r["split"] == split and low <= r["n_atoms"] < high
            ]
            if errors:
                summary.append(
                    {
                        "split": split,
                        "atoms": f"{low}-{high if high < 10**9 else ''}",
                        "n": len(errors),
                        "mae_meV_per_atom": float(np.mean(np.abs(errors))),
                        "mean_error_meV_per_atom": float(np.mean(errors)),
                    }
                )
    return {"model": model_path or "default", "data": data, "rows": rows, "summary": summary}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4))
    for split, marker in zip(("test", "independent_md", "transfer"), "os^", strict=True):
        rows = [r for r in result["rows"] if r["split"] == split]
        if rows:
            axis.scatter(
                [r["n_atoms"] for r in rows],
                [abs(r["error_meV_per_atom"]) for r in rows],
                marker=marker,
                label=split,
                alpha=0.7,
            )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("atoms in the sheet")
    axis.set_ylabel("|ednn - GFN1-xTB| (meV/atom)")
    axis.set_title("Default model error against sheet size")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=".keras file (default: the shipped one)")
    parser.add_argument("--data", default="data/sheets-gfn1")
    parser.add_argument(
        "--splits", nargs="+", default=["test", "independent_md", "transfer"], metavar="SPLIT"
    )
    parser.add_argument("--name", default="accuracy_vs_size", help="results file name")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.data, args.splits)
    result["command"] = " ".join(["python", *sys.argv])
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(result, indent=1))
    plot(result, RESULTS / f"{args.name}.png")
    for row in result["summary"]:
        print(
            f"{row['split']:15s} {row['atoms']:>9s} atoms: n={row['n']:3d}  "
            f"MAE {row['mae_meV_per_atom']:6.2f} meV/atom  mean {row['mean_error_meV_per_atom']:+6.2f}"
        )
    for row in result["rows"]:
        if row["n_atoms"] >= 700:
            print(
                f"{row['id']}: {row['n_atoms']} atoms, GFN1-xTB {row['energy_eV']:.3f} eV, "
                f"ednn {row['predicted_eV']:.3f} eV ({row['error_meV_per_atom']:+.2f} meV/atom)"
            )


if __name__ == "__main__":
    main()
