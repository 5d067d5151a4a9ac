"""Throughput of the rasterizer: atoms per second for rippled graphene of 1e4 to 1e6 atoms.

Rasterizes rectangular graphene sheets (4-atom cell repeated, a ripple of 0.5 Å amplitude plus
0.05 Å noise along z, so the height channel has work to do) at pixel spacings of 0.1 Å and
0.2 Å with the default species ("C", "B", "N") + height channel, and times the stages:
cell preparation, local heights (KD-tree), Gaussian splatting.  Writes
``experiments/results/raster_throughput.json`` and ``raster_throughput.png``.

Usage::

    python experiments/raster_throughput.py [--sizes 10000 100000 1000000] [--spacings 0.1 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ednn import raster
from ednn.structures import rippled_graphene

RESULTS = Path(__file__).resolve().parent / "results"


def time_one(atoms, spec: raster.RasterSpec, repeats: int = 1) -> dict:
    """Best of ``repeats`` timings of the three stages of rasterize()."""
    runs = [_time_stages(atoms, spec) for _ in range(repeats)]
    return min(runs, key=lambda row: row["seconds_total"])


def _time_stages(atoms, spec: raster.RasterSpec) -> dict:
    start = time.perf_counter()
    layout = raster.raster_layout(atoms, spec)
    t_layout = time.perf_counter()
    sheet = layout.sheet
    heights = raster.local_heights(
        sheet.positions, spec.height_radius, (sheet.cell[0, 0], sheet.cell[1, 1])
    )
    t_heights = time.perf_counter()
    image = raster.rasterize_window(
        sheet, (0, 0), layout.shape, spec, heights=heights, grid_shape=layout.shape
    )
    t_end = time.perf_counter()
    total = t_end - start
    del image
    return {
        "n_atoms": len(atoms),
        "spacing": spec.spacing,
        "image_shape": [*layout.shape, spec.n_channels],
        "image_megabytes": 4 * layout.shape[0] * layout.shape[1] * spec.n_channels / 2**20,
        "seconds_layout": t_layout - start,
        "seconds_heights": t_heights - t_layout,
        "seconds_splat": t_end - t_heights,
        "seconds_total": total,
        "atoms_per_second": len(atoms) / total,
    }


def write_json_atomically(data: object, path: Path) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2)
    os.replace(tmp, path)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for spacing in sorted({row["spacing"] for row in rows}):
        sel = [row for row in rows if row["spacing"] == spacing]
        ax.loglog(
            [r["n_atoms"] for r in sel],
            [r["atoms_per_second"] for r in sel],
            "o-",
            label=f"spacing {spacing} Å",
        )
    ax.set_xlabel("atoms")
    ax.set_ylabel("atoms / s (rasterize, 1 core)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    figure.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--spacings", type=float, nargs="+", default=[0.1, 0.2])
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raster.rasterize(rippled_graphene(1000))  # warm up imports and caches
    rows = []
    for n_atoms in args.sizes:
        atoms = rippled_graphene(n_atoms)
        for spacing in args.spacings:
            spec = raster.RasterSpec(spacing=spacing)
            row = time_one(atoms, spec, repeats=3 if n_atoms <= 100_000 else 1)
            rows.append(row)
            print(
                f"{row['n_atoms']:>9d} atoms  spacing {spacing:.2f} Å  image "
                f"{tuple(row['image_shape'])}  {row['seconds_total']:7.2f} s  "
                f"({row['seconds_layout']:.2f} layout, {row['seconds_heights']:.2f} heights, "
                f"{row['seconds_splat']:.2f} splat)  {row['atoms_per_second']:,.0f} atoms/s",
                flush=True,
            )
    result = {
        "description": "rasterize() throughput on rippled rectangular graphene, one process",
        "note": "2 shared cores (a background job ran alongside); at 1e6 atoms and 0.1 Å the "
        "returned image is 4.2 GB and first-touch page faults of it take most of the splat time",
        "spec": {k: v for k, v in raster.RasterSpec().to_dict().items() if k != "spacing"},
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "runs": rows,
    }
    write_json_atomically(result, RESULTS / "raster_throughput.json")
    plot(rows, RESULTS / "raster_throughput.png")
    print(f"wrote {RESULTS / 'raster_throughput.json'}")


if __name__ == "__main__":
    main()
