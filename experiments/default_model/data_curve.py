"""Error of the successive default models against their number of GFN1-xTB training structures.

Reads a ``compare_models.py`` result whose model names end in the training-set size in
brackets, e.g. ``"session 6 (852)"``, fits ``MAE = a * N^-alpha`` per held-out split
(least squares in log-log) and extrapolates the size that would reach 1 meV/atom.

    git show 2b3f340:ednn/models/default.keras > /tmp/s3.keras     # 328 structures
    git show 37d158e:ednn/models/default.keras > /tmp/s5.keras     # 631
    python experiments/default_model/compare_models.py \\
        --split experiments/default_model/data_curve.split.json \\
        --model "session 3 (328)=/tmp/s3.keras" "session 5 (631)=/tmp/s5.keras" \\
        "session 6 (852)=experiments/default_model/stage3_s6.keras" --name default_model_data_curve
    python experiments/default_model/data_curve.py --name default_model_data_curve

Writes ``experiments/results/<name>_fit.json`` and ``<name>.png`` and prints the fit. The
models are a lineage (each continued from the one before, with more epochs as well as more
data), so the exponent mixes data and training time: it is what the project's own history
measured, not a controlled learning curve.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from ednn._io import atomic_savefig, atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPLITS = ("test", "independent_md")


def fit(sizes: np.ndarray, errors: np.ndarray) -> dict:
    """``MAE = a N^-alpha`` by least squares in log-log; the N at which MAE = 1 meV/atom."""
    slope, intercept = np.polyfit(np.log(sizes), np.log(errors), 1)
    alpha = -float(slope)
    one_mev = float(np.exp(intercept / alpha)) if alpha > 0 else float("inf")
    return {"alpha": alpha, "a": float(np.exp(intercept)), "structures_for_1_meV": one_mev}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="default_model_data_curve")
    args = parser.parse_args(argv)
    source = RESULTS / f"{args.name}.json"
    results = json.loads(source.read_text(encoding="utf-8"))
    models = results["models"]
    sizes, rows = [], []
    for name, record in models.items():
        match = re.search(r"\((\d+)\)\s*$", name)
        if match is None:
            raise SystemExit(f"model name {name!r} in {source} does not end in '(N)'")
        sizes.append(int(match.group(1)))
        rows.append({s: record[s]["mae"] for s in SPLITS})
    sizes = np.asarray(sizes, float)
    summary = {"source": str(source.relative_to(RESULTS.parents[1])), "sizes": sizes.tolist()}
    for split in SPLITS:
        errors = np.asarray([r[split] for r in rows])
        summary[split] = {"mae": errors.tolist(), **fit(sizes, errors)}
        print(
            f"{split}: MAE {', '.join(f'{e:.1f}' for e in errors)} meV/atom at "
            f"{', '.join(str(int(n)) for n in sizes)} structures; alpha = "
            f"{summary[split]['alpha']:.2f}; 1 meV/atom at ~"
            f"{summary[split]['structures_for_1_meV']:.2g} structures"
        )
    atomic_write_text(RESULTS / f"{args.name}_fit.json", json.dumps(summary, indent=1) + "\n")
    _plot(summary, RESULTS / f"{args.name}.png")
    return summary


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.asarray(summary["sizes"])
    grid = np.geomspace(sizes.min() / 1.5, 1e6, 100)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for split, colour in zip(SPLITS, ("C0", "C1"), strict=True):
        record = summary[split]
        ax.plot(sizes, record["mae"], "o", color=colour, label=split.replace("_", " "))
        ax.plot(
            grid,
            record["a"] * grid ** -record["alpha"],
            "--",
            color=colour,
            lw=0.8,
            label=f"fit N^-{record['alpha']:.2f}",
        )
    ax.axhline(1.0, color="k", lw=0.8, label="target 1 meV/atom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GFN1-xTB training structures")
    ax.set_ylabel("MAE (meV/atom)")
    ax.set_title("Successive default models, one held-out set", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)


if __name__ == "__main__":
    main()
