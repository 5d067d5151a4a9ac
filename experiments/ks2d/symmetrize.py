"""Saved ks2d models averaged over the 8 symmetries of the grid, scored against themselves.

The energies of a 2D Kohn–Sham system do not change under the mirrors and the diagonal
swap of its square grid (``ednn.ks2d.apply_symmetry``), but a trained EDNN's predictions
do: it is only taught the invariance by augmentation. Wrapping the saved model in
:class:`ednn.symmetry.SymmetryAverage` (the mean over the 8 images of the input) makes it
exactly invariant with the same weights; a DCIGN (potential → density) averaged with its
densities mapped back becomes exactly equivariant. This script scores every model saved under
a run name (``train_models.py --name``) on the validation and test splits, as trained and
averaged, and writes ``<name>_symmetry_average.{md,json}``; with ``--save`` also each
averaged model, as ``<name>_ednn_energies_from_<input>_symmetric.keras`` beside the
original (as large as it: the same weights). A model trained with ``train_models.py
--average-symmetries`` is saved averaged; its network alone is the "trained" row:

    python experiments/ks2d/symmetrize.py --data data/ks2d-sho-gga-2k \\
        --name sho-gga-2k-count-long

The averaged model runs its network 8 times per image and takes the same images. Without
``--save`` it is one line away from any saved model::

    averaged = ednn.symmetry.SymmetryAverage(keras.saving.load_model(path), mirror_shift=1)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import keras
import numpy as np

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_write_text
from ednn.checkpoint import save_model_atomic
from ednn.dcign import density_errors
from ednn.symmetry import SymmetryAverage

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

# Model id -> (image key of the splits, file of train_models.py).
MODEL_FILES = {m: (tm.input_key(m), tm.energy_filename(m)) for m in tm.MODELS}
SPLITS = ("val", "test")
# The ks2d grid mirrors about pixel 0 (i -> -i mod n), as ednn.ks2d.apply_symmetry does.
MIRROR_SHIFT = 1


def symmetric_path(path: Path) -> Path:
    return path.with_name(path.stem + "_symmetric.keras")


def score(model, splits: dict, key: str) -> tuple[dict, np.ndarray]:
    """MAE (mHa) per split and energy term, and the test predictions (Ha)."""
    maes, predicted = {}, None
    for split in SPLITS:
        images = tm.image(splits[split], key, tm.SCALES[key])
        p = np.asarray(model.predict(images, batch_size=64, verbose=0), np.float64)
        maes[split] = tm.mae_mHa(tm.energies(splits[split]).astype(np.float64), p)
        predicted = p
    return maes, predicted


def score_densities(model, splits: dict, config: dict) -> dict:
    """The DCIGN's density errors per split, and the test energies of its densities."""
    result = {}
    for split in SPLITS:
        data = splits[split]
        inputs = (data["v_ext"][..., None].astype("float32"), data["n_electrons"].astype("float32"))
        predicted = np.asarray(model.predict(inputs, batch_size=32, verbose=0))
        errors = density_errors(data["density"], predicted)
        result[split] = {
            "mae": errors["mae"],
            "integrated": errors["integrated"],
            "integrated_max": float(errors["integrated_per_image"].max()),
        }
    energies = tm.density_energy_errors(splits["test"], predicted[..., 0], config)
    result["test_energies_mae_mHa"] = energies["mae_mHa"]
    return result


def markdown(result: dict) -> str:
    lines = [
        f"Models of run `{result['name']}` (`{result['data']}`) as trained and averaged over "
        "the 8 symmetries of the grid (`ednn.symmetry.SymmetryAverage`).",
    ]
    energy_models = {m: rows for m, rows in result["mae_mHa"].items() if m != "dcign"}
    if energy_models:
        lines += [
            "",
            "| input | model | split | " + " | ".join(tm.LABELS) + " (mHa) |",
            "|---" * (3 + len(tm.LABELS)) + "|",
        ]
    for model_id, rows in energy_models.items():
        for kind in ("trained", "averaged"):
            for split in SPLITS:
                cells = " | ".join(f"{rows[kind][split][t]:.1f}" for t in tm.TARGETS)
                lines.append(f"| {model_id} | {kind} | {split} | {cells} |")
    density = result["mae_mHa"].get("dcign")
    if density:
        lines += [
            "",
            "| DCIGN potential → density | split | MAE (bohr⁻²) | ∫\\|Δn\\| / N | worst | "
            "E_ext | E_H | E_x | E_c (mHa, test) |",
            "|---" * 9 + "|",
        ]
        for kind in ("trained", "averaged"):
            e = density[kind]["test_energies_mae_mHa"]
            for split in SPLITS:
                d = density[kind][split]
                terms = [f"{e[t]:.1f}" if split == "test" else "" for t in tm.DENSITY_TERMS]
                lines.append(
                    f"| {kind} | {split} | {d['mae']:.2e} | {d['integrated']:.4f} | "
                    f"{d['integrated_max']:.4f} | " + " | ".join(terms) + " |"
                )
    if result["by_count_mHa"]:
        lines += ["", "Test E_total MAE (mHa) by electron count N, averaged models:", ""]
        counts = sorted({int(n) for rows in result["by_count_mHa"].values() for n in rows})
        lines += [
            "| input | " + " | ".join(f"N = {n}" for n in counts) + " |",
            "|---" * (len(counts) + 1) + "|",
        ]
        for model_id, rows in result["by_count_mHa"].items():
            cells = (f"{rows[str(n)]['e_total']:.1f}" if str(n) in rows else "–" for n in counts)
            lines.append(f"| {model_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", required=True, help="the run name (train_models.py --name)")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=tuple(MODEL_FILES),
        default=None,
        help="models to average (default: every model saved under --name)",
    )
    parser.add_argument(
        "--transfer-targets",
        type=Path,
        default=None,
        metavar="DIR",
        help="the energy dataset the transfer model was trained on (needed to score it)",
    )
    parser.add_argument(
        "--save", action="store_true", help="also save each averaged model (*_symmetric.keras)"
    )
    args = parser.parse_args(argv)
    paths = {
        model_id: args.out / f"{args.name}_{filename}"
        for model_id, (_, filename) in MODEL_FILES.items()
        if args.models is None or model_id in args.models
    }
    if args.models is None:
        paths = {m: p for m, p in paths.items() if p.exists()}
        if "transfer" in paths and args.transfer_targets is None:
            print("transfer: left out (scoring it needs --transfer-targets DIR)")
            del paths["transfer"]
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing or not paths:
        parser.error(f"no saved model at {', '.join(missing) or args.out / args.name}*")
    if "transfer" in paths and args.transfer_targets is None:
        parser.error("--models transfer needs --transfer-targets DIR")
    (splits, config, _) = tm.load_splits(args.data)
    result = {"data": str(args.data), "name": args.name, "mae_mHa": {}, "by_count_mHa": {}}
    for model_id, path in paths.items():
        start = time.perf_counter()
        (key, _) = MODEL_FILES[model_id]
        data = splits
        if model_id == "transfer":
            (data, _, _) = tm.paired_splits(splits, args.transfer_targets)
        model = keras.saving.load_model(path, compile=False)
        saved_averaged = isinstance(model, SymmetryAverage)
        if saved_averaged:  # train_models.py --average-symmetries: score its network alone too
            (averaged, model) = (model, model.model)
        else:
            averaged = SymmetryAverage(
                model, mirror_shift=MIRROR_SHIFT, name=f"{model.name}_symmetric"
            )
        if model_id == "dcign":
            result["mae_mHa"][model_id] = {
                "trained": score_densities(model, data, config),
                "averaged": score_densities(averaged, data, config),
            }
        else:
            (trained_mae, _) = score(model, data, key)
            (averaged_mae, predicted) = score(averaged, data, key)
            result["mae_mHa"][model_id] = {"trained": trained_mae, "averaged": averaged_mae}
            result["by_count_mHa"][model_id] = tm.mae_by_count(
                tm.energies(data["test"]).astype(np.float64),
                predicted,
                data["test"]["n_electrons"],
            )
        if args.save and not saved_averaged:
            save_model_atomic(averaged, symmetric_path(path))
        print(f"{model_id}: {time.perf_counter() - start:.0f} s", flush=True)
    table = markdown(result)
    print(table)
    stem = f"{args.name}_symmetry_average"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return result


if __name__ == "__main__":
    main()
