"""Configuration of ``ednn train``: defaults, validation, and what a resumed run may change.

A training config is YAML merged over :data:`DEFAULTS` (:func:`ednn.config.merge`); an unknown
key is an error that names it.  :func:`validate_config` checks every value and returns the
merged config; :func:`load_config` reads and validates a file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ednn.checkpoint import MARKER
from ednn.config import ConfigError, load_yaml, merge, require

__all__ = ["DEFAULTS", "RESUMABLE", "load_config", "resumed_config", "validate_config"]

DEFAULTS: dict = {
    "data": {
        # A file (extxyz, OUTCAR, vasprun.xml, ...), an `ednn generate` directory or an
        # original-EDNN HDF5 file (X, Y), or a list of files and directories.
        "path": None,
        "format": "auto",
        "species": ["C", "B", "N"],
        # Sheets are repeated until the pixel size is this close to raster.spacing (as
        # `ednn energy` does); null keeps the rectangular cell (up to 10 % off).
        "spacing_tolerance": 0.02,
        # source: auto (the dataset's own split if complete, else random), dataset, random.
        "splits": {"source": "auto", "validation": 0.1, "test": 0.1, "seed": 0},
        "train_fraction": 1.0,
    },
    "raster": {  # RasterSpec fields; species come from data.species, multiple_of = focus
        "spacing": 0.25,
        "sigma": 0.3,
        "height_channel": True,
        "normalize": True,
        "z_weighted": False,
        "height_radius": 5.0,
        "padding": 8.0,
        "spacing_channels": False,
    },
    "model": {
        "focus": 16,
        "context": 16,
        "boundary": "periodic",
        "architecture": {  # default_tile_network options: (filters, kernel, stride, repeat)
            "conv_layers": [[32, 4, 2, 1], [64, 3, 2, 1], [64, 3, 1, 2], [32, 3, 1, 1]],
            "dense_units": [256, 64],
            "padding": "valid",
            "activation": "relu",
            "initializer": "he_normal",
            "output_initializer": "glorot_uniform",
        },
        # Path to a user's .keras tile network, or to a trained ednn model whose tile network
        # (weights included) starts the training: fine-tuning. Replaces `architecture`.
        "tile_network": None,
        "energy_scale": "auto",  # or a number (eV per tile output)
    },
    "targets": ["energy"],
    "training": {
        "epochs": 100,
        "batch_size": 8,
        "loss": "mse",
        "loss_per_atom": True,
        "optimizer": {"learning_rate": 1e-3, "clipnorm": None},
        # name: constant, cosine, exponential or plateau (reduce on plateau of validation MAE)
        "schedule": {
            "name": "cosine",
            "warmup_epochs": 0,
            "final_fraction": 0.01,
            "decay_rate": 0.95,
            "factor": 0.5,
            "patience": 5,
            "min_learning_rate": 1e-6,
        },
        "early_stopping": {"patience": 30, "min_delta": 0.0},  # patience 0: off
        "seed": 0,
        "shuffle": True,
        # translate/flip: whole-pixel rolls and mirrors of the cached image (or true / false
        # for both); subpixel: also move the atoms by a random fraction of a pixel and
        # rasterize afresh every epoch (periodic sheets; costs a rasterization per image)
        "augment": {"translate": True, "flip": True, "subpixel": False},
        "cache": True,
        "workers": 2,
        "eval_batch_size": 16,
        "backend": "auto",
    },
    "output": {
        "run_dir": "runs/default",
        "log_images": True,
        "log_histograms": True,
        "keep_checkpoints": 1,
    },
}

SCHEDULES = ("constant", "cosine", "exponential", "plateau")
SPLIT_SOURCES = ("auto", "dataset", "random")
KNOWN_SPLITS = ("train", "validation", "test", "independent_md", "transfer")
# Settings that may change when a run is resumed.
RESUMABLE = ("training.epochs", "training.workers", "training.cache", "training.backend")


# --- configuration -----------------------------------------------------------------------


def validate_config(user: dict | None) -> dict:
    """Merge ``user`` over :data:`DEFAULTS` and check the values; errors name the key."""
    user = copy.deepcopy(user or {})
    raster = user.get("raster")
    if isinstance(raster, dict):
        for key, hint in (
            ("species", "set the species in `data.species`"),
            ("multiple_of", "the image is always a whole number of `model.focus` regions"),
        ):
            if key in raster:
                raise ConfigError(f"Unknown config key `raster.{key}`: {hint}.")
    training = user.get("training")
    if isinstance(training, dict) and isinstance(training.get("augment"), bool):
        training["augment"] = {"translate": training["augment"], "flip": training["augment"]}
    config = merge(DEFAULTS, user)
    data, model, train_cfg = config["data"], config["model"], config["training"]
    path = data["path"]
    if path is None:
        raise ConfigError("`data.path` must name the training data (a file, directory or list).")
    if not (
        isinstance(path, str) or (isinstance(path, list) and all(isinstance(p, str) for p in path))
    ):
        raise ConfigError(f"`data.path` must be a path or a list of paths. Received: {path!r}")
    species = require(data["species"], list, "data.species")
    if not species or not all(isinstance(s, str) for s in species):
        raise ConfigError(f"`data.species` must be a list of symbols. Received: {species!r}")
    if data["splits"]["source"] not in SPLIT_SOURCES:
        raise ConfigError(
            f"`data.splits.source` must be one of {SPLIT_SOURCES}. "
            f"Received: {data['splits']['source']!r}"
        )
    fractions = [data["splits"][k] for k in ("validation", "test")]
    if not all(isinstance(f, int | float) and 0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ConfigError(
            "`data.splits.validation` and `data.splits.test` must be fractions in [0, 1) "
            f"summing to less than 1. Received: {fractions}"
        )
    fraction = data["train_fraction"]
    if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ConfigError(f"`data.train_fraction` must be in (0, 1]. Received: {fraction!r}")
    targets = require(config["targets"], list, "targets")
    if not targets or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f"`targets` must be a non-empty list of names. Received: {targets!r}")
    for key in ("epochs", "batch_size", "seed", "workers", "eval_batch_size"):
        value = require(train_cfg[key], int, f"training.{key}")
        if value < (0 if key in ("epochs", "seed") else 1):
            raise ConfigError(f"`training.{key}` must be positive. Received: {value}")
    for key, value in train_cfg["augment"].items():
        require(value, bool, f"training.augment.{key}")
    if train_cfg["loss"] not in ("mse", "mae"):
        raise ConfigError(
            f"`training.loss` must be 'mse' or 'mae'. Received: {train_cfg['loss']!r}"
        )
    if train_cfg["schedule"]["name"] not in SCHEDULES:
        raise ConfigError(
            f"`training.schedule.name` must be one of {SCHEDULES}. "
            f"Received: {train_cfg['schedule']['name']!r}"
        )
    learning_rate = train_cfg["optimizer"]["learning_rate"]
    if not isinstance(learning_rate, int | float) or learning_rate <= 0:
        raise ConfigError(
            f"`training.optimizer.learning_rate` must be positive. Received: {learning_rate!r}"
        )
    for key, least in (("focus", 1), ("context", 0)):
        value = model[key]
        pair = value if isinstance(value, list) and len(value) == 2 else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in pair):
            raise ConfigError(
                f"`model.{key}` must be an integer >= {least} (pixels) or a pair of them. "
                f"Received: {value!r}"
            )
    if model["boundary"] not in ("periodic", "zero"):
        raise ConfigError(
            f"`model.boundary` must be 'periodic' or 'zero'. Received: {model['boundary']!r}"
        )
    scale = model["energy_scale"]
    if scale != "auto" and not (isinstance(scale, int | float | list)):
        raise ConfigError(f"`model.energy_scale` must be 'auto' or a number. Received: {scale!r}")
    return config


def load_config(path: str | os.PathLike) -> dict:
    """Read a training config (YAML) and merge it over :data:`DEFAULTS`."""
    return validate_config(load_yaml(path))


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resumed_config(run_dir: Path, config: dict | None) -> dict:
    saved = validate_config(load_yaml(run_dir / MARKER))
    if config is None:
        return saved
    old, new = _flatten(saved), _flatten(config)
    changed = sorted(
        key
        for key in set(old) | set(new)
        if old.get(key) != new.get(key) and key not in RESUMABLE and not key.startswith("output.")
    )
    if changed:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"--resume needs the configuration the run in {run_dir} was started with; only "
            f"{', '.join(RESUMABLE)} may change. Received changes: {detail}"
        )
    resumed = copy.deepcopy(saved)
    for key in RESUMABLE:
        section, name = key.split(".")
        resumed[section][name] = config[section][name]
    resumed["output"] = config["output"]
    return resumed
