"""Generate datasets of 2D Kohn–Sham solutions: potentials in, densities and energies out.

Layout of an output directory::

    config.json          the full config (defaults merged); a rerun must match it
    shard_00000.npz      samples [0, shard_size) that converged, compressed
    shard_00001.npz      ...
    pending/             one .npz per finished sample of a shard not yet packed
    failures.jsonl       one JSON line per sample that failed (id, error type, message)
    splits.json          {"train": [ids], "val": [ids], "test": [ids]} of stored samples
    manifest.json        counts, shards, timing summary

Sample ``i`` draws its electron count and potential from
``numpy.random.default_rng([seed, i])``, so it does not depend on which other samples
were run, on the order, or on the number of workers. A run is resumable: samples in a
shard or in ``pending/`` and ids in ``failures.jsonl`` are never recomputed. Every file
is written to a temporary name and moved into place with :func:`os.replace`, so an
interrupted run leaves no half-written file under a final name.

Arrays in a shard (``m`` samples, grid ``n``, ``k`` levels padded with NaN):
``id (m,)``, ``n_electrons (m,)``, ``v_ext (m, n, n)`` and ``density (m, n, n)`` in
``field_dtype`` (float32 by default), ``eigenvalues``/``occupations (m, k)``, the energies
``t_s, e_ext, e_hartree, e_x, e_c, entropy_term, e_total (m,)`` in Hartree (float64),
convergence data ``iterations, energy_change, density_residual, eigen_residual,
edge_density, wall_time (m,)``, and ``params (m,)``, the potential's parameters as JSON.

Spin: by default (``magnetization: null``) every sample is spin-unpolarised, both spins
in each orbital. With ``magnetization`` set, every sample is a spin-polarised
(collinear, unrestricted) solution with fixed electrons per channel
``n_↑ - n_↓ = M``: ``"lowest"`` takes ``M = N mod 2`` (singlets and doublets), an int or
a list of ints gives the admissible ``M`` (drawn per sample among those with the parity
of ``N`` and ``M <= N``). Such shards also hold ``n_up, n_down (m,)`` and
``spin_densities (m, 2, n, n)`` (spin up first), and ``eigenvalues``/``occupations`` are
per channel, ``(m, 2, k)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ednn.config import ConfigError, load_yaml
from ednn.ks2d.grid import Grid
from ednn.ks2d.potentials import KINDS, sample_potential
from ednn.ks2d.scf import KSFailure, solve
from ednn.ks2d.xc import FUNCTIONALS

DEFAULTS: dict = {
    "functional": "lda",
    "exact_exchange": None,
    "potential": "sho",
    "potential_options": {},
    "n_electrons": [2, 4, 6, 8],
    "grid": {"n": 64, "box": 24.0},
    "count": 100,
    "seed": 0,
    "shard_size": 100,
    "splits": {"train": 0.8, "val": 0.1, "test": 0.1},
    "smearing": 0.01,
    "scf": {},
    "max_edge_density": 1e-6,
    "field_dtype": "float32",
    "workers": 1,
    "magnetization": None,
}

SCF_KEYS = (
    "energy_tol",
    "density_tol",
    "residual_tol",
    "max_iter",
    "mixing",
    "history",
    "extra_states",
    "correction",
)

SCALARS = (
    "t_s",
    "e_ext",
    "e_hartree",
    "e_x",
    "e_c",
    "entropy_term",
    "e_total",
    "energy_change",
    "density_residual",
    "eigen_residual",
    "edge_density",
    "wall_time",
)


def load_config(config: dict | str | os.PathLike | None) -> dict:
    """Merge a config (dict, or a YAML/JSON file) over :data:`DEFAULTS` and check it.

    Raises
    ------
    ednn.config.ConfigError
        A ``ValueError``: for a missing or malformed file, an unknown key (named in the
        message) or a value out of range.
    """
    if config is None:
        user: dict = {}
    elif isinstance(config, dict):
        user = dict(config)
    else:
        user = load_yaml(config)  # a missing or malformed file is a ConfigError naming it
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"expected config keys among {sorted(DEFAULTS)}. Received unknown key(s): {unknown}"
        )
    merged = {**DEFAULTS, **user}
    merged["grid"] = {**DEFAULTS["grid"], **(user.get("grid") or {})}
    merged["splits"] = dict(user.get("splits") or DEFAULTS["splits"])
    unknown_scf = sorted(set(merged["scf"]) - set(SCF_KEYS))
    if unknown_scf:
        raise ConfigError(
            f"expected `scf` keys among {list(SCF_KEYS)}. Received unknown key(s): {unknown_scf}"
        )
    unknown_grid = sorted(set(merged["grid"]) - {"n", "box"})
    if unknown_grid:
        raise ConfigError(
            f"expected `grid` keys 'n' and 'box'. Received unknown key(s): {unknown_grid}"
        )
    if merged["functional"] not in FUNCTIONALS:
        raise ConfigError(
            f"`functional` must be one of {FUNCTIONALS}. Received: "
            f"functional={merged['functional']!r}"
        )
    if merged["potential"] not in KINDS:
        raise ConfigError(
            f"`potential` must be one of {KINDS}. Received: potential={merged['potential']!r}"
        )
    electrons = merged["n_electrons"]
    electrons = [electrons] if isinstance(electrons, int) else list(electrons)
    if not electrons or not all(isinstance(e, int) and e >= 1 for e in electrons):
        raise ConfigError(
            "`n_electrons` must be a positive int or a list of them. "
            f"Received: n_electrons={electrons!r}"
        )
    merged["n_electrons"] = electrons
    merged["magnetization"] = _check_magnetization(merged["magnetization"], electrons)
    fractions = merged["splits"]
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ConfigError(
            f"`splits` must map names to non-negative fractions. Received: splits={fractions!r}"
        )
    for key in ("count", "shard_size", "workers"):
        if not isinstance(merged[key], int) or merged[key] < 1:
            raise ConfigError(f"`{key}` must be a positive int. Received: {key}={merged[key]!r}")
    Grid(merged["grid"]["n"], merged["grid"]["box"])  # validates n and box
    return json.loads(json.dumps(merged))  # plain JSON types, as config.json stores them


def _check_magnetization(value: object, electrons: list[int]) -> str | list[int] | None:
    # None, "lowest", or a list of non-negative ints admitting every electron count.
    if value is None or value == "lowest":
        return value
    values = value if isinstance(value, list) else [value]
    if not values or not all(
        isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in values
    ):
        raise ConfigError(
            "`magnetization` (n_up - n_down) must be null, 'lowest', a non-negative int or a "
            f"list of them. Received: magnetization={value!r}"
        )
    for n in electrons:
        if not _admissible(values, n):
            raise ConfigError(
                f"`magnetization` must admit every electron count: n_up - n_down = M needs "
                f"M <= N and M with the parity of N. Received: magnetization={value!r} "
                f"and no admissible value for n_electrons={n}"
            )
    return values


def _admissible(values: list[int], n_electrons: int) -> list[int]:
    return [m for m in values if m <= n_electrons and (n_electrons - m) % 2 == 0]


def spin_counts(config: dict, n_electrons: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Electrons per spin channel ``(n_up, n_down)`` of a sample, or None if unpolarised.

    ``rng`` is drawn from only when ``config["magnetization"]`` admits several values for
    ``n_electrons``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> spin_counts({"magnetization": "lowest"}, 5, rng), spin_counts({"magnetization": None}, 4, rng)
    ((3, 2), None)
    """
    value = config["magnetization"]
    if value is None:
        return None
    if value == "lowest":
        m = n_electrons % 2
    else:
        choices = _admissible(value, n_electrons)
        m = choices[0] if len(choices) == 1 else int(rng.choice(choices))
    return (n_electrons + m) // 2, (n_electrons - m) // 2


def split_ids(count: int, fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Assign sample ids ``0..count-1`` to splits by a seeded permutation.

    The assignment depends only on ``count``, ``fractions`` and ``seed``, never on which
    samples failed, so splits are stable across reruns.

    Example
    -------
    >>> {k: len(v) for k, v in split_ids(10, {"train": 0.8, "test": 0.2}, 0).items()}
    {'train': 8, 'test': 2}
    """
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(count)
    total = sum(fractions.values())
    bounds = np.round(np.cumsum([f / total for f in fractions.values()]) * count).astype(int)
    out, start = {}, 0
    for name, stop in zip(fractions, bounds, strict=True):
        out[name] = sorted(int(i) for i in order[start:stop])
        start = stop
    return out


def solve_sample(config: dict, sample_id: int) -> dict:
    """Draw and solve sample ``sample_id`` of a dataset; return a flat dict for storage.

    Raises
    ------
    KSFailure
        If the SCF does not converge or the density is not confined to the box.
    """
    rng = np.random.default_rng([config["seed"], sample_id])
    n_electrons = int(rng.choice(config["n_electrons"]))
    grid = Grid(config["grid"]["n"], config["grid"]["box"])
    v_ext, params = sample_potential(config["potential"], grid, rng, **config["potential_options"])
    functional = config["functional"]
    if functional == "hybrid" and config["exact_exchange"] is not None:
        from ednn.ks2d.xc import Functional

        functional = Functional("hybrid", config["exact_exchange"])
    spin = spin_counts(config, n_electrons, rng)  # after the potential: old datasets unchanged
    result = solve(
        v_ext,
        n_electrons,
        grid,
        functional,
        spin=spin,
        smearing=config["smearing"],
        max_edge_density=config["max_edge_density"],
        keep_orbitals=False,
        **config["scf"],
    )
    out = {name: getattr(result, name) for name in SCALARS}
    out.update(
        id=sample_id,
        n_electrons=n_electrons,
        iterations=result.iterations,
        v_ext=result.v_ext,
        density=result.density,
        eigenvalues=result.eigenvalues,
        occupations=result.occupations,
        params=json.dumps(params),
    )
    if spin is not None:
        out.update(n_up=spin[0], n_down=spin[1], spin_densities=result.spin_densities)
    return out


def _atomic_write_npz(path: Path, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_json(path: Path, data: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


def _read_failures(path: Path) -> dict[int, dict]:
    failures: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interrupted run
                continue
            failures[int(record["id"])] = record
    return failures


def _shard_path(out: Path, shard: int) -> Path:
    return out / f"shard_{shard:05d}.npz"


def _pack_shard(out: Path, shard: int, ids: Sequence[int], config: dict) -> int:
    # Stack the pending samples of one shard into its .npz; return the number stored.
    dtype = np.dtype(config["field_dtype"])
    samples = []
    for i in ids:
        path = out / "pending" / f"{i:08d}.npz"
        if path.exists():
            with np.load(path) as data:
                samples.append({key: data[key] for key in data.files})
    arrays: dict[str, np.ndarray] = {}
    if samples:
        width = max(s["eigenvalues"].shape[-1] for s in samples)

        def padded(key: str) -> np.ndarray:  # (m, k) or, per spin channel, (m, 2, k)
            rows = np.full((len(samples), *samples[0][key].shape[:-1], width), np.nan)
            for row, s in zip(rows, samples, strict=True):
                row[..., : s[key].shape[-1]] = s[key]
            return rows

        arrays = {
            "id": np.array([int(s["id"]) for s in samples]),
            "n_electrons": np.array([int(s["n_electrons"]) for s in samples]),
            "iterations": np.array([int(s["iterations"]) for s in samples]),
            "v_ext": np.stack([s["v_ext"] for s in samples]).astype(dtype),
            "density": np.stack([s["density"] for s in samples]).astype(dtype),
            "eigenvalues": padded("eigenvalues"),
            "occupations": padded("occupations"),
            "params": np.array([str(s["params"]) for s in samples]),
            **{key: np.array([float(s[key]) for s in samples]) for key in SCALARS},
        }
        if config["magnetization"] is not None:
            arrays["n_up"] = np.array([int(s["n_up"]) for s in samples])
            arrays["n_down"] = np.array([int(s["n_down"]) for s in samples])
            spins = np.stack([s["spin_densities"] for s in samples])
            arrays["spin_densities"] = spins.astype(dtype)
    _atomic_write_npz(_shard_path(out, shard), arrays)
    for i in ids:
        (out / "pending" / f"{i:08d}.npz").unlink(missing_ok=True)
    return len(samples)


def _finished_in_shards(out: Path, n_shards: int, shard_size: int) -> set[int]:
    done: set[int] = set()
    for shard in range(n_shards):
        if _shard_path(out, shard).exists():
            done.update(range(shard * shard_size, (shard + 1) * shard_size))
    return done


def _worker_init() -> None:  # pragma: no cover - runs in a child process
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _run_one(config: dict, sample_id: int) -> tuple[int, dict | None, dict | None]:
    try:
        return sample_id, solve_sample(config, sample_id), None
    except KSFailure as error:
        failure = {"id": sample_id, "error": type(error).__name__, "message": str(error)}
        return sample_id, None, failure


def generate(
    config: dict | str | os.PathLike, out: str | os.PathLike, progress: bool = True
) -> dict:
    """Build (or resume) a dataset of 2D Kohn–Sham solutions in the directory ``out``.

    Parameters
    ----------
    config : dict or path
        Settings merged over :data:`DEFAULTS` (see :func:`load_config`).
    out : path
        Output directory; created if missing. If it holds a dataset, its ``config.json``
        must equal ``config`` (the run resumes) or a ``ValueError`` names the differences.
    progress : bool
        Show a tqdm progress bar with ETA.

    Returns
    -------
    dict
        The manifest: counts of stored and failed samples, shards, timing summary.

    Notes
    -----
    With ``workers > 1`` samples are solved in spawned processes, each with one BLAS
    thread (``OPENBLAS_NUM_THREADS=1`` is set for them): the block operations of the
    eigensolver are too small to gain from threads, and on a shared machine threads
    contend. Only the parent process writes files.
    """
    config = load_config(config)
    out = Path(out)
    (out / "pending").mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        # `workers` changes how a run is executed, not what it computes.
        keys = (set(previous) | set(config)) - {"workers"}
        changed = sorted(k for k in keys if previous.get(k) != config.get(k))
        if changed:
            raise ConfigError(
                f"expected the config of the dataset already in {str(out)!r} to resume it; "
                f"use a new directory. Received different values for: {changed}"
            )
    else:
        _atomic_write_json(config_path, config)

    count, shard_size = config["count"], config["shard_size"]
    n_shards = -(-count // shard_size)
    failures_path = out / "failures.jsonl"
    failures = _read_failures(failures_path)
    done = _finished_in_shards(out, n_shards, shard_size)
    done.update(int(p.stem) for p in (out / "pending").glob("*.npz"))
    done.update(failures)
    todo = [i for i in range(count) if i not in done]

    def shard_ids(shard: int) -> range:
        return range(shard * shard_size, min((shard + 1) * shard_size, count))

    def shard_complete(shard: int) -> bool:
        return all(i in done for i in shard_ids(shard))

    def finish(sample_id: int, sample: dict | None, failure: dict | None) -> None:
        if sample is not None:
            _atomic_write_npz(out / "pending" / f"{sample_id:08d}.npz", sample)
        else:
            with open(failures_path, "a") as handle:
                handle.write(json.dumps(failure) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            failures[sample_id] = failure
        done.add(sample_id)
        shard = sample_id // shard_size
        if shard_complete(shard) and not _shard_path(out, shard).exists():
            _pack_shard(out, shard, shard_ids(shard), config)

    # Shards that were complete but not packed when a run stopped.
    for shard in range(n_shards):
        if shard_complete(shard) and not _shard_path(out, shard).exists():
            _pack_shard(out, shard, shard_ids(shard), config)

    from tqdm.auto import tqdm

    bar = tqdm(total=count, initial=count - len(todo), disable=not progress, unit="sample",
               desc=f"ks2d {config['functional']}/{config['potential']}")  # fmt: skip
    start = time.perf_counter()
    try:
        if config["workers"] == 1:
            for sample_id in todo:
                finish(*_run_one(config, sample_id))
                bar.update()
        else:
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                config["workers"], mp_context=context, initializer=_worker_init
            ) as pool:
                futures = [pool.submit(_run_one, config, i) for i in todo]
                for future in concurrent.futures.as_completed(futures):
                    finish(*future.result())
                    bar.update()
    finally:
        bar.close()

    stored_ids: list[int] = []
    times: list[float] = []
    for shard in range(n_shards):
        with np.load(_shard_path(out, shard)) as data:
            if "id" in data.files:
                stored_ids.extend(int(i) for i in data["id"])
                times.extend(float(t) for t in data["wall_time"])
    stored = set(stored_ids)
    splits = {
        name: [i for i in ids if i in stored]
        for name, ids in split_ids(count, config["splits"], config["seed"]).items()
    }
    _atomic_write_json(out / "splits.json", splits)
    manifest = {
        "count": count,
        "stored": len(stored),
        "failed": len(failures),
        "shards": [_shard_path(out, s).name for s in range(n_shards)],
        "split_sizes": {name: len(ids) for name, ids in splits.items()},
        "mean_wall_time_s": float(np.mean(times)) if times else None,
        "this_run_s": time.perf_counter() - start,
    }
    _atomic_write_json(out / "manifest.json", manifest)
    return manifest


def load_dataset(out: str | os.PathLike, split: str | None = None) -> dict[str, np.ndarray]:
    """Load all shards of a dataset (or one split of it) into arrays ordered by id.

    Parameters
    ----------
    out : path
        Directory written by :func:`generate`.
    split : str, optional
        A name in ``splits.json`` (e.g. ``"train"``); all stored samples if omitted.

    Returns
    -------
    dict of ndarray
        The shard arrays concatenated (see the module notes); eigenvalue widths are padded
        with NaN to the widest shard.
    """
    out = Path(out)
    parts = []
    for path in sorted(out.glob("shard_*.npz")):
        with np.load(path) as data:
            if "id" in data.files:
                parts.append({key: data[key] for key in data.files})
    if not parts:
        raise ValueError(f"expected at least one stored sample in {str(out)!r}. Received: none")
    width = max(p["eigenvalues"].shape[-1] for p in parts)
    for p in parts:
        for key in ("eigenvalues", "occupations"):
            pad = [(0, 0)] * (p[key].ndim - 1) + [(0, width - p[key].shape[-1])]
            p[key] = np.pad(p[key], pad, constant_values=np.nan)
    data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(data["id"])
    if split is not None:
        splits = json.loads((out / "splits.json").read_text())
        if split not in splits:
            raise ValueError(f"`split` must be one of {sorted(splits)}. Received: split={split!r}")
        order = order[np.isin(data["id"][order], splits[split])]
    return {key: value[order] for key, value in data.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``ednn ks2d-generate CONFIG --out DIR [--workers N] [--quiet]``."""
    parser = argparse.ArgumentParser(
        prog="ednn ks2d-generate",
        description="Generate (or resume) a dataset of 2D Kohn–Sham solutions.",
    )
    parser.add_argument("config", help="YAML or JSON config; keys of generate.DEFAULTS")
    parser.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    parser.add_argument("--workers", type=int, default=None, help="processes (overrides config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.workers is not None:
            config["workers"] = args.workers
        manifest = generate(config, args.out, progress=not args.quiet)
    except ConfigError as err:
        print(f"ednn ks2d-generate: error: {args.config}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ednn ks2d-generate: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
