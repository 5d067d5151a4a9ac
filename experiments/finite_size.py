"""Finite-size behaviour of Γ-point GFN1-xTB (tblite) for pristine graphene and hBN.

Energy per atom of rectangular nx × ny cells of the 4-atom (a, √3 a) cell, zigzag along x,
so that the rule for training cells can be stated from measurement: graphene cells need
nx not divisible by 3 (else the Dirac point K is sampled) and enough atoms.

    python experiments/finite_size.py                  # full table (~1 h on one busy core)
    python experiments/finite_size.py --max-atoms 200  # small cells only

Writes experiments/results/finite_size.json after every cell (a rerun skips measured
cells) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from ednn._io import atomic_write_text
from ednn.data.engines import TBLiteEngine
from ednn.structures import build_sheet

CELLS = [
    (4, 2),
    (2, 4),
    (5, 4),
    (6, 4),
    (4, 6),
    (7, 5),
    (8, 5),
    (5, 8),
    (10, 6),
    (6, 10),
    (11, 6),
    (12, 7),
    (7, 12),
    (13, 8),
    (16, 10),
    (10, 16),
]


def _save(path: Path, engine: TBLiteEngine, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"engine": engine.provenance(), "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-atoms", type=int, default=10**9, help="skip larger cells")
    parser.add_argument("--out", default="experiments/results/finite_size.json")
    args = parser.parse_args()
    engine = TBLiteEngine()
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    done = {(r["material"], r["nx"], r["ny"]) for r in rows}
    for material in ("graphene", "hbn"):
        for nx, ny in CELLS:
            n = 4 * nx * ny
            skip = n > args.max_atoms or (material == "hbn" and n > 300)
            if skip or (material, nx, ny) in done:
                continue
            atoms, _ = build_sheet(np.random.default_rng(0), material, nx, ny)
            start = time.perf_counter()
            energy = engine.energy(atoms)
            rows.append(
                {
                    "material": material,
                    "nx": nx,
                    "ny": ny,
                    "n_atoms": n,
                    "energy_per_atom_eV": energy / n,
                    "time_s": time.perf_counter() - start,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            _save(out, engine, rows)
    for material in ("graphene", "hbn"):
        sub = [r for r in rows if r["material"] == material]
        best = min(sub, key=lambda r: -r["n_atoms"] + 1e9 * (r["nx"] % 3 == 0))
        for r in sub:
            r["error_meV_vs_largest"] = 1000 * (
                r["energy_per_atom_eV"] - best["energy_per_atom_eV"]
            )
    _save(out, engine, rows)
    print(
        "\n| material | nx × ny | atoms | E/atom (eV) | vs largest nx∤3 cell (meV/atom) | time (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['material']} | {r['nx']} × {r['ny']} | {r['n_atoms']} | "
            f"{r['energy_per_atom_eV']:.5f} | {r['error_meV_vs_largest']:+.2f} | {r['time_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
