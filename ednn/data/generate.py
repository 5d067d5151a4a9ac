"""``ednn generate``: build sheets, label them with a real engine, store extxyz shards.

Layout of an output directory ``DIR``::

    DIR/config.yaml          the configuration the data were made with
    DIR/shards/shard-00000.extxyz.gz   finished, labelled structures (ASE extxyz, gzip)
    DIR/_work/<id>.extxyz    labelled structures not yet packed into a shard
    DIR/failures.jsonl       structures whose label failed (e.g. SCF not converged)
    DIR/rejected.jsonl       structures rejected by screening, with the reason
    DIR/splits.json          train / validation / test / independent_md / transfer ids
    DIR/DATA_CARD.md         counts, energy ranges, label time against size

Every file is written atomically (temporary file, fsync, rename) or appended line by line
with fsync, so after ``kill -9`` a rerun finds no half-written shard, resumes where it
stopped and never relabels a finished structure.  Each structure is a pure function of
``(seed, recipe name, trajectory index)``, so a rerun builds exactly the same jobs.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ednn import _io
from ednn.config import ConfigError, load_yaml, merge, require
from ednn.data import engines
from ednn.data.screen import screen
from ednn.structures import DEFECTS, MATERIALS, PATTERNS, build_sheet

DEFAULTS: dict = {
    "name": "dataset",
    "seed": 0,
    "engine": {
        "name": "tblite",
        "method": "GFN1-xTB",
        "accuracy": 1.0,
        "electronic_temperature": 300.0,
        "max_iterations": 250,
        "mixer_damping": 0.4,
        "guess": "sad",
    },
    "vacuum": 20.0,
    "shard_size": 25,
    "workers": 1,
    "threads_per_worker": 1,
    "tersoff_labels": True,
    "splits": {"validation": 0.1, "test": 0.1, "seed": 0},
    "screen": {"min_distance": 1.1, "bond_cutoff": 1.85, "max_coordination": 4},
    "md": {"equilibration_steps": 2000, "interval_steps": 400, "timestep": 0.0005, "damping": 0.1},
    "recipes": [],
}

RECIPE_DEFAULTS: dict = {
    "name": None,
    "count": 0,
    "materials": ["graphene"],
    "patterns": list(PATTERNS),
    "defects": ["none"],
    "sizes": [[5, 8]],
    "strain": 0.0,
    "temperature": [0.0, 0.0],
    "snapshots_per_trajectory": 1,
    "split": "random",
}

SPLITS = ("random", "independent_md", "transfer")
ENGINES = ("tblite", "lammps-tersoff")
# Keys of the engine section that must not change between runs into one directory.
_FROZEN = ("seed", "engine", "vacuum", "md")
# Engine keys that change how fast the SCF converges, not where: they may change between runs
# (each label's `info["settings"]` records the value it was made with).  On 8 structures of
# the shipped dataset (one per recipe and material), tblite's Broyden damping 0.2 and an EEQ
# initial guess gave the same GFN1-xTB energies as its defaults (0.4, "sad") to 1e-5
# meV/atom, 1.58x faster in all (graphene and hetero cells 1.4-2.7x; hBN cells 0.7-1.15x).
_SPEED_ONLY = ("mixer_damping", "guess")
TBLITE_GUESSES = ("sad", "eeq")


def load_config(path: str | os.PathLike) -> dict:
    """Read and validate a generator config; errors name the offending key."""
    return validate_config(load_yaml(path))


def validate_config(user: dict) -> dict:
    """Merge ``user`` over :data:`DEFAULTS` and check every recipe."""
    config = merge(DEFAULTS, user)
    if config["engine"]["name"] not in ENGINES:
        raise ConfigError(
            f"`engine.name` must be one of {ENGINES}. Received: {config['engine']['name']!r}"
        )
    if config["engine"]["guess"] not in TBLITE_GUESSES:
        raise ConfigError(
            f"`engine.guess` must be one of {TBLITE_GUESSES}. "
            f"Received: {config['engine']['guess']!r}"
        )
    for key in ("shard_size", "workers", "threads_per_worker", "seed"):
        require(config[key], int, key)
        if config[key] < (0 if key == "seed" else 1):
            raise ConfigError(f"`{key}` must be positive. Received: {config[key]}")
    recipes = require(config["recipes"], list, "recipes")
    if not recipes:
        raise ConfigError("`recipes` is empty: the config must list at least one recipe")
    names = set()
    merged = []
    for k, recipe in enumerate(recipes):
        where = f"recipes[{k}]"
        r = merge(RECIPE_DEFAULTS, require(recipe, dict, where), where)
        if not isinstance(r["name"], str) or not r["name"].replace("_", "").isalnum():
            raise ConfigError(
                f"`{where}.name` must be a word (letters, digits, _). Received: {r['name']!r}"
            )
        if r["name"] in names:
            raise ConfigError(f"`{where}.name` {r['name']!r} is used by two recipes")
        names.add(r["name"])
        require(r["count"], int, f"{where}.count")
        for key, allowed in (
            ("materials", MATERIALS),
            ("patterns", PATTERNS),
            ("defects", DEFECTS),
        ):
            values = require(r[key], list, f"{where}.{key}")
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ConfigError(
                    f"`{where}.{key}` must be a non-empty list from {allowed}. Received: {values}"
                )
        sizes = require(r["sizes"], list, f"{where}.sizes")
        if not sizes or not all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s)
            for s in sizes
        ):
            raise ConfigError(
                f"`{where}.sizes` must be a list of [nx, ny] pairs. Received: {sizes}"
            )
        temps = r["temperature"]
        if not (isinstance(temps, list) and len(temps) == 2 and 0 <= temps[0] <= temps[1]):
            raise ConfigError(f"`{where}.temperature` must be [low, high] in K. Received: {temps}")
        if r["split"] not in SPLITS:
            raise ConfigError(f"`{where}.split` must be one of {SPLITS}. Received: {r['split']!r}")
        require(r["snapshots_per_trajectory"], int, f"{where}.snapshots_per_trajectory")
        merged.append(r)
    config["recipes"] = merged
    return config


def make_engine(config: dict):
    """The labelling engine named in ``config['engine']``."""
    settings = dict(config["engine"])
    name = settings.pop("name")
    if name == "tblite":
        return engines.TBLiteEngine(**settings)
    return engines.TersoffEngine()  # no settings (the SCF ones are tblite's)


def _seed(*parts: int | str) -> np.random.SeedSequence:
    ints = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.SeedSequence(ints)


def jobs(config: dict) -> list[dict]:
    """All structures the config asks for, interleaved across recipes.

    Each job is a plain dict (picklable) with a unique ``id``; the order spreads every
    recipe evenly over the run, so a partial run is already a balanced dataset.
    """
    out = []
    for order, recipe in enumerate(config["recipes"]):
        k = recipe["snapshots_per_trajectory"]
        for item in range(recipe["count"]):
            traj, snap = divmod(item, k)
            out.append(
                {
                    "id": f"{recipe['name']}-{traj:05d}-{snap:02d}",
                    "group": f"{recipe['name']}-{traj:05d}",
                    "recipe": recipe,
                    "traj": traj,
                    "snap": snap,
                    "key": ((item + 0.5) / recipe["count"], order),
                }
            )
    out.sort(key=lambda job: job["key"])
    return out


def build(job: dict, config: dict, tersoff=None) -> tuple[Atoms, dict]:
    """Build the structure of one job (MD snapshots included); deterministic."""
    recipe = job["recipe"]
    rng = np.random.default_rng(_seed(config["seed"], recipe["name"], job["traj"]))
    material = str(rng.choice(recipe["materials"]))
    nx, ny = recipe["sizes"][int(rng.integers(len(recipe["sizes"])))]
    defects = [d for d in recipe["defects"] if _defect_fits(d, material)] or ["none"]
    defect = str(rng.choice(defects))
    pattern = str(rng.choice(recipe["patterns"])) if material == "hetero" else None
    atoms, info = build_sheet(
        rng,
        material,
        nx,
        ny,
        pattern=pattern,
        defect=defect,
        strain=recipe["strain"],
        vacuum=config["vacuum"],
    )
    lo, hi = recipe["temperature"]
    temperature = float(rng.uniform(lo, hi)) if hi > 0 else 0.0
    if temperature > 0:
        tersoff = tersoff or engines.TersoffEngine()
        md = config["md"]
        atoms = tersoff.langevin_snapshots(
            atoms,
            temperature,
            seed=int(rng.integers(1, 2**30)),
            n_snapshots=job["snap"] + 1,
            equilibration_steps=md["equilibration_steps"],
            interval_steps=md["interval_steps"],
            timestep=md["timestep"],
            damping=md["damping"],
        )[-1]
    info["temperature_K"] = temperature
    return atoms, info


def _defect_fits(defect: str, material: str) -> bool:
    if defect in ("antisite", "c_in_hbn"):
        return material != "graphene"
    if defect == "bn_in_graphene":
        return material != "hbn"
    return True


def split_of(job: dict, config: dict) -> str:
    """Deterministic split of a job's trajectory group (independent of what is finished)."""
    fixed = job["recipe"]["split"]
    if fixed != "random":
        return fixed
    u = np.random.default_rng(_seed(config["splits"]["seed"], job["group"])).uniform()
    if u < config["splits"]["test"]:
        return "test"
    if u < config["splits"]["test"] + config["splits"]["validation"]:
        return "validation"
    return "train"


# --- worker side -------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(config: dict) -> None:
    _WORKER["config"] = config
    _WORKER["engine"] = make_engine(config)
    _WORKER["tersoff"] = None
    try:
        _WORKER["tersoff"] = engines.TersoffEngine()
    except engines.EngineMissingError:
        pass


def _run_job(job: dict) -> dict:
    config, engine, tersoff = _WORKER["config"], _WORKER["engine"], _WORKER["tersoff"]
    start = time.perf_counter()
    try:
        atoms, info = build(job, config, tersoff)
    except Exception as err:
        return {"id": job["id"], "status": "failed", "stage": "build", "error": repr(err)}
    build_time = time.perf_counter() - start
    checked = screen(atoms, **config["screen"])
    if not checked.ok:
        return {"id": job["id"], "status": "rejected", **checked.to_dict(), **info}
    start = time.perf_counter()
    try:
        energy = engine.energy(atoms)
    except engines.LabelFailedError as err:
        return {"id": job["id"], "status": "failed", "stage": "label", "error": str(err)}
    label_time = time.perf_counter() - start
    if tersoff is not None and config["tersoff_labels"]:
        info["tersoff_energy"] = tersoff.energy(atoms)
    info.update(
        id=job["id"],
        group=job["group"],
        recipe=job["recipe"]["name"],
        split=split_of(job, config),
        seed=config["seed"],
        label_time_s=round(label_time, 3),
        build_time_s=round(build_time, 3),
    )
    for key, value in engine.provenance().items():
        if key == "settings":
            info.update({f"engine_{k}": v for k, v in value.items()})
        else:
            info[key] = value
    atoms.info.update(info)
    atoms.calc = SinglePointCalculator(atoms, energy=energy)
    return {
        "id": job["id"],
        "status": "ok",
        "atoms": atoms,
        "n_atoms": len(atoms),
        "label_time_s": label_time,
    }


# --- storage -----------------------------------------------------------------------------


def _extxyz_bytes(frames: Sequence[Atoms]) -> bytes:
    from ase.io import write

    buffer = io.StringIO()
    write(buffer, list(frames), format="extxyz")
    return buffer.getvalue().encode("utf-8")


def read_shards(directory: str | os.PathLike) -> list[Atoms]:
    """All labelled structures of a dataset directory: packed shards, then unpacked work."""
    from ase.io import read

    directory = Path(directory)
    frames: list[Atoms] = []
    for path in sorted((directory / "shards").glob("shard-*.extxyz.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            frames.extend(read(handle, index=":", format="extxyz"))
    for path in sorted((directory / "_work").glob("*.extxyz")):
        frames.extend(read(path, index=":", format="extxyz"))
    return frames


class Store:
    """The on-disk state of one dataset directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, shard_size: int) -> None:
        self.root = Path(directory)
        self.shards = self.root / "shards"
        self.work = self.root / "_work"
        self.shard_size = shard_size
        self.shards.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def finished_ids(self) -> set[str]:
        """Ids that are labelled, failed or rejected: a rerun skips all of them."""
        done = set()
        for path in sorted(self.shards.glob("shard-*.extxyz.gz")):
            index = path.with_suffix("").with_suffix(".ids")
            if index.exists():
                done.update(index.read_text().split())
            else:
                done.update(a.info["id"] for a in _read_gz(path))
        done.update(p.name[: -len(".extxyz")] for p in self.work.glob("*.extxyz"))
        for name in ("failures.jsonl", "rejected.jsonl"):
            done.update(json.loads(line)["id"] for line in _io.read_lines(self.root / name))
        return done

    def add(self, atoms: Atoms) -> None:
        _io.atomic_write_bytes(self.work / f"{atoms.info['id']}.extxyz", _extxyz_bytes([atoms]))

    def record(self, name: str, result: dict) -> None:
        clean = {k: v for k, v in result.items() if k != "atoms"}
        _io.append_line(self.root / name, json.dumps(clean, sort_keys=True))

    def pack(self, final: bool = False) -> int:
        """Move finished work into numbered shards of ``shard_size`` (all of it if ``final``)."""
        from ase.io import read

        packed = 0
        while True:
            pending = sorted(self.work.glob("*.extxyz"))
            if not pending or (len(pending) < self.shard_size and not final):
                return packed
            chunk = pending[: self.shard_size]
            frames = [read(p, format="extxyz") for p in chunk]
            number = len(list(self.shards.glob("shard-*.extxyz.gz")))
            target = self.shards / f"shard-{number:05d}.extxyz.gz"
            ids = "\n".join(a.info["id"] for a in frames) + "\n"
            _io.atomic_write_text(target.with_suffix("").with_suffix(".ids"), ids)
            _io.atomic_write_bytes(target, gzip.compress(_extxyz_bytes(frames), mtime=0))
            for p in chunk:
                p.unlink()
            packed += len(frames)


def _read_gz(path: Path) -> list[Atoms]:
    from ase.io import read

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return read(handle, index=":", format="extxyz")


def _check_frozen(root: Path, config: dict) -> None:
    saved_path = root / "config.yaml"
    if saved_path.exists():
        saved = validate_config(load_yaml(saved_path))

        def frozen(c, key):
            if key != "engine":
                return c[key]
            return {k: v for k, v in c[key].items() if k not in _SPEED_ONLY}

        changed = [k for k in _FROZEN if frozen(saved, k) != frozen(config, k)]
        if changed:
            raise ConfigError(
                f"{root} was generated with different {', '.join(changed)}; labels would mix. "
                f"Use a new output directory, or restore these settings from {saved_path}."
            )
    _io.atomic_write_text(saved_path, yaml.safe_dump(config, sort_keys=False))


def write_splits(root: Path, config: dict) -> dict:
    """Write ``splits.json`` (ids per split, over labelled structures) and return it."""
    by_id = {job["id"]: job for job in jobs(config)}
    store = Store(root, config["shard_size"])
    labelled = sorted(store.finished_ids() & {a.info["id"] for a in read_shards(root)})
    splits: dict[str, list[str]] = {
        s: [] for s in ("train", "validation", "test", "independent_md", "transfer")
    }
    for ident in labelled:
        if ident in by_id:
            splits[split_of(by_id[ident], config)].append(ident)
    payload = {
        "seed": config["splits"]["seed"],
        "fractions": {
            "validation": config["splits"]["validation"],
            "test": config["splits"]["test"],
        },
        "rule": "by trajectory group: snapshots of one MD run share a split",
        "counts": {k: len(v) for k, v in splits.items()},
        "ids": splits,
    }
    _io.atomic_write_text(root / "splits.json", json.dumps(payload, indent=1))
    return payload


def generate(
    config: dict, out: str | os.PathLike, limit: int | None = None, progress: bool = True
) -> dict:
    """Label every job of ``config`` not yet finished in ``out``; returns a summary.

    Parameters
    ----------
    config : dict
        A validated config (:func:`validate_config`).
    out : path
        Dataset directory (created if needed; resumed if it exists).
    limit : int, optional
        Label at most this many new structures (for tests and time-boxed runs).
    """
    from tqdm import tqdm

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    # OpenMP reads these when tblite's library loads: set them before the first import.
    os.environ["OMP_NUM_THREADS"] = str(config["threads_per_worker"])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    make_engine(config)  # fail early, in the parent, if the engine is missing
    _check_frozen(root, config)
    store = Store(root, config["shard_size"])
    done = store.finished_ids()
    pending = [job for job in jobs(config) if job["id"] not in done]
    if limit is not None:
        pending = pending[:limit]
    counts = {"ok": 0, "failed": 0, "rejected": 0, "skipped": len(done)}
    bar = tqdm(total=len(pending), disable=not progress, unit="structure", dynamic_ncols=True)
    results = _results(pending, config)
    try:
        for result in results:
            status = result["status"]
            counts[status] += 1
            if status == "ok":
                store.add(result["atoms"])
                bar.set_postfix_str(f"{result['n_atoms']} atoms in {result['label_time_s']:.1f} s")
                store.pack()
            elif status == "failed":
                store.record("failures.jsonl", result)
                bar.write(f"label failed for {result['id']}: {result.get('error')}")
            else:
                store.record("rejected.jsonl", result)
            bar.update()
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()
    store.pack(final=limit is None)
    splits = write_splits(root, config)
    write_data_card(root)
    return {**counts, "splits": splits["counts"]}


def _results(pending: list[dict], config: dict):
    if config["workers"] == 1 or len(pending) <= 1:
        _init_worker(config)
        return (_run_job(job) for job in pending)
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(config["workers"], initializer=_init_worker, initargs=(config,))

    def stream():
        try:
            yield from pool.imap_unordered(_run_job, pending, chunksize=1)
        finally:
            pool.terminate()
            pool.join()

    return stream()


def write_data_card(root: str | os.PathLike) -> str:
    """Summarise a dataset directory into ``DATA_CARD.md`` and return the text."""
    root = Path(root)
    frames = read_shards(root)
    lines = [f"# Data card: {root.name}", ""]
    if not frames:
        text = "\n".join([*lines, "No labelled structures yet."]) + "\n"
        _io.atomic_write_text(root / "DATA_CARD.md", text)
        return text
    info = [a.info for a in frames]
    energies = np.array([a.get_potential_energy() / len(a) for a in frames])
    sizes = np.array([len(a) for a in frames])
    times = np.array([i.get("label_time_s", np.nan) for i in info], dtype=float)
    first = info[0]
    lines += [
        f"Engine: {first.get('engine')} {first.get('engine_version')}, method {first.get('method')}; "
        f"energies in eV (ASE `info`/calculator `energy`), Tersoff energies in `info['tersoff_energy']`.",
        "",
        f"Labelled structures: **{len(frames)}**; atoms per structure {sizes.min()}–{sizes.max()}; "
        f"energy per atom {energies.min():.4f} to {energies.max():.4f} eV.",
        "",
        "## Counts",
        "",
        "| recipe | material | defect | split | count | E/atom min (eV) | E/atom max (eV) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    keys = sorted({(i["recipe"], i["material"], i["defect"], i["split"]) for i in info})
    for key in keys:
        mask = np.array(
            [(i["recipe"], i["material"], i["defect"], i["split"]) == key for i in info]
        )
        lines.append(
            f"| {' | '.join(key)} | {mask.sum()} | {energies[mask].min():.4f} | {energies[mask].max():.4f} |"
        )
    lines += [
        "",
        "## Label time against size (one core per worker)",
        "",
        "| atoms | structures | mean time (s) |",
        "| ---: | ---: | ---: |",
    ]
    for n in np.unique(sizes):
        sel = sizes == n
        lines.append(f"| {n} | {sel.sum()} | {np.nanmean(times[sel]):.2f} |")
    for name in ("failures.jsonl", "rejected.jsonl"):
        records = [json.loads(x) for x in _io.read_lines(root / name)]
        lines += ["", f"## {name.split('.')[0].capitalize()}: {len(records)}", ""]
        for rec in records[:50]:
            lines.append(f"- `{rec['id']}`: {rec.get('reason') or rec.get('error')}")
    text = "\n".join(lines) + "\n"
    _io.atomic_write_text(root / "DATA_CARD.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ednn generate CONFIG.yaml --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="ednn generate",
        description="Build sheets, label them with a real engine, write extxyz shards (resumable).",
    )
    parser.add_argument("config", help="YAML config (see configs/dataset.yaml)")
    parser.add_argument("--out", required=True, help="dataset directory (resumed if it exists)")
    parser.add_argument("--limit", type=int, default=None, help="label at most N new structures")
    parser.add_argument("--workers", type=int, default=None, help="override `workers`")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.workers is not None:
            config["workers"] = args.workers
        summary = generate(config, args.out, limit=args.limit, progress=not args.no_progress)
    except (ConfigError, engines.EngineMissingError) as err:
        print(f"ednn generate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ednn generate: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0
