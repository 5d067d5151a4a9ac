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
  stretch makes.

    python experiments/default_model/diagnose.py --model runs/finetune_s6/best.keras \\
        --split runs/finetune_s6/split.json --name session6_model [--stretch-sample 30] \\
        [--grid-average]

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


if __name__ == "__main__":
    main()
