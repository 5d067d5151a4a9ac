"""Learning 2D Kohn–Sham energies and densities from images (issue 6), a first small run.

Three models on a dataset written by ``ednn ks2d-generate`` (Hartree atomic units):

(a) a multi-output EDNN, density image -> [T_s, E_ext, E_H, E_x, E_c, E_total];
(b) the same EDNN architecture, potential image -> the same six energies;
(c) the tiled DCIGN (:class:`ednn.dcign.DensityDCIGN`), potential image -> density.

Each model trains for a fixed wall-time budget (``--minutes``) on the train split, keeps the
weights of the best validation loss, and is scored on the test split. The DCIGN's predicted
test densities are also scored by the energies they imply: the density-only terms
(E_ext, E_H, E_x, E_c; :func:`ednn.ks2d.energies.density_energies`, with the dataset's
functional, evaluated non-self-consistently) of predicted and true densities are compared.
For a hybrid only the local part of E_x, ``(1 - α) E_x^LDA``, is a density functional.

With ``--baseline count`` the energy models learn each energy less the training mean for
the sample's electron count, which the saved model adds back
(:class:`ednn.count_baseline.CountBaseline`).

``--v-ceiling HA`` caps the potential input at ``HA`` Hartree inside the potential-input
model (:class:`ednn.layers.ChannelCeiling`); ``--density-sqrt`` gives the density-input
models ``√n`` as a second channel (:class:`ednn.layers.AppendSqrt`).

With ``--transfer-targets DIR`` a fourth model is trained: (a) on the densities of ``--data``
with the energies of the dataset ``DIR`` for the same sample ids (same seed, so the same
potential and electron count), e.g. hybrid densities -> LDA energies.

Writes into ``--out`` (``results/`` next to this script by default), each name prefixed by
``--name`` if given: ``train_models.json``, ``train_models.md`` (the table),
``energies_parity.png``, ``densities.png``, the ``.keras`` models, and TensorBoard logs of
the DCIGN with image summaries of predicted validation densities (``tensorboard/dcign``).

    python experiments/ks2d/train_models.py --data data/ks2d-sho-lda [--minutes 3]
    python experiments/ks2d/train_models.py --data data/ks2d-sho-hybrid-2k --name hybrid-2k \\
        --transfer-targets data/ks2d-sho-lda-2k

Every model is checkpointed after each epoch in ``--out``/``checkpoints/`` (ignored by git):
a run cut off by the end of a session, ``kill -9`` or ``--minutes`` before its ``--epochs``
continues with ``--resume`` (same arguments), losing at most the epoch in progress
(:class:`ednn.resumable.ResumableFit`). The results are written, and the checkpoints
removed, only once every model asked for has finished.

Splits follow the generator's seeded assignment of ids (``split_ids`` of the config), so a
dataset still being generated can be used: only the packed shards are read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

import ednn  # noqa: F401  (registers the Keras objects)
from ednn._io import atomic_savefig, atomic_write_text
from ednn.checkpoint import save_model_atomic
from ednn.count_baseline import CountBaseline, count_reference
from ednn.dcign import DensityDCIGN, IntegratedDensityError, density_errors
from ednn.density_gradient import DensityGradientFit, density_error, density_from_energy
from ednn.head_growth import check_head_growth, grown_head_weights
from ednn.ks2d.energies import density_energies
from ednn.ks2d.generate import load_dataset, split_ids
from ednn.ks2d.grid import Grid
from ednn.ks2d.xc import Functional
from ednn.layers import AppendSqrt, ChannelCeiling, ExtractTiles
from ednn.losses import WeightedMAE
from ednn.model import build_ednn, channel_symmetric, default_tile_network
from ednn.multiscale import MultiScaleEDNN
from ednn.resumable import ResumableFit
from ednn.symmetry import SymmetryAverage
from ednn.translation import TranslationAverage, safe_rolls, tile_phases

TARGETS = ("t_s", "e_ext", "e_hartree", "e_x", "e_c", "e_total")
LABELS = ("T_s", "E_ext", "E_H", "E_x", "E_c", "E_total")
# A smaller tile network than the atomistic default: 48² images, 2 shared CPU cores.
ENERGY_CONV_LAYERS = ((32, 3, 2, 1), (32, 3, 1, 2), (64, 3, 2, 1), (64, 3, 1, 1))
ENERGY_DENSE_UNITS = (128,)
# Hidden-layer activations of the energy networks (`--activation`).
ACTIVATIONS = ("relu", "silu", "gelu", "softplus")
# Potentials are fed as v / (4 Ha): the wells where the electrons live span 0 to ~1 and the
# walls (up to ~150 Ha at the corners) stay finite. Densities (peaks 0.1-0.4 bohr⁻²) are fed
# as 4 n, peaks of order one; spin densities (n↑, n↓) of a spin-polarised set likewise.
V_SCALE = 0.25
N_SCALE = 4.0
# A rolled sample must keep its density at most this on the box edges (bohr⁻²): the
# generator's default max_edge_density, which every stored sample meets unrolled.
ROLL_EDGE_DENSITY = 1e-6
SCALES = {"density": N_SCALE, "v_ext": V_SCALE, "spin_densities": N_SCALE}
MODELS = ("density", "v_ext", "spin_density", "dcign", "transfer")
DCIGN_FILE = "dcign_density_from_v_ext.keras"
# Terms of the energy that a density alone determines (see ednn.ks2d.energies).
DENSITY_TERMS = ("e_ext", "e_hartree", "e_x", "e_c")


class TimeBudget(keras.callbacks.Callback):
    """Stops training after `seconds` of wall time (checked at the end of each epoch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


class DensityImages(keras.callbacks.Callback):
    """Writes potential, true and predicted densities of a few samples as TensorBoard images."""

    def __init__(self, logdir: Path, inputs, true: np.ndarray, every: int = 1):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(logdir))
        self.inputs = inputs
        self.true = true
        self.every = every

    @staticmethod
    def _unit(images: np.ndarray, top: float) -> np.ndarray:
        return np.clip(images / top, 0.0, 1.0).astype("float32")

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        predicted = np.asarray(self.model(self.inputs))
        top = float(self.true.max())
        with self.writer.as_default(step=epoch):
            if epoch == 0:
                tf.summary.image("true_density", self._unit(self.true, top), max_outputs=4)
            tf.summary.image("predicted_density", self._unit(predicted, top), max_outputs=4)
            error = np.abs(predicted - self.true)
            tf.summary.image("abs_error_x10", self._unit(10 * error, top), max_outputs=4)
        self.writer.flush()


def load_splits(data: Path) -> tuple[dict, dict, float]:
    """Arrays of the packed shards by split, the config, and the pixel area (bohr²)."""
    config = json.loads((data / "config.json").read_text())
    arrays = load_dataset(data)
    ids = split_ids(config["count"], config["splits"], config["seed"])
    splits = {}
    for name, members in ids.items():
        mask = np.isin(arrays["id"], members)
        splits[name] = {key: value[mask] for key, value in arrays.items()}
    spacing = config["grid"]["box"] / config["grid"]["n"]
    return splits, config, spacing**2


def with_extra_training(train: dict, config: dict, extra: list[Path]) -> tuple[dict, dict]:
    """The training split with the ``train`` split of each dataset in ``extra`` appended.

    The extra datasets must share the grid, functional and spin setting of ``config`` (the
    main dataset's); their ids are their own, so the stored ``id`` of an appended sample
    repeats ids of the main set. Returns the enlarged split and ``{dir: samples added}``.

    Raises
    ------
    ValueError
        For a dataset that differs in one of those settings (named in the message) or
        that adds no sample.
    """
    same = ("functional", "exact_exchange", "grid", "magnetization")
    parts, added = [train], {}
    for directory in extra:
        other_splits, other_config, _ = load_splits(directory)
        differ = [k for k in same if other_config.get(k) != config.get(k)]
        if differ:
            raise ValueError(
                f"expected --extra-train {str(directory)!r} to share the main dataset's "
                f"{', '.join(differ)}. Received: "
                + "; ".join(f"{k}={other_config.get(k)!r} vs {config.get(k)!r}" for k in differ)
            )
        part = other_splits.get("train", {})
        if not len(part.get("id", ())):
            raise ValueError(
                f"expected training samples in --extra-train {str(directory)!r}. Received: "
                "an empty `train` split"
            )
        parts.append(part)
        added[str(directory)] = len(part["id"])
    keys = [k for k in train if all(k in part for part in parts)]
    return {k: np.concatenate([part[k] for part in parts]) for k in keys}, added


def train_subset(train: dict, fraction: float, seed: int) -> dict:
    """A seeded random ``fraction`` of the training split (a learning curve's point)."""
    size = len(train["id"])
    chosen = np.sort(np.random.default_rng(seed).permutation(size)[: round(fraction * size)])
    return {key: value[chosen] for key, value in train.items()}


def output_path(out: Path, name: str | None, filename: str) -> Path:
    """``out / filename``, prefixed ``{name}_`` when a run name is given."""
    return out / (f"{name}_{filename}" if name else filename)


def paired_splits(splits: dict, targets_dir: Path) -> tuple[dict, dict, dict]:
    """The splits' densities with the energies of the dataset ``targets_dir``, paired by id.

    Ids missing in either dataset are skipped. Paired ids must have the same electron count
    and, on the same grid, the same external potential (the datasets were drawn with the
    same seed), otherwise the pairing is meaningless and a ``ValueError`` says so.

    Returns the paired splits (``id``, ``n_electrons``, ``density`` of ``splits`` and the
    six energy targets of ``targets_dir``), the target dataset's config, and a summary of
    the pairing.
    """
    config = json.loads((targets_dir / "config.json").read_text())
    targets = load_dataset(targets_dir)
    row_of = {int(i): row for row, i in enumerate(targets["id"])}
    same_grid = targets["v_ext"].shape[1:] == next(iter(splits.values()))["v_ext"].shape[1:]
    paired, summary = {}, {"paired": {}, "unpaired": {}, "max_abs_v_ext_difference_Ha": None}
    v_difference = 0.0
    for name, split in splits.items():
        keep = np.array([int(i) in row_of for i in split["id"]], dtype=bool)
        rows = np.array([row_of[int(i)] for i in split["id"][keep]], dtype=int)
        if np.any(split["n_electrons"][keep] != targets["n_electrons"][rows]):
            bad = split["id"][keep][split["n_electrons"][keep] != targets["n_electrons"][rows]]
            raise ValueError(
                f"expected the same electron count for each sample id in --data and "
                f"{str(targets_dir)!r} (datasets drawn with the same seed). Received: "
                f"different counts for ids {bad[:5].tolist()}"
            )
        if same_grid and rows.size:
            v_difference = max(
                v_difference, float(np.abs(split["v_ext"][keep] - targets["v_ext"][rows]).max())
            )
        paired[name] = {
            "id": split["id"][keep],
            "n_electrons": split["n_electrons"][keep],
            "density": split["density"][keep],
            **{key: targets[key][rows] for key in TARGETS},
        }
        summary["paired"][name] = int(keep.sum())
        summary["unpaired"][name] = int((~keep).sum())
    if same_grid:
        summary["max_abs_v_ext_difference_Ha"] = v_difference
        # Identical draws give identical float32 potentials; other seeds differ by ~1 Ha.
        if v_difference > 1e-3:
            raise ValueError(
                f"expected the same external potential for each sample id in --data and "
                f"{str(targets_dir)!r} (datasets drawn with the same seed and potential "
                f"settings). Received: max |Δv_ext| = {v_difference:.3g} Ha over paired ids"
            )
    summary["targets_only"] = len(row_of) - sum(summary["paired"].values())
    empty = [name for name, count in summary["paired"].items() if count == 0]
    if empty:
        raise ValueError(
            f"expected paired samples in every split. Received: none in {empty} "
            f"(pairs per split: {summary['paired']})"
        )
    return paired, config, summary


def functional_of(config: dict) -> Functional:
    """The exchange–correlation functional a dataset was generated with."""
    return Functional(config["functional"], config.get("exact_exchange"))


def density_energy_errors(test: dict, predicted: np.ndarray, config: dict) -> dict:
    """MAE (mHa) of the density-only energy terms of predicted vs true test densities.

    Both are evaluated non-self-consistently with the dataset's functional; for a hybrid the
    exchange term is its local part only (``e_x_local``), reported under ``e_x``. Also
    returns the largest difference (mHa) between the true-density terms and the stored SCF
    energies, a check of the evaluation (float32 storage: ~1e-5 mHa; not for a hybrid's E_x).
    """
    functional = functional_of(config)
    grid = Grid(config["grid"]["n"], config["grid"]["box"])
    correction = config.get("scf", {}).get("correction", "zeta2")
    (true, pred) = (
        density_energies(n, test["v_ext"], grid, functional, correction=correction)
        for n in (test["density"], predicted)
    )
    keys = dict(zip(DENSITY_TERMS, true, strict=True))  # e_x -> e_x_local for a hybrid
    check = {t: float(1000 * np.abs(true[k] - test[t]).max()) for t, k in keys.items() if t == k}
    return {
        "functional": functional.label,
        "exchange_term": keys["e_x"],
        "mae_mHa": {t: float(1000 * np.abs(pred[k] - true[k]).mean()) for t, k in keys.items()},
        "true_vs_stored_max_mHa": check,
    }


def count_baseline_mae(train: dict, test: dict) -> dict:
    """MAE (mHa) on `test` of the training mean energies per electron count."""
    (counts, reference) = count_reference(train["n_electrons"], energies(train))
    where = np.searchsorted(counts, test["n_electrons"])
    if np.any(counts[np.minimum(where, len(counts) - 1)] != test["n_electrons"]):
        return {t: float("nan") for t in TARGETS}  # a test count never seen in training
    return mae_mHa(energies(test), reference[where])


def mae_mHa(true: np.ndarray, predicted: np.ndarray) -> dict:
    """MAE (mHa) per energy term of energies ``(m, 6)`` in Ha."""
    error = np.abs(np.asarray(predicted) - np.asarray(true))
    return {t: float(1000 * error[:, i].mean()) for i, t in enumerate(TARGETS)}


def mae_by_count(true: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> dict:
    """MAE (mHa) per electron count and energy term: ``{"N": {term: mae}}``."""
    return {
        str(int(n)): mae_mHa(true[counts == n], predicted[counts == n]) for n in np.unique(counts)
    }


def energies(split: dict) -> np.ndarray:
    return np.stack([split[key] for key in TARGETS], axis=1).astype("float32")


def image(split: dict, key: str, scale: float) -> np.ndarray:
    """Model input: the density, the spin densities, or the potential plus a channel `N / 8`.

    A potential does not fix the electron count (the energies grow with it), so the
    potential-input models get `N` as a second channel; a density integrates to `N` itself.
    ``"spin_densities"`` (spin-polarised sets only) gives two channels, `n↑` and `n↓`.
    """
    if key == "spin_densities":
        return (np.moveaxis(split[key], 1, -1) * scale).astype("float32")
    x = split[key][..., None] * scale
    if key == "v_ext":
        n = np.broadcast_to(split["n_electrons"][:, None, None, None] / 8.0, x.shape)
        x = np.concatenate([x, n], axis=-1)
    return x.astype("float32")


class Schedule:
    """How a model trains: wall-time budget, epochs, learning rate, batch, augmentation.

    Without ``epochs`` the learning rate halves on a validation plateau and training stops
    early (patience 25) or at the budget; with ``epochs`` it follows a cosine decay to 1 %
    over that many epochs (the budget still caps it: ``--resume`` continues). Either way
    the weights of the best validation loss are kept. ``augment`` applies a random symmetry
    of the square grid (:func:`ednn.ks2d.grid.apply_symmetry`, 8 elements) to every
    training image each time it is drawn; the energies are invariant under them (tested
    to 1e-9 Ha). ``roll`` (pixels) also rolls every training image (and image target) by a
    random whole-pixel shift of at most that many pixels along each axis each time it is
    drawn, within the sample's limits that ``fit`` gets (:func:`_random_roll`).
    ``move_wells`` (pixels, SHO potentials): instead, the potential image is drawn anew with
    the well's centre moved by up to that many whole pixels along each axis, within the
    same limits (:func:`_moved_wells`).
    """

    def __init__(
        self, minutes, epochs=None, lr=1e-3, batch_size=16, augment=False, seed=0, roll=None,
        move_wells=None,
    ):  # fmt: skip
        self.minutes = minutes
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.roll = roll
        self.move_wells = move_wells

    def optimizer(self, n_train: int) -> keras.optimizers.Optimizer:
        if self.epochs is None:
            return keras.optimizers.Adam(self.lr)
        steps = self.epochs * -(-n_train // self.batch_size)
        decay = keras.optimizers.schedules.CosineDecay(self.lr, steps, alpha=0.01)
        return keras.optimizers.Adam(decay)

    def fit(
        self, model, x, y, validation_data, checkpoints: Path, callbacks=(), moves=None
    ) -> tuple[int, bool]:
        """``model.fit`` on ``(x, y)`` (arrays or tuples of arrays) with this schedule.

        ``moves``: with ``roll``, per sample the rolls that keep it inside the box,
        ``(n, 2, 2)`` from :func:`ednn.translation.safe_rolls`; with ``move_wells``, the
        samples' :class:`WellMoves`.

        Continues the checkpoint in ``checkpoints`` if there is one and ends with the weights
        of the best validation loss. Returns ``(epochs done, finished)``: ``finished`` is
        false when ``--minutes`` ran out before ``epochs`` (a later ``--resume`` continues).
        """
        # Plateau schedules stop early; cosine ones run their epochs and keep the best.
        checkpoint = ResumableFit(checkpoints, "val_loss", None if self.epochs else 25)
        initial = checkpoint.restore(model)
        target = self.epochs or 10_000
        if initial:
            print(f"  resuming {checkpoints.name} after epoch {initial}", flush=True)
        if not checkpoint.stopped and initial < target:
            if self.roll:
                limits = np.clip(moves, -self.roll, self.roll).astype("int32")
                data = tf.data.Dataset.from_tensor_slices((x, y, limits))
            elif self.move_wells:
                wells = moves
                limits = np.clip(wells.limits, -self.move_wells, self.move_wells)
                data = tf.data.Dataset.from_tensor_slices(
                    (x, y, (wells.omega, wells.centre, limits.astype("int32")))
                )
            else:
                data = tf.data.Dataset.from_tensor_slices((x, y))
            n_train = int(data.cardinality())
            data = data.shuffle(n_train, seed=self.seed + initial, reshuffle_each_iteration=True)
            if self.roll:
                data = data.map(_random_roll(self.seed + initial))
            elif self.move_wells:
                data = data.map(_moved_wells(self.seed + initial, wells.x, wells.scale))
            if self.augment:
                data = data.map(_random_symmetry(self.seed + initial))
            plateau = []
            if self.epochs is None:
                plateau = [keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=8, min_lr=1e-5)]
            model.fit(
                data.batch(self.batch_size),
                validation_data=validation_data,
                initial_epoch=initial,
                epochs=target,
                verbose=0,
                callbacks=[TimeBudget(60 * self.minutes), *plateau, checkpoint, *callbacks],
            )
        checkpoint.load_best(model)
        finished = self.epochs is None or checkpoint.stopped or checkpoint.epoch >= target
        return checkpoint.epoch, finished


def _random_symmetry(seed: int):
    """A ``tf.data`` map applying one random grid symmetry to every image of an element.

    Images are the rank-3 tensors ``(n, n, channels)``; scalars (electron counts) and
    energies pass through. Same operations as :func:`ednn.ks2d.grid.apply_symmetry`.
    """
    rng = tf.random.Generator.from_seed(seed)

    def transform(image, bits):
        for bit, axis in ((0, 0), (1, 1)):
            mirrored = tf.roll(tf.reverse(image, [axis]), 1, axis)
            image = tf.where(bits[bit], mirrored, image)
        return tf.where(bits[2], tf.transpose(image, [1, 0, 2]), image)

    def apply(x, y):
        bits = rng.uniform([3]) < 0.5
        (x, y) = tf.nest.map_structure(
            lambda t: transform(t, bits) if t.shape.rank == 3 else t, (x, y)
        )
        return x, y

    return apply


def _random_roll(seed: int):
    """A ``tf.data`` map ``(x, y, limits) -> (x, y)`` rolling every image of an element alike.

    The roll along each axis is uniform in ``[lo, hi]`` of ``limits`` ``(2, 2)``
    (:func:`ednn.translation.safe_rolls`); the rank-3 tensors ``(n, n, channels)`` (input
    images, density targets) are rolled, scalars and energies pass through. Within those
    limits a roll is a translation of the system: the densities stay inside the box, the
    solver's kinetic energy is periodic and its Hartree energy that of an isolated system,
    so the energies are unchanged and the density moves with the potential (the potential
    the roll wraps round lies where the density vanishes).
    """
    rng = tf.random.Generator.from_seed(seed)

    def apply(x, y, limits):
        return _roll_images((x, y), _draw_shift(rng, limits))

    return apply


def _draw_shift(rng: tf.random.Generator, limits) -> tf.Tensor:
    """A whole-pixel shift per axis, uniform in ``[lo, hi]`` of ``limits`` ``(2, 2)``."""
    (low, high) = (limits[:, 0], limits[:, 1])
    draw = tf.cast(rng.uniform([2]) * tf.cast(high - low + 1, tf.float32), tf.int32)
    return low + tf.minimum(draw, high - low)


def _roll_images(structure, shift):
    """``structure`` with its rank-3 tensors (images ``(n, n, channels)``) rolled by ``shift``."""
    return tf.nest.map_structure(
        lambda t: tf.roll(t, shift, axis=[0, 1]) if len(t.shape) == 3 else t, structure
    )


class WellMoves(NamedTuple):
    """What :func:`_moved_wells` needs per training sample of a SHO dataset.

    ``omega`` and ``centre`` ``(n, 2)``: the wells' frequencies (Ha) and centres (bohr);
    ``limits`` ``(n, 2, 2)``: the whole-pixel moves that keep each density inside the box
    (:func:`ednn.translation.safe_rolls`); ``x``: the grid's coordinates (bohr); ``scale``:
    the potential image's scale (:data:`V_SCALE`).
    """

    omega: np.ndarray
    centre: np.ndarray
    limits: np.ndarray
    x: np.ndarray
    scale: float


def well_moves(split: dict, config: dict, max_shift: int) -> WellMoves:
    """The :class:`WellMoves` of the samples of ``split`` (SHO potentials only)."""
    params = [json.loads(p) for p in split["params"]]
    kinds = {p.get("kind") for p in params}
    if kinds != {"sho"}:
        raise ValueError(
            f"--move-wells draws SHO wells anew: every training sample must have a SHO "
            f"potential. Received: potential kinds {sorted(map(str, kinds))}"
        )
    grid = Grid(config["grid"]["n"], config["grid"]["box"])
    return WellMoves(
        np.array([p["omega"] for p in params], np.float32),
        np.array([p["centre"] for p in params], np.float32),
        safe_rolls(split["density"], max_shift, ROLL_EDGE_DENSITY),
        grid.x.astype(np.float32),
        V_SCALE,
    )


def _moved_wells(seed: int, x_coordinates: np.ndarray, scale: float):
    """A ``tf.data`` map ``(x, y, (omega, centre, limits)) -> (x, y)`` moving the SHO well.

    Draws a whole-pixel move along each axis, uniform in ``[lo, hi]`` of ``limits``, and
    replaces the potential channel of ``x`` by ``½ ω_x² (X - c_x)² + ½ ω_y² (Y - c_y)²``
    (:func:`ednn.ks2d.potentials.harmonic_potential`) with the centre moved by it. Within
    those limits the density moves with the well and stays inside the box, so the energies
    in ``y`` are unchanged (translation invariance; the walls stay those of a harmonic well,
    unlike a roll's wrapped-round ones) and a density target in it, rank 3, is rolled by
    the move.
    """
    rng = tf.random.Generator.from_seed(seed)
    axis = tf.constant(x_coordinates, tf.float32)
    spacing = float(x_coordinates[1] - x_coordinates[0])

    def apply(x, y, well):
        (omega, centre, limits) = well
        move = _draw_shift(rng, limits)
        moved = centre + spacing * tf.cast(move, tf.float32)
        along = 0.5 * omega**2 * (axis[:, None] - moved) ** 2  # (n, 2): x and y terms
        v = along[:, 0][:, None] + along[None, :, 1]
        x = tf.concat([(scale * v)[..., None], x[..., 1:]], axis=-1)
        return x, _roll_images(y, move)

    return apply


def energy_architecture(width: float = 1.0, dense_units=ENERGY_DENSE_UNITS) -> dict:
    """The energy tile network's layers with ``width`` x the filters and hidden units.

    ``dense_units``: the hidden dense layers after the convolutions (before ``width``).
    """
    conv = tuple((max(1, round(f * width)), k, s, r) for (f, k, s, r) in ENERGY_CONV_LAYERS)
    dense = tuple(max(1, round(u * width)) for u in dense_units)
    return {"conv_layers": conv, "dense_units": dense}


def loss_weights_for(std: np.ndarray, kind: str) -> np.ndarray:
    """Weights of the energy terms' absolute errors in the loss (:class:`WeightedMAE`).

    ``std``: each term's training spread (Ha). ``"spread"``: ``1 / std``, the error of each
    term relative to its spread (a 0.1 mHa error of E_c, spread ~20 mHa, weighs as much as a
    ~10 mHa one of E_total, spread ~1.7 Ha). ``"uniform"``: the same weight for all, an
    error in Hartree counting alike whatever the term, as the one 1.6 mHa target does; the
    weight is ``1 / mean(std)``, so the loss stays of the order of the ``"spread"`` one.
    """
    std = np.asarray(std, np.float64)
    if kind == "spread":
        return 1.0 / std
    if kind == "uniform":
        return np.full_like(std, 1.0 / std.mean())
    raise ValueError(f'`loss_weights` must be "spread" or "uniform". Received: {kind!r}')


def train_energy_model(
    splits, key, scale, focus, context, schedule, checkpoints, name=None, provenance=None,
    baseline=None, pixel_area=None, v_ceiling=None, density_sqrt=False, width=1.0,
    init=None, loss_weights="spread", coarse=None, activation="relu",
    dense_units=ENERGY_DENSE_UNITS, grow_head=False, density_gradient=None, config=None,
    placement_step=None, padding="same",
) -> tuple:  # fmt: skip
    """Trains the multi-output EDNN ``splits[key]`` image -> six energies (Ha).

    With ``baseline="count"`` the EDNN learns the energies less the training mean of each
    electron count, and the returned model (:class:`ednn.count_baseline.CountBaseline`)
    adds that reference back, reading ``N`` from the image: the integral of the density or
    of both spin densities (``pixel_area`` in bohr²), or the potential image's count
    channel. With ``v_ceiling`` (Ha) a potential-input tile network first caps the potential
    channel there (:class:`ednn.layers.ChannelCeiling`); with ``density_sqrt`` a
    density-input tile network also sees `√n` (:class:`ednn.layers.AppendSqrt`). Either way
    the saved model takes the same images as without. ``width`` multiplies the filters and
    units of every hidden layer (:func:`energy_architecture`), ``dense_units`` are the
    hidden dense layers after the convolutions, ``activation`` is that of every hidden layer
    (a smooth one such as ``"silu"`` makes the energy a smooth function of the image, as the
    labels are, instead of a piecewise-linear one; it fitted worse at equal steps, see
    docs/ks2d.md, session 22). A spin-density tile network is averaged over the swap of
    `n↑` and `n↓` (:func:`ednn.model.channel_symmetric`), so the model gives the same
    energies for both, as the solver does. ``init``: the path of a saved energy model of
    the same architecture whose weights training starts from (a new schedule for a
    finished model) instead of random ones; with ``grow_head`` that model's dense head may be
    smaller than ``dense_units`` and is grown into it without changing its outputs
    (:func:`ednn.head_growth.grown_head_weights`). ``loss_weights``: ``"spread"``
    weighs each term's error by its training spread (the residual standard deviation: every
    term counts alike relative to its spread), ``"uniform"`` weighs them alike in Hartree,
    as chemical accuracy counts them (:func:`loss_weights_for`). ``coarse=(pool, context)``
    adds a second EDNN on the image average-pooled ``pool`` x, with focus ``focus / pool``
    (the same focus regions) and ``context`` coarse pixels on each side, its outputs added
    to the first's (:class:`ednn.multiscale.MultiScaleEDNN`): a wide view at low
    resolution beside the narrow one at full resolution. It starts at zero (zero output
    weights), so the model starts as the single-scale one. ``density_gradient`` (potential
    input only): the weight of a second loss term, the error ``∫ |∂E_total/∂v / ΔA - n| / N``
    of the density the model's E_total implies by the Hellmann–Feynman theorem
    (:class:`ednn.density_gradient.DensityGradientFit`; ``pixel_area`` needed). ``config``:
    the dataset's, needed by ``schedule.move_wells`` (its grid). ``placement_step`` (pixels):
    the EDNN's tile sum is the mean over the tile grids shifted by its multiples
    (:class:`ednn.model.EDNN`), so where a well sits on the tiles matters only within the
    step; training and the saved model alike. It needs ``padding="valid"`` (the convolutions'
    padding; ``"same"`` by default): the placements are evaluated fused (:mod:`ednn.fused`).
    """
    keras.utils.set_random_seed(schedule.seed)
    (x_train, x_val, x_test) = (image(splits[s], key, scale) for s in ("train", "val", "test"))
    (y_train, y_val) = (energies(splits[s]) for s in ("train", "val"))
    n_tiles = (x_train.shape[1] // focus) * (x_train.shape[2] // focus)
    residual = y_train
    if baseline == "count":
        (counts, reference) = count_reference(splits["train"]["n_electrons"], y_train)
        where = np.searchsorted(counts, splits["train"]["n_electrons"])
        residual = y_train - reference[where]
    # The network learns standardised energies: E = std * sum(out) + mean, spread over tiles.
    mean = residual.mean(axis=0)
    std = residual.std(axis=0)
    # Pixel-wise input maps ahead of the convolutions (they commute with the tiling).
    (inputs, mapped, n_channels) = ([], {}, x_train.shape[-1])
    if key == "v_ext" and v_ceiling is not None:
        inputs.append(ChannelCeiling(v_ceiling * scale, channels=(0,), name="v_ceiling"))
        mapped["v_ceiling_Ha"] = v_ceiling
    if key == "density" and density_sqrt:
        inputs.append(AppendSqrt(0, name="density_sqrt"))
        (mapped["density_sqrt"], n_channels) = (True, n_channels + 1)
    if key == "spin_densities":
        mapped["spin_flip_symmetric"] = True
    if coarse is not None:
        mapped["coarse_view"] = {"pool": coarse[0], "context": coarse[1]}

    def tile_network(focus, context, **options):
        tile_shape = ExtractTiles(focus, context, "zero").tile_shape
        network = default_tile_network(
            tile_shape,
            n_channels,
            len(TARGETS),
            **energy_architecture(width, dense_units),
            activation=activation,
            padding=padding,
            **options,
        )
        if inputs:
            network = keras.Sequential(
                [keras.Input((*tile_shape, x_train.shape[-1])), *inputs, network],
                name="mapped_tile_network",
            )
        if key == "spin_densities":
            # The energies do not change when n↑ and n↓ swap: average over the swap.
            network = channel_symmetric(network, [(0, 1), (1, 0)])
        return network

    metadata = {
        "units": "Ha",
        "target_names": list(TARGETS),
        "provenance": {"input": key, "input_scale": scale, **mapped, **(provenance or {})},
    }
    model = build_ednn(
        focus,
        context,
        n_channels=x_train.shape[-1],
        n_targets=len(TARGETS),
        tile_network=tile_network(focus, context),
        boundary="zero",
        energy_scale=[float(s) for s in std],
        energy_shift_per_tile=[float(m) / n_tiles for m in mean],
        metadata=metadata,
        placement_step=placement_step,
        name=name or f"ednn_{key}",
    )
    if coarse is not None:
        (pool, coarse_context) = coarse
        wide = build_ednn(
            focus // pool,
            coarse_context,
            n_channels=x_train.shape[-1],
            n_targets=len(TARGETS),
            tile_network=tile_network(
                focus // pool, coarse_context, output_initializer="zeros", name="coarse_tiles"
            ),
            boundary="zero",
            energy_scale=[float(s) for s in std],
            metadata=metadata,
            name=f"{model.name}_coarse",
        )
        model = MultiScaleEDNN([model, wide], [1, pool], name=f"{model.name}_multiscale")
    if baseline == "count":
        (count_from, channel, count_scale) = {
            "density": ("integral", 0, pixel_area / scale),
            "spin_densities": ("integral", (0, 1), pixel_area / scale),
            "v_ext": ("channel", 1, 8.0),
        }[key]
        model = CountBaseline(
            model, counts.tolist(), reference, count_from, channel, count_scale,
            name=f"{model.name}_count_baseline",
        )  # fmt: skip
    if init is not None:
        load_initial_weights(model, init, grow_head=grow_head)
    loss = WeightedMAE(loss_weights_for(std, loss_weights))
    (fitted, targets, validation) = (model, y_train, (x_val, y_val))
    if density_gradient is not None:
        fitted = DensityGradientFit(
            model, TARGETS.index("e_total"), pixel_area, scale, weight=density_gradient,
            name=f"{model.name}_density_gradient",
        )  # fmt: skip
        (n_train, n_val) = (
            splits[s]["density"][..., None].astype("float32") for s in ("train", "val")
        )
        (targets, validation) = ((y_train, n_train), (x_val, (y_val, n_val)))
    fitted.compile(optimizer=schedule.optimizer(len(x_train)), loss=loss)
    (epochs, finished) = schedule.fit(
        fitted, x_train, targets, validation_data=validation, checkpoints=checkpoints,
        moves=(
            well_moves(splits["train"], config, schedule.move_wells)
            if schedule.move_wells else roll_limits(splits["train"], schedule)
        ),
    )  # fmt: skip
    predicted = np.asarray(model.predict(x_test, batch_size=32, verbose=0), np.float64)
    return model, predicted, epochs, finished


def roll_limits(split: dict, schedule: Schedule) -> np.ndarray | None:
    """The rolls of each sample that keep its density inside the box (with ``--roll``)."""
    if not schedule.roll:
        return None
    return safe_rolls(split["density"], schedule.roll, ROLL_EDGE_DENSITY)


def train_dcign(splits, pixel_area, focus, context, schedule, logdir, checkpoints) -> tuple:
    keras.utils.set_random_seed(schedule.seed)

    def xy(split):
        v = split["v_ext"][..., None].astype("float32")
        return (v, split["n_electrons"].astype("float32")), split["density"][..., None]

    (train, val, test) = (xy(splits[s]) for s in ("train", "val", "test"))
    model = DensityDCIGN(
        focus,
        context,
        pixel_area,
        filters=(16, 32, 64),
        input_scale=V_SCALE,
        electron_scale=1.0 / 8.0,
        name="dcign",
    )
    model.compile(
        optimizer=schedule.optimizer(len(train[1])),
        loss="mae",
        metrics=[IntegratedDensityError()],
    )
    model((train[0][0][:1], train[0][1][:1]))  # build the weights a checkpoint restores
    (epochs, finished) = schedule.fit(
        model,
        train[0],
        train[1],
        validation_data=val,
        checkpoints=checkpoints,
        callbacks=[
            keras.callbacks.TensorBoard(str(logdir), write_graph=False),
            DensityImages(logdir / "images", tuple(x[:4] for x in val[0]), val[1][:4], every=2),
        ],
        moves=roll_limits(splits["train"], schedule),
    )
    predicted = np.asarray(model.predict(test[0], batch_size=32, verbose=0))
    return model, predicted, epochs, finished


def _parity(out: Path, name: str | None, rows: dict, plt) -> None:
    """Predicted against true energies, one row of panels per model."""
    (fig, axes) = plt.subplots(
        len(rows), len(TARGETS), figsize=(3 * len(TARGETS), 3 * len(rows)), squeeze=False
    )
    for row, (kind, (truths, predicted, electrons)) in enumerate(rows.items()):
        for col, label in enumerate(LABELS):
            ax = axes[row, col]
            (t, p) = (truths[:, col], predicted[:, col])
            ax.scatter(t, p, s=6, c=electrons, cmap="viridis")
            lims = [min(t.min(), p.min()), max(t.max(), p.max())]
            ax.plot(lims, lims, "k-", lw=0.5)
            mae = 1000 * np.abs(p - t).mean()
            ax.set_title(f"{label} from {kind}\nMAE {mae:.0f} mHa", fontsize=9)
            ax.set_xlabel("true (Ha)", fontsize=8)
            ax.set_ylabel("predicted (Ha)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    atomic_savefig(fig, output_path(out, name, "energies_parity.png"), dpi=110)


def plot(out: Path, name: str | None, rows: dict, test: dict, density_pred) -> None:
    """Parity plots of the energy models and a few DCIGN densities.

    ``rows`` maps a row label to ``(true, predicted, n_electrons)``, energies ``(m, 6)`` in Ha.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows:
        _parity(out, name, rows, plt)
    if density_pred is None:
        return
    picks = range(min(4, len(test["density"])))
    (fig, axes) = plt.subplots(len(picks), 4, figsize=(13, 3.2 * len(picks)), squeeze=False)
    for row, i in enumerate(picks):
        true = test["density"][i]
        pred = density_pred[i, ..., 0]
        panels = (
            (test["v_ext"][i], f"v_ext (Ha), N={int(test['n_electrons'][i])}", "magma", None),
            (true, "true n (bohr⁻²)", "viridis", (0, true.max())),
            (pred, "DCIGN n (bohr⁻²)", "viridis", (0, true.max())),
            (pred - true, "predicted − true", "RdBu_r", None),
        )
        for ax, (data, title, cmap, limits) in zip(axes[row], panels, strict=True):
            if title.startswith("predicted"):
                top = float(np.abs(data).max())
                limits = (-top, top)
            shown = ax.imshow(data.T, origin="lower", cmap=cmap, clim=limits)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_savefig(fig, output_path(out, name, "densities.png"), dpi=100)


def keep_stored_rows(result: dict, stored: dict, trained) -> list[str]:
    """Copies into ``result`` the rows that ``stored`` (the results file) has and it lacks.

    Such rows are those of models this run neither trained nor scored: a model whose file
    is missing (runs before the models were committed), the transfer row when this run has
    no ``--transfer-targets``, and the rows of a run of the same ``--name`` that finished
    while this one trained (after this run had looked for its model). Returns their ids.
    """
    kept = []
    for model_id in stored.get("energy_mae_mHa", {}):
        if model_id in result["energy_mae_mHa"] or model_id in trained:
            continue
        fields = ("energy_mae_mHa", "energy_mae_by_count_mHa", "epochs", "tiles", "labels")
        for field in (*fields, "energy_gradient_density"):
            if model_id in stored.get(field, {}):
                result.setdefault(field, {})
                result[field][model_id] = stored[field][model_id]
        if model_id == "transfer":
            result["transfer"] = stored["transfer"]
        kept.append(model_id)
    if "dcign" not in result["epochs"] and "dcign" not in trained and "density" in stored:
        for field in ("density", "density_energies"):
            if field in stored:
                result[field] = stored[field]
        for field in ("epochs", "tiles"):
            result[field]["dcign"] = stored[field]["dcign"]
        kept.append("dcign")
    return kept


def uncompiled(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with its weights but no optimizer state: a third of the file size."""
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    copy.set_weights(model.get_weights())
    return copy


def input_key(model_id: str) -> str:
    """The image key of the splits that model ``model_id`` (one of MODELS) reads."""
    if model_id in ("transfer", "density"):
        return "density"
    return "spin_densities" if model_id == "spin_density" else "v_ext"


def energy_filename(model_id: str) -> str:
    """The file name of a model of MODELS (without the run-name prefix)."""
    if model_id == "dcign":
        return DCIGN_FILE
    if model_id == "transfer":
        return "ednn_energies_from_density_transfer.keras"
    return f"ednn_energies_from_{input_key(model_id)}.keras"


def gradient_density_error(model: keras.Model, split: dict, pixel_area: float) -> dict:
    """How far the density ``∂E_total/∂v / ΔA`` of a potential model is from the true one.

    Hellmann–Feynman: the exact E_total's derivative in the potential is the density
    (:mod:`ednn.density_gradient`). Returns the mean and largest ``∫ |Δn| / N`` over
    ``split`` and the mean absolute error of that density's electron count.
    """
    fitted = density_from_energy(
        model, image(split, "v_ext", V_SCALE), TARGETS.index("e_total"), pixel_area, V_SCALE
    )
    errors = np.asarray(density_error(fitted, split["density"]), np.float64)
    count_error = fitted.sum(axis=(1, 2)) * pixel_area - split["n_electrons"]
    return {
        "integrated": float(errors.mean()),
        "integrated_max": float(errors.max()),
        "count_mae": float(np.abs(count_error).mean()),
    }


def load_initial_weights(model: keras.Model, path: Path, grow_head: bool = False) -> None:
    """Sets ``model``'s weights to those of the energy model saved at ``path``.

    The saved model may be averaged over the grid's symmetries or hold a reference per
    electron count (neither has weights of its own); its network must have the same layers
    and weight shapes as ``model``'s, or a ``ValueError`` says what differs. With
    ``grow_head`` its dense head may be narrower or shallower than ``model``'s: it is grown
    into ``model``'s without changing the outputs (:func:`ednn.head_growth.grown_head_weights`;
    ReLU networks).
    """
    saved = keras.saving.load_model(path, compile=False)
    while isinstance(saved, (SymmetryAverage, TranslationAverage)):
        saved = saved.model
    (new, old) = (model.get_weights(), saved.get_weights())
    shapes = ([w.shape for w in new], [w.shape for w in old])
    if shapes[0] != shapes[1] and grow_head:
        paths = ([w.path for w in saved.weights], [w.path for w in model.weights])
        model.set_weights(grown_head_weights(paths[0], old, paths[1], new))
        return
    if shapes[0] != shapes[1]:
        raise ValueError(
            f"--init-from: the network saved at {path} has other weights than this run's "
            f"(same --width, --context, --focus, input and options needed). Received: "
            f"{len(old)} arrays {shapes[1][:3]}... for {len(new)} arrays {shapes[0][:3]}..."
        )
    model.set_weights(old)


def tiles(model) -> str:
    """A model's tiling, ``"focus+2x context"`` in pixels (``"; pooled 2x: …"`` per branch)."""
    while isinstance(model, (SymmetryAverage, TranslationAverage, CountBaseline)):
        model = model.model
    if isinstance(model, MultiScaleEDNN):
        return "; ".join(
            tiles(b) if p == 1 else f"pooled {p}x: {tiles(b)}"
            for b, p in zip(model.branches, model.pools, strict=True)
        )
    step = getattr(model, "placement_step", None)
    placed = "" if step is None else f", placements every {step[0]}"
    return f"{model.focus[0]}+2x{model.context[0]}{placed}"


def markdown(result: dict) -> str:
    functional = result["functional"]
    if result.get("functional_label"):
        functional = f"{functional} ({result['functional_label']})"
    lines = [
        f"Dataset `{result['data']}`: {result['sizes']} samples (train/val/test), "
        f"{result['grid']}² grid, functional {functional}, "
        f"potential {result.get('potential', '?')}. Test-set MAE in mHa.",
    ]
    if result.get("schedule", {}).get("baseline") == "count":
        lines.append(
            "The energy models learn each energy less the training mean for the sample's "
            "electron count (added back by the saved model, `ednn.count_baseline`)."
        )
    if result.get("train_fraction") is not None:
        lines.append(
            f"Trained on a seeded random {result['train_fraction']:g} of the training split "
            "(the ids are in the JSON)."
        )
    if result.get("schedule", {}).get("v_ceiling_Ha"):
        lines.append(
            f"The potential-input model caps the potential at {result['schedule']['v_ceiling_Ha']:g} "
            "Ha before its convolutions (`ednn.layers.ChannelCeiling`)."
        )
    if result.get("schedule", {}).get("density_sqrt"):
        lines.append("The density-input models also see √n (`ednn.layers.AppendSqrt`).")
    if result.get("extra_train_sizes"):
        added = ", ".join(f"{n} from `{d}`" for d, n in result["extra_train_sizes"].items())
        lines.append(
            f"The training split (size above) includes the `train` samples of {added}; "
            "val and test are the main dataset's."
        )
    if result.get("init_from"):
        lines.append(
            f"Training started from the weights of the models of run `{result['init_from']}`."
        )
    if result.get("grown_from_dense_units"):
        lines.append(
            "Their dense head, hidden layers of "
            f"{', '.join(map(str, result['grown_from_dense_units']))} units, was first grown "
            "to this run's without changing the outputs (`ednn.head_growth`)."
        )
    if result.get("schedule", {}).get("average_symmetries"):
        lines.append(
            "The saved energy models average their network over the 8 symmetries of the grid "
            "(`ednn.symmetry.SymmetryAverage`), exactly invariant under them."
        )
    if result.get("schedule", {}).get("roll"):
        lines.append(
            "Every training image was rolled by a random whole-pixel shift of at most "
            f"{result['schedule']['roll']} pixels along each axis each time it was drawn, as "
            "far as its density stays inside the box (`--roll`)."
        )
    if result.get("schedule", {}).get("move_wells"):
        lines.append(
            "Every training potential was drawn anew with its well moved by up to "
            f"{result['schedule']['move_wells']} whole pixels along each axis each time it "
            "was drawn, as far as its density stays inside the box (`--move-wells`)."
        )
    if result.get("schedule", {}).get("padding", "same") == "valid":
        lines.append(
            'The energy networks\' convolutions are valid ones (`--padding valid`; "same" '
            "by default): the EDNNs run fused (`ednn.fused`)."
        )
    if result.get("schedule", {}).get("placement_step"):
        step = result["schedule"]["placement_step"]
        lines.append(
            f"The energy EDNNs sum their tiles averaged over the (focus/{step})² tile grids "
            f"shifted by multiples of {step} pixels (`--placement-step`, "
            "`ednn.model.EDNN(placement_step=...)`), in training and in the saved models."
        )
    if result.get("schedule", {}).get("average_rolls"):
        stride = result["schedule"]["average_rolls"]
        lines.append(
            f"The saved energy models also average over the image rolled by multiples of "
            f"{stride} pixels in [-focus/2, focus/2) (`ednn.translation.TranslationAverage`)."
        )
    if result.get("schedule", {}).get("loss_weights", "spread") == "uniform":
        lines.append(
            "The loss weighs every energy term's error alike in Hartree (`--loss-weights "
            "uniform`), not relative to its spread."
        )
    if result.get("schedule", {}).get("coarse"):
        (pool, context) = result["schedule"]["coarse"]
        lines.append(
            f"Each energy model adds a second EDNN on the image pooled {pool}x (focus "
            f"--focus / {pool}, {context} coarse pixels of context: `--coarse {pool} {context}`, "
            "`ednn.multiscale.MultiScaleEDNN`)."
        )
    if result.get("schedule", {}).get("activation", "relu") != "relu":
        lines.append(
            f"The energy networks' hidden layers use `{result['schedule']['activation']}` "
            "activations (`--activation`), not ReLU."
        )
    dense = result.get("schedule", {}).get("dense_units", list(ENERGY_DENSE_UNITS))
    if list(dense) != list(ENERGY_DENSE_UNITS):
        lines.append(
            f"The energy networks' hidden dense layers after the convolutions have "
            f"{', '.join(map(str, dense))} units (`--dense-units`; default "
            f"{', '.join(map(str, ENERGY_DENSE_UNITS))})."
        )
    if result.get("schedule", {}).get("width", 1.0) != 1.0:
        lines.append(
            f"The energy networks are {result['schedule']['width']:g}x as wide (filters and "
            "hidden units) as the default."
        )
    lines += [
        "",
        "| input | " + " | ".join(LABELS) + " | epochs | tiles (px) |",
        "|---" * (len(LABELS) + 3) + "|",
    ]
    labels = result.get("labels", {})
    for kind, row in result["energy_mae_mHa"].items():
        cells = " | ".join(f"{row[t]:.1f}" for t in TARGETS)
        lines.append(
            f"| {labels.get(kind, kind)} | {cells} | {result['epochs'][kind]} "
            f"| {result['tiles'][kind]} |"
        )
    lines.append(
        "| predict the mean | "
        + " | ".join(f"{result['baseline_mae_mHa'][t]:.1f}" for t in TARGETS)
        + " | – | – |"
    )
    if "count_baseline_mae_mHa" in result:
        lines.append(
            "| predict the mean per N | "
            + " | ".join(f"{result['count_baseline_mae_mHa'][t]:.1f}" for t in TARGETS)
            + " | – | – |"
        )
    transfer = result.get("transfer")
    if transfer:
        lines.append(
            f"| predict the mean ({transfer['target_functional']} targets) | "
            + " | ".join(f"{transfer['baseline_mae_mHa'][t]:.1f}" for t in TARGETS)
            + " | – | – |"
        )
        paired = "/".join(str(transfer["paired"][s]) for s in ("train", "val", "test"))
        v_difference = transfer["max_abs_v_ext_difference_Ha"]
        v_check = (
            "potentials not compared (different grids)"
            if v_difference is None
            else f"max |Δv_ext| over pairs {v_difference:.2g} Ha"
        )
        lines += [
            "",
            f"Transfer row: densities of `{result['data']}` with the energies of "
            f"`{transfer['targets']}` for the same sample ids; {paired} pairs "
            f"(train/val/test), {v_check}.",
        ]
    gradient = result.get("energy_gradient_density", {}).get("v_ext")
    if gradient:
        lines += [
            "",
            "The density that the potential model's E_total implies, `∂E/∂v / ΔA` "
            "(Hellmann–Feynman: the exact one's is the ground-state density; "
            f"`ednn.density_gradient`), misses the true density by ∫|Δn| / N = "
            f"{100 * gradient['integrated']:.1f} % on the test split (at most "
            f"{100 * gradient['integrated_max']:.1f} %), its electron count by "
            f"{gradient['count_mae']:.2f} on average.",
        ]
    weight = result.get("schedule", {}).get("density_gradient")
    if weight:
        lines.append(
            "The potential model was trained on that density too, with weight "
            f"{weight:g} on its error beside the energy loss (`--density-gradient {weight:g}`)."
        )
    by_count = result.get("energy_mae_by_count_mHa")
    if by_count:
        counts = sorted({int(n) for rows in by_count.values() for n in rows})
        lines += [
            "",
            "E_total test MAE (mHa) by electron count N:",
            "",
            "| input | " + " | ".join(f"N = {n}" for n in counts) + " |",
            "|---" * (len(counts) + 1) + "|",
        ]
        for kind, rows in by_count.items():
            cells = (f"{rows[str(n)]['e_total']:.1f}" if str(n) in rows else "–" for n in counts)
            lines.append(f"| {labels.get(kind, kind)} | " + " | ".join(cells) + " |")
    d = result.get("density")
    if d is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "| DCIGN potential → density | value |",
        "|---|---|",
        f"| mean absolute error (bohr⁻²) | {d['mae']:.2e} |",
        f"| ∫\\|Δn\\| d²r / N | {d['integrated']:.4f} |",
        f"| ∫\\|Δn\\| d²r / N, worst test sample | {d['integrated_max']:.4f} |",
        f"| epochs | {result['epochs']['dcign']} |",
        f"| tiles (px) | {result['tiles']['dcign']} |",
    ]
    e = result.get("density_energies")
    if e:
        exchange = "E_x" if e["exchange_term"] == "e_x" else "E_x (local part)"
        names = ("E_ext", "E_H", exchange, "E_c")
        lines += [
            "",
            f"Energies of the DCIGN densities, evaluated non-self-consistently with "
            f"{e['functional']}, against the same terms of the true densities "
            "(MAE in mHa; T_s and E_total need orbitals):",
            "",
            "| | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
            "| DCIGN density vs true density | "
            + " | ".join(f"{e['mae_mHa'][t]:.1f}" for t in DENSITY_TERMS)
            + " |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ks2d-sho-lda"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--name", default=None, help="prefix of the output files, e.g. the dataset's name"
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="wall time per model")
    parser.add_argument("--focus", type=int, default=16)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train each model this many epochs on a cosine learning-rate decay "
        "(--minutes still caps it); default: plateau decay and early stopping",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--augment",
        action="store_true",
        help="random square-grid symmetry (8 elements) of every training image",
    )
    parser.add_argument(
        "--roll",
        type=int,
        default=None,
        metavar="PIXELS",
        help="roll every training image by a random whole-pixel shift of at most PIXELS "
        "along each axis, as far as its density stays inside the box (a translation: the "
        "energies are unchanged)",
    )
    parser.add_argument(
        "--move-wells",
        type=int,
        default=None,
        metavar="PIXELS",
        help="SHO potential models: draw every training potential anew with its well moved "
        "by up to PIXELS whole pixels along each axis, as far as its density stays inside "
        "the box (a translation: the energies are unchanged)",
    )
    parser.add_argument(
        "--padding",
        choices=("same", "valid"),
        default="same",
        help='padding of the energy networks\' convolutions; "valid" ones let an EDNN run '
        "fused (ednn.fused), as --placement-step needs",
    )
    parser.add_argument(
        "--placement-step",
        type=int,
        default=None,
        metavar="PIXELS",
        help="energy models: average the tile sum over the tile grids shifted by multiples "
        "of PIXELS (a divisor of --focus): where a feature sits on the tiles then matters "
        "only within PIXELS; (focus/PIXELS)² head evaluations per focus region, ~3x the time "
        "per step at 4; below the network's stride 4, (4/PIXELS)² passes of its trunk",
    )
    parser.add_argument(
        "--average-rolls",
        type=int,
        default=None,
        metavar="STRIDE",
        help="save and score each trained energy model averaged over its image rolled by "
        "multiples of STRIDE pixels in [-focus/2, focus/2) (ednn.translation."
        "TranslationAverage: (focus/STRIDE)² evaluations); train with --roll",
    )
    parser.add_argument(
        "--baseline",
        choices=("none", "count"),
        default="none",
        help="'count': the energy models learn each energy less the training mean for the "
        "sample's electron count, which the saved model adds back (ednn.count_baseline)",
    )
    parser.add_argument(
        "--v-ceiling",
        type=float,
        default=None,
        metavar="HA",
        help="the potential-input energy model caps the potential at HA Hartree before its "
        "first convolution (ednn.layers.ChannelCeiling); e.g. 20: the densities vanish "
        "(< 1e-7 bohr⁻²) well below it",
    )
    parser.add_argument(
        "--density-sqrt",
        action="store_true",
        help="the density-input energy models also see √n, the variable of the von "
        "Weizsäcker kinetic energy (ednn.layers.AppendSqrt)",
    )
    parser.add_argument(
        "--width",
        type=float,
        default=1.0,
        metavar="W",
        help="the energy networks get W times the filters and hidden units of every hidden "
        "layer (default 1: convolutions of 32, 32, 32, 64, 64 filters, 128 dense units)",
    )
    parser.add_argument(
        "--dense-units",
        type=int,
        nargs="+",
        default=list(ENERGY_DENSE_UNITS),
        metavar="U",
        help="the energy networks' hidden dense layers after the convolutions (default "
        "128: one layer), e.g. 512 or 256 256 for a larger head; --width scales them too",
    )
    parser.add_argument(
        "--density-gradient",
        type=float,
        default=None,
        metavar="WEIGHT",
        help="train the potential model also on the density its E_total implies, "
        "∂E/∂v (Hellmann–Feynman), against the true density, with this weight on the error "
        "∫|Δn|/N beside the energy loss (ednn.density_gradient; ~2x the time per step)",
    )
    parser.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        default="relu",
        help="activation of the energy networks' hidden layers (default relu, the original "
        "EDNN's; silu, gelu and softplus are smooth, like the energies they fit, but silu "
        "fitted 1.8x worse at equal steps: docs/ks2d.md, session 22)",
    )
    parser.add_argument(
        "--coarse",
        type=int,
        nargs=2,
        default=None,
        metavar=("POOL", "CONTEXT"),
        help="add to each energy model a second EDNN on the image average-pooled POOL x "
        "(focus --focus / POOL, the same focus regions; CONTEXT coarse pixels of context), "
        "a wide view at low resolution (ednn.multiscale.MultiScaleEDNN); e.g. 2 8: 24 bohr "
        "of view on the 0.5-bohr grids beside the 16 of the default tiles",
    )
    parser.add_argument(
        "--loss-weights",
        choices=("spread", "uniform"),
        default="spread",
        help="weights of the energy terms' errors in the loss: 'spread' (default) each "
        "relative to its training spread; 'uniform' all alike in Hartree, as the 1.6 mHa "
        "target counts them",
    )
    parser.add_argument(
        "--average-symmetries",
        action="store_true",
        help="save and score each trained energy model averaged over the 8 symmetries of the "
        "grid (ednn.symmetry.SymmetryAverage: exactly invariant, 8x the evaluation cost)",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="NAME",
        help="start each energy model from the weights of the same model of run NAME in "
        "--out (same architecture), e.g. a second cosine schedule for a finished run; with "
        "larger --dense-units than NAME's, its dense head is first grown into them without "
        "changing its outputs (ReLU only)",
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=None,
        metavar="F",
        help="train on a seeded random fraction F of the training split (the ids used are "
        "stored in the results), for learning curves; val and test stay whole",
    )
    parser.add_argument(
        "--extra-train",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="also train on the `train` split of each dataset DIR (same grid, functional "
        "and spin setting as --data), e.g. a supplement of hard samples; val and test "
        "stay those of --data",
    )
    parser.add_argument(
        "--transfer-targets",
        type=Path,
        default=None,
        metavar="DIR",
        help="also train density -> energies with the energy targets of dataset DIR, "
        "paired by sample id (e.g. hybrid densities -> LDA energies)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODELS,
        default=None,
        help="models to (re)train (default: all; 'transfer' only with --transfer-targets); "
        "the others are loaded from --out and re-scored",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="train nothing: score the models saved in --out under --name again and "
        "rewrite the results (e.g. after the scoring gained a column)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoints that an interrupted run with the same arguments left "
        "in --out/checkpoints",
    )
    args = parser.parse_args(argv)
    if args.name is not None and (not args.name or "/" in args.name):
        parser.error(f"--name must be a non-empty file-name prefix. Received: {args.name!r}")
    config_path = args.data / "config.json"
    spin = (
        config_path.exists()
        and json.loads(config_path.read_text()).get("magnetization") is not None
    )
    models = [
        m
        for m in MODELS
        if (m != "transfer" or args.transfer_targets is not None) and (m != "spin_density" or spin)
    ]
    only_given = args.only is not None
    if args.rescore:
        if args.only is not None or args.init_from is not None:
            parser.error("--rescore trains nothing: it takes no --only or --init-from")
        args.only = []
    elif args.only is None:
        args.only = models
    elif "transfer" in args.only and args.transfer_targets is None:
        parser.error("--only transfer needs --transfer-targets DIR")
    elif "spin_density" in args.only and not spin:
        parser.error(
            f"--only spin_density needs a spin-polarised dataset (config 'magnetization' "
            f"set); {args.data} is spin-unpolarised"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        stored_path = output_path(args.out, args.name, "train_models.json")
        if not stored_path.exists():
            parser.error(f"--rescore: no results to rescore at {stored_path}")
        # The rescored results describe the run that trained the models, not these defaults.
        stored = json.loads(stored_path.read_text())
        schedule = stored.get("schedule", {})  # older results lack the newer options
        args.minutes = stored.get("minutes_per_model", args.minutes)
        for option in ("epochs", "lr", "batch_size", "augment", "seed", "baseline"):
            setattr(args, option, schedule.get(option, parser.get_default(option)))
        args.v_ceiling = schedule.get("v_ceiling_Ha")
        args.density_sqrt = schedule.get("density_sqrt", False)
        args.width = schedule.get("width", 1.0)
        args.activation = schedule.get("activation", "relu")
        args.dense_units = schedule.get("dense_units", list(ENERGY_DENSE_UNITS))
        args.loss_weights = schedule.get("loss_weights", "spread")
        args.density_gradient = schedule.get("density_gradient")
        args.coarse = schedule.get("coarse")
        args.average_symmetries = schedule.get("average_symmetries", False)
        args.roll = schedule.get("roll")
        args.move_wells = schedule.get("move_wells")
        args.average_rolls = schedule.get("average_rolls")
        args.placement_step = schedule.get("placement_step")
        args.padding = schedule.get("padding", "same")
        args.train_fraction = stored.get("train_fraction")
        args.init_from = stored.get("init_from")
        extra = stored.get("extra_train_sizes")
        args.extra_train = None if extra is None else [Path(d) for d in extra]

    def checkpoints(model_id: str) -> Path:
        return args.out / "checkpoints" / (f"{args.name}_{model_id}" if args.name else model_id)

    if args.roll is not None and args.roll < 1:
        parser.error(f"--roll must be a positive number of pixels. Received: {args.roll}")
    if args.move_wells is not None:
        if args.move_wells < 1:
            parser.error(
                f"--move-wells must be a positive number of pixels. Received: {args.move_wells}"
            )
        if args.roll is not None:
            parser.error("--move-wells moves the well itself: it does not combine with --roll")
        if set(args.only) != {"v_ext"}:
            parser.error(
                "--move-wells draws potential images: pass --only v_ext. "
                f"Received: --only {' '.join(args.only)}" + ("" if only_given else " (the default)")
            )
    if args.average_rolls is not None and (
        args.average_rolls < 1 or args.focus % args.average_rolls
    ):
        parser.error(
            f"--average-rolls must be a positive divisor of --focus {args.focus}. "
            f"Received: {args.average_rolls}"
        )
    if args.placement_step is not None and (
        args.placement_step < 1 or args.focus % args.placement_step
    ):
        parser.error(
            f"--placement-step must be a positive divisor of --focus {args.focus}. "
            f"Received: {args.placement_step}"
        )
    if args.placement_step is not None and args.padding != "valid":
        parser.error(
            "--placement-step evaluates the tile placements fused, which needs valid "
            f"convolutions: pass --padding valid. Received: --padding {args.padding}"
        )
    if not (np.isfinite(args.width) and args.width > 0):
        parser.error(f"--width must be a positive number. Received: {args.width}")
    if any(u < 1 for u in args.dense_units):
        parser.error(f"--dense-units must be positive integers. Received: {args.dense_units}")
    if args.density_gradient is not None:
        if not (np.isfinite(args.density_gradient) and args.density_gradient > 0):
            parser.error(
                f"--density-gradient must be a positive weight. Received: {args.density_gradient}"
            )
        if set(args.only) & {"density", "spin_density", "transfer"}:
            parser.error(
                "--density-gradient trains the potential model (its ∂E/∂v is the density): "
                f"pass --only v_ext. Received: --only {' '.join(args.only)}"
                + ("" if only_given else " (the default)")
            )
    if args.coarse is not None:
        (pool, context) = args.coarse
        if pool < 2 or args.focus % pool or context < 0:
            parser.error(
                "--coarse POOL CONTEXT needs POOL >= 2 dividing --focus and CONTEXT >= 0. "
                f"Received: --coarse {pool} {context} with --focus {args.focus}"
            )
    if args.v_ceiling is not None and not (np.isfinite(args.v_ceiling) and args.v_ceiling > 0):
        parser.error(
            f"--v-ceiling must be a positive number of Hartree. Received: {args.v_ceiling}"
        )
    grown_from = stored.get("grown_from_dense_units") if args.rescore else None
    if args.init_from is not None and not args.rescore:
        missing = [
            str(p)
            for m in args.only
            if m != "dcign"
            and not (p := output_path(args.out, args.init_from, energy_filename(m))).exists()
        ]
        if missing:
            parser.error(f"--init-from {args.init_from}: no saved model at {', '.join(missing)}")
        # Same shapes, other function: ReLU weights are not a start for a silu network.
        start = output_path(args.out, args.init_from, "train_models.json")
        if start.exists():
            started = json.loads(start.read_text()).get("schedule", {})
            used = started.get("activation", "relu")
            if used != args.activation:
                parser.error(
                    f"--init-from {args.init_from}: its networks use {used} activations, "
                    f"this run {args.activation} (pass --activation {used})"
                )
            # A smaller dense head is grown into --dense-units, its outputs unchanged.
            units = list(started.get("dense_units", ENERGY_DENSE_UNITS))
            if units != list(args.dense_units):
                grown_from = units
                if args.activation != "relu" or args.coarse is not None:
                    parser.error(
                        f"--init-from {args.init_from} has hidden dense layers "
                        f"{' '.join(map(str, units))}, this run {' '.join(map(str, args.dense_units))}: "
                        "a head is grown only for ReLU networks without --coarse"
                    )
                try:
                    check_head_growth(units, args.dense_units)
                except ValueError as error:
                    parser.error(f"--init-from {args.init_from} --dense-units: {error}")
    stale = [str(checkpoints(m)) for m in args.only if checkpoints(m).exists()]
    if stale and not args.resume:
        parser.error(
            f"unfinished runs are checkpointed in {', '.join(stale)}: pass --resume to "
            "continue them, or delete them to start afresh"
        )
    (splits, config, pixel_area) = load_splits(args.data)
    if args.train_fraction is not None:
        if not 0 < args.train_fraction <= 1:
            parser.error(f"--train-fraction must be in (0, 1]. Received: {args.train_fraction}")
        splits["train"] = train_subset(splits["train"], args.train_fraction, args.seed)
        if len(splits["train"]["id"]) == 0:
            parser.error(f"--train-fraction {args.train_fraction} leaves no training sample")
    # The ids of a --train-fraction subset, before a supplement repeats ids.
    train_ids = None if args.train_fraction is None else [int(i) for i in splits["train"]["id"]]
    extra_sizes = None
    if args.extra_train and args.transfer_targets is not None:
        # The transfer model pairs samples by id, which the supplement's ids repeat.
        parser.error("--extra-train does not combine with --transfer-targets")
    if args.extra_train:
        try:
            splits["train"], extra_sizes = with_extra_training(
                splits["train"], config, args.extra_train
            )
        except (OSError, ValueError) as error:
            parser.error(str(error))
    schedule = Schedule(
        args.minutes, args.epochs, args.lr, args.batch_size, args.augment, args.seed, args.roll,
        args.move_wells,
    )  # fmt: skip
    test = splits["test"]
    truths = energies(test).astype(np.float64)

    result = {
        "data": str(args.data),
        "name": args.name,
        "functional": config["functional"],
        "functional_label": functional_of(config).label,
        "potential": config["potential"],
        "grid": config["grid"]["n"],
        "sizes": "/".join(str(len(splits[s]["id"])) for s in ("train", "val", "test")),
        "minutes_per_model": args.minutes,
        "schedule": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "augment": args.augment,
            "seed": args.seed,
            "baseline": args.baseline,
            "v_ceiling_Ha": args.v_ceiling,
            "density_sqrt": args.density_sqrt,
            "width": args.width,
            "activation": args.activation,
            "dense_units": list(args.dense_units),
            "average_symmetries": args.average_symmetries,
            "roll": args.roll,
            "move_wells": args.move_wells,
            "average_rolls": args.average_rolls,
            "placement_step": args.placement_step,
            "padding": args.padding,
            "loss_weights": args.loss_weights,
            "coarse": args.coarse,
            "density_gradient": args.density_gradient,
        },
        "train_fraction": args.train_fraction,
        "init_from": args.init_from,
        "grown_from_dense_units": grown_from,
        "extra_train_sizes": extra_sizes,
        "train_ids": train_ids,
        "energy_mae_mHa": {},
        "energy_mae_by_count_mHa": {},
        "epochs": {},
        "tiles": {},
        "labels": {"density": "density", "v_ext": "v_ext", "spin_density": "spin densities"},
        "baseline_mae_mHa": {
            t: float(1000 * np.abs(truths[:, i] - energies(splits["train"])[:, i].mean()).mean())
            for i, t in enumerate(TARGETS)
        },
        "count_baseline_mae_mHa": count_baseline_mae(splits["train"], test),
        "energy_gradient_density": {},
    }
    previous_path = output_path(args.out, args.name, "train_models.json")

    def stored_result() -> dict:
        """The results file as it is now: a run of other models may have finished meanwhile."""
        if any(m not in args.only for m in models) and previous_path.exists():
            return json.loads(previous_path.read_text())
        return {}

    # Energy models: (key in the splits, model id, splits to train on, row label).
    energy_runs = [("density", "density", splits), ("v_ext", "v_ext", splits)]
    if spin:
        energy_runs.append(("spin_densities", "spin_density", splits))
    if args.transfer_targets is not None:
        (paired, target_config, summary) = paired_splits(splits, args.transfer_targets)
        label = f"density ({config['functional']}) -> energies ({target_config['functional']})"
        result["labels"]["transfer"] = label
        paired_truths = energies(paired["test"]).astype(np.float64)
        paired_train = energies(paired["train"])
        result["transfer"] = {
            "targets": str(args.transfer_targets),
            "target_functional": target_config["functional"],
            **summary,
            "baseline_mae_mHa": {
                t: float(1000 * np.abs(paired_truths[:, i] - paired_train[:, i].mean()).mean())
                for i, t in enumerate(TARGETS)
            },
        }
        print(f"transfer: paired {summary['paired']} (unpaired {summary['unpaired']})")
        energy_runs.append(("density", "transfer", paired))

    def unfinished(model_id: str, epochs: int) -> None:
        raise SystemExit(
            f"{model_id}: --minutes ran out after epoch {epochs} of {args.epochs}; its "
            f"checkpoint is in {checkpoints(model_id)}. Rerun the same command with --resume "
            "to continue (results are written once every model has finished)."
        )

    (parity_rows, kept_rows) = ({}, [])
    for key, model_id, data in energy_runs:
        path = output_path(args.out, args.name, energy_filename(model_id))
        start = time.perf_counter()
        if model_id not in args.only and not path.exists():
            # A stored row of it (a run before the models were committed, or one finishing
            # beside this) is kept by keep_stored_rows when results are written.
            print(f"{model_id}: {path} missing, not scored (its stored row, if any, is kept)")
            continue
        if model_id in args.only:
            provenance = {}
            if model_id == "transfer":
                provenance = {"density_data": str(args.data), "targets": str(args.transfer_targets)}
            (model, predicted, epochs, finished) = train_energy_model(
                data, key, SCALES[key], args.focus, args.context, schedule,
                checkpoints(model_id), name=f"ednn_{model_id}", provenance=provenance,
                baseline=args.baseline, pixel_area=pixel_area, v_ceiling=args.v_ceiling,
                density_sqrt=args.density_sqrt, width=args.width,
                loss_weights=args.loss_weights, coarse=args.coarse, activation=args.activation,
                dense_units=tuple(args.dense_units), grow_head=grown_from is not None,
                density_gradient=args.density_gradient if model_id == "v_ext" else None,
                config=config, placement_step=args.placement_step, padding=args.padding,
                init=(
                    None if args.init_from is None
                    else output_path(args.out, args.init_from, energy_filename(model_id))
                ),
            )  # fmt: skip
            if not finished:
                unfinished(model_id, epochs)
            model = uncompiled(model)
            if args.average_symmetries:
                # The grid mirrors about pixel 0 (ednn.ks2d.apply_symmetry): mirror_shift 1.
                model = SymmetryAverage(model, mirror_shift=1, name=f"{model.name}_symmetric")
            if args.average_rolls:
                shifts = tile_phases(args.focus, args.average_rolls, centred=True)
                model = TranslationAverage(model, shifts, name=f"{model.name}_rolled")
            if args.average_symmetries or args.average_rolls:
                predicted = np.asarray(
                    model.predict(image(data["test"], key, SCALES[key]), batch_size=32, verbose=0),
                    np.float64,
                )
            save_model_atomic(model, path)
        else:
            model = keras.saving.load_model(path, compile=False)
            x_test = image(data["test"], key, SCALES[key])
            predicted = model.predict(x_test, batch_size=32, verbose=0)
            epochs = stored_result().get("epochs", {}).get(model_id)
            predicted = np.asarray(predicted, np.float64)
        true = energies(data["test"]).astype(np.float64)
        result["energy_mae_mHa"][model_id] = mae_mHa(true, predicted)
        result["energy_mae_by_count_mHa"][model_id] = mae_by_count(
            true, predicted, data["test"]["n_electrons"]
        )
        result["epochs"][model_id] = epochs
        result["tiles"][model_id] = tiles(model)
        if key == "v_ext":
            result["energy_gradient_density"][model_id] = gradient_density_error(
                model, data["test"], pixel_area
            )
        label = result["labels"][model_id]
        parity_rows[label] = (true, predicted, data["test"]["n_electrons"])
        print(f"{model_id}: {epochs} epochs, {time.perf_counter() - start:.0f} s", flush=True)

    start = time.perf_counter()
    path = output_path(args.out, args.name, DCIGN_FILE)
    density_pred = None
    if "dcign" not in args.only and not path.exists():
        print(f"dcign: not trained yet ({path} missing), left out")
    elif "dcign" in args.only:
        logdir = args.out / "tensorboard" / (f"{args.name}_dcign" if args.name else "dcign")
        (model, density_pred, epochs, finished) = train_dcign(
            splits, pixel_area, args.focus, args.context, schedule, logdir, checkpoints("dcign")
        )
        if not finished:
            unfinished("dcign", epochs)
        save_model_atomic(model, path)
    else:
        model = keras.saving.load_model(path, compile=False)
        inputs = (test["v_ext"][..., None].astype("float32"), test["n_electrons"].astype("float32"))
        (density_pred, epochs) = (
            np.asarray(model.predict(inputs, verbose=0)),
            stored_result().get("epochs", {}).get("dcign"),
        )
    if density_pred is not None:
        errors = density_errors(test["density"], density_pred)
        result["density"] = {
            "mae": errors["mae"],
            "integrated": errors["integrated"],
            "integrated_max": float(errors["integrated_per_image"].max()),
        }
        result["epochs"]["dcign"] = epochs
        result["tiles"]["dcign"] = tiles(model)
        result["density_energies"] = density_energy_errors(test, density_pred[..., 0], config)
        print(f"dcign: {epochs} epochs, {time.perf_counter() - start:.0f} s", flush=True)

    if previous_path.exists():
        latest = json.loads(previous_path.read_text())
        kept_rows += keep_stored_rows(result, latest, args.only)
    atomic_write_text(
        output_path(args.out, args.name, "train_models.json"), json.dumps(result, indent=1) + "\n"
    )
    table = markdown(result)
    atomic_write_text(output_path(args.out, args.name, "train_models.md"), table)
    # A parity figure without the rows kept from an earlier run would lose them: keep the old.
    plot(args.out, args.name, {} if kept_rows else parity_rows, test, density_pred)
    for model_id in args.only:  # finished and written: the checkpoints have served
        shutil.rmtree(checkpoints(model_id), ignore_errors=True)
    print(table)
    return result


if __name__ == "__main__":
    main()
