"""Time of one GFN1-xTB label against size, on structures of the shipped dataset.

The data card's label times were taken while other jobs shared the cores; this script
times labels on a quiet machine (pause other jobs first: ``kill -STOP PID``) and checks
that they reproduce: it relabels a seeded pick of the dataset's structures with the
engine settings stored in the dataset's ``config.yaml`` (one OpenMP thread, as the
generator's workers) and compares with the stored energies.

    python experiments/label_time.py [--data data/sheets-gfn1] [--per-size 2]

Writes ``experiments/results/label_time.json`` (atoms, seconds, stored and recomputed
energy) and ``label_time.png``, and prints a table and the fit ``t = c N^p``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from ednn._io import atomic_path, atomic_write_text
from ednn.data.engines import TBLiteEngine
from ednn.data.generate import load_config, read_shards

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (160, 200, 240, 280)  # atoms, each +- 8


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sheets-gfn1"))
    parser.add_argument("--per-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = load_config(args.data / "config.yaml")
    settings = {k: v for k, v in config["engine"].items() if k != "name"}
    engine = TBLiteEngine(**settings)
    frames = read_shards(args.data)
    sizes = np.array([len(a) for a in frames])
    rng = np.random.default_rng(args.seed)
    rows = []
    for target in SIZES:
        candidates = np.flatnonzero(np.abs(sizes - target) <= 8)
        for index in rng.choice(candidates, min(args.per_size, len(candidates)), replace=False):
            atoms = frames[int(index)]
            stored = float(atoms.get_potential_energy())
            start = time.perf_counter()
            energy = engine.energy(atoms)
            rows.append(
                {
                    "id": atoms.info.get("id"),
                    "n_atoms": len(atoms),
                    "seconds": time.perf_counter() - start,
                    "stored_eV": stored,
                    "recomputed_eV": energy,
                    "difference_meV_per_atom": 1e3 * (energy - stored) / len(atoms),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    n = np.array([r["n_atoms"] for r in rows], float)
    t = np.array([r["seconds"] for r in rows])
    power, log_c = np.polyfit(np.log(n), np.log(t), 1)
    result = {
        "description": __doc__.splitlines()[0],
        "engine": engine.provenance(),
        "threads": os.environ["OMP_NUM_THREADS"],
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "fit": {"power": float(power), "seconds_at_200_atoms": float(np.exp(log_c) * 200**power)},
        "max_abs_difference_meV_per_atom": float(
            max(abs(r["difference_meV_per_atom"]) for r in rows)
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "label_time.json", json.dumps(result, indent=1) + "\n")
    print("\n| atoms | seconds | stored - recomputed (meV/atom) |\n| ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['n_atoms']} | {r['seconds']:.1f} | {-r['difference_meV_per_atom']:.2g} |")
    print(
        f"t ∝ N^{power:.2f}; {result['fit']['seconds_at_200_atoms']:.1f} s at 200 atoms; "
        f"labels reproduce to {result['max_abs_difference_meV_per_atom']:.1e} meV/atom"
    )
    _plot(n, t, power, log_c, RESULTS / "label_time.png")
    return result


def _plot(n, t, power, log_c, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(n, t, "o", label="GFN1-xTB label (one thread)")
    grid = np.linspace(n.min(), n.max(), 50)
    ax.plot(grid, np.exp(log_c) * grid**power, "--", lw=0.8, label=f"fit N^{power:.2f}")
    ax.set_xlabel("atoms")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
