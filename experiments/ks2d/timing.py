"""Wall time per sample of the 2D Kohn–Sham solver, by grid, electron count and functional.

Random harmonic wells (the dataset defaults: ω in [0.3, 1.0] Ha, centre within ±2 bohr,
24 bohr box, Fermi smearing kT = 0.01 Ha), seeds 0..S-1, N = 2, 4, 6, 8, LDA / GGA /
hybrid, on 64² and 96² grids, one thread (as ``ednn.ks2d.solve`` sets). Writes ``timing.json`` and ``timing.png`` next
to this script (or in ``--out``) and prints a Markdown table.

    python experiments/ks2d/timing.py [--grids 64 96] [--samples 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ednn.ks2d import Grid, KSFailure, random_harmonic, solve

FUNCTIONALS = ("lda", "gga", "hybrid")
ELECTRONS = (2, 4, 6, 8)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--box", type=float, default=24.0)
    parser.add_argument("--smearing", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    rows = []
    for n in args.grids:
        grid = Grid(n, args.box)
        for functional in FUNCTIONALS:
            for n_electrons in ELECTRONS:
                seconds, iterations, failures = [], [], 0
                for seed in range(args.samples):
                    v_ext, _ = random_harmonic(grid, seed)
                    start = time.perf_counter()
                    try:
                        result = solve(v_ext, n_electrons, grid, functional, smearing=args.smearing)
                    except KSFailure:
                        failures += 1
                        continue
                    seconds.append(time.perf_counter() - start)
                    iterations.append(result.iterations)
                row = {
                    "n": n,
                    "functional": functional,
                    "n_electrons": n_electrons,
                    "seconds": seconds,
                    "iterations": iterations,
                    "failures": failures,
                }
                rows.append(row)
                print(f"{n:4d} {functional:7s} N={n_electrons} "
                      f"{np.mean(seconds):6.2f} s  iters {np.mean(iterations):5.1f}  "
                      f"failures {failures}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timing.json").write_text(json.dumps({"box": args.box, "rows": rows}, indent=1))

    print("\n| grid | functional | " + " | ".join(f"N={e}" for e in ELECTRONS) + " |")
    print("|---|---|" + "---|" * len(ELECTRONS))
    for n in args.grids:
        for functional in FUNCTIONALS:
            cells = []
            for e in ELECTRONS:
                (row,) = [
                    r
                    for r in rows
                    if (r["n"], r["functional"], r["n_electrons"]) == (n, functional, e)
                ]
                cells.append(
                    f"{np.mean(row['seconds']):.2f} s ({np.mean(row['iterations']):.0f} it)"
                )
            print(f"| {n}² | {functional} | " + " | ".join(cells) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in args.grids:
        for functional in FUNCTIONALS:
            means = [
                np.mean(r["seconds"]) for r in rows if r["n"] == n and r["functional"] == functional
            ]
            ax.plot(ELECTRONS, means, "o-", label=f"{n}², {functional}")
    ax.set_xlabel("electrons N")
    ax.set_ylabel("seconds per sample")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "timing.png", dpi=120)
    return {"box": args.box, "rows": rows}


if __name__ == "__main__":
    main()
