"""Where a model's energy error comes from: fit or generalisation, kind of structure, pixel stretch.

For a model and the split it was trained with (a run's ``split.json``), over every labelled
structure of the dataset:

* MAE and mean signed error (bias) in meV/atom per split and per recipe: a training MAE as
  high as the test MAE means the model underfits (more epochs or capacity help), a low one
  means it does not generalise (more data helps);
* the stretch sensitivity: the same structure evaluated as several supercells (1x1, 2x1,
  1x2, 3x1, 1x3, 2x2), whose pixel grids differ by up to the 2 % spacing tolerance; the
  spread (max - min) of the predicted energy per atom is an error the labels cannot see;
  with ``--grid-average``, also the held-out (test and independent-MD) MAE of the average
  over those supercells against that of the structure as given: how much of the error the
  stretch makes;
* the translation sensitivity (``--translations``): the same cell moved by whole pixels
  (16 shifts spread over one 16-pixel focus region, i.e. over the alignments of the tile
  grid) and by fractions of a pixel (a 4 x 4 grid of quarter pixels). An exact model gives
  the same energy for all; the spread (max - min, meV/atom) is noise the labels cannot see.

    python experiments/default_model/diagnose.py --model runs/finetune_s6/best.keras \\
        --split runs/finetune_s6/split.json --name session6_model [--stretch-sample 30] \\
        [--grid-average] [--translations]

Prints tables and writes ``experiments/results/diagnose_<name>.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

from ednn._io import atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "results"
SUPERCELLS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (3, 1, 1), (1, 3, 1), (2, 2, 1)]


def _summary(errors: list[float]) -> dict:
    values = np.asarray(errors)
    return {"n": len(values), "mae": float(np.abs(values).mean()), "bias": float(values.mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", required=True, help="the run's split.json")
    parser.add_argument("--data", default="data/sheets-gfn1")
    parser.add_argument("--name", required=True)
    parser.add_argument("--stretch-sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid-average", action="store_true")
    parser.add_argument("--translations", action="store_true")
    args = parser.parse_args(argv)

    from ednn.data.generate import read_shards
    from ednn.predict import Predictor, load_model

    predictor = Predictor(load_model(args.model))
    split_ids = json.loads(Path(args.split).read_text())["ids"]
    split_of = {i: split for split, ids in split_ids.items() for i in ids}
    frames = read_shards(args.data)
    errors: dict[str, list[float]] = collections.defaultdict(list)
    for atoms in frames:
        split = split_of.get(atoms.info["id"], "labelled after the run")
        true = atoms.get_potential_energy() / len(atoms)
        error = 1e3 * (predictor.predict(atoms).energy / len(atoms) - true)
        errors[split].append(error)
        errors[f"{split} / {atoms.info.get('recipe')}"].append(error)
    by_group = {key: _summary(values) for key, values in sorted(errors.items())}
    print(f"{'split / recipe':<40} {'n':>5} {'MAE':>7} {'bias':>7}  (meV/atom)")
    for key, row in by_group.items():
        print(f"{key:<40} {row['n']:>5} {row['mae']:>7.1f} {row['bias']:>+7.1f}")

    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(frames), min(args.stretch_sample, len(frames)), replace=False)
    spreads = []
    for index in sample:
        atoms = frames[index]
        per_atom = [
            predictor.predict(atoms.repeat(rep)).energy / (len(atoms) * rep[0] * rep[1])
            for rep in SUPERCELLS
        ]
        spreads.append(1e3 * (max(per_atom) - min(per_atom)))
    stretch = {
        "supercells": SUPERCELLS,
        "structures": len(spreads),
        "mean_spread_meV_per_atom": float(np.mean(spreads)),
        "max_spread_meV_per_atom": float(np.max(spreads)),
    }
    print(
        f"stretch: energy per atom over {len(SUPERCELLS)} supercells of {len(spreads)} "
        f"structures spreads by {stretch['mean_spread_meV_per_atom']:.1f} meV/atom on average "
        f"(max {stretch['max_spread_meV_per_atom']:.1f})"
    )
    if args.grid_average:
        held_out = set(split_ids["test"]) | set(split_ids["independent_md"])
        single, averaged = [], []
        for atoms in frames:
            if atoms.info["id"] not in held_out:
                continue
            true = atoms.get_potential_energy() / len(atoms)
            per_atom = [
                predictor.predict(atoms.repeat(rep)).energy / (len(atoms) * rep[0] * rep[1])
                for rep in SUPERCELLS
            ]
            single.append(1e3 * (per_atom[0] - true))
            averaged.append(1e3 * (np.mean(per_atom) - true))
        stretch["held_out_mae_as_given"] = _summary(single)["mae"]
        stretch["held_out_mae_grid_averaged"] = _summary(averaged)["mae"]
        stretch["held_out_structures"] = len(single)
        print(
            f"held-out MAE ({len(single)} test + independent MD): as given "
            f"{stretch['held_out_mae_as_given']:.2f}, averaged over the supercells "
            f"{stretch['held_out_mae_grid_averaged']:.2f} meV/atom"
        )
    if args.translations:
        stretch["translations"] = _translation_spreads(predictor, [frames[i] for i in sample])
    result = {
        "description": __doc__.split("\n\n")[0],
        "model": args.model,
        "split": args.split,
        "data": args.data,
        "unit": "meV/atom",
        "by_split_and_recipe": by_group,
        "stretch": stretch,
    }
    path = RESULTS / f"diagnose_{args.name}.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def _translation_spreads(predictor, frames) -> dict:
    """Spread (meV/atom) of the energy per atom of each cell over whole- and sub-pixel moves."""
    from ednn.raster import raster_layout

    spreads: dict[str, list[float]] = {"whole_pixel": [], "sub_pixel": []}
    for atoms in frames:
        sheet, _ = predictor.evaluation_cell(atoms)
        layout = raster_layout(sheet, predictor.spec)
        (dy, dx) = layout.spacing

        def per_atom(py: float, px: float, layout=layout, dy=dy, dx=dx) -> float:
            moved = layout.sheet.copy()
            moved.translate([px * dx, py * dy, 0.0])
            return predictor.predict(moved).energy / len(moved)

        # Whole pixels: 16 distinct offsets modulo the 16-pixel focus along each axis.
        whole = [
            per_atom(4 * i + 2 * (j % 2), 4 * j + 2 * (i % 2)) for i in range(4) for j in range(4)
        ]
        sub = [per_atom(i / 4, j / 4) for i in range(4) for j in range(4)]
        spreads["whole_pixel"].append(1e3 * float(np.ptp(whole)))
        spreads["sub_pixel"].append(1e3 * float(np.ptp(sub)))
    summary = {
        f"{kind}_{stat}_spread_meV_per_atom": float(getattr(np, stat)(values))
        for kind, values in spreads.items()
        for stat in ("mean", "max")
    }
    print(
        "translations: energy per atom spreads by "
        f"{summary['whole_pixel_mean_spread_meV_per_atom']:.1f} (max "
        f"{summary['whole_pixel_max_spread_meV_per_atom']:.1f}) over whole-pixel moves, "
        f"{summary['sub_pixel_mean_spread_meV_per_atom']:.1f} (max "
        f"{summary['sub_pixel_max_spread_meV_per_atom']:.1f}) over sub-pixel moves"
    )
    return {"structures": len(frames), **summary}


if __name__ == "__main__":
    main()
