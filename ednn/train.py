"""``ednn train``: fit an EDNN to labelled structures, with TensorBoard and resumable checkpoints.

The pipeline: structures -> images (:mod:`ednn.data.dataset`, cached in memory) -> batches of
one image shape, shuffled and augmented by exact symmetries -> a custom
:class:`tf.GradientTape` step -> Adam.  The network learns the residual of the energy after
per-species reference energies, fitted by least squares on the training split's
compositions and stored in the model's metadata (predictions add them back).

Loss (``training.loss``, ``training.loss_per_atom``): the error of each structure's energy
divided by its atom count (per atom, the default; by the mean atom count otherwise) and by
the spread ``sigma`` (eV/atom) of the training residuals, then squared (``mse``) or made
absolute (``mae``) and averaged over the batch.  Reported MAE/RMSE are in meV/atom.

Distributed training goes through :func:`ednn.distributed.get_backend`: every process reads
all data and walks the same global batch plan; each takes a contiguous share of every
global batch, the gradients of ``sum(loss over its share) * size / global batch`` are
averaged with ``allreduce_mean``, so ``k`` processes with shares of ``B / k`` take exactly the
steps of one process with batches of ``B``.  Only the chief writes logs and checkpoints.

Run with ``ednn train CONFIG.yaml --out RUN_DIR``; the layout of ``RUN_DIR`` is described in
:mod:`ednn.checkpoint`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from ednn import _io
from ednn.checkpoint import (
    MARKER,
    RunDirError,
    latest_checkpoint,
    load_checkpoint,
    prepare_run_dir,
    restore_optimizer,
    save_checkpoint,
    save_model_atomic,
)
from ednn.config import ConfigError, load_yaml, require
from ednn.data import readers
from ednn.data.dataset import (
    ImageSet,
    batch_plan,
    fit_reference_energies,
    load_image_set,
    make_tf_dataset,
    random_split,
    shard,
)
from ednn.structio import StructureFileError
from ednn.train_config import (
    DEFAULTS,
    KNOWN_SPLITS,
    load_config,
    resumed_config,
    validate_config,
)

__all__ = ["DEFAULTS", "load_config", "main", "train", "validate_config"]

# The residual spread is clamped below by this (eV/atom), so that a nearly perfect
# reference fit does not blow up the normalisation.
MIN_SIGMA = 1e-3


# --- data --------------------------------------------------------------------------------


def raster_spec(config: dict):
    """The :class:`ednn.raster.RasterSpec` of a config: raster fields, species, focus."""
    from ednn.raster import RasterSpec

    focus = config["model"]["focus"]
    return RasterSpec(
        species=tuple(config["data"]["species"]),
        multiple_of=tuple(focus) if isinstance(focus, list) else focus,
        **config["raster"],
    )


def _assign_splits(data: ImageSet, config: dict, saved: dict | None) -> tuple[np.ndarray, dict]:
    settings = config["data"]["splits"]
    if saved is not None:  # a resumed run uses exactly the structures it started with
        lookup = {i: s for s, ids in saved["ids"].items() for i in ids}
        missing = sorted(set(lookup) - set(data.ids))
        if missing:
            raise readers.DataError(
                f"The run was started with structures that the data no longer holds: "
                f"{readers.format_items(missing)}."
            )
        splits = np.array([lookup.get(i, "") for i in data.ids], dtype=object)
        return splits, saved
    source = settings["source"]
    own = data.splits
    complete = all(s in KNOWN_SPLITS for s in own)
    usable = complete and np.any(own == "train") and np.any(own == "validation")
    if source == "dataset" and not complete:
        bad = [i for i, s in zip(data.ids, own, strict=True) if s not in KNOWN_SPLITS]
        raise readers.DataError(
            "`data.splits.source: dataset` needs every structure to carry a split "
            f"(splits.json or info['split']). Received none for {readers.format_items(bad)}."
        )
    if source == "dataset" or (source == "auto" and usable):
        splits, used = own.copy(), "dataset"
    else:
        fractions = {"validation": settings["validation"], "test": settings["test"]}
        splits, used = random_split(data.groups, fractions, seed=settings["seed"]), "random"
    fraction = config["data"]["train_fraction"]
    if fraction < 1:
        train = np.flatnonzero(splits == "train")
        rng = np.random.default_rng([settings["seed"], 1])
        keep = rng.choice(train, size=max(1, round(fraction * len(train))), replace=False)
        splits[np.setdiff1d(train, keep)] = "unused"
    record = {
        "source": used,
        "seed": settings["seed"],
        "train_fraction": fraction,
        "counts": {s: int(np.sum(splits == s)) for s in (*KNOWN_SPLITS, "unused")},
        "ids": {
            s: [i for i, t in zip(data.ids, splits, strict=True) if t == s] for s in KNOWN_SPLITS
        },
    }
    return splits, record


# --- model and optimizer -----------------------------------------------------------------


def _as_pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _build_model(config, n_channels, normalisation, metadata, tile_network):
    from ednn.model import build_ednn

    model_cfg = config["model"]
    network = tile_network if tile_network is not None else model_cfg["tile_network"]
    options = {} if network is not None else dict(model_cfg["architecture"])
    if options.get("conv_layers") is not None:
        options["conv_layers"] = [tuple(layer) for layer in options["conv_layers"]]
    return build_ednn(
        _as_pair(model_cfg["focus"]),
        _as_pair(model_cfg["context"]),
        n_channels=n_channels,
        n_targets=len(config["targets"]),
        tile_network=network,
        boundary=model_cfg["boundary"],
        metadata=metadata,
        energy_scale=normalisation["energy_scale"],
        energy_shift_per_tile=normalisation["energy_shift_per_tile"],
        **options,
    )


def _learning_rate(config: dict, steps_per_epoch: int, epochs: int):
    import keras

    settings = config["training"]["schedule"]
    rate = float(config["training"]["optimizer"]["learning_rate"])
    name = settings["name"]
    if name in ("constant", "plateau"):
        return rate
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=steps_per_epoch, decay_rate=float(settings["decay_rate"])
        )
    warmup = int(settings["warmup_epochs"]) * steps_per_epoch
    total = max(1, epochs * steps_per_epoch - warmup)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, total, alpha=settings["final_fraction"], warmup_target=rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(rate, total, alpha=settings["final_fraction"])


def _make_optimizer(config: dict, model, steps_per_epoch: int, epochs: int):
    import keras

    clipnorm = config["training"]["optimizer"]["clipnorm"]
    optimizer = keras.optimizers.Adam(
        learning_rate=_learning_rate(config, steps_per_epoch, epochs), clipnorm=clipnorm
    )
    optimizer.build(model.trainable_variables)
    return optimizer


def _current_lr(optimizer) -> float:
    return float(np.asarray(optimizer.learning_rate))


# --- steps -------------------------------------------------------------------------------


def _make_steps(model, optimizer, backend, train: ImageSet, targets: Targets, settings: dict):
    """Compiled train and evaluation steps.

    Each returns the sums ``[loss, |error|, error², structures, values]`` over its share, the
    errors in eV/atom (eV per structure when atom counts are unknown).
    """
    import tensorflow as tf

    n_targets, n_channels = len(targets.sigma), train.n_channels
    sigma = tf.constant(targets.sigma.astype(np.float32).reshape(1, n_targets))
    mean_size = tf.constant(float(np.mean(targets.sizes(train))), tf.float32)
    square = settings["loss"] == "mse"
    per_size = settings["loss_per_atom"]
    per_atom = targets.per_atom
    n_processes = float(backend.size)
    signature = [
        tf.TensorSpec((None, None, None, n_channels), tf.float32),
        tf.TensorSpec((None, n_targets), tf.float32),
        tf.TensorSpec((None,), tf.float32),
        tf.TensorSpec((None,), tf.float32),
    ]

    def statistics(images, targets, sizes, mask, training):
        predicted = model(images, training=training)
        error = predicted - targets
        scale = sizes[:, None] if per_size else mean_size
        scaled = error / (sigma * scale)
        per_structure = tf.reduce_mean(scaled**2 if square else tf.abs(scaled), axis=1)
        loss = tf.reduce_sum(per_structure * mask)
        # Metrics: eV per atom (or per structure when atom counts are unknown).
        per = (error / sizes[:, None] if per_atom else error) * mask[:, None]
        count = tf.reduce_sum(mask)
        return loss, tf.stack(
            [loss, tf.reduce_sum(tf.abs(per)), tf.reduce_sum(per**2), count, count * n_targets]
        )

    @tf.function(input_signature=[*signature, tf.TensorSpec((), tf.int32)])
    def train_step(images, targets, sizes, mask, n_global):
        with tf.GradientTape() as tape:
            loss, stats = statistics(images, targets, sizes, mask, True)
            # The gradient of this, averaged over processes, is that of the mean loss over
            # the global batch, whatever the number of processes.
            objective = loss * (n_processes / tf.cast(n_global, tf.float32))
        variables = model.trainable_variables
        gradients = backend.allreduce_mean(tape.gradient(objective, variables))
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return stats

    @tf.function(input_signature=signature)
    def eval_step(images, targets, sizes, mask):
        return statistics(images, targets, sizes, mask, False)[1]

    return train_step, eval_step


def _summarise(sums: np.ndarray, backend) -> dict[str, float]:
    import tensorflow as tf

    # Means of per-process sums: their ratios are those of the global sums.
    total = np.asarray(backend.allreduce_mean([tf.constant(sums, tf.float64)])[0], np.float64)
    structures, values = max(total[3], 1.0), max(total[4], 1.0)
    return {
        "loss": float(total[0] / structures),
        "mae": float(1000.0 * total[1] / values),
        "rmse": float(1000.0 * math.sqrt(total[2] / values)),
    }


# --- TensorBoard -------------------------------------------------------------------------


class _TensorBoard:
    """Event files in ``RUN/logs/train`` and ``RUN/logs/validation`` (chief only)."""

    def __init__(self, run_dir: Path, settings: dict, unit: str, example: tuple | None):
        import tensorflow as tf

        self.writers = {
            name: tf.summary.create_file_writer(str(run_dir / "logs" / name))
            for name in ("train", "validation")
        }
        self.settings = settings
        self.suffix = unit.replace("meV/", "meV_per_")  # mae_meV_per_atom
        self.example = example

    def log(self, epoch: int, model, train_stats: dict, val_stats: dict | None, lr: float):
        import tensorflow as tf

        for name, stats in (("train", train_stats), ("validation", val_stats)):
            if stats is None:
                continue
            with self.writers[name].as_default(step=epoch):
                tf.summary.scalar("loss", stats["loss"])
                tf.summary.scalar(f"mae_{self.suffix}", stats["mae"])
                tf.summary.scalar(f"rmse_{self.suffix}", stats["rmse"])
        with self.writers["train"].as_default(step=epoch):
            tf.summary.scalar("learning_rate", lr)
            if self.settings["log_histograms"]:
                for variable in model.trainable_variables:
                    tf.summary.histogram(f"weights/{variable.path}", variable)
        if self.settings["log_images"] and self.example is not None:
            image, channel = self.example
            tile_map = np.asarray(model.tile_outputs(image[None], training=False))[0, :, :, 0]
            # Each focus region as a block of pixels, so that the map lies over the raster.
            blocks = np.kron(tile_map, np.ones(model.focus))
            with self.writers["validation"].as_default(step=epoch):
                tf.summary.image(f"raster/{channel}", _as_picture(image[:, :, 0]))
                tf.summary.image("tile_energy_map", _as_picture(blocks))
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _as_picture(values: np.ndarray) -> np.ndarray:
    # (1, H, W, 1) in [0, 1], y pointing up as in a plot of the structure.
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low if high > low else 1.0)
    return scaled[None, ::-1, :, None].astype(np.float32)


# --- the run -----------------------------------------------------------------------------


@dataclasses.dataclass
class Targets:
    """What the network learns: the residual after reference energies, and its spread.

    Attributes
    ----------
    references : numpy.ndarray, shape (n_species, n_targets)
        Reference energies (eV/atom), fitted on the training split; empty for bare images.
    sigma : numpy.ndarray, shape (n_targets,)
        Spread (standard deviation) of the training residual per atom (per tile for bare
        images), eV; at least :data:`MIN_SIGMA`.  The loss is measured in units of it.
    per_atom : bool
        Whether atom counts are known (metrics in meV/atom, else meV/structure).
    focus : (int, int)
        The model's focus, to count tiles.
    """

    references: np.ndarray
    sigma: np.ndarray
    per_atom: bool
    focus: tuple[int, int]

    @property
    def unit(self) -> str:
        return "meV/atom" if self.per_atom else "meV/structure"

    def tiles(self, part: ImageSet) -> np.ndarray:
        """Focus regions per image, float64 ``(len(part),)``."""
        shapes = part.shapes
        return ((shapes[:, 0] // self.focus[0]) * (shapes[:, 1] // self.focus[1])).astype(float)

    def sizes(self, part: ImageSet) -> np.ndarray:
        """Atoms per structure (tiles when atom counts are unknown), float64."""
        return part.n_atoms.astype(float) if self.per_atom else self.tiles(part)

    def residual(self, part: ImageSet) -> np.ndarray:
        """Targets minus reference energies, eV, ``(len(part), n_targets)``."""
        if part.counts is None:
            return part.targets.copy()
        return part.targets - part.counts @ self.references

    def reference_table(self, species: Sequence[str]) -> dict:
        """``{symbol: eV/atom}`` (a list per symbol when there are several targets)."""
        n_targets = self.references.shape[1]
        return {
            symbol: float(row[0]) if n_targets == 1 else row.tolist()
            for symbol, row in zip(species, self.references, strict=False)
        }

    @classmethod
    def fit(cls, train: ImageSet, focus: tuple[int, int]) -> Targets:
        """References by least squares on composition; spread of the residual per atom."""
        n_targets = train.targets.shape[1]
        references = np.zeros((0, n_targets))
        if train.counts is not None:
            references = fit_reference_energies(train.counts, train.targets)
        per_atom = bool(np.all(train.n_atoms > 0))
        targets = cls(references, np.ones(n_targets), per_atom, focus)
        spread = np.std(targets.residual(train) / targets.sizes(train)[:, None], axis=0)
        targets.sigma = np.maximum(spread, MIN_SIGMA)
        return targets


def _open_run(config, out, resume, overwrite, backend) -> tuple[dict, Path, bool]:
    run_dir = Path(out if out is not None else config["output"]["run_dir"])
    if backend.is_chief:
        resuming = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    backend.barrier()
    if not backend.is_chief:
        resuming = resume and (run_dir / MARKER).exists()
    if resuming:
        config = resumed_config(run_dir, config)
    return config, run_dir, resuming


def _load_data(config, run_dir: Path, resuming: bool, chief: bool, progress: bool):
    from tqdm import tqdm

    data = load_image_set(
        config["data"]["path"],
        raster_spec(config),
        format=config["data"]["format"],
        targets=config["targets"],
        spacing_tolerance=config["data"]["spacing_tolerance"],
    )
    saved = None
    if resuming and (run_dir / "split.json").exists():
        saved = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    splits, record = _assign_splits(data, config, saved)
    used = np.isin(splits, KNOWN_SPLITS)
    data = data.subset(np.flatnonzero(used))
    data.splits = splits[used]
    if not np.any(data.splits == "train"):
        raise readers.DataError("The training split is empty; check `data.splits`.")
    if chief:  # only once the data are known to be usable, so a failed start leaves no run
        _io.atomic_write_text(run_dir / MARKER, yaml.safe_dump(config, sort_keys=False))
        if saved is None:
            _io.atomic_write_text(run_dir / "split.json", json.dumps(record, indent=1))
    _say(chief, f"ednn train: {len(data)} structures " + json.dumps(record["counts"]))
    if config["training"]["cache"]:
        show = chief and progress
        with tqdm(total=len(data), desc="rasterizing", unit="image", disable=not show) as bar:
            data.cache(workers=config["training"]["workers"], progress=bar.update)
    return data, record


def _metadata(config, data: ImageSet, targets: Targets, record: dict) -> dict:
    frames = data.frames_ or []
    info = frames[0].info if frames else {}
    metadata = {
        "units": "eV",
        "target_names": list(config["targets"]),
        "reference_energies": targets.reference_table(data.species),
        "provenance": {
            "data": config["data"]["path"],
            "split": {k: v for k, v in record.items() if k != "ids"},
            "residual_sigma_eV": targets.sigma.tolist(),
            "engine": {k: info[k] for k in ("engine", "engine_version", "method") if k in info},
        },
    }
    start = config["model"]["tile_network"]
    if isinstance(start, str):  # fine-tuned from a saved tile network or trained model
        metadata["provenance"]["initial_tile_network"] = start
    if data.spec is not None:
        metadata["raster"] = data.spec.to_dict()
    return metadata


def _model_and_optimizer(config, run_dir, resuming, data, targets, train, record, tile_network):
    import keras

    settings = config["training"]
    steps = len(batch_plan(train.shapes, settings["batch_size"], shuffle=False))
    checkpoint = latest_checkpoint(run_dir) if resuming else None
    if checkpoint is not None:
        model, values, state = load_checkpoint(checkpoint)
        optimizer = _make_optimizer(config, model, steps, settings["epochs"])
        restore_optimizer(optimizer, values, state.pop("optimizer_variables"))
        return model, optimizer, state, steps
    keras.utils.set_random_seed(settings["seed"])
    n_targets = len(config["targets"])
    residual = targets.residual(train)
    scale = config["model"]["energy_scale"]
    if scale == "auto":  # tile outputs of order one
        scale = targets.sigma * np.mean(targets.sizes(train) / targets.tiles(train))
    # Structures have per-species references; bare images get a mean energy per tile.
    shift = np.zeros(n_targets)
    if train.counts is None:
        shift = np.mean(residual / targets.tiles(train)[:, None], axis=0)
    normalisation = {
        "energy_scale": _per_target(scale, n_targets),
        "energy_shift_per_tile": _per_target(shift, n_targets),
    }
    metadata = _metadata(config, data, targets, record)
    model = _build_model(config, data.n_channels, normalisation, metadata, tile_network)
    optimizer = _make_optimizer(config, model, steps, settings["epochs"])
    return model, optimizer, _fresh_state(settings["seed"]), steps


def _fresh_state(seed: int) -> dict:
    return {
        "epoch": 0,
        "global_step": 0,
        "seed": seed,
        "best": {"epoch": 0, "mae": None},
        "epochs_since_best": 0,
        "plateau": {"best": None, "wait": 0},
        "stopped_early": False,
        "history": [],
    }


def _say(chief: bool, message: str) -> None:
    if chief:
        print(message, flush=True)


def train(
    config: dict,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    progress: bool = True,
    tile_network=None,
) -> dict:
    """Train an EDNN as ``config`` says; returns a summary (metrics, history, paths).

    Parameters
    ----------
    config : dict
        A user configuration (merged over :data:`DEFAULTS` here) or a merged one.
    out : path, optional
        Run directory; ``config["output"]["run_dir"]`` by default.
    resume : bool
        Continue the run in ``out`` from its last checkpoint (a fresh start if it has none).
    overwrite : bool
        Replace an existing run directory.
    epochs : int, optional
        Override ``training.epochs`` (the total, counting epochs already run).
    progress : bool
        Show progress bars.
    tile_network : keras.Model, optional
        A user's tile network mapping ``(batch, T0, T1, C)`` tiles to ``(batch, n_targets)``;
        replaces ``model.architecture`` and ``model.tile_network``.

    Returns
    -------
    dict
        ``run_dir``, ``best_epoch``, ``epochs_run``, ``metrics`` (errors per split),
        ``history`` (one dict per epoch), ``reference_energies`` (eV/atom).
    """
    from ednn.distributed import get_backend

    config = validate_config(config)
    if epochs is not None:
        config["training"]["epochs"] = require(epochs, int, "epochs")
    backend = get_backend(config["training"]["backend"])
    chief = backend.is_chief
    config, run_dir, resuming = _open_run(config, out, resume, overwrite, backend)
    data, record = _load_data(config, run_dir, resuming, chief, progress)
    train_set, val_set = data.split("train"), data.split("validation")
    targets = Targets.fit(train_set, _as_pair(config["model"]["focus"]))
    _say(
        chief,
        f"ednn train: reference energies (eV/atom) {targets.reference_table(data.species)}; "
        f"residual spread {1000 * targets.sigma.max():.1f} "
        f"{targets.unit if targets.per_atom else 'meV/tile'}",
    )
    model, optimizer, state, steps = _model_and_optimizer(
        config, run_dir, resuming, data, targets, train_set, record, tile_network
    )
    if state["epoch"]:
        step = int(np.asarray(optimizer.iterations))
        _say(chief, f"ednn train: resumed {run_dir} after epoch {state['epoch']} (step {step})")
    backend.broadcast_variables(list(model.variables) + list(optimizer.variables))
    board = None
    if chief:
        example_set = val_set if len(val_set) else train_set
        channel = data.spec.channel_names[0] if data.spec is not None else "channel0"
        board = _TensorBoard(
            run_dir, config["output"], targets.unit, (example_set.image(0), channel)
        )
        _say(chief, f"ednn train: TensorBoard: tensorboard --logdir {run_dir / 'logs'}")
    try:
        _fit(
            config,
            model,
            optimizer,
            state,
            backend,
            targets,
            train_set,
            val_set,
            steps,
            run_dir,
            board,
            progress,
        )
    finally:
        if board is not None:
            board.close()
    metrics = _finish(config, model, state, data, targets, record, run_dir) if chief else {}
    backend.barrier()
    return {
        "run_dir": str(run_dir),
        "best_epoch": state["best"]["epoch"],
        "epochs_run": state["epoch"],
        "metrics": metrics.get("splits", {}),
        "history": state["history"],
        "reference_energies": targets.reference_table(data.species),
    }


def _fit(
    config, model, optimizer, state, backend, targets, train, val, steps, run_dir, board, progress
) -> None:
    """The epochs from ``state["epoch"]`` on: train, validate, log, checkpoint, stop early."""
    import keras
    from tqdm import tqdm

    settings = config["training"]
    seed, total = settings["seed"], settings["epochs"]
    chief = backend.is_chief
    train_step, eval_step = _make_steps(model, optimizer, backend, train, targets, settings)
    train_residual, train_sizes = targets.residual(train), targets.sizes(train)
    augment = settings["augment"] if any(settings["augment"].values()) else None
    patience = settings["early_stopping"]["patience"]
    bar = tqdm(
        total=max(0, total - state["epoch"]) * steps,
        desc="training",
        unit="step",
        disable=not (chief and progress),
        dynamic_ncols=True,
    )
    try:
        for epoch in range(state["epoch"], total):
            if patience and state["epochs_since_best"] >= patience:
                state["stopped_early"] = True
                _say(chief, f"ednn train: early stop: no improvement in {patience} epochs")
                break
            began = time.perf_counter()
            keras.utils.set_random_seed(seed + epoch)  # dropout and the like replay on resume
            plan = batch_plan(
                train.shapes,
                settings["batch_size"],
                seed=seed,
                epoch=epoch,
                shuffle=settings["shuffle"],
            )
            stream = make_tf_dataset(
                train,
                plan,
                train_residual,
                sizes=train_sizes,
                augment=augment,
                seed=seed,
                epoch=epoch,
                rank=backend.rank,
                size=backend.size,
                workers=settings["workers"],
            )
            sums = np.zeros(5)
            bar.set_postfix_str(f"epoch {epoch + 1}/{total}")
            for images, residual, sizes, mask, n_global in stream:
                sums += train_step(images, residual, sizes, mask, n_global).numpy()
                state["global_step"] += 1
                bar.update()
            train_stats = _summarise(sums, backend)
            val_stats = None
            if len(val):
                val_stats = _evaluate_sums(eval_step, val, targets, settings, backend)
            lr = _current_lr(optimizer)
            _end_epoch(config, state, epoch, train_stats, val_stats, lr, began, optimizer)
            if chief:
                if state["best"]["epoch"] == epoch + 1:
                    save_model_atomic(model, run_dir / "best.keras")
                board.log(epoch + 1, model, train_stats, val_stats, lr)
                save_checkpoint(
                    run_dir, model, optimizer, state, config["output"]["keep_checkpoints"]
                )
                text = f", validation MAE {val_stats['mae']:.2f}" if val_stats else ""
                bar.write(
                    f"epoch {epoch + 1}/{total}: train MAE {train_stats['mae']:.2f}{text} "
                    f"{targets.unit}, lr {lr:.2e}, {state['history'][-1]['time_s']:.1f} s"
                )
    finally:
        bar.close()


def _end_epoch(config, state, epoch, train_stats, val_stats, lr, began, optimizer) -> None:
    """Book-keeping after an epoch: best model, early-stopping count, plateau, history."""
    settings = config["training"]
    watched = (val_stats or train_stats)["mae"]
    if settings["schedule"]["name"] == "plateau":
        _plateau(optimizer, state["plateau"], watched, settings["schedule"])
    best = state["best"]["mae"]
    if best is None or watched < best - settings["early_stopping"]["min_delta"]:
        state["best"] = {"epoch": epoch + 1, "mae": watched}
        state["epochs_since_best"] = 0
    else:
        state["epochs_since_best"] += 1
    state["epoch"] = epoch + 1
    state["history"].append(
        {
            "epoch": epoch + 1,
            "train": train_stats,
            "validation": val_stats,
            "learning_rate": lr,
            "time_s": round(time.perf_counter() - began, 3),
        }
    )


def _finish(config, model, state, data, targets, record, run_dir) -> dict:
    """Save the final model; evaluate the best one on every split into metrics.json."""
    import keras

    from ednn.evaluate import evaluate, write_metrics

    save_model_atomic(model, run_dir / "model.keras")
    best_path = run_dir / "best.keras"
    best = keras.saving.load_model(best_path, compile=False) if best_path.exists() else model
    history = state["history"]
    metrics = {
        "model": best_path.name if best_path.exists() else "model.keras",
        "best_epoch": state["best"]["epoch"],
        "monitor": "validation MAE" if np.any(data.splits == "validation") else "train MAE",
        "unit": targets.unit,
        "splits": evaluate(best, data, batch_size=config["training"]["eval_batch_size"]),
        "reference_energies_eV_per_atom": targets.reference_table(data.species),
        "epochs_run": state["epoch"],
        "stopped_early": state["stopped_early"],
        "mean_epoch_time_s": float(np.mean([h["time_s"] for h in history])) if history else None,
        "n_structures": record["counts"],
        "history": history,
    }
    write_metrics(run_dir / "metrics.json", metrics)
    for name, values in metrics["splits"].items():
        if "mae" in values:
            print(
                f"ednn train: {name}: MAE {values['mae']:.2f} RMSE {values['rmse']:.2f} "
                f"{values['unit']} ({values['n']} structures)"
            )
    print(f"ednn train: best model {best_path} (epoch {state['best']['epoch']})", flush=True)
    return metrics


def _per_target(value, n_targets: int) -> float | list[float]:
    values = np.broadcast_to(np.asarray(value, dtype=np.float64), (n_targets,))
    return float(values[0]) if n_targets == 1 else values.tolist()


def _evaluate_sums(eval_step, part: ImageSet, targets: Targets, settings, backend) -> dict:
    residual, sizes = targets.residual(part), targets.sizes(part)
    sums = np.zeros(5)
    for batch in batch_plan(part.shapes, settings["eval_batch_size"], shuffle=False):
        mine = shard(batch, backend.rank, backend.size)
        if not len(mine):
            continue
        images = np.stack(part.images(mine)).astype(np.float32, copy=False)
        mask = np.ones(len(mine), np.float32)
        sums += eval_step(
            images, residual[mine].astype(np.float32), sizes[mine].astype(np.float32), mask
        ).numpy()
    return _summarise(sums, backend)


def _plateau(optimizer, plateau: dict, value: float, settings: dict) -> None:
    """Reduce-on-plateau: scale the learning rate by `factor` after `patience` flat epochs."""
    if plateau["best"] is None or value < plateau["best"]:
        plateau["best"], plateau["wait"] = value, 0
        return
    plateau["wait"] += 1
    if plateau["wait"] >= settings["patience"]:
        rate = max(_current_lr(optimizer) * settings["factor"], settings["min_learning_rate"])
        optimizer.learning_rate = rate
        plateau["wait"] = 0


# --- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ednn train CONFIG.yaml [--out RUN_DIR] [--resume] [--epochs N]``."""
    parser = argparse.ArgumentParser(
        prog="ednn train",
        description="Train an EDNN from a YAML config (merged over the defaults), with "
        "TensorBoard logs and resumable checkpoints.",
    )
    parser.add_argument(
        "config",
        nargs="?",
        help="YAML config (see configs/train_default.yaml); optional "
        "with --resume, which reads RUN_DIR/config.yaml",
    )
    parser.add_argument("--out", help="run directory (default: output.run_dir of the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run dir")
    parser.add_argument("--epochs", type=int, help="total epochs (overrides training.epochs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.config is not None:
            user = load_yaml(args.config)
        elif args.resume and args.out:
            user = load_yaml(Path(args.out) / MARKER)
        else:
            parser.error("CONFIG is required unless --resume and --out name a run directory")
        train(
            user,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            epochs=args.epochs,
            progress=not args.no_progress,
        )
    except (ConfigError, RunDirError, readers.DataError, StructureFileError) as err:
        print(f"ednn train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "ednn train: interrupted; continue with `ednn train --resume --out RUN_DIR`",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
