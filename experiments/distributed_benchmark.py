"""Scaling of Horovod runs: training throughput and giant-sheet evaluation, 1 vs K processes.

Each process is pinned to one core (``os.sched_setaffinity`` to core ``local_rank``) with one
TensorFlow thread, so that K processes use K cores and the comparison is one of processes,
not of thread pools.  Two measurements, each with 1 process (plain ``python``) and with K
processes (``horovodrun --gloo -np K -H localhost:K``):

* training: ``ednn.train.train`` on synthetic labelled sheets (C|BN, ~100 atoms each) with the
  default architecture and a fixed *global* batch (each of K processes takes 1/K of every
  batch, so the steps are the same); structures per second of the fastest epoch, the first
  (tracing) left out;
* evaluation: ``ednn.stream.evaluate_sheet(model, sheet, backend=get_backend())`` on a
  61 440-atom hetero sheet cut into bands of ``--regions-per-band`` focus regions (256: ~50
  bands), dealt round-robin to the processes; atoms per second of the slowest rank, best of
  ``--repeats``.  Every process also lays out the whole sheet and computes all local
  heights (``timings`` ``layout`` and ``heights``, recorded for rank 0): that part does not
  shrink with K.

Scaling efficiency = throughput(K) / (K * throughput(1)).  Writes
``experiments/results/distributed_benchmark.json`` and ``distributed_benchmark.png`` and prints
a table.  Needs horovod (``bash scripts/install_horovod.sh``).  On a machine shared with other
jobs the numbers are noisy: the load average is recorded with them.

Usage::

    python experiments/distributed_benchmark.py [--processes 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve()

# --- worker side (runs under horovodrun or plain python) -----------------------------------


def _pin_and_configure() -> None:
    """One core (``local_rank``) and one TensorFlow thread per process; before TF starts."""
    local_rank = int(os.environ.get("HOROVOD_LOCAL_RANK", "0"))
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[local_rank % len(cores)]})
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _train_config(data: str, quick: bool, batch_size: int) -> dict:
    return {
        "data": {
            "path": data,
            "species": ["C", "B", "N"],
            "splits": {"source": "random", "validation": 0.0, "test": 0.0, "seed": 0},
        },
        "training": {
            "epochs": 2 if quick else 5,
            "batch_size": batch_size,
            "seed": 0,
            "workers": 1,
            "schedule": {"name": "constant"},
            "early_stopping": {"patience": 0},
        },
        "output": {"log_images": False, "log_histograms": False, "keep_checkpoints": 1},
    }


def worker_train(args) -> None:
    _pin_and_configure()
    from ednn.distributed import get_backend
    from ednn.train import train

    backend = get_backend()
    summary = train(
        _train_config(args.data, args.quick, args.batch_size),
        args.run_dir,
        overwrite=True,
        progress=False,
    )
    if backend.is_chief:
        counts = json.loads((Path(args.run_dir) / "split.json").read_text())["counts"]
        Path(args.result).write_text(
            json.dumps(
                {
                    "processes": backend.size,
                    "n_train": counts["train"],
                    "epoch_seconds": [h["time_s"] for h in summary["history"]],
                    "train_mae_meV_per_atom": [h["train"]["mae"] for h in summary["history"]],
                }
            )
        )


def worker_sheet(args) -> None:
    _pin_and_configure()
    import keras
    import numpy as np

    import ednn  # noqa: F401  (registers the model's layers)
    from ednn.distributed import get_backend
    from ednn.stream import evaluate_sheet
    from ednn.structures import build_sheet

    backend = get_backend()
    model = keras.saving.load_model(args.model, compile=False)
    atoms, _ = build_sheet(np.random.default_rng(1), "hetero", args.nx, args.ny, pattern="dot")
    runs = []
    for _ in range(args.repeats):
        backend.barrier()
        start = time.perf_counter()
        result = evaluate_sheet(
            model, atoms, backend=backend, regions_per_band=args.regions_per_band
        )
        seconds = time.perf_counter() - start
        # The wall time of a distributed evaluation is that of its slowest rank.
        times = np.zeros(backend.size)
        times[backend.rank] = seconds
        times = np.asarray(backend.allreduce_sum(times))
        slowest = float(times.max())
        runs.append(
            {
                "seconds": slowest,
                "seconds_per_rank": times.tolist(),
                "energy_eV": result.energy_eV,
                "n_bands": result.timings["n_bands"],
                "path": result.timings["path"],
                "rank0_timings_s": {
                    k: round(v, 4) for k, v in result.timings.items() if isinstance(v, float)
                },
            }
        )
    if backend.is_chief:
        Path(args.result).write_text(
            json.dumps({"processes": backend.size, "n_atoms": len(atoms), "runs": runs})
        )


# --- driver side ---------------------------------------------------------------------------


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "PMI_"))}
    env.update(OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", HOROVOD_GLOO_TIMEOUT_SECONDS="300")
    return env


def _horovodrun() -> str:
    beside = Path(sys.executable).with_name("horovodrun")
    found = str(beside) if beside.exists() else shutil.which("horovodrun")
    if found is None:
        raise SystemExit(
            "horovodrun not found: build horovod with `bash scripts/install_horovod.sh`"
        )
    return found


def _launch(processes: int, worker_args: list[str]) -> float:
    command = [sys.executable, str(HERE), *worker_args]
    if processes > 1:
        hosts = f"localhost:{processes}"
        command = [_horovodrun(), "--gloo", "-np", str(processes), "-H", hosts, *command]
    start = time.perf_counter()
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"{' '.join(command)} failed with exit code {done.returncode}")
    return time.perf_counter() - start


def make_data(path: Path, n: int) -> None:
    """``n`` C|BN sheets of ~100 atoms with synthetic energies (eV): per-species terms + noise."""
    import ase.io
    import numpy as np

    from ednn.structures import build_sheet

    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        material = ("graphene", "hbn", "hetero")[i % 3]
        atoms, _ = build_sheet(rng, material, 6, 4, defect="vacancy" if i % 4 == 0 else "none")
        symbols = atoms.get_chemical_symbols()
        atoms.info["energy"] = float(
            -9.2 * symbols.count("C")
            - 7.0 * symbols.count("B")
            - 8.1 * symbols.count("N")
            + 0.3 * rng.normal()
        )
        frames.append(atoms)
    ase.io.write(path, frames)


def _summary_row(task: str, unit: str, by_k: dict[int, float]) -> dict:
    one = by_k[1]
    return {
        "task": task,
        "unit": unit,
        "throughput": {str(k): v for k, v in by_k.items()},
        "speedup": {str(k): v / one for k, v in by_k.items()},
        "efficiency": {str(k): v / (k * one) for k, v in by_k.items()},
    }


def run(args) -> dict:
    counts = [1, args.processes]
    cores = len(os.sched_getaffinity(0))
    if args.processes > cores:
        print(f"warning: {args.processes} processes on {cores} cores", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="ednn-distributed-benchmark-"))
    n_structures = 32 if args.quick else 96
    data = work / "sheets.extxyz"
    make_data(data, n_structures)
    results: dict = {"training": {}, "evaluation": {}}
    for k in counts:
        out = work / f"train{k}.json"
        wall = _launch(
            k,
            [
                "--worker", "train", "--data", str(data), "--run-dir", str(work / f"run{k}"),
                "--result", str(out), "--batch-size", str(args.batch_size),
                *(["--quick"] if args.quick else []),
            ],
        )  # fmt: skip
        row = json.loads(out.read_text())
        # The first epoch traces the step functions; of the others the fastest is the one
        # least disturbed by other jobs (as the best of the sheet evaluations below).
        steady = row["epoch_seconds"][1:]
        row["structures_per_s"] = row["n_train"] / min(steady)
        row["wall_s"] = wall
        results["training"][k] = row
        print(f"training, {k} process(es): {row['structures_per_s']:.2f} structures/s", flush=True)
    model = work / "run1" / "model.keras"
    nx, ny = (60, 36) if args.quick else (160, 96)
    for k in counts:
        out = work / f"sheet{k}.json"
        wall = _launch(
            k,
            [
                "--worker", "sheet", "--model", str(model), "--result", str(out),
                "--nx", str(nx), "--ny", str(ny), "--repeats", str(args.repeats),
                "--regions-per-band", str(args.regions_per_band),
            ],
        )  # fmt: skip
        row = json.loads(out.read_text())
        best = min(r["seconds"] for r in row["runs"])
        row["atoms_per_s"] = row["n_atoms"] / best
        row["wall_s"] = wall
        results["evaluation"][k] = row
        print(f"evaluation, {k} process(es): {row['atoms_per_s']:.0f} atoms/s", flush=True)
    energies = [r["energy_eV"] for k in counts for r in results["evaluation"][k]["runs"]]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "description": "Horovod (Gloo) scaling: 1 vs K processes, one core and one TF thread each",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cores_available": cores,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
        },
        "settings": {
            "processes": counts,
            "global_batch_size": args.batch_size,
            "n_structures": n_structures,
            "sheet_repeats": [nx, ny],
            "regions_per_band": args.regions_per_band,
            "quick": args.quick,
        },
        "summary": [
            _summary_row(
                "training",
                "structures/s",
                {k: results["training"][k]["structures_per_s"] for k in counts},
            ),
            _summary_row(
                "sheet evaluation",
                "atoms/s",
                {k: results["evaluation"][k]["atoms_per_s"] for k in counts},
            ),
        ],
        "sheet_energy_spread_eV": max(energies) - min(energies),
        "training": {str(k): v for k, v in results["training"].items()},
        "evaluation": {str(k): v for k, v in results["evaluation"].items()},
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, row in zip(axes, report["summary"], strict=True):
        ks = [int(k) for k in row["throughput"]]
        values = list(row["throughput"].values())
        ideal = [values[0] * k for k in ks]
        ax.bar([str(k) for k in ks], values, color="tab:blue", label="measured")
        ax.plot([str(k) for k in ks], ideal, "k--", marker="o", label="linear")
        for i, k in enumerate(ks):
            label = f"{100 * row['efficiency'][str(k)]:.0f} %"
            ax.annotate(label, (i, values[i]), ha="center", va="bottom")
        ax.set_xlabel("processes (one core each)")
        ax.set_ylabel(row["unit"])
        ax.set_title(row["task"])
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="K, compared with 1")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch")
    parser.add_argument("--repeats", type=int, default=3, help="sheet evaluations per run")
    parser.add_argument("--quick", action="store_true", help="smaller data and sheet")
    parser.add_argument(
        "--regions-per-band", type=int, default=256, help="bands to deal out (evaluate_sheet)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "distributed_benchmark.json")
    # Worker options (internal).
    parser.add_argument("--worker", choices=("train", "sheet"), help=argparse.SUPPRESS)
    for name in ("--data", "--run-dir", "--result", "--model"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--nx", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ny", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "train":
        worker_train(args)
        return 0
    if args.worker == "sheet":
        worker_sheet(args)
        return 0
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    header = "".join(f"{'K=' + k:>12}" for k in report["summary"][0]["throughput"])
    print(f"\n{'task':<18}{'unit':<14}{header}")
    for row in report["summary"]:
        values = "".join(f"{v:>12.2f}" for v in row["throughput"].values())
        print(f"{row['task']:<18}{row['unit']:<14}{values}")
        effs = "".join(f"{100 * v:>11.0f}%" for v in row["efficiency"].values())
        print(f"{'  efficiency':<32}{effs}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
