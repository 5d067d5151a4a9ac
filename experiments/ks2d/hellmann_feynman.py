"""Whether saved ks2d potential models know the density: ∂E_total/∂v against n (Hellmann–Feynman).

The exact ground-state energy's derivative in the external potential is the density,
``∂E/∂v_i = n_i ΔA`` (``ednn.density_gradient``; tested on the solver). For each saved
potential model (``train_models.py --name NAME``) this prints and saves the error
``∫ |n_model - n| / N`` of the density its E_total implies, on the test split, at the
grid's resolution and summed over blocks of 2..16 pixels and over the whole image (where
only the electron count is compared), and the implied electron count:

    python experiments/ks2d/hellmann_feynman.py --data data/ks2d-sho-lda-2k \\
        --names sho-lda-2k-big2-head256x2

With ``--finetune WEIGHT LR STEPS`` it then trains the first model for ``STEPS`` batches of
16 training samples with the density term of weight ``WEIGHT`` beside its energy loss
(:class:`ednn.density_gradient.DensityGradientFit`, Adam at ``LR``) and reports the density
error and the test energy MAE (mHa) every ``STEPS // 4`` steps: whether the trained network
can take the density on at all at that cost. The saved model is not changed. Writes
``<first name>_hellmann_feynman[_<label>].{json,md}`` next to the models.
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
from ednn.density_gradient import DensityGradientFit, density_error, density_from_energy
from ednn.losses import WeightedMAE

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)
BLOCKS = (1, 2, 4, 8, 16)  # and the whole image
E_TOTAL = tm.TARGETS.index("e_total")


def block_errors(fitted: np.ndarray, density: np.ndarray) -> dict:
    """Mean ``∫ |Δn| / N`` with both densities summed over blocks of b x b pixels."""
    size = density.shape[1]
    errors = {}
    for b in sorted({b for b in BLOCKS if size % b == 0} | {size}):
        pooled = [
            a.reshape(len(a), size // b, b, size // b, b).sum(axis=(2, 4))
            for a in (fitted, density)
        ]
        errors[str(b)] = float(np.mean(density_error(*pooled)))
    return errors


def implied(model, split: dict, pixel_area: float) -> dict:
    x = tm.image(split, "v_ext", tm.V_SCALE)
    fitted = density_from_energy(model, x, E_TOTAL, pixel_area, tm.V_SCALE)
    counts = fitted.sum(axis=(1, 2)) * pixel_area
    return {
        "integrated_by_block": block_errors(fitted, split["density"]),
        "count_mean": float(counts.mean()),
        "true_count_mean": float(split["n_electrons"].mean()),
    }


def _trainable(path: Path, pixel_area: float, weight: float | None, lr: float):
    """The saved model's network (no symmetry average), compiled to train with or without
    the density term (``weight`` None)."""
    saved = keras.saving.load_model(path, compile=False)
    # The symmetry average is for evaluation; training sees the network it averages.
    model = getattr(saved, "model", saved)
    inner = model
    while not hasattr(inner, "energy_scale"):  # the EDNN inside the count reference
        inner = inner.model
    loss = WeightedMAE(1.0 / np.asarray(inner.energy_scale, np.float64))
    fit = model
    if weight is not None:
        fit = DensityGradientFit(model, E_TOTAL, pixel_area, tm.V_SCALE, weight=weight)
    fit.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    return model, fit


def _training_subset(train: dict, samples: int, seed: int) -> tuple:
    order = np.random.default_rng(seed).permutation(len(train["id"]))[:samples]
    subset = {k: v[order] for k, v in train.items()}
    density = subset["density"][..., None].astype("float32")
    return tm.image(subset, "v_ext", tm.V_SCALE), tm.energies(subset), density


def step_seconds(path: Path, train: dict, pixel_area: float, steps: int, seed=0) -> dict:
    """Seconds per training step of 16 samples without and with the density term.

    Both on the same batches in this process, after one untimed warm-up pass each (which
    traces the step), timed alternately three times; the medians are kept.
    """
    (x, y, density) = _training_subset(train, 16 * steps, seed)
    (_, plain) = _trainable(path, pixel_area, None, 1e-12)
    (_, taught) = _trainable(path, pixel_area, 1.0, 1e-12)
    runs = {"energy_only": (plain, y), "with_density": (taught, (y, density))}
    times = {key: [] for key in runs}
    for repeat in range(4):
        for key, (fit, targets) in runs.items():
            start = time.perf_counter()
            fit.fit(x, targets, batch_size=16, epochs=1, verbose=0, shuffle=False)
            if repeat:
                times[key].append((time.perf_counter() - start) / steps)
    seconds = {key: float(np.median(values)) for key, values in times.items()}
    return {**seconds, "ratio": seconds["with_density"] / seconds["energy_only"], "steps": steps}


def finetune(path: Path, splits: dict, pixel_area: float, weight, lr, steps, seed=0) -> list:
    keras.utils.set_random_seed(seed)
    (model, fit) = _trainable(path, pixel_area, weight, lr)
    (train, test) = (splits["train"], splits["test"])
    (x, y, density) = _training_subset(train, 16 * steps, seed)
    (x_test, y_test) = (tm.image(test, "v_ext", tm.V_SCALE), tm.energies(test).astype(np.float64))
    rows = []
    chunk = max(1, steps // 4)
    for done in range(0, steps + 1, chunk):
        if done:
            part = slice(16 * (done - chunk), 16 * done)
            fit.fit(x[part], (y[part], density[part]), batch_size=16, epochs=1, verbose=0)
        predicted = np.asarray(model.predict(x_test, batch_size=32, verbose=0), np.float64)
        fitted = density_from_energy(model, x_test, E_TOTAL, pixel_area, tm.V_SCALE)
        rows.append({
            "steps": done,
            "density_error": float(np.mean(density_error(fitted, test["density"]))),
            "test_mae_mHa": tm.mae_mHa(y_test, predicted),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(result: dict) -> str:
    blocks = list(next(iter(result["models"].values()))["integrated_by_block"])
    lines = [
        f"Density implied by the potential models' E_total, `∂E/∂v / ΔA`, against the true "
        f"density on the test split of `{result['data']}`: mean ∫|Δn| / N with both summed "
        "over blocks of b x b pixels (b = grid size: the electron count alone).",
        "",
        "| model | " + " | ".join(f"b = {b}" for b in blocks) + " | mean implied N | mean N |",
        "|---" * (len(blocks) + 3) + "|",
    ]
    for name, row in result["models"].items():
        cells = " | ".join(f"{100 * row['integrated_by_block'][b]:.0f} %" for b in blocks)
        lines.append(
            f"| {name} | {cells} | {row['count_mean']:.2f} | {row['true_count_mean']:.2f} |"
        )
    timing = result.get("step_seconds")
    if timing:
        lines += [
            "",
            f"A training step of 16 samples: {timing['energy_only']:.3f} s on the energies, "
            f"{timing['with_density']:.3f} s with the density term ({timing['ratio']:.2f}x; "
            f"medians of 3 passes over {timing['steps']} steps, alternated, in one process).",
        ]
    tune = result.get("finetune")
    if tune:
        lines += [
            "",
            f"Fine-tuning `{tune['model']}` with `--density-gradient {tune['weight']:g}` at learning "
            f"rate {tune['lr']:g}, batches of 16 training samples (test split):",
            "",
            "| steps | ∫|Δn| / N | " + " | ".join(tm.LABELS) + " |",
            "|---" * (len(tm.LABELS) + 2) + "|",
        ]
        for row in tune["rows"]:
            cells = " | ".join(f"{row['test_mae_mHa'][t]:.1f}" for t in tm.TARGETS)
            lines.append(f"| {row['steps']} | {100 * row['density_error']:.0f} % | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--names", nargs="+", required=True, help="run names (--name)")
    parser.add_argument(
        "--finetune", nargs=3, type=float, default=None, metavar=("WEIGHT", "LR", "STEPS")
    )
    parser.add_argument(
        "--time-steps",
        type=int,
        default=None,
        metavar="STEPS",
        help="also time STEPS training steps of the first model without and with the density "
        "term, side by side (seconds per step and their ratio)",
    )
    parser.add_argument(
        "--label", default=None, help="suffix of the output files, to keep several probes"
    )
    args = parser.parse_args(argv)
    paths = {name: args.out / f"{name}_{tm.energy_filename('v_ext')}" for name in args.names}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        parser.error(f"no saved potential model at {', '.join(missing)}")
    if args.finetune is not None:
        (weight, lr, steps) = args.finetune
        if not (weight > 0 and lr > 0 and steps >= 1 and float(steps).is_integer()):
            parser.error(
                "--finetune WEIGHT LR STEPS needs positive WEIGHT and LR and a whole STEPS >= 1. "
                f"Received: {args.finetune}"
            )
    (splits, _, pixel_area) = tm.load_splits(args.data)
    for option, steps in (("--finetune", args.finetune and args.finetune[2]),
                          ("--time-steps", args.time_steps)):  # fmt: skip
        if steps is not None and not 1 <= 16 * int(steps) <= len(splits["train"]["id"]):
            parser.error(
                f"{option}: {int(steps)} steps of 16 need 1 to "
                f"{len(splits['train']['id']) // 16} steps (the {len(splits['train']['id'])} "
                f"training samples of {args.data})"
            )
    result = {"data": str(args.data), "models": {}}
    for name, path in paths.items():
        model = keras.saving.load_model(path, compile=False)
        result["models"][name] = implied(model, splits["test"], pixel_area)
        print(name, json.dumps(result["models"][name]), flush=True)
    if args.finetune is not None:
        (weight, lr, steps) = args.finetune
        first = args.names[0]
        rows = finetune(paths[first], splits, pixel_area, weight, lr, int(steps))
        result["finetune"] = {"model": first, "weight": weight, "lr": lr, "rows": rows}
    suffix = f"_{args.label}" if args.label else ""
    if args.time_steps is not None:
        first = args.names[0]
        result["step_seconds"] = step_seconds(
            paths[first], splits["train"], pixel_area, args.time_steps
        )
        print(json.dumps(result["step_seconds"]), flush=True)
    stem = args.out / f"{args.names[0]}_hellmann_feynman{suffix}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    atomic_write_text(stem.with_suffix(".md"), table)
    print(table)
    return result


if __name__ == "__main__":
    main()
