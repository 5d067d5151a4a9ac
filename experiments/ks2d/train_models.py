"""Learning 2D Kohn–Sham energies and densities from images (issue 6), a first small run.

Three models on a dataset written by ``ednn ks2d-generate`` (Hartree atomic units):

(a) a multi-output EDNN, density image -> [T_s, E_ext, E_H, E_x, E_c, E_total];
(b) the same EDNN architecture, potential image -> the same six energies;
(c) the tiled DCIGN (:class:`ednn.dcign.DensityDCIGN`), potential image -> density.

Each model trains for a fixed wall-time budget (``--minutes``) on the train split, keeps the
weights of the best validation loss, and is scored on the test split. Writes into ``--out``
(``results/`` next to this script by default): ``train_models.json``, ``train_models.md``
(the table), ``energies_parity.png``, ``densities.png``, the three ``.keras`` models, and
TensorBoard logs of the DCIGN with image summaries of predicted validation densities
(``tensorboard/dcign``).

    python experiments/ks2d/train_models.py --data data/ks2d-sho-lda [--minutes 3]

Splits follow the generator's seeded assignment of ids (``split_ids`` of the config), so a
dataset still being generated can be used: only the packed shards are read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.dcign import DensityDCIGN, IntegratedDensityError, density_errors
from ednn.ks2d.generate import load_dataset, split_ids
from ednn.model import build_ednn

TARGETS = ("t_s", "e_ext", "e_hartree", "e_x", "e_c", "e_total")
LABELS = ("T_s", "E_ext", "E_H", "E_x", "E_c", "E_total")
# A smaller tile network than the atomistic default: 48² images, 2 shared CPU cores.
ENERGY_CONV_LAYERS = ((32, 3, 2, 1), (32, 3, 1, 2), (64, 3, 2, 1), (64, 3, 1, 1))
ENERGY_DENSE_UNITS = (128,)
# Potentials are fed as v / (4 Ha): the wells where the electrons live span 0 to ~1 and the
# walls (up to ~150 Ha at the corners) stay finite. Densities (peaks 0.1-0.4 bohr⁻²) are fed
# as 4 n, peaks of order one.
V_SCALE = 0.25
N_SCALE = 4.0
MODELS = ("density", "v_ext", "dcign")


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


def energies(split: dict) -> np.ndarray:
    return np.stack([split[key] for key in TARGETS], axis=1).astype("float32")


def image(split: dict, key: str, scale: float) -> np.ndarray:
    """Model input: the density, or the potential plus a constant channel `N / 8`.

    A potential does not fix the electron count (the energies grow with it), so the
    potential-input models get `N` as a second channel; a density integrates to `N` itself.
    """
    x = split[key][..., None] * scale
    if key == "v_ext":
        n = np.broadcast_to(split["n_electrons"][:, None, None, None] / 8.0, x.shape)
        x = np.concatenate([x, n], axis=-1)
    return x.astype("float32")


def train_energy_model(splits, key, scale, focus, context, minutes, seed) -> tuple:
    keras.utils.set_random_seed(seed)
    (x_train, x_val, x_test) = (image(splits[s], key, scale) for s in ("train", "val", "test"))
    (y_train, y_val) = (energies(splits[s]) for s in ("train", "val"))
    n_tiles = (x_train.shape[1] // focus) * (x_train.shape[2] // focus)
    # The network learns standardised energies: E = std * sum(out) + mean, spread over tiles.
    mean = y_train.mean(axis=0)
    std = y_train.std(axis=0)
    model = build_ednn(
        focus,
        context,
        n_channels=x_train.shape[-1],
        n_targets=len(TARGETS),
        boundary="zero",
        conv_layers=ENERGY_CONV_LAYERS,
        dense_units=ENERGY_DENSE_UNITS,
        energy_scale=[float(s) for s in std],
        energy_shift_per_tile=[float(m) / n_tiles for m in mean],
        metadata={
            "units": "Ha",
            "target_names": list(TARGETS),
            "provenance": {"input": key, "input_scale": scale},
        },
        name=f"ednn_{key}",
    )
    # Loss on standardised energies so that every term weighs the same.
    weights = (1.0 / std).astype("float32")

    def loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs((y_pred - y_true) * weights))

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=10_000,
        batch_size=16,
        verbose=0,
        callbacks=[
            TimeBudget(60 * minutes),
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=8, min_lr=1e-5),
            keras.callbacks.EarlyStopping(patience=25, restore_best_weights=True),
        ],
    )
    predicted = np.asarray(model.predict(x_test, batch_size=32, verbose=0), np.float64)
    return model, predicted, len(history.epoch)


def train_dcign(splits, pixel_area, focus, context, minutes, seed, logdir) -> tuple:
    keras.utils.set_random_seed(seed)

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
        optimizer=keras.optimizers.Adam(1e-3), loss="mae", metrics=[IntegratedDensityError()]
    )
    history = model.fit(
        train[0],
        train[1],
        validation_data=val,
        epochs=10_000,
        batch_size=16,
        verbose=0,
        callbacks=[
            TimeBudget(60 * minutes),
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=8, min_lr=1e-5),
            keras.callbacks.EarlyStopping(patience=25, restore_best_weights=True),
            keras.callbacks.TensorBoard(str(logdir), write_graph=False),
            DensityImages(logdir / "images", tuple(x[:4] for x in val[0]), val[1][:4], every=2),
        ],
    )
    predicted = np.asarray(model.predict(test[0], batch_size=32, verbose=0))
    return model, predicted, len(history.epoch)


def plot(out: Path, truths: np.ndarray, predictions: dict, test: dict, density_pred) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (fig, axes) = plt.subplots(len(predictions), len(TARGETS), figsize=(3 * len(TARGETS), 6))
    for row, (kind, predicted) in enumerate(predictions.items()):
        for col, label in enumerate(LABELS):
            ax = axes[row, col]
            (t, p) = (truths[:, col], predicted[:, col])
            ax.scatter(t, p, s=6, c=test["n_electrons"], cmap="viridis")
            lims = [min(t.min(), p.min()), max(t.max(), p.max())]
            ax.plot(lims, lims, "k-", lw=0.5)
            mae = 1000 * np.abs(p - t).mean()
            ax.set_title(f"{label} from {kind}\nMAE {mae:.0f} mHa", fontsize=9)
            ax.set_xlabel("true (Ha)", fontsize=8)
            ax.set_ylabel("predicted (Ha)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "energies_parity.png", dpi=110)
    plt.close(fig)

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
    fig.savefig(out / "densities.png", dpi=100)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [
        f"Dataset `{result['data']}`: {result['sizes']} samples (train/val/test), "
        f"{result['grid']}² grid, {result['functional']}. Test-set MAE in mHa.",
        "",
        "| input | " + " | ".join(LABELS) + " | epochs |",
        "|---" * (len(LABELS) + 2) + "|",
    ]
    for kind, row in result["energy_mae_mHa"].items():
        cells = " | ".join(f"{row[t]:.1f}" for t in TARGETS)
        lines.append(f"| {kind} | {cells} | {result['epochs'][kind]} |")
    lines.append(
        "| predict the mean | "
        + " | ".join(f"{result['baseline_mae_mHa'][t]:.1f}" for t in TARGETS)
        + " | – |"
    )
    d = result["density"]
    lines += [
        "",
        "| DCIGN potential → density | value |",
        "|---|---|",
        f"| mean absolute error (bohr⁻²) | {d['mae']:.2e} |",
        f"| ∫\\|Δn\\| d²r / N | {d['integrated']:.4f} |",
        f"| ∫\\|Δn\\| d²r / N, worst test sample | {d['integrated_max']:.4f} |",
        f"| epochs | {result['epochs']['dcign']} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ks2d-sho-lda"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--minutes", type=float, default=3.0, help="wall time per model")
    parser.add_argument("--focus", type=int, default=16)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="models to (re)train; the others are loaded from --out and re-scored",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (splits, config, pixel_area) = load_splits(args.data)
    test = splits["test"]
    truths = energies(test).astype(np.float64)
    scales = {"density": N_SCALE, "v_ext": V_SCALE}

    result = {
        "data": str(args.data),
        "functional": config["functional"],
        "grid": config["grid"]["n"],
        "sizes": "/".join(str(len(splits[s]["id"])) for s in ("train", "val", "test")),
        "minutes_per_model": args.minutes,
        "focus": args.focus,
        "context": args.context,
        "energy_mae_mHa": {},
        "epochs": {},
        "baseline_mae_mHa": {
            t: float(1000 * np.abs(truths[:, i] - energies(splits["train"])[:, i].mean()).mean())
            for i, t in enumerate(TARGETS)
        },
    }
    predictions = {}
    previous = {}
    if set(args.only) != set(MODELS):
        previous = json.loads((args.out / "train_models.json").read_text())["epochs"]
    for key in ("density", "v_ext"):
        path = args.out / f"ednn_energies_from_{key}.keras"
        start = time.perf_counter()
        if key in args.only:
            (model, predicted, epochs) = train_energy_model(
                splits, key, scales[key], args.focus, args.context, args.minutes, args.seed
            )
            model.save(path)
        else:
            model = keras.saving.load_model(path, compile=False)
            predicted = model.predict(image(test, key, scales[key]), batch_size=32, verbose=0)
            (predicted, epochs) = (np.asarray(predicted, np.float64), previous[key])
        predictions[key] = predicted
        result["energy_mae_mHa"][key] = {
            t: float(1000 * np.abs(predicted[:, i] - truths[:, i]).mean())
            for i, t in enumerate(TARGETS)
        }
        result["epochs"][key] = epochs
        print(f"{key}: {epochs} epochs, {time.perf_counter() - start:.0f} s", flush=True)

    start = time.perf_counter()
    path = args.out / "dcign_density_from_v_ext.keras"
    if "dcign" in args.only:
        (model, density_pred, epochs) = train_dcign(
            splits,
            pixel_area,
            args.focus,
            args.context,
            args.minutes,
            args.seed,
            args.out / "tensorboard" / "dcign",
        )
        model.save(path)
    else:
        model = keras.saving.load_model(path, compile=False)
        inputs = (test["v_ext"][..., None].astype("float32"), test["n_electrons"].astype("float32"))
        (density_pred, epochs) = (np.asarray(model.predict(inputs, verbose=0)), previous["dcign"])
    errors = density_errors(test["density"], density_pred)
    result["density"] = {
        "mae": errors["mae"],
        "integrated": errors["integrated"],
        "integrated_max": float(errors["integrated_per_image"].max()),
    }
    result["epochs"]["dcign"] = epochs
    print(f"dcign: {epochs} epochs, {time.perf_counter() - start:.0f} s", flush=True)

    (args.out / "train_models.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (args.out / "train_models.md").write_text(table)
    plot(args.out, truths, predictions, test, density_pred)
    print(table)
    return result


if __name__ == "__main__":
    main()
