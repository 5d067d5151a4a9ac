"""Band shape of the streaming evaluation: full-width bands against square-ish bands.

A band of ``R x Q`` focus regions is rendered and evaluated with its context halo, so its
work per focus pixel is ``(Rf + 2c)(Qf + 2c) / (RQ f^2)``. Until session 4 the default plan
took full-width bands of ``regions_per_band // n_w`` rows (3 rows of 16-pixel regions with a
32-pixel halo on a 10^7-atom sheet); it now takes square-ish blocks of the same number of
regions (:func:`ednn.stream._band_plan`). Both plans run side by side in one process, on the
same rippled graphene sheet, alternating, with the shipped default model; the energies must
agree to float32 rounding.

Writes ``experiments/results/band_shape.json``::

    python experiments/band_shape.py --sizes 1e5 1e6 3e6 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 3e6])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "band_shape.json")
    args = parser.parse_args(argv)

    from ednn import raster
    from ednn.predict import load_model
    from ednn.stream import (
        DEFAULT_REGIONS_PER_BAND,
        _band_plan,
        evaluate_sheet,
        model_raster_spec,
    )
    from ednn.structures import rippled_graphene

    model = load_model()
    evaluate_sheet(model, rippled_graphene(2000, amplitude=0.3, waves=2, seed=0))  # trace
    rows = []
    for size in args.sizes:
        sheet = rippled_graphene(int(size), amplitude=0.3, waves=2, seed=0)
        shape = raster.raster_layout(sheet, model_raster_spec(model)).shape
        grid = (shape[0] // model.focus[0], shape[1] // model.focus[1])
        plans = {}
        for _ in range(args.repeats):
            for plan in ("full-width", "square"):
                # The previous default: full-width bands of regions_per_band // n_w rows.
                kwargs = {"band_rows": max(1, DEFAULT_REGIONS_PER_BAND // grid[1])}
                if plan == "square":
                    kwargs = {}
                start = time.perf_counter()
                result = evaluate_sheet(model, sheet, **kwargs)
                seconds = time.perf_counter() - start
                entry = plans.setdefault(plan, {"seconds": [], "energy_eV": result.energy_eV})
                entry["seconds"].append(seconds)
                entry["n_bands"] = result.timings["n_bands"]
                entry["stages"] = {k: v for k, v in result.timings.items() if isinstance(v, float)}
        first = _band_plan(grid, None, DEFAULT_REGIONS_PER_BAND)[0]
        (best_full, best_square) = (min(plans[p]["seconds"]) for p in ("full-width", "square"))
        row = {
            "n_atoms": len(sheet),
            "regions": list(grid),
            "square_band": [first[0][1] - first[0][0], first[1][1] - first[1][0]],
            "plans": plans,
            "speedup": best_full / best_square,
            "atoms_per_second": {
                "full-width": len(sheet) / best_full,
                "square": len(sheet) / best_square,
            },
            "relative_energy_difference": abs(
                plans["square"]["energy_eV"] / plans["full-width"]["energy_eV"] - 1
            ),
        }
        rows.append(row)
        print(
            f"N={len(sheet):>10,}  regions {grid}  full-width {best_full:7.2f} s "
            f"({row['atoms_per_second']['full-width']:,.0f} atoms/s, "
            f"{plans['full-width']['n_bands']} bands)  square {best_square:7.2f} s "
            f"({row['atoms_per_second']['square']:,.0f} atoms/s, "
            f"{plans['square']['n_bands']} bands)  speed-up {row['speedup']:.2f}x  "
            f"|dE/E| {row['relative_energy_difference']:.1e}",
            flush=True,
        )
    out = {
        "description": "streaming evaluation, full-width vs square-ish bands, same process",
        "model": "ednn/models/default.keras",
        "repeats": args.repeats,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_end": list(os.getloadavg()),
        },
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()
