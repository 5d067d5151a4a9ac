"""Total energy of the 2D Kohn–Sham solver against grid spacing, at a fixed box.

For a few fixed systems (harmonic and random-blob wells, N = 2 and 6, LDA / GGA / hybrid),
solves on 48², 64², 96² and 128² grids over a 24 bohr box and reports E_total (Hartree)
and its change against the finest grid. Potentials are closed-form functions of position,
so every grid sees the same system.

Writes ``grid_convergence.json`` and ``grid_convergence.png`` next to this script (or in
``--out``) and prints a Markdown table (the one in docs/ks2d.md).

    python experiments/ks2d/grid_convergence.py [--grids 48 64 96 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ednn.ks2d import Grid, KSFailure, harmonic_potential, potential_from_params, solve
from ednn.ks2d.potentials import random_blobs

BOX = 24.0
SYSTEMS = [
    {"label": "SHO ω=(0.6, 0.45), N=2", "potential": "sho", "n_electrons": 2},
    {"label": "SHO ω=(0.6, 0.45), N=6", "potential": "sho", "n_electrons": 6},
    {"label": "blobs seed 0, N=4", "potential": "blobs", "n_electrons": 4},
]
FUNCTIONALS = ("lda", "gga", "hybrid")


def potential(kind: str, grid: Grid) -> np.ndarray:
    if kind == "sho":
        return harmonic_potential(grid, (0.6, 0.45), (0.3, -0.2))
    _, params = random_blobs(Grid(32, BOX), 0)
    return potential_from_params(grid, params)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[48, 64, 96, 128])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    rows = []
    for system in SYSTEMS:
        for functional in FUNCTIONALS:
            energies, times = [], []
            for n in args.grids:
                grid = Grid(n, BOX)
                start = time.perf_counter()
                try:
                    result = solve(
                        potential(system["potential"], grid),
                        system["n_electrons"],
                        grid,
                        functional,
                    )
                    energies.append(result.e_total)
                except KSFailure as error:  # reported in the table as "n.c."
                    print(f"  {n}²: {type(error).__name__}: {error}")
                    energies.append(None)
                times.append(time.perf_counter() - start)
            rows.append({**system, "functional": functional, "grids": args.grids,
                         "h": [BOX / n for n in args.grids], "e_total": energies,
                         "seconds": times})  # fmt: skip
            print(f"{system['label']:28s} {functional:7s}", " ".join(f"{e}" for e in energies))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grid_convergence.json").write_text(
        json.dumps({"box": BOX, "rows": rows}, indent=1)
    )

    header = " | ".join(f"{n}² (h={BOX / n:.3f})" for n in args.grids)
    print(f"\n| system | functional | {header} |")
    print("|---|---|" + "---|" * len(args.grids))
    for row in rows:
        finest = row["e_total"][-1]
        cells = [
            "n.c." if e is None or finest is None else f"{e - finest:+.1e}"
            for e in row["e_total"][:-1]
        ] + [f"**{finest:.8f}**" if finest is not None else "n.c."]
        print(f"| {row['label']} | {row['functional']} | " + " | ".join(cells) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row["e_total"][-1] is None:
            continue
        diffs = np.abs(np.array(row["e_total"][:-1], dtype=float) - row["e_total"][-1])
        ax.loglog(row["h"][:-1], np.maximum(diffs, 1e-12), "o-",
                  label=f"{row['label']}, {row['functional']}")  # fmt: skip
    ax.set_xlabel("grid spacing h (bohr)")
    ax.set_ylabel(f"|E(h) - E({args.grids[-1]}²)| (Ha)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.out / "grid_convergence.png", dpi=120)
    return {"box": BOX, "rows": rows}


if __name__ == "__main__":
    main()
