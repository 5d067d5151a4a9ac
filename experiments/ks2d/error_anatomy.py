"""Where a saved ks2d energy model errs: E_total error by electron count, shell and well shape.

Pools the validation and test splits (never trained on) and groups the absolute E_total
errors of one model by the electron count `N` and, within each `N`, by

* the shell: *closed* (every Kohn–Sham level empty or full) or *partly filled* (some
  level at the Fermi level holds a fraction of its electrons: degenerate or nearly
  degenerate levels shared under the smearing, where the energy bends sharply with the
  potential's shape);
* for SHO potentials `v = ½ (ω_x² x² + ω_y² y²)`, the mean frequency `ω̄ = √(ω_x ω_y)`
  (Ha; wide wells have small `ω̄`) and the anisotropy `min(ω) / max(ω)` (1 = round).

It also gives the pooled MAE of every energy term, with about twice the samples of the test
split alone (less noise when two runs are compared), the E_total MAE of the sum of the five
predicted terms (T_s + E_ext + E_H + E_x + E_c, against the predicted E_total), and the
correlation matrix of the terms' signed errors (which terms err together: E_H and E_x of a
too compact or too diffuse density err with opposite signs). Writes
``<name>_error_anatomy_<input>.{md,json}`` beside the models:

    python experiments/ks2d/error_anatomy.py --data data/ks2d-sho-gga-2k \\
        --name sho-gga-2k-count-long --input v_ext --average-symmetries
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
from pathlib import Path

import keras
import numpy as np

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_write_text
from ednn.symmetry import SymmetryAverage
from ednn.translation import TranslationAverage

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

SPLITS = ("val", "test")
# Input image key -> file of the energy model of train_models.py that reads it.
FILES = {tm.input_key(m): tm.energy_filename(m) for m in ("v_ext", "density", "spin_density")}
# Bin edges: mean SHO frequency ω̄ (Ha) and anisotropy min(ω) / max(ω).
OMEGA_BINS = (0.0, 0.45, 0.6, 0.8, np.inf)
ANISOTROPY_BINS = (0.0, 0.5, 0.8, 0.95, 1.0 + 1e-9)
# An occupation this far from empty and full is partly filled (smearing 0.01 Ha).
PARTIAL = 1e-3


def is_averaged(model) -> bool:
    """Whether a saved model averages over the grid's symmetries (possibly inside a
    :class:`ednn.translation.TranslationAverage`)."""
    while isinstance(model, TranslationAverage):
        model = model.model
    return isinstance(model, SymmetryAverage)


def partly_filled(occupations: np.ndarray) -> np.ndarray:
    """Whether each sample has a level neither empty nor full, shape ``(m,)``.

    ``occupations``: ``(m, levels)`` for spin-unpolarised sets (full = 2) or
    ``(m, 2, levels)`` per spin (full = 1); NaN pads unused levels.
    """
    full = 2.0 if occupations.ndim == 2 else 1.0
    partial = (occupations > PARTIAL) & (occupations < full - PARTIAL)  # NaN: False
    return partial.reshape(len(occupations), -1).any(axis=1)


def sho_shape(params: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ω̄ = √(ω_x ω_y) and min/max of each sample's SHO frequencies; None if not all SHO."""
    parsed = [json.loads(p) for p in params]
    if any(p.get("kind") != "sho" for p in parsed):
        return None
    omega = np.array([p["omega"] for p in parsed], dtype=np.float64)
    return np.sqrt(omega.prod(axis=1)), omega.min(axis=1) / omega.max(axis=1)


def group(errors: np.ndarray, mask: np.ndarray) -> dict:
    """Count and MAE (mHa; None for no sample) of ``errors[mask]``."""
    return {
        "count": int(mask.sum()),
        "mae_mHa": float(errors[mask].mean()) if mask.any() else None,
    }


def binned(errors: np.ndarray, values: np.ndarray, edges: tuple) -> list[dict]:
    """:func:`group` of ``errors`` in each bin ``[edges[i], edges[i + 1])`` of ``values``."""
    return [
        {"low": low, "high": high, **group(errors, (values >= low) & (values < high))}
        for low, high in itertools.pairwise(edges)
    ]


def anatomy(errors: np.ndarray, counts: np.ndarray, partial: np.ndarray, shape) -> dict:
    """The E_total errors (mHa) grouped by N, then by shell and (SHO) well shape."""
    result = {}
    for n in np.unique(counts):
        mine = counts == n
        row = {
            **group(errors, mine),
            "closed": group(errors, mine & ~partial),
            "partly_filled": group(errors, mine & partial),
        }
        if shape is not None:
            row["mean_omega"] = binned(errors[mine], shape[0][mine], OMEGA_BINS)
            row["anisotropy"] = binned(errors[mine], shape[1][mine], ANISOTROPY_BINS)
        result[str(int(n))] = row
    return result


def _cell(group: dict) -> str:
    return "–" if group["mae_mHa"] is None else f"{group['mae_mHa']:.1f} ({group['count']})"


def markdown(result: dict) -> str:
    by_n = result["by_count"]
    lines = [
        f"MAE in mHa of `{result['model']}` on the pooled validation and test splits of "
        f"`{result['data']}`"
        + (", averaged over the grid's 8 symmetries" if result["average_symmetries"] else "")
        + ": every term, then E_total (samples) by N and well.",
        "",
        "| " + " | ".join(tm.LABELS) + " |",
        "|---" * len(tm.LABELS) + "|",
        "| " + " | ".join(f"{result['terms_mae_mHa'][t]:.2f}" for t in tm.TARGETS) + " |",
        "",
        f"E_total as the sum of the five predicted terms: {result['sum_of_terms_mae_mHa']:.2f}.",
        "",
        "Correlation of the signed errors:",
        "",
        "| | " + " | ".join(tm.LABELS) + " |",
        "|---" * (len(tm.LABELS) + 1) + "|",
        *(
            f"| {label} | " + " | ".join(f"{c:+.2f}" for c in row) + " |"
            for label, row in zip(tm.LABELS, result["error_correlation"], strict=True)
        ),
        "",
        "| N | all | closed shell | partly filled |",
        "|---|---|---|---|",
    ]
    for n, row in by_n.items():
        all_cell = f"{row['mae_mHa']:.1f} ({row['count']})"
        lines.append(
            f"| {n} | {all_cell} | {_cell(row['closed'])} | {_cell(row['partly_filled'])} |"
        )
    first = next(iter(by_n.values()))
    for key, title in (("mean_omega", "mean frequency ω̄ (Ha)"), ("anisotropy", "min(ω)/max(ω)")):
        if key not in first:
            continue
        heads = [f"{b['low']:g}–{b['high']:.3g}" for b in first[key]]
        lines += [
            "",
            f"| N \\ {title} | " + " | ".join(heads) + " |",
            "|---" * (len(heads) + 1) + "|",
        ]
        for n, row in by_n.items():
            lines.append(f"| {n} | " + " | ".join(_cell(b) for b in row[key]) + " |")
    return "\n".join(lines).replace("–inf", "–") + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", required=True, help="the run name (train_models.py --name)")
    parser.add_argument("--input", default="v_ext", choices=tuple(FILES))
    parser.add_argument(
        "--average-symmetries",
        action="store_true",
        help="average the model over the 8 symmetries of the grid first",
    )
    args = parser.parse_args(argv)
    path = args.out / f"{args.name}_{FILES[args.input]}"
    if not path.exists():
        parser.error(f"no saved model at {path}")
    model = keras.saving.load_model(path, compile=False)
    averaged = is_averaged(model)
    if args.average_symmetries and not averaged:
        model = SymmetryAverage(model, mirror_shift=1)
    (splits, _, _) = tm.load_splits(args.data)
    pooled = {k: np.concatenate([splits[s][k] for s in SPLITS]) for k in splits["test"]}
    images = tm.image(pooled, args.input, tm.SCALES[args.input])
    predicted = np.asarray(model.predict(images, batch_size=64, verbose=0), np.float64)
    truth = tm.energies(pooled).astype(np.float64)
    signed = 1000 * (predicted - truth)
    absolute = np.abs(signed)
    errors = absolute[:, -1]
    result = {
        "data": str(args.data),
        "model": path.name,
        "average_symmetries": args.average_symmetries or averaged,
        "splits": list(SPLITS),
        "e_total_mae_mHa": float(errors.mean()),
        "terms_mae_mHa": dict(zip(tm.TARGETS, map(float, absolute.mean(axis=0)), strict=True)),
        "sum_of_terms_mae_mHa": float(
            1000 * np.abs(predicted[:, :-1].sum(1) - truth[:, -1]).mean()
        ),
        "error_correlation": np.corrcoef(signed.T).round(4).tolist(),
        "by_count": anatomy(
            errors,
            pooled["n_electrons"],
            partly_filled(pooled["occupations"]),
            sho_shape(pooled["params"]),
        ),
    }
    table = markdown(result)
    print(table)
    stem = f"{args.name}_error_anatomy_{args.input}"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", table)
    return result


if __name__ == "__main__":
    main()
