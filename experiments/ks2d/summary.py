"""The best ks2d results so far: one row per dataset and model kind, from the stored results.

Reads every ``<name>_train_models.json`` (models as trained) and ``<name>_symmetry_average.json``
(the same models averaged over the grid's symmetries, ``symmetrize.py``) in the results
folder and keeps, for each dataset and model (energies from the density, the potential,
the spin densities, the cross-functional transfer; the DCIGN), the run with the lowest test
E_total MAE (for the DCIGN: test ∫|Δn| / N). The averages of several models scored by
``ensemble.py`` (``<dataset>_ensemble_<input>[_<label>].json``) compete too, as
``ensemble of <members>``, and so do the models averaged over moves of the well by
``shift_average.py`` (``<name>_shift_average_m<max shift>.json``), and the models plus their
kernel correction of ``kernel_correction.py`` (``<name>_kernel_correction_[density_]m<max
shift>.json``). Writes
``summary.{md,json}`` there:

    python experiments/ks2d/summary.py

Nothing is recomputed: the numbers are those of the files, each row naming its run so that
the command that made it can be found (docs/ks2d.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from ednn._io import atomic_write_text

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("train_models", HERE / "train_models.py")
tm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tm)

KINDS = ("v_ext", "density", "spin_density", "transfer")
CHEMICAL_ACCURACY_mHa = 1.6


def epochs_through_restarts(runs: dict[str, dict], stored: dict, kind: str) -> str | None:
    """The epochs of ``kind`` of a run, after those of the runs it started from.

    ``runs`` maps run names to their stored results. ``"700+200"`` for a run of 200 epochs
    started (``--init-from``) from one of 700; the run's own count alone when a run of the
    chain is not stored.
    """
    counts, seen = [stored.get("epochs", {}).get(kind)], {stored.get("name")}
    while (parent := stored.get("init_from")) in runs and parent not in seen:
        seen.add(parent)
        stored = runs[parent]
        counts.insert(0, stored.get("epochs", {}).get(kind))
    if any(count is None for count in counts):
        return counts[-1] and str(counts[-1])
    return "+".join(str(count) for count in counts)


def run_label(row: dict) -> str:
    """A row's run name, with the training samples its supplements added (``--extra-train``)."""
    extra = row.get("extra_train_samples", 0)
    return f"{row['run']} (+{extra} train samples)" if extra else row["run"]


def candidates(results: Path) -> tuple[list[dict], list[dict]]:
    """Every stored energy row and DCIGN row: ``(energy rows, dcign rows)``."""
    (energy, dcign) = ([], [])
    paths = sorted(results.glob("*_train_models.json"))
    everything = [(path, json.loads(path.read_text())) for path in paths]
    runs = {stored["name"]: stored for _, stored in everything if stored.get("name")}
    for path, stored in everything:
        name = stored.get("name") or "(unnamed)"
        extra = sum((stored.get("extra_train_sizes") or {}).values())
        # train_models.py --average-symmetries saves and scores the averaged model.
        saved_averaged = bool(stored.get("schedule", {}).get("average_symmetries"))
        for kind, row in stored.get("energy_mae_mHa", {}).items():
            energy.append({
                "data": stored["data"], "kind": kind, "run": name, "averaged": saved_averaged,
                "extra_train_samples": extra,
                "epochs": epochs_through_restarts(runs, stored, kind), "mae_mHa": row,
            })  # fmt: skip
        if stored.get("density"):
            dcign.append({
                "data": stored["data"], "run": name, "averaged": False,
                "epochs": stored.get("epochs", {}).get("dcign"), **stored["density"],
            })  # fmt: skip
        averaged_path = path.with_name(
            path.name.replace("_train_models.json", "_symmetry_average.json")
        )
        if not averaged_path.exists():
            continue
        averaged = json.loads(averaged_path.read_text())
        for kind, rows in averaged["mae_mHa"].items():
            if kind == "dcign":
                test = rows["averaged"]["test"]
                dcign.append({
                    "data": stored["data"], "run": name, "averaged": True,
                    "epochs": stored.get("epochs", {}).get("dcign"), **test,
                })  # fmt: skip
                continue
            energy.append({
                "data": stored["data"], "kind": kind, "run": name, "averaged": True,
                "extra_train_samples": extra,
                "epochs": epochs_through_restarts(runs, stored, kind),
                "mae_mHa": rows["averaged"]["test"],
            })  # fmt: skip
    energy.extend(ensemble_rows(results, runs))
    energy.extend(shift_rows(results, runs))
    energy.extend(correction_rows(results, runs))
    return energy, dcign


def correction_rows(results: Path, runs: dict[str, dict]) -> list[dict]:
    """The test rows of each ``kernel_correction.py`` result (a model plus its correction)."""
    rows = []
    for path in sorted(results.glob("*_kernel_correction_*.json")):
        stored = json.loads(path.read_text())
        if stored.get("improves_validation") is False:
            continue  # a correction chosen on validation that does not improve it there
        name = stored["run"]
        run = runs.get(name, {})
        kind = stored.get("input", "v_ext")
        moves = stored["max_shift"]
        rows.append({
            "data": stored["data"], "kind": kind,
            "run": f"{name}"
            + (f", averaged over moves of up to {moves} px" if moves else "")
            + ", kernel-corrected (`KernelCorrection`"
            + (f", fitted on moves of up to {stored['fit_shift']} px" if stored.get("fit_shift") else "")
            + ")",
            "averaged": bool(run.get("schedule", {}).get("average_symmetries")),
            "extra_train_samples": sum((run.get("extra_train_sizes") or {}).values()),
            "epochs": epochs_through_restarts(runs, run, kind) if run else "–",
            "mae_mHa": stored["mae_mHa"]["corrected"]["test"],
        })  # fmt: skip
    return rows


def shift_rows(results: Path, runs: dict[str, dict]) -> list[dict]:
    """The test rows of each ``shift_average.py`` result (a model averaged over moves)."""
    rows = []
    for path in sorted(results.glob("*_shift_average_m*.json")):
        stored = json.loads(path.read_text())
        name = stored["run"]
        run = runs.get(name, {})
        rows.append({
            "data": stored["data"], "kind": stored.get("input", "v_ext"),
            "run": f"{name}, averaged over moves of up to {stored['max_shift']} px",
            "averaged": bool(run.get("schedule", {}).get("average_symmetries")),
            "extra_train_samples": sum((run.get("extra_train_sizes") or {}).values()),
            "epochs": epochs_through_restarts(runs, run, "v_ext") if run else "–",
            "mae_mHa": stored["mae_mHa"]["shift-averaged"]["test"],
        })  # fmt: skip
    return rows


def ensemble_rows(results: Path, runs: dict[str, dict]) -> list[dict]:
    """The mean (or weighted mean) of each ``ensemble.py`` result, as energy rows."""
    rows = []
    for path in sorted(results.glob("*_ensemble_*.json")):
        stored = json.loads(path.read_text())
        table = stored.get("test_mae_mHa", {})
        means = [k for k in table if k.startswith(("mean of the models", "weighted mean"))]
        if not means or "data" not in stored:
            continue
        members = [k for k in table if k not in means]
        weights = stored.get("weights")
        named = [
            m if weights is None else f"{m} ×{weights[m]:.2f}"
            for m in members
            if weights is None or weights[m] > 0
        ]
        averaged = bool(stored.get("average_symmetries")) or all(
            runs.get(m, {}).get("schedule", {}).get("average_symmetries") for m in members
        )
        rows.append({
            "data": stored["data"], "kind": stored.get("input", "v_ext"),
            "run": f"ensemble of {', '.join(named)} (`{path.stem}`)", "averaged": averaged,
            "extra_train_samples": 0, "epochs": "–", "mae_mHa": table[means[0]],
        })  # fmt: skip
    return rows


def best(energy: list[dict], dcign: list[dict]) -> dict:
    """The lowest test E_total (energies) and ∫|Δn| / N (DCIGN) per dataset and kind."""
    chosen: dict = {"energies": {}, "dcign": {}}
    for row in energy:
        key = f"{row['data']} {row['kind']}"
        if key not in chosen["energies"] or (
            row["mae_mHa"]["e_total"] < chosen["energies"][key]["mae_mHa"]["e_total"]
        ):
            chosen["energies"][key] = row
    for row in dcign:
        key = row["data"]
        if key not in chosen["dcign"] or row["integrated"] < chosen["dcign"][key]["integrated"]:
            chosen["dcign"][key] = row
    return chosen


def markdown(chosen: dict) -> str:
    lines = [
        "Best test results per dataset and model kind (MAE in mHa; **bold**: within chemical "
        f"accuracy, {CHEMICAL_ACCURACY_mHa} mHa). `averaged`: over the grid's 8 symmetries.",
        "",
        "| dataset | input | " + " | ".join(tm.LABELS) + " | run | epochs | averaged |",
        "|---" * (len(tm.LABELS) + 5) + "|",
    ]
    rows = sorted(chosen["energies"].values(), key=lambda r: (r["data"], KINDS.index(r["kind"])))
    for row in rows:
        cells = []
        for term in tm.TARGETS:
            value = row["mae_mHa"][term]
            text = f"{value:.1f}"
            cells.append(f"**{text}**" if value <= CHEMICAL_ACCURACY_mHa else text)
        lines.append(
            f"| `{row['data']}` | {row['kind']} | " + " | ".join(cells)
            + f" | {run_label(row)} | {row['epochs']} | {'yes' if row['averaged'] else 'no'} |"
        )  # fmt: skip
    if chosen["dcign"]:
        lines += [
            "",
            "| dataset | DCIGN ∫\\|Δn\\| d²r / N | worst sample | MAE (bohr⁻²) | run | epochs "
            "| averaged |",
            "|---" * 7 + "|",
        ]
        for data, row in sorted(chosen["dcign"].items()):
            lines.append(
                f"| `{data}` | {100 * row['integrated']:.2f} % | "
                f"{100 * row['integrated_max']:.1f} % | {row['mae']:.2e} | {row['run']} | "
                f"{row['epochs']} | {'yes' if row['averaged'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    (energy, dcign) = candidates(args.results)
    if not energy and not dcign:
        parser.error(f"no *_train_models.json results in {args.results}")
    chosen = best(energy, dcign)
    table = markdown(chosen)
    print(table)
    atomic_write_text(args.results / "summary.json", json.dumps(chosen, indent=1) + "\n")
    atomic_write_text(args.results / "summary.md", table)
    return chosen


if __name__ == "__main__":
    main()
