"""Wall time and peak memory against sheet size: EDNN (tiled, fused) vs GFN1-xTB vs Tersoff.

Each point runs in its own subprocess on a rippled graphene sheet of about N atoms, so that
its peak resident memory (VmHWM, reset after the sheet is built, so it is the evaluation's
own peak plus the process baseline) is measured cleanly:

* ``ednn-fused``: :func:`ednn.stream.evaluate_sheet` with the fused tile network
  (the default architecture, ``ednn.fused.DEFAULT_ARCHITECTURE``; random weights unless
  ``--model`` gives a trained ``.keras`` file; speed does not depend on the weights);
* ``ednn-tiles``: the same streaming evaluation tile by tile (plain tiling, 256 tiles a call);
* ``tblite``: GFN1-xTB single point (:class:`ednn.data.engines.TBLiteEngine`, one thread);
* ``tersoff``: LAMMPS Tersoff single point (:class:`ednn.data.engines.TersoffEngine`).

Times exclude building the sheet and importing; EDNN times include local heights,
rasterization and the network (after one warm-up call on a small sheet, which traces the
network).  With ``--repeats K`` a point that took under ``--repeat-below`` seconds is timed
K times in its process: ``seconds`` is then the best (warm) time and ``seconds_first`` the
first call's, which includes one-off costs of a new image size (oneDNN primitives for the
new shape).  Scaling exponents ``t ~ N^a`` are fitted on the points with N >= ``--fit-from``.
The exact-extensivity check evaluates ``n x n`` repeats of a cell that is a whole number of
focus regions with :func:`ednn.stream.evaluate_repeat` and reports ``E(n) / (n^2 E(1)) - 1``.

Writes ``experiments/results/giant_sheet_benchmark.json`` and ``.png``.

Usage::

    python experiments/giant_sheet_benchmark.py --max-atoms 1e6          # moderate run
    python experiments/giant_sheet_benchmark.py --max-atoms 1e7 --model ednn/models/default.keras
    python experiments/giant_sheet_benchmark.py --max-atoms 1e4 --methods ednn-fused tersoff
    python experiments/giant_sheet_benchmark.py --methods --extensivity 1 2 4 8 16 32 --update
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000]
SIZES += [10_000_000, 30_000_000, 100_000_000]
METHODS = ("ednn-fused", "ednn-tiles", "tblite", "tersoff")
# Largest default size per method this session (CPU is shared); raise with --method-max.
DEFAULT_METHOD_MAX = {
    "ednn-fused": 10**8,
    "ednn-tiles": 10**6,
    "tblite": 1_000,
    "tersoff": 10**7,
}


# --- child side --------------------------------------------------------------------------------


def rippled_graphene(n_atoms: int, seed: int = 0):
    """The benchmark sheet: about ``n_atoms`` atoms of graphene, rippled (Å)."""
    from ednn.structures import rippled_graphene as build

    return build(n_atoms, amplitude=0.3, waves=2, seed=seed)


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def build_model(path: str | None, evaluation: str):
    from ednn import raster
    from ednn.fused import DEFAULT_ARCHITECTURE as arch
    from ednn.model import EDNN, build_ednn, load_ednn

    if path:
        model = load_ednn(path)
        return EDNN.from_config({**model.get_config(), "evaluation": evaluation}), model
    spec = raster.RasterSpec(**arch["raster"], multiple_of=arch["focus"])
    import keras

    keras.utils.set_random_seed(0)
    model = build_ednn(
        arch["focus"],
        arch["context"],
        spec.n_channels,
        metadata={"raster": spec.to_dict()},
        evaluation=evaluation,
        **arch["tile_network"],
    )
    return model, None


def run_child(
    method: str, n_atoms: int, model_path: str | None, repeats: int = 1, repeat_below: float = 0
) -> dict:
    row: dict = {"method": method}
    if method.startswith("ednn"):
        from ednn.stream import evaluate_sheet

        evaluation = "fused" if method == "ednn-fused" else "tiles"
        model, trained = build_model(model_path, evaluation)
        if trained is not None:
            model.set_weights(trained.get_weights())
        start = time.perf_counter()
        evaluate_sheet(model, rippled_graphene(2_000), evaluation=evaluation)
        row["seconds_warmup"] = time.perf_counter() - start

        def run(atoms):
            result = evaluate_sheet(model, atoms, evaluation=evaluation)
            row["stages"] = {k: v for k, v in result.timings.items() if k != "path"}
            return result.energy_eV
    elif method == "tblite":
        from ednn.data.engines import TBLiteEngine

        run = TBLiteEngine().energy
    elif method == "tersoff":
        from ednn.data.engines import TersoffEngine

        run = TersoffEngine().energy
    else:
        raise SystemExit(f"unknown method {method!r}")
    atoms = rippled_graphene(n_atoms)
    row["n_atoms"] = len(atoms)
    row["baseline_rss_mb"] = _rss_mb("VmRSS")
    row["peak_reset"] = _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    energy = run(atoms)
    row["seconds"] = time.perf_counter() - start
    row["cpu_seconds"] = time.process_time() - cpu
    row["peak_rss_mb"] = _rss_mb("VmHWM")
    if repeats > 1 and row["seconds"] < repeat_below:
        times = [row["seconds"]]
        for _ in range(repeats - 1):
            start = time.perf_counter()
            run(atoms)
            times.append(time.perf_counter() - start)
        row.update(seconds_first=times[0], seconds=min(times), repeats=len(times))
    row["energy_eV"] = float(energy)
    return row


def _commensurate_count(length: float, region: float, tolerance: float = 0.015) -> int:
    """Fewest repeats of ``length`` (Å) within ``tolerance`` regions of a whole number of them.

    With 0.015 the n x n repeat keeps n times the cell's grid for n up to 32.
    """
    for count in range(1, 200):
        regions = count * length / region
        if round(regions) >= 1 and abs(regions - round(regions)) <= tolerance:
            return count
    raise ValueError(f"no repeat of {length} Å up to 200 fits regions of {region} Å")


def run_extensivity(repeats: list[int], model_path: str | None) -> dict:
    """E(n x n repeat) / (n^2 E(cell)) - 1 for a cell of whole focus regions."""
    from ase.build import graphene

    from ednn import cells
    from ednn.raster import grid_for_cell
    from ednn.stream import evaluate_repeat, evaluate_sheet, model_raster_spec

    model, trained = build_model(model_path, "auto")
    if trained is not None:
        model.set_weights(trained.get_weights())
    # A rectangular graphene cell within 0.015 of a whole number of focus regions along x and
    # y, so that the n x n repeat's pixel grid is n times the cell's (checked below per n).
    spec = model_raster_spec(model)
    unit = cells.to_rectangular(graphene(vacuum=10.0))
    counts = [
        _commensurate_count(unit.cell[axis, axis], spec.spacing * spec.multiple_of[1 - axis])
        for axis in (0, 1)
    ]
    cell = unit * (*counts, 1)
    cell.positions[:, 2] += np.random.default_rng(1).normal(0.0, 0.05, len(cell))
    lengths = (cell.cell[0, 0], cell.cell[1, 1])
    (cell_grid, _) = grid_for_cell(lengths, spec.spacing, spec.multiple_of)
    single = evaluate_sheet(model, cell).values
    rows = []
    for n in repeats:
        big = (lengths[0] * n, lengths[1] * n)
        (grid, _) = grid_for_cell(big, spec.spacing, spec.multiple_of)
        start = time.perf_counter()
        result = evaluate_repeat(model, cell, n, n)
        explicit = evaluate_sheet(model, cell.repeat((n, n, 1))).values if n <= 4 else None
        rows.append(
            {
                "n": n,
                "n_atoms": result.n_atoms,
                "grid_is_n_times_cell_grid": list(grid) == [n * g for g in cell_grid],
                "energy_eV": float(result.energy_eV),
                "relative_deviation_from_n2": float(result.values[0] / (n * n * single[0]) - 1),
                "explicit_repeat_relative_difference": None
                if explicit is None
                else float(explicit[0] / result.values[0] - 1),
                "seconds": time.perf_counter() - start,
            }
        )
    return {"cell_atoms": len(cell), "cell_energy_eV": float(single[0]), "repeats": rows}


# --- parent side -------------------------------------------------------------------------------


def measure(
    method: str, n_atoms: int, model: str | None, timeout: float, repeats: tuple[int, float]
) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS="1") if method == "tblite" else dict(os.environ)
    command = [sys.executable, __file__, "--child", method, "--n-atoms", str(n_atoms)]
    command += ["--repeats", str(repeats[0]), "--repeat-below", str(repeats[1])]
    if model:
        command += ["--model", model]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "n_target": n_atoms, "timed_out": True, "seconds": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout)[-1500:]
        print(f"  {method} N={n_atoms}: failed (rc {done.returncode})\n{tail}", flush=True)
        return None
    row = json.loads(lines[-1][len("RESULT ") :])
    row["process_seconds"] = time.perf_counter() - start
    return row


def _projected_seconds(rows: list[dict], n_atoms: int) -> float:
    # Extrapolate from the last two points with their local exponent (at least 1).
    done = [r for r in rows if r.get("seconds") and not r.get("timed_out")]
    if len(done) < 2:
        return 0.0
    (a, b) = done[-2:]
    slope = max(1.0, math.log(b["seconds"] / a["seconds"]) / math.log(b["n_atoms"] / a["n_atoms"]))
    return b["seconds"] * (n_atoms / b["n_atoms"]) ** slope


def fit_exponent(rows: list[dict], key: str, fit_from: int) -> dict | None:
    points = [(r["n_atoms"], r[key]) for r in rows if r["n_atoms"] >= fit_from and r.get(key)]
    if len(points) < 2:
        points = [(r["n_atoms"], r[key]) for r in rows if r.get(key)]
    if len(points) < 2:
        return None
    x, y = np.log10([p[0] for p in points]), np.log10([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    return {"exponent": float(slope), "log10_prefactor": float(intercept), "points": len(points)}


def plot(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for method, rows in result["methods"].items():
        rows = [r for r in rows if r.get("seconds") and not r.get("timed_out")]
        if not rows:
            continue
        n = [r["n_atoms"] for r in rows]
        fit = result["fits"][method]["seconds"]
        label = method + (f" (N^{fit['exponent']:.2f})" if fit else "")
        axes[0].loglog(n, [r["seconds"] for r in rows], "o-", label=label)
        above = [max(r["peak_rss_mb"] - r["baseline_rss_mb"], 1.0) for r in rows]
        axes[1].loglog(n, above, "o-", label=method)
    axes[0].set_ylabel("wall time (s)")
    axes[1].set_ylabel("peak memory above baseline (MB)\n(baseline: imports + the structure)")
    for ax in axes:
        ax.set_xlabel("atoms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    figure.savefig(tmp, format="png", dpi=120)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are shared
    os.replace(tmp, path)


def write_json_atomically(data: object, path: Path) -> None:
    from ednn._io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-atoms", type=float, default=1e6)
    parser.add_argument(
        "--sizes",
        type=lambda text: int(float(text)),
        nargs="+",
        default=None,
        help="atom counts to run instead of the 10^2..10^8 ladder, e.g. 3.52e7",
    )
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the results in --output of methods (and checks) not run this time",
    )
    parser.add_argument(
        "--method-max",
        nargs="+",
        default=[],
        metavar="METHOD=N",
        help="per-method largest size, e.g. tblite=3000 ednn-tiles=1e7",
    )
    parser.add_argument("--model", default=None, help="trained .keras file (default: random)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds per point; a point projected to take longer is skipped",
    )
    parser.add_argument("--fit-from", type=int, default=10_000)
    parser.add_argument(
        "--repeats", type=int, default=1, help="EDNN: time short points this many times"
    )
    parser.add_argument(
        "--repeat-below", type=float, default=20.0, help="seconds: only points faster than this"
    )
    parser.add_argument(
        "--conditions",
        default="2 CPU cores shared with background jobs",
        help="how busy the machine was, for the JSON's note",
    )
    parser.add_argument("--extensivity", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    parser.add_argument("--output", default=str(RESULTS / "giant_sheet_benchmark.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-atoms", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "extensivity":
        print("RESULT " + json.dumps(run_extensivity(args.extensivity, args.model)), flush=True)
        return
    if args.child:
        row = run_child(args.child, args.n_atoms, args.model, args.repeats, args.repeat_below)
        print("RESULT " + json.dumps(row), flush=True)
        return

    limits = dict(DEFAULT_METHOD_MAX)
    for item in args.method_max:
        name, _, value = item.partition("=")
        limits[name] = float(value)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(output.read_text()) if args.update and output.exists() else {}
    result: dict = {
        "description": "wall time and peak RSS per single-point evaluation of rippled graphene",
        "note": f"{args.conditions}; tblite single thread; EDNN random weights unless `model` "
        "is set; peak RSS is VmHWM reset after the sheet was built (process baseline "
        "included, see baseline_rss_mb)",
        "model": args.model or "DEFAULT_ARCHITECTURE, random weights",
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": list(os.getloadavg()),
        },
        "methods": dict(previous.get("methods", {})),
        "fits": dict(previous.get("fits", {})),
    }
    if "extensivity" in previous:
        result["extensivity"] = previous["extensivity"]
    for method in args.methods:
        rows = []
        for n_atoms in args.sizes or SIZES:
            if n_atoms > min(args.max_atoms, limits.get(method, math.inf)):
                break
            projected = _projected_seconds(rows, n_atoms)
            if projected > args.timeout:
                print(
                    f"{method:>11} N~{n_atoms:>10,d}: skipped, projected {projected:.0f} s "
                    f"> --timeout {args.timeout:.0f} s"
                )
                rows.append({"method": method, "n_target": n_atoms, "skipped": True,
                             "projected_seconds": projected})  # fmt: skip
                break
            repeats = (args.repeats, args.repeat_below) if method.startswith("ednn") else (1, 0)
            row = measure(method, n_atoms, args.model, args.timeout, repeats)
            if row is None:
                break
            rows.append(row)
            if row.get("timed_out"):
                print(f"{method:>11} N~{n_atoms:>10,d}: timed out after {args.timeout:.0f} s")
                break
            print(
                f"{method:>11} N={row['n_atoms']:>10,d}  {row['seconds']:9.2f} s  "
                f"{row['n_atoms'] / row['seconds']:>11,.0f} atoms/s  "
                f"peak {row['peak_rss_mb']:8.0f} MB  (baseline {row['baseline_rss_mb']:.0f} MB)  "
                f"E={row['energy_eV']:.6g} eV",
                flush=True,
            )
            result["methods"][method] = rows
            write_json_atomically(result, output)
        done = [r for r in rows if r.get("seconds") and not r.get("timed_out")]
        result["methods"][method] = rows
        result["fits"][method] = {
            "seconds": fit_exponent(done, "seconds", args.fit_from),
            "peak_rss_mb": fit_exponent(done, "peak_rss_mb", args.fit_from),
        }
        print(f"{method:>11} fit: {result['fits'][method]}", flush=True)
    if args.extensivity:
        command = [sys.executable, __file__, "--child", "extensivity", "--extensivity"]
        command += [str(n) for n in args.extensivity]
        if args.model:
            command += ["--model", args.model]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if lines:
            result["extensivity"] = json.loads(lines[-1][len("RESULT ") :])
            for row in result["extensivity"]["repeats"]:
                print(
                    f"extensivity n={row['n']:>3} N={row['n_atoms']:>9,d}  "
                    f"E/(n^2 E1) - 1 = {row['relative_deviation_from_n2']:+.2e}"
                )
        else:
            print("extensivity check failed:\n" + done.stderr[-1500:])
    result["machine"]["load_average_end"] = list(os.getloadavg())
    write_json_atomically(result, output)
    plot(result, output.with_suffix(".png"))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
