"""How much of a saved ks2d potential model's error is where the well sits on the tiles.

The EDNN cuts the image at fixed places, so the same well moved by a pixel is cut
differently and the prediction changes, while the energies do not (the box is large enough
that the density vanishes at its edges). Two measurements on the pooled validation and
test splits of a SHO dataset:

* *moved wells*: each well is regenerated from its stored parameters with its centre moved
  by whole pixels (±1 and ±2 along x and y), for the samples whose moved centre stays
  inside the centres the dataset was drawn from; the table gives the mean |ΔE| between
  the moved and the unmoved prediction (the model's position noise, mHa) and the MAE of
  the mean over the moved copies (what averaging it away would give);
* *rolled images*: the MAE of the model averaged over its input rolled by the centred
  tile phases of stride 8 (4 rolls) and 4 (16 rolls) (:class:`ednn.translation.
  TranslationAverage`), against the model as given; meaningful for models trained on
  rolled images (``train_models.py --roll``), which have seen the wrapped-round walls.

Writes ``<name>_translation.{md,json}`` beside the models:

    python experiments/ks2d/translation_check.py --data data/ks2d-sho-lda-2k \\
        --names sho-lda-2k-big2-head256x2-restart sho-lda-2k-big2-head256x2-roll
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import keras
import numpy as np

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_write_text
from ednn.ks2d.grid import Grid
from ednn.ks2d.potentials import SHO_DEFAULTS, potential_from_params
from ednn.translation import TranslationAverage, tile_phases

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

SPLITS = ("val", "test")
MOVES = ((1, 0), (-1, 0), (2, 0), (-2, 0), (0, 1), (0, -1), (0, 2), (0, -2))  # (x, y) px
STRIDES = (8, 4)


def mae(predicted: np.ndarray, truth: np.ndarray) -> list[float]:
    return (1000 * np.abs(predicted - truth).mean(axis=0)).round(4).tolist()


def moved_wells(model, pooled: dict, config: dict) -> dict:
    """Predictions for each well moved by :data:`MOVES`, within the dataset's centres."""
    grid = Grid(config["grid"]["n"], config["grid"]["box"])
    spacing = config["grid"]["box"] / config["grid"]["n"]
    (low, high) = config.get("potential_options", {}).get("centre", SHO_DEFAULTS["centre"])
    params = [json.loads(p) for p in pooled["params"]]
    if any(p.get("kind") != "sho" for p in params):
        raise ValueError("moved wells need a SHO dataset (potential parameters of kind 'sho')")
    scale = tm.SCALES["v_ext"]
    base = np.asarray(model.predict(tm.image(pooled, "v_ext", scale), batch_size=64, verbose=0))
    (total, count, changes) = (np.zeros_like(base, np.float64), np.zeros(len(base)), [])
    for dx, dy in MOVES:
        centres = [np.add(p["centre"], (dx * spacing, dy * spacing)) for p in params]
        inside = np.array([bool(np.all((c >= low) & (c <= high))) for c in centres])
        moved = dict(pooled)
        moved["v_ext"] = np.stack([
            potential_from_params(grid, {**p, "centre": c.tolist()}) if ok else v
            for p, c, ok, v in zip(params, centres, inside, pooled["v_ext"], strict=True)
        ]).astype(np.float32)  # fmt: skip
        predicted = np.asarray(
            model.predict(tm.image(moved, "v_ext", scale), batch_size=64, verbose=0), np.float64
        )
        changes.append(np.abs(predicted - base)[inside])
        total[inside] += predicted[inside]
        count += inside
    truth = tm.energies(pooled).astype(np.float64)
    averaged = (total + base) / (count + 1)[:, None]
    return {
        "moves_px": [list(m) for m in MOVES],
        "mean_moves_per_sample": float(count.mean()),
        "position_noise_mHa": (1000 * np.concatenate(changes).mean(axis=0)).round(4).tolist(),
        "mae_unmoved_mHa": mae(base, truth),
        "mae_mean_over_moves_mHa": mae(averaged, truth),
    }


def focus_of(model) -> int:
    """The focus (px) of the EDNN inside a saved model's wrappers (its first branch's)."""
    while not hasattr(model, "focus"):
        model = model.branches[0] if hasattr(model, "branches") else model.model
    return model.focus[0]


def rolled_images(model, pooled: dict, focus: int) -> dict:
    """MAE of ``model`` (not roll-averaged) as given and averaged over the centred tile
    phases of each stride."""
    images = tm.image(pooled, "v_ext", tm.SCALES["v_ext"])
    truth = tm.energies(pooled).astype(np.float64)
    result = {"as_given": mae(np.asarray(model.predict(images, verbose=0), np.float64), truth)}
    for stride in STRIDES:
        averaged = TranslationAverage(model, tile_phases(focus, stride, centred=True))
        predicted = np.asarray(averaged.predict(images, batch_size=32, verbose=0), np.float64)
        result[f"stride_{stride}"] = mae(predicted, truth)
    return result


def markdown(rows: dict, data: str) -> str:
    terms = "| T_s | E_ext | E_H | E_x | E_c | E_total |"
    lines = [
        f"Translation check on the pooled validation and test splits of `{data}`: MAE and "
        "position noise in mHa.",
        "",
        f"| model | measure {terms}",
        "|---|---" + "|---" * 6 + "|",
    ]
    for name, row in rows.items():
        wells = row["moved_wells"]
        for label, values in (
            ("unmoved", wells["mae_unmoved_mHa"]),
            ("position noise: mean abs(ΔE), well moved 1–2 px", wells["position_noise_mHa"]),
            ("mean over the moved copies", wells["mae_mean_over_moves_mHa"]),
            *(
                (
                    f"rolled images, stride {s} ({(row['focus'] // s) ** 2} rolls)",
                    row["rolled"][f"stride_{s}"],
                )
                for s in STRIDES
            ),
        ):
            lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--names", nargs="+", required=True, help="run names (--name)")
    args = parser.parse_args(argv)
    paths = {n: args.out / f"{n}_{tm.energy_filename('v_ext')}" for n in args.names}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        parser.error(f"no saved potential model at {', '.join(missing)}")
    (splits, config, _) = tm.load_splits(args.data)
    pooled = {k: np.concatenate([splits[s][k] for s in SPLITS]) for k in splits["test"]}
    rows = {}
    for name, path in paths.items():
        model = keras.saving.load_model(path, compile=False)
        inner = model.model if isinstance(model, TranslationAverage) else model
        focus = focus_of(inner)
        rows[name] = {
            "focus": focus,
            "moved_wells": moved_wells(inner, pooled, config),
            "rolled": rolled_images(inner, pooled, focus),
        }
        print(name, json.dumps(rows[name]), flush=True)
    table = markdown(rows, str(args.data))
    print(table)
    stem = f"{args.names[-1]}_translation"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return rows


if __name__ == "__main__":
    main()
