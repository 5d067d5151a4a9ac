"""Linear baselines for the GFN1-xTB energies: composition alone, and composition + Tersoff.

Every structure of ``data/sheets-gfn1`` carries its LAMMPS Tersoff energy
(``info['tersoff_energy']``). Least squares on the training split gives

* ``E ≈ Σ_s n_s μ_s`` (the per-species reference energies the EDNN starts from), and
* ``E ≈ Σ_s n_s μ_s + c E_Tersoff`` (a classical potential, rescaled),

and the per-atom MAE / RMSE of each on every split, overall and per recipe. The second is
the bar an EDNN has to clear to be worth its cost, and the reason Tersoff labels are a
useful pre-training target.

    python experiments/default_model/tersoff_baseline.py

Writes ``experiments/results/tersoff_baseline.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ednn import _io
from ednn.data.readers import read_dataset_dir

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPLITS = ("train", "validation", "test", "independent_md", "transfer")
SPECIES = ("C", "B", "N")


def _errors(residual_per_atom: np.ndarray) -> dict:
    meV = 1e3 * residual_per_atom
    return {
        "n": int(meV.size),
        "mae": float(np.mean(np.abs(meV))),
        "rmse": float(np.sqrt(np.mean(meV**2))),
    }


def baselines(frames) -> dict:
    """Fit both baselines on the training split; errors in meV/atom per split and recipe."""
    counts = np.array([[a.get_chemical_symbols().count(s) for s in SPECIES] for a in frames])
    n_atoms = counts.sum(axis=1)
    energy = np.array([a.get_potential_energy() for a in frames])
    tersoff = np.array([a.info["tersoff_energy"] for a in frames])
    split = np.array([a.info.get("split", "") for a in frames])
    recipe = np.array([a.info.get("recipe", "") for a in frames])
    train = split == "train"
    out = {}
    for name, design in (
        ("composition", counts.astype(float)),
        ("composition + Tersoff", np.c_[counts, tersoff]),
    ):
        coef, *_ = np.linalg.lstsq(design[train], energy[train], rcond=None)
        residual = (energy - design @ coef) / n_atoms
        out[name] = {
            "coefficients": dict(zip([*SPECIES, "tersoff"], coef.tolist(), strict=False)),
            "splits": {s: _errors(residual[split == s]) for s in SPLITS if np.any(split == s)},
            "recipes": {r: _errors(residual[recipe == r]) for r in sorted(set(recipe))},
        }
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/sheets-gfn1")
    args = parser.parse_args(argv)
    frames = read_dataset_dir(args.data)
    missing = [a.info.get("id") for a in frames if "tersoff_energy" not in a.info]
    if missing:
        raise SystemExit(
            f"{len(missing)} structures lack info['tersoff_energy'], e.g. {missing[0]}"
        )
    result = {
        "command": " ".join(["python", *sys.argv]),
        "data": args.data,
        "n_structures": len(frames),
        "unit": "meV/atom",
        **baselines(frames),
    }
    RESULTS.mkdir(exist_ok=True)
    _io.atomic_write_text(RESULTS / "tersoff_baseline.json", json.dumps(result, indent=1) + "\n")
    print(f"{len(frames)} structures; per-atom MAE / RMSE (meV/atom), fitted on train")
    print("| baseline | " + " | ".join(SPLITS) + " |")
    print("| --- |" + " ---: |" * len(SPLITS))
    for name in ("composition", "composition + Tersoff"):
        cells = [
            f"{m['mae']:.1f} / {m['rmse']:.1f}" if (m := result[name]["splits"].get(s)) else "–"
            for s in SPLITS
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
