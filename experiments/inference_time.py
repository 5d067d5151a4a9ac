"""Inference time per structure with the shipped default model (warm, in process).

    python experiments/inference_time.py

Times `Predictor.predict` (rasterize + network + sum) after one warm-up call, median of
repeats, for a 60-atom graphene cell (the original EDNN quoted 57 ms for one) and for the
416-atom example sheet; writes experiments/results/inference_time.json.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
from ase.build import graphene
from ase.io import read

from ednn._io import atomic_write_text
from ednn.predict import Predictor, load_model


def _median_time(predictor: Predictor, atoms, repeats: int = 7) -> float:
    predictor.predict(atoms)  # warm-up: graph tracing for this image shape
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(atoms)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    predictor = Predictor(load_model())
    cases = {
        "graphene_60_atoms_hexagonal_cell": graphene(vacuum=15.0) * (5, 6, 1),
        "example_cbn_sheet_416_atoms": read(
            str(resources.files("ednn").joinpath("examples", "cbn_sheet.extxyz"))
        ),
    }
    rows = []
    for name, atoms in cases.items():
        seconds = _median_time(predictor, atoms)
        sheet, _ = predictor.evaluation_cell(atoms)
        rows.append(
            {
                "case": name,
                "n_atoms": len(atoms),
                "evaluated_atoms": len(sheet),
                "seconds": seconds,
                "ms": 1000 * seconds,
            }
        )
        print(f"{name}: {len(atoms)} atoms (image of {len(sheet)}), {1000 * seconds:.1f} ms")
    out = Path("experiments/results/inference_time.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
