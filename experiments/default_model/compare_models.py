"""Errors of several trained models on one fixed set of held-out structures.

Runs that started at different times see different amounts of the growing dataset; this
script scores every model on exactly the structures named in one run's ``split.json``
(its test, independent-MD and transfer splits), so that the models are compared side by
side. Each model is rasterized with its own raster settings (from its metadata).

    python experiments/default_model/compare_models.py \
        --split runs/lc_finetune/fraction-100/split.json \
        --model shipped=ednn/models/default.keras scratch=runs/scratch/best.keras \
                fine-tuned=runs/lc_finetune/fraction-100/best.keras

Writes ``experiments/results/default_model_comparison.json`` and prints a Markdown table of
MAE / RMSE in meV/atom, then the same errors by kind of structure (material; 0 K or MD
snapshot), test and independent-MD splits together, to show where the error sits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ednn import _io
from ednn.data.dataset import load_image_set
from ednn.data.readers import read_dataset_dir
from ednn.evaluate import error_metrics, evaluate, predict_energies
from ednn.model import load_ednn
from ednn.raster import RasterSpec

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPLITS = ("test", "independent_md", "transfer")


def compare(models: dict[str, str], split_file: Path, data: str) -> dict:
    """``{name: {split: metrics}}`` for every model on the held-out splits of ``split_file``."""
    record = json.loads(split_file.read_text(encoding="utf-8"))
    wanted = {i: s for s in SPLITS for i in record["ids"].get(s, [])}
    kinds = _kinds(data, set(wanted))
    results = {}
    for name, path in models.items():
        model = load_ednn(path)
        spec = RasterSpec.from_dict(model.metadata["raster"])
        images = load_image_set(data, spec, targets=["energy"], spacing_tolerance=0.02)
        keep = np.flatnonzero([i in wanted for i in images.ids])
        held_out = images.subset(keep)
        held_out.splits = np.array([wanted[i] for i in held_out.ids], dtype=object)
        missing = len(wanted) - len(held_out)
        if missing:
            raise SystemExit(f"{data} lacks {missing} structures named in {split_file}")
        results[name] = {"model": path, **evaluate(model, held_out, splits=SPLITS)}
        results[name]["by_kind"] = by_kind(model, held_out, kinds)
    return results


def _kinds(data: str, ids: set[str]) -> dict[str, str]:
    """``{id: "material, 0 K" or "material, MD"}`` from the structures' info."""
    kinds = {}
    for atoms in read_dataset_dir(data):
        info = atoms.info
        if info.get("id") in ids:
            state = "MD" if float(info.get("temperature_K", 0.0)) > 0.0 else "0 K"
            kinds[info["id"]] = f"{info.get('material', '?')}, {state}"
    return kinds


def by_kind(model, held_out, kinds: dict[str, str]) -> dict[str, dict]:
    """Errors (meV/atom) per kind over the test and independent-MD structures."""
    keep = np.flatnonzero([s in ("test", "independent_md") for s in held_out.splits])
    part = held_out.subset(keep)
    predicted = predict_energies(model, part)
    labels = np.array([kinds.get(i, "?") for i in part.ids], dtype=object)
    return {
        kind: error_metrics(predicted[labels == kind], part.targets[labels == kind],
                            part.n_atoms[labels == kind])
        for kind in sorted(set(labels))
    }  # fmt: skip


def kind_table(results: dict) -> str:
    kinds = sorted({k for metrics in results.values() for k in metrics["by_kind"]})
    lines = ["| model | " + " | ".join(kinds) + " |", "| --- |" + " ---: |" * len(kinds)]
    for name, metrics in results.items():
        cells = []
        for kind in kinds:
            m = metrics["by_kind"].get(kind)
            cells.append(f"{m['mae']:.1f} ({m['n']})" if m else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: dict) -> str:
    lines = [
        "| model | " + " | ".join(SPLITS) + " |",
        "| --- |" + " ---: |" * len(SPLITS),
    ]
    for name, metrics in results.items():
        cells = [f"{metrics[s]['mae']:.1f} / {metrics[s]['rmse']:.1f}" for s in SPLITS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, required=True, help="a run's split.json")
    parser.add_argument("--data", default="data/sheets-gfn1")
    parser.add_argument("--model", nargs="+", required=True, metavar="NAME=PATH")
    parser.add_argument("--name", default="default_model_comparison", help="results name")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.model)
    results = compare(models, args.split, args.data)
    counts = {s: next(iter(results.values()))[s]["n"] for s in SPLITS}
    output = {
        "command": " ".join(["python", *sys.argv]),
        "split": str(args.split),
        "n": counts,
        "unit": "meV/atom",
        "models": results,
    }
    RESULTS.mkdir(exist_ok=True)
    _io.atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(output, indent=1) + "\n")
    print(f"MAE / RMSE (meV/atom) on {counts}")
    print(table(results))
    print("\nMAE (meV/atom) by kind, test and independent MD together (structures):")
    print(kind_table(results))


if __name__ == "__main__":
    main()
