"""Network precision on giant sheets: speed against float32, and how far the energy moves.

For each sheet size, evaluates the same rippled-graphene sheet with the shipped default model
in float32 and in the mixed precisions of :data:`ednn.stream.PRECISIONS`, alternately in one
process (a noisy neighbour slows all alike), and reports the best time of each (whole
evaluation, and the network stage alone: the rasterizer runs beside it and does not change),
the ratios to float32 and the energy difference in meV/atom.

    python experiments/precision_speed.py [--sizes 1e4 1e5 1e6] [--repeats 3]

Prints a table and writes ``experiments/results/precision_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ednn._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="a .keras model (default: the shipped one)")
    parser.add_argument("--output", type=Path, default=RESULTS / "precision_speed.json")
    parser.add_argument("--conditions", default="", help="machine state, for the record")
    args = parser.parse_args(argv)

    from ednn.predict import load_model
    from ednn.stream import PRECISIONS, evaluate_sheet
    from ednn.structures import rippled_graphene

    model = load_model(args.model)
    warm = rippled_graphene(2_000, amplitude=0.3, waves=2, seed=0)
    for precision in PRECISIONS:  # trace each precision's function once
        evaluate_sheet(model, warm, precision=precision)
    rows = []
    for size in args.sizes:
        atoms = rippled_graphene(int(size), amplitude=0.3, waves=2, seed=0)
        best = dict.fromkeys(PRECISIONS, float("inf"))
        network = dict.fromkeys(PRECISIONS, float("inf"))
        energy = {}
        for _ in range(args.repeats):
            for precision in PRECISIONS:
                start = time.perf_counter()
                result = evaluate_sheet(model, atoms, precision=precision)
                best[precision] = min(best[precision], time.perf_counter() - start)
                network[precision] = min(network[precision], result.timings["network"])
                energy[precision] = result.energy_eV
        row = {"n_atoms": len(atoms)}
        for precision in PRECISIONS:
            row[precision] = {
                "seconds": best[precision],
                "atoms_per_s": len(atoms) / best[precision],
                "speedup_vs_float32": best["float32"] / best[precision],
                "network_seconds": network[precision],
                "network_speedup_vs_float32": network["float32"] / network[precision],
                "energy_difference_meV_per_atom": 1e3
                * (energy[precision] - energy["float32"])
                / len(atoms),
            }
        rows.append(row)
        print(
            f"{len(atoms):>10,} atoms  "
            + "  ".join(
                f"{p}: {row[p]['seconds']:.3f} s ({row[p]['speedup_vs_float32']:.2f}x; network "
                f"{row[p]['network_speedup_vs_float32']:.2f}x; "
                f"{row[p]['energy_difference_meV_per_atom']:+.3f} meV/atom)"
                for p in PRECISIONS
            ),
            flush=True,
        )
    result = {
        "description": __doc__.split("\n\n")[0],
        "model": args.model or "ednn/models/default.keras",
        "conditions": args.conditions,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
