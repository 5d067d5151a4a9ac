"""Time of one GFN1-xTB label against size, with tblite's reference BLAS and with OpenBLAS.

The data card's label times were taken while other jobs shared the cores; this script
times labels on a quiet machine (pause other jobs first: ``kill -STOP PID``) and checks
that they reproduce: it relabels a seeded pick of the dataset's structures with the
engine settings stored in the dataset's ``config.yaml`` (one thread, as the generator's
workers) and compares with the stored energies. It labels the same structures twice, in
two fresh processes: with the reference BLAS/LAPACK bundled in tblite's wheel
(``EDNN_OPENBLAS=off``) and with OpenBLAS swapped in (:mod:`ednn.data.blas`).

    python experiments/label_time.py [--data data/sheets-gfn1] [--per-size 2]

Writes ``experiments/results/label_time.json`` (atoms, seconds per BLAS, stored and
recomputed energies) and ``label_time.png``, and prints a table, the speed-up and the fit
``t = c N^p``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from ednn._io import atomic_savefig, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (160, 200, 240, 280)  # atoms, each +- 8
MODES = {"reference": "off", "openblas": None}  # EDNN_OPENBLAS per mode


def pick(data: Path, per_size: int, seed: int) -> list[str]:
    """Seeded ids: ``per_size`` structures within 8 atoms of each of :data:`SIZES`."""
    from ednn.data.generate import read_shards

    frames = read_shards(data)
    sizes = np.array([len(a) for a in frames])
    rng = np.random.default_rng(seed)
    ids = []
    for target in SIZES:
        candidates = np.flatnonzero(np.abs(sizes - target) <= 8)
        chosen = rng.choice(candidates, min(per_size, len(candidates)), replace=False)
        ids.extend(str(frames[int(i)].info["id"]) for i in chosen)
    return ids


def label(data: Path, ids: list[str]) -> dict:
    """Label ``ids`` in this process; the BLAS is whatever this process loaded."""
    from ednn.data import blas
    from ednn.data.engines import TBLiteEngine
    from ednn.data.generate import load_config, read_shards

    config = load_config(data / "config.yaml")
    engine = TBLiteEngine(**{k: v for k, v in config["engine"].items() if k != "name"})
    frames = {str(a.info["id"]): a for a in read_shards(data)}
    rows = []
    for structure in ids:
        atoms = frames[structure]
        start = time.perf_counter()
        energy = engine.energy(atoms)
        rows.append(
            {
                "id": structure,
                "n_atoms": len(atoms),
                "seconds": time.perf_counter() - start,
                "stored_eV": float(atoms.get_potential_energy()),
                "recomputed_eV": energy,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"openblas": blas._LOADED.get("path"), "engine": engine.provenance(), "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sheets-gfn1"))
    parser.add_argument("--per-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs="+", metavar="ID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # a child process: label and report on stdout
        print(json.dumps(label(args.data, args.worker)))
        return {}
    ids = pick(args.data, args.per_size, args.seed)
    runs = {}
    for mode, setting in MODES.items():
        env = {k: v for k, v in os.environ.items() if k != "EDNN_OPENBLAS"}
        if setting is not None:
            env["EDNN_OPENBLAS"] = setting
        command = [sys.executable, __file__, "--data", str(args.data), "--worker", *ids]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"the {mode} labelling failed:\n{done.stderr[-3000:]}")
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    if runs["openblas"]["openblas"] is None:
        raise SystemExit("no OpenBLAS was loaded (install cmeel-openblas or set EDNN_OPENBLAS)")
    rows = []
    for ref, fast in zip(runs["reference"]["rows"], runs["openblas"]["rows"], strict=True):
        n = ref["n_atoms"]
        rows.append(
            {
                "id": ref["id"],
                "n_atoms": n,
                "seconds_reference_blas": ref["seconds"],
                "seconds_openblas": fast["seconds"],
                "speedup": ref["seconds"] / fast["seconds"],
                "stored_eV": ref["stored_eV"],
                "difference_meV_per_atom": {
                    mode: 1e3 * (run["recomputed_eV"] - ref["stored_eV"]) / n
                    for mode, run in (("reference", ref), ("openblas", fast))
                },
            }
        )
    n = np.array([r["n_atoms"] for r in rows], float)
    fits = {}
    for mode in ("reference_blas", "openblas"):
        t = np.array([r[f"seconds_{mode}"] for r in rows])
        power, log_c = np.polyfit(np.log(n), np.log(t), 1)
        fits[mode] = {"power": float(power), "log_c": float(log_c)}
        fits[mode]["seconds_at_200_atoms"] = float(np.exp(log_c) * 200**power)
    total = {m: sum(r[f"seconds_{m}"] for r in rows) for m in ("reference_blas", "openblas")}
    result = {
        "description": __doc__.splitlines()[0],
        "engine": runs["openblas"]["engine"],
        "openblas": runs["openblas"]["openblas"],
        "threads": os.environ["OMP_NUM_THREADS"],
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "fit": fits,
        "speedup_total": total["reference_blas"] / total["openblas"],
        "max_abs_difference_meV_per_atom": float(
            max(abs(v) for r in rows for v in r["difference_meV_per_atom"].values())
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "label_time.json", json.dumps(result, indent=1) + "\n")
    print("| atoms | reference BLAS (s) | OpenBLAS (s) | speed-up |\n| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['n_atoms']} | {r['seconds_reference_blas']:.1f} | {r['seconds_openblas']:.1f} "
            f"| {r['speedup']:.2f} |"
        )
    print(
        f"total speed-up {result['speedup_total']:.2f}; OpenBLAS t ∝ N^"
        f"{fits['openblas']['power']:.2f}, {fits['openblas']['seconds_at_200_atoms']:.1f} s at "
        f"200 atoms; labels reproduce to {result['max_abs_difference_meV_per_atom']:.1e} meV/atom"
    )
    _plot(rows, fits, RESULTS / "label_time.png")
    return result


def _plot(rows: list[dict], fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n_atoms"] for r in rows], float)
    grid = np.linspace(n.min(), n.max(), 50)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for mode, label in (
        ("reference_blas", "tblite wheel's reference BLAS"),
        ("openblas", "OpenBLAS"),
    ):
        t = [r[f"seconds_{mode}"] for r in rows]
        (line,) = ax.plot(n, t, "o", label=f"{label}")
        fit = fits[mode]
        ax.plot(grid, np.exp(fit["log_c"]) * grid ** fit["power"], "--", lw=0.8,
                color=line.get_color(), label=f"fit N^{fit['power']:.2f}")  # fmt: skip
    ax.set_xlabel("atoms")
    ax.set_ylabel("seconds per GFN1-xTB label (one thread)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)


if __name__ == "__main__":
    main()
