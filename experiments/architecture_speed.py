"""Speed of candidate EDNN architectures: atoms/s of fused giant-sheet evaluation on this CPU.

For each candidate (pixel spacing, focus/context, tile network; random weights, since speed
does not depend on their values) this evaluates one rippled graphene sheet end to end with
:func:`ednn.stream.evaluate_sheet` (local heights + band rasterization + fused network) and
reports atoms/s overall (wall clock, and per CPU-second of this process, which is steadier on
a shared machine) and per stage, the network's multiply-accumulates (MAC) per atom,
its parameter count and, on a smaller sheet, the speed of plain tiling for comparison.  The
first candidate (the proposed default, ``ednn.fused.DEFAULT_ARCHITECTURE``) is also profiled
layer by layer.  Writes ``experiments/results/architecture_speed.json`` and ``.png``.

Usage::

    python experiments/architecture_speed.py [--atoms 250000] [--repeats 2] [--only default narrow]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ednn import raster
from ednn.fused import COARSE_ARCHITECTURE, DEFAULT_ARCHITECTURE
from ednn.model import build_ednn
from ednn.stream import evaluate_sheet
from ednn.structures import rippled_graphene

RESULTS = Path(__file__).resolve().parent / "results"


def _variant(name, description, spacing=None, focus=None, context=None, base=None, **net):
    arch = copy.deepcopy(base or COARSE_ARCHITECTURE)
    if spacing is not None:
        arch["raster"]["spacing"] = spacing
    arch["focus"] = focus or arch["focus"]
    arch["context"] = context or arch["context"]
    arch["tile_network"].update(net)
    return {"name": name, "description": description, "architecture": arch}


CANDIDATES = [
    _variant(
        "default",
        "default: 0.15 Å, 16+2x32 px, 32k4s2-64k3s2-64k3s2-64k3-32k3",
        base=DEFAULT_ARCHITECTURE,
    ),
    _variant("coarse", "coarse: 0.25 Å, 8+2x20 px, 32k4s2-64k3s2-64k3-64k3-32k3"),
    _variant(
        "narrow",
        "coarse with 48 instead of 64 filters in the middle convolutions",
        focus=16,
        context=16,
        conv_layers=[[32, 4, 2, 1], [48, 3, 2, 1], [48, 3, 1, 2], [32, 3, 1, 1]],
    ),
    _variant(
        "shallow",
        "coarse with one 64k3 convolution fewer (final map 7x7), same field of view",
        focus=16,
        context=16,
        conv_layers=[[32, 4, 2, 1], [64, 3, 2, 1], [64, 3, 1, 1], [32, 3, 1, 1]],
    ),
    _variant(
        "coarse-0.333",
        "1/3 Å pixels: 12+2x12 px tiles (same 4 Å focus and context)",
        spacing=1 / 3,
        focus=12,
        context=12,
    ),
    _variant(
        "fine-0.2",
        "0.2 Å pixels: 20+2x20 px tiles (same 4 Å focus and context), final map 8x8",
        spacing=0.2,
        focus=20,
        context=20,
    ),
    _variant(
        "small-dense",
        "coarse convolutions, Dense 128 -> 32 head",
        focus=16,
        context=16,
        dense_units=[128, 32],
    ),
]


def build(architecture: dict, evaluation: str = "auto"):
    spec = raster.RasterSpec(**architecture["raster"], multiple_of=architecture["focus"])
    keras.utils.set_random_seed(0)
    return build_ednn(
        architecture["focus"],
        architecture["context"],
        spec.n_channels,
        metadata={"raster": spec.to_dict()},
        boundary=architecture["boundary"],
        evaluation=evaluation,
        **architecture["tile_network"],
    )


def macs_per_region(model) -> list[dict]:
    """Multiply-accumulates of each step of the fused pass per focus region."""
    fused = model.fused_network
    (f0, f1) = fused.focus
    stride = (1, 1)
    rows = []
    for step in fused._steps:
        layer = step[1]
        if isinstance(layer, keras.layers.Conv2D):
            stride = tuple(s * t for s, t in zip(stride, layer.strides, strict=True))
            pixels = (f0 // stride[0]) * (f1 // stride[1])
            (kh, kw, cin, cout) = layer.kernel.shape
            macs = pixels * kh * kw * cin * cout
        elif step[0] == "dense":
            macs = math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            macs = math.prod(layer.kernel.shape)
        else:
            continue
        rows.append({"layer": layer.name, "macs_per_region": int(macs)})
    return rows


def profile_layers(model, n_atoms: int, repeats: int) -> list[dict]:
    """Seconds per fused step on one band of a sheet of about n_atoms atoms."""
    fused = model.fused_network
    spec = raster.RasterSpec.from_dict(model.metadata["raster"])
    sheet = rippled_graphene(n_atoms)
    image = raster.rasterize(sheet, spec)
    from ednn.fused import pad_context

    x = pad_context(image[None], fused.context, fused.boundary)
    rows = []
    for step in fused._steps:
        sub = copy.copy(fused)
        sub._steps = [step]
        run = tf.function(sub.on_padded)
        y = run(x)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            y = run(x)
            _ = y.numpy()
            best = min(best, time.perf_counter() - start)
        rows.append({"layer": step[1].name, "seconds": best, "output_shape": list(y.shape)})
        x = y
    total = sum(row["seconds"] for row in rows)
    for row in rows:
        row["fraction"] = row["seconds"] / total
    return rows


def time_candidate(candidate: dict, sheet, small, repeats: int) -> dict:
    arch = candidate["architecture"]
    model = build(arch)
    if model.fused_network is None:
        raise SystemExit(f"candidate {candidate['name']} does not fuse")
    evaluate_sheet(model, small)  # trace the network once
    best, cpu_seconds = None, math.inf
    for _ in range(repeats):
        cpu = time.process_time()
        result = evaluate_sheet(model, sheet)
        cpu_seconds = min(cpu_seconds, time.process_time() - cpu)
        if best is None or result.timings["total"] < best.timings["total"]:
            best = result
    timings = {k: v for k, v in best.timings.items() if isinstance(v, float)}
    tiled = build(arch, evaluation="tiles")
    evaluate_sheet(tiled, small, evaluation="tiles")
    tiles_run = evaluate_sheet(tiled, small, evaluation="tiles")
    fused_small = evaluate_sheet(model, small)
    macs = macs_per_region(model)
    spacing = arch["raster"]["spacing"]
    atoms_per_region = len(sheet) / (
        (sheet.cell[0, 0] * sheet.cell[1, 1]) / (arch["focus"] * spacing) ** 2
    )
    return {
        "name": candidate["name"],
        "description": candidate["description"],
        "architecture": arch,
        "n_atoms": best.n_atoms,
        "parameters": int(model.tile_network.count_params()),
        "macs_per_atom": sum(row["macs_per_region"] for row in macs) / atoms_per_region,
        "macs_per_layer": macs,
        "seconds": timings,
        "atoms_per_second": best.n_atoms / timings["total"],
        "cpu_seconds": cpu_seconds,
        "atoms_per_cpu_second": best.n_atoms / cpu_seconds,
        "network_atoms_per_second": best.n_atoms / timings["network"],
        "raster_atoms_per_second": best.n_atoms / (timings["raster"] + timings["select"]),
        "tiled_network_atoms_per_second_small": tiles_run.n_atoms / tiles_run.timings["network"],
        "fused_network_atoms_per_second_small": fused_small.n_atoms
        / fused_small.timings["network"],
        "fused_speedup_over_tiles": tiles_run.timings["network"] / fused_small.timings["network"],
    }


def write_json_atomically(data: object, path: Path) -> None:
    from ednn._io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2))


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    names = [row["name"] for row in rows]
    stages = [("heights", "local heights"), ("raster", "rasterize"), ("network", "network")]
    bottom = np.zeros(len(rows))
    for key, label in stages:
        per_atom = np.array([row["seconds"][key] / row["n_atoms"] * 1e6 for row in rows])
        ax.bar(names, per_atom, bottom=bottom, label=label)
        bottom += per_atom
    other = np.array([row["seconds"]["total"] / row["n_atoms"] * 1e6 for row in rows]) - bottom
    ax.bar(names, other, bottom=bottom, label="other")
    ax.axhline(20.0, color="k", ls="--", lw=1, label="50,000 atoms/s")
    ax.set_ylabel("µs per atom (end to end)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    figure.savefig(tmp, format="png", dpi=120)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are shared
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=250_000)
    parser.add_argument("--small-atoms", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=None, help="candidate names to run")
    parser.add_argument(
        "--conditions",
        default="2 CPU cores shared with background jobs: absolute numbers are pessimistic",
        help="how busy the machine was, for the JSON's note",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    candidates = [c for c in CANDIDATES if args.only is None or c["name"] in args.only]
    sheet, small = rippled_graphene(args.atoms), rippled_graphene(args.small_atoms)
    rows = []
    header = (
        f"{'candidate':<13}{'params':>9}{'kMAC/atom':>10}{'atoms/s':>10}{'/cpu-s':>10}{'net':>10}"
        f"{'raster':>10}{'heights':>9}{'fused/tiles':>12}"
    )
    print(header)
    for candidate in candidates:
        row = time_candidate(candidate, sheet, small, args.repeats)
        rows.append(row)
        print(
            f"{row['name']:<13}{row['parameters']:>9,}{row['macs_per_atom'] / 1e3:>10.0f}"
            f"{row['atoms_per_second']:>10,.0f}{row['atoms_per_cpu_second']:>10,.0f}"
            f"{row['network_atoms_per_second']:>10,.0f}"
            f"{row['raster_atoms_per_second']:>10,.0f}"
            f"{row['seconds']['heights']:>8.2f}s{row['fused_speedup_over_tiles']:>11.1f}x",
            flush=True,
        )
    profile = profile_layers(build(candidates[0]["architecture"]), args.atoms // 2, args.repeats)
    print(f"\nlayer profile of {candidates[0]['name']} (fused, one image):")
    for row in profile:
        print(
            f"  {row['layer']:<10}{row['seconds']:8.3f} s {100 * row['fraction']:5.1f} %  "
            f"-> {tuple(row['output_shape'])}"
        )
    result = {
        "description": "fused giant-sheet evaluation speed of candidate architectures, "
        "rippled graphene, random weights, evaluate_sheet end to end (one process)",
        "note": f"{args.conditions}; compare within one run",
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "load_average": list(os.getloadavg()),
        },
        "candidates": rows,
        "layer_profile": {"candidate": candidates[0]["name"], "layers": profile},
    }
    write_json_atomically(result, RESULTS / "architecture_speed.json")
    plot(rows, RESULTS / "architecture_speed.png")
    print(f"wrote {RESULTS / 'architecture_speed.json'}")


if __name__ == "__main__":
    main()
