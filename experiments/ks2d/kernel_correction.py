"""A saved ks2d energy model plus its systematic error, kernel-regressed on its own outputs.

:class:`ednn.correction.KernelCorrection` adds to a model the residual that its training
samples of the same electron count with similar predicted energies had (Gaussian-kernel
ridge regression on the six predicted energies, per `N`). This script, for each run named:

1. predicts the training split (with the run's supplements, as it was trained) with the
   saved model, averaged over moves of the well by up to ``--fit-shift`` px (0: as saved),
   and the validation and test splits averaged over moves of up to ``--max-shift`` px
   (``ShiftAverage``, potential models only; 0: as saved);
2. fits the corrector on the training predictions for every length scale and ridge of the
   grid, and keeps the pair with the lowest validation E_total MAE;
3. scores the test split, checks the saved corrector against the numbers (on a few test
   images) and writes ``<name>_kernel_correction_m<max shift>.{md,json}`` and the model
   ``<name>_kernel_corrected_m<max shift>.keras`` (``..._fit<fit shift>`` added to both
   names when ``--fit-shift`` is not 0; ``density_m0`` for ``--input density``):

    python experiments/ks2d/kernel_correction.py --data data/ks2d-sho-lda-2k \\
        --names sho-lda-2k-big2-head256x2-restart --max-shift 3

Predictions are cached in ``--out/predictions/`` (ignored by git): the training split takes
~4 min of one core as saved, the two others ~8 min each at ``--max-shift 3``.
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
from ednn.correction import KernelCorrection, fit_kernel_correction
from ednn.translation import ShiftAverage

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)
_spec = importlib.util.spec_from_file_location("shift_average", HERE / "shift_average.py")
sa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sa)

LENGTH_SCALES = (0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
RIDGES = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
CHECKED_IMAGES = 8


def how_to_count(input_kind: str, pixel_area: float) -> dict:
    """How `N` is read from the model's images (``train_models.image``), as `CountBaseline`'s."""
    if input_kind == "v_ext":  # the potential plus a constant channel N / 8
        return {"count_from": "channel", "channel": 1, "count_scale": 8.0}
    return {"count_from": "integral", "channel": 0, "count_scale": pixel_area / tm.N_SCALE}


def cached_predictions(model, images, path: Path) -> np.ndarray:
    """The model's predictions of ``images`` (float64), read from ``path`` if stored there."""
    if path.exists():
        stored = np.load(path)
        if stored["pred"].shape[0] == len(images):
            return stored["pred"]
    predicted = np.asarray(model.predict(images, batch_size=16, verbose=0), np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npz")
    np.savez(partial, pred=predicted)
    partial.replace(path)
    return predicted


def mae_rows(truth: np.ndarray, predicted: np.ndarray) -> dict:
    return tm.mae_mHa(truth.astype(np.float64), predicted)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--names", nargs="+", required=True, help="run names (--name)")
    parser.add_argument("--input", choices=("v_ext", "density"), default="v_ext")
    parser.add_argument(
        "--max-shift", type=int, default=3,
        help="moves of the well (px) averaged over on validation and test (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--fit-shift", type=int, default=0,
        help="moves averaged over on the training split the corrector is fitted on (default 0)",
    )  # fmt: skip
    parser.add_argument("--length-scales", type=float, nargs="+", default=LENGTH_SCALES)
    parser.add_argument("--ridges", type=float, nargs="+", default=RIDGES)
    args = parser.parse_args(argv)
    if args.max_shift < 0 or args.fit_shift < 0:
        parser.error("--max-shift and --fit-shift must be non-negative")
    if args.input != "v_ext" and (args.max_shift or args.fit_shift):
        parser.error("moves of the well (--max-shift, --fit-shift) need --input v_ext")
    paths = [args.out / f"{name}_ednn_energies_from_{args.input}.keras" for name in args.names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        parser.error(f"no saved {args.input} model at {', '.join(missing)}")
    (splits, config, pixel_area) = tm.load_splits(args.data)
    scale = tm.SCALES[args.input]
    results = {}
    for name, path in zip(args.names, paths, strict=True):
        stored = json.loads((args.out / f"{name}_train_models.json").read_text())
        extra = [Path(d) for d in stored.get("extra_train_sizes") or {}]
        (train, _) = (
            tm.with_extra_training(splits["train"], config, extra)
            if extra
            else (splits["train"], {})
        )
        by_split = {"train": train, "val": splits["val"], "test": splits["test"]}
        centre_range = sa.minimum_range(train["v_ext"])
        model = keras.saving.load_model(path, compile=False)

        def averaged(shift, model=model, centre_range=centre_range):
            return ShiftAverage(model, shift, centre_range) if shift else model

        start = time.perf_counter()
        images = {s: tm.image(split, args.input, scale) for s, split in by_split.items()}
        truth = {s: tm.energies(split).astype(np.float64) for s, split in by_split.items()}
        counts = {s: split["n_electrons"] for s, split in by_split.items()}
        cache = args.out / "predictions"
        predicted = {
            s: cached_predictions(
                averaged(shift), images[s], cache / f"{name}_{args.input}_m{shift}_{s}.npz"
            )
            for (s, shift) in (
                ("train", args.fit_shift), ("val", args.max_shift), ("test", args.max_shift)
            )
        }  # fmt: skip
        predict_seconds = time.perf_counter() - start
        evaluated = averaged(args.max_shift)
        (grid, fits) = ([], [])
        for length_scale in args.length_scales:
            for ridge in args.ridges:
                fitted = fit_kernel_correction(
                    predicted["train"], truth["train"], counts["train"],
                    length_scale=length_scale, ridge=ridge,
                )  # fmt: skip
                corrector = KernelCorrection(evaluated, **fitted)
                val = (
                    predicted["val"] + corrector.correction(predicted["val"], counts["val"]).numpy()
                )
                grid.append({
                    "length_scale": length_scale, "ridge": ridge,
                    "val_mae_mHa": mae_rows(truth["val"], val),
                })  # fmt: skip
                fits.append(fitted)
        best = min(range(len(grid)), key=lambda i: grid[i]["val_mae_mHa"]["e_total"])
        (chosen, fitted) = (grid[best], fits[best])
        corrected = KernelCorrection(
            evaluated, **fitted, **how_to_count(args.input, pixel_area),
            name=f"{name}_kernel_corrected",
        )  # fmt: skip
        rows: dict = {"model": {}, "corrected": {}}
        by_label = {}
        for s in ("train", "val", "test"):
            fixed = predicted[s] + corrected.correction(predicted[s], counts[s]).numpy()
            rows["model"][s] = mae_rows(truth[s], predicted[s])
            rows["corrected"][s] = mae_rows(truth[s], fixed)
            by_label[s] = fixed
        # The saved corrector must give the numbers above from the images alone, to within
        # what float32 outputs computed in other batches allow (a small ridge makes the
        # correction steep: ~1e-5 Ha at ridge 1e-7, against errors of ~1e-3 Ha).
        check = np.asarray(corrected.predict(images["test"][:CHECKED_IMAGES], verbose=0))
        deviation = float(np.abs(check - by_label["test"][:CHECKED_IMAGES]).max())
        if deviation > 5e-5:
            raise RuntimeError(
                f"the corrected model deviates from the fitted correction by {deviation:.2e} Ha"
            )
        improves = rows["corrected"]["val"]["e_total"] < rows["model"]["val"]["e_total"]
        tag = ("" if args.input == "v_ext" else f"{args.input}_") + f"m{args.max_shift}"
        tag += f"_fit{args.fit_shift}" if args.fit_shift else ""
        stem = f"{name}_kernel_correction_{tag}"
        model_path = args.out / f"{name}_kernel_corrected_{tag}.keras"
        partial = model_path.with_suffix(".tmp.keras")
        corrected.save(partial)
        partial.replace(model_path)
        result = {
            "data": str(args.data),
            "input": args.input,
            "run": name,
            "max_shift": args.max_shift,
            "fit_shift": args.fit_shift,
            "centre_range_px": centre_range,
            "train_samples": len(truth["train"]),
            "length_scale": chosen["length_scale"],
            "ridge": chosen["ridge"],
            "improves_validation": improves,
            "mae_mHa": rows,
            "grid": grid,
            "check_max_deviation_Ha": deviation,
            "check_test_predictions_Ha": check.astype(float).tolist(),
            "model_file": model_path.name,
            "seconds": round(time.perf_counter() - start, 1),
            "predict_seconds": round(predict_seconds, 1),
        }
        moves = (
            f"averaged over moves of the well by up to {args.max_shift} px"
            if args.max_shift
            else "as saved"
        )
        caption = (
            f"`{name}` on `{args.data}` ({args.input}): MAE in mHa of the model {moves}, and of "
            "the same plus the kernel correction (`KernelCorrection`, fitted on the "
            f"{len(truth['train'])} training predictions "
            + (
                f"averaged over moves of up to {args.fit_shift} px"
                if args.fit_shift
                else "as saved"
            )
            + f"; length scale {chosen['length_scale']:g}, ridge {chosen['ridge']:g}, chosen on "
            "the validation E_total)."
            + ("" if improves else " It does NOT improve the validation E_total: do not use it.")
        )
        sa.write_results(args.out, stem, caption, rows, result)
        results[name] = result
    return results


if __name__ == "__main__":
    main()
