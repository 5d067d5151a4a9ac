"""``ednn train``: end-to-end training, TensorBoard, checkpoints, resume, configs, run dirs.

Training runs use tiny models on the small GFN1-xTB fixture (a few seconds each).
"""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import ednn
from ednn.checkpoint import RunDirError, latest_checkpoint, load_checkpoint
from ednn.config import ConfigError
from ednn.data.dataset import ImageSet
from ednn.train import DEFAULTS, Targets, _make_steps, main, train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sheets-small.extxyz.gz"

# Tiles of 4 + 2 * 4 = 12 px at 0.4 Å: about 5 Å wide.  The fixture's 4x3 and 5x3 cells
# (9.8-12.7 Å) fit 0.4 Å pixels within 10 %, so no supercells are needed.
TINY = {
    "data": {"path": str(FIXTURE), "spacing_tolerance": None},
    "raster": {"spacing": 0.4, "sigma": 0.4},
    "model": {
        "focus": 4,
        "context": 4,
        "architecture": {"conv_layers": [[8, 3, 2, 1], [8, 3, 1, 1]], "dense_units": [16]},
    },
    "training": {
        "epochs": 4,
        "batch_size": 4,
        "optimizer": {"learning_rate": 0.003},
        "schedule": {"name": "constant"},
        "workers": 1,
    },
}


def tiny_config(**sections):
    config = copy.deepcopy(TINY)
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


@pytest.fixture(scope="module")
def fixture_data():
    if not FIXTURE.exists():
        pytest.skip(f"the training fixture {FIXTURE} is missing")
    return FIXTURE


@pytest.fixture(scope="module")
def trained(fixture_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    summary = train(tiny_config(), run_dir, progress=False)
    return run_dir, summary


def read_events(directory):
    """{tag: [(step, value or None)]} from the event files of one TensorBoard run."""
    tags = {}
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = None
                if value.HasField("tensor") and not value.tensor.string_val:
                    number = float(tf.make_ndarray(value.tensor).ravel()[0])
                tags.setdefault(value.tag, []).append((event.step, number))
    return tags


def test_training_lowers_the_loss_and_fills_the_run_directory(trained):
    run_dir, summary = trained
    losses = [epoch["train"]["loss"] for epoch in summary["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    for name in ("config.yaml", "split.json", "best.keras", "model.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["unit"] == "meV/atom"
    assert np.isfinite(metrics["splits"]["test"]["mae"]) and metrics["splits"]["test"]["n"] > 0
    assert set(metrics["splits"]) >= {"train", "validation", "test"}


def test_tensorboard_events_hold_losses_errors_rate_images_and_histograms(trained):
    run_dir, _ = trained
    train_tags = read_events(run_dir / "logs" / "train")
    val_tags = read_events(run_dir / "logs" / "validation")
    for tag in ("loss", "mae_meV_per_atom", "rmse_meV_per_atom", "learning_rate"):
        assert [step for step, _ in train_tags[tag]] == [1, 2, 3, 4], tag
    assert train_tags["learning_rate"][0][1] == pytest.approx(0.003)
    assert any(tag.startswith("weights/") for tag in train_tags)
    for tag in ("loss", "mae_meV_per_atom", "rmse_meV_per_atom", "raster/C", "tile_energy_map"):
        assert tag in val_tags, tag
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    logged = [value for _, value in val_tags["mae_meV_per_atom"]]
    np.testing.assert_allclose(logged, [h["validation"]["mae"] for h in history], rtol=1e-6)


def test_best_model_loads_with_plain_keras_and_predicts_total_energies(trained):
    from ednn.evaluate import predict_energies

    run_dir, _ = trained
    model = keras.saving.load_model(run_dir / "best.keras")
    assert isinstance(model, ednn.model.EDNN)
    metadata = model.metadata
    assert set(metadata["reference_energies"]) == {"C", "B", "N"}
    assert metadata["raster"]["spacing"] == 0.4 and metadata["raster"]["species"] == ["C", "B", "N"]
    # Network output plus reference energies reproduces the reported test error.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    from ednn.data.dataset import load_image_set
    from ednn.train import raster_spec

    data = load_image_set(FIXTURE, raster_spec(config), spacing_tolerance=None)
    test = data.split("test")
    energies = predict_energies(model, test)[:, 0]
    mae = 1000 * np.mean(np.abs(energies - test.targets[:, 0]) / test.n_atoms)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert mae == pytest.approx(metrics["splits"]["test"]["mae"], rel=1e-4)


def test_resume_continues_from_the_saved_epoch_like_an_uninterrupted_run(fixture_data, tmp_path):
    config = tiny_config()
    train(config, tmp_path / "split", epochs=2, progress=False)
    resumed = train(config, tmp_path / "split", epochs=3, resume=True, progress=False)
    straight = train(config, tmp_path / "straight", epochs=3, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    model, optimizer_values, state = load_checkpoint(latest_checkpoint(tmp_path / "split"))
    steps = state["global_step"] // 3
    assert state["epoch"] == 3 and int(optimizer_values[0]) == 3 * steps
    reference = keras.saving.load_model(tmp_path / "straight" / "model.keras")
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
    assert resumed["history"][-1]["train"]["loss"] == pytest.approx(
        straight["history"][-1]["train"]["loss"], rel=1e-4
    )


def test_resume_after_kill_9_loses_at_most_the_current_epoch(fixture_data, tmp_path):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(training={"epochs": 1000})))
    run_dir = tmp_path / "run"
    command = (
        "import sys; from ednn.train import main; "
        f"sys.exit(main([{str(config_path)!r}, '--out', {str(run_dir)!r}, '--no-progress']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = run_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if latest.exists() and json.loads(latest.read_text())["epoch"] >= 2:
                break
            time.sleep(0.2)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    saved = json.loads(latest.read_text())["epoch"]
    assert saved >= 2
    summary = train(
        yaml.safe_load(config_path.read_text()),
        run_dir,
        resume=True,
        epochs=saved + 1,
        progress=False,
    )
    assert summary["epochs_run"] == saved + 1
    assert [h["epoch"] for h in summary["history"]] == list(range(1, saved + 2))


def test_mae_loss_exponential_decay_and_uncached_images_train(fixture_data, tmp_path):
    config = tiny_config(
        training={
            "epochs": 2,
            "loss": "mae",
            "loss_per_atom": False,
            "schedule": {"name": "exponential", "decay_rate": 0.5},
            "cache": False,
            "augment": False,
        }
    )
    summary = train(config, tmp_path / "run", progress=False)
    rates = [epoch["learning_rate"] for epoch in summary["history"]]
    np.testing.assert_allclose(rates, [0.0015, 0.00075], rtol=1e-5)
    assert np.isfinite(summary["metrics"]["test"]["mae"])


def test_reduce_on_plateau_scales_the_rate_after_patience_flat_epochs():
    from ednn.train import _plateau

    optimizer = keras.optimizers.Adam(1e-3)
    settings = {"factor": 0.5, "patience": 2, "min_learning_rate": 1e-6}
    state = {"best": None, "wait": 0}
    rates = []
    for value in (10.0, 9.0, 9.5, 9.6, 9.7, 8.0):
        _plateau(optimizer, state, value, settings)
        rates.append(float(np.asarray(optimizer.learning_rate)))
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4], rtol=1e-6)


def test_unknown_config_key_is_an_error_that_names_it(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "x"}, "training": {"epoch": 3}}))
    assert main([str(path), "--out", str(tmp_path / "run")]) == 2
    assert "Unknown config key `training.epoch`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_data_is_named_and_leaves_no_run_behind(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(data={"path": str(tmp_path / "nowhere.xyz")})))
    run_dir = tmp_path / "run"
    assert main([str(path), "--out", str(run_dir)]) == 2
    assert "nowhere.xyz: no such file" in capsys.readouterr().err
    assert not any(run_dir.iterdir())  # the corrected command can simply be run again


def test_species_belong_in_the_data_section():
    with pytest.raises(ConfigError, match=r"raster\.species.*data\.species"):
        train({"data": {"path": "x"}, "raster": {"species": ["C"]}})


def test_augmentation_switches_must_be_booleans():
    with pytest.raises(ConfigError, match=r"training\.augment\.subpixel.*bool"):
        train({"data": {"path": "x"}, "training": {"augment": {"subpixel": "yes"}}})


def test_a_run_directory_is_never_overwritten_silently(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("data: {path: x}\n")
    (run_dir / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match=r"--resume.*--overwrite"):
        train(tiny_config(), run_dir)
    assert (run_dir / "notes.txt").read_text() == "keep me"


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="not one"):
        train(tiny_config(), tmp_path, overwrite=True)
    assert (tmp_path / "thesis.tex").exists()


def test_resume_with_a_changed_setting_names_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    changed = tiny_config(training={"batch_size": 8})
    with pytest.raises(ConfigError, match=r"training\.batch_size: 4 -> 8"):
        train(changed, run_dir, resume=True)


def test_a_users_keras_model_is_the_tile_network(fixture_data, tmp_path):
    inputs = keras.Input((12, 12, 4))
    hidden = keras.layers.Conv2D(4, 3, activation="tanh")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    network = keras.Model(inputs, keras.layers.Dense(1)(hidden), name="my_tile_net")
    path = tmp_path / "my_tile_net.keras"
    network.save(path)
    config = tiny_config(model={"tile_network": str(path)}, training={"epochs": 1})
    train(config, tmp_path / "run", progress=False)
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert model.tile_network.name == "my_tile_net"
    assert isinstance(model, ednn.model.EDNN)


def test_fine_tuning_starts_from_a_trained_models_tile_network(trained, tmp_path):
    run_dir, _ = trained
    pretrained = keras.saving.load_model(run_dir / "best.keras")
    config = tiny_config(
        model={"tile_network": str(run_dir / "best.keras")},
        training={"epochs": 1, "optimizer": {"learning_rate": 1e-9}},
    )
    train(config, tmp_path / "fine", progress=False)
    tuned = keras.saving.load_model(tmp_path / "fine" / "model.keras")
    assert tuned.metadata["provenance"]["initial_tile_network"] == str(run_dir / "best.keras")
    # With a vanishing learning rate the tile network keeps the pre-trained weights.
    for before, after in zip(
        pretrained.tile_network.get_weights(), tuned.tile_network.get_weights(), strict=True
    ):
        np.testing.assert_allclose(after, before, atol=1e-6)


def test_hdf5_images_train_without_structures(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((24, 16, 16)).astype(np.float32)
    energies = -2.0 * images.sum(axis=(1, 2)) + rng.normal(0, 0.01, 24)
    path = tmp_path / "ednn.h5"
    with h5py.File(path, "w") as handle:
        handle["X"], handle["Y"] = images, energies
    config = tiny_config(data={"path": str(path)}, training={"epochs": 2})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["metrics"]["validation"]["unit"] == "meV/structure"
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert "raster" not in model.metadata and model.n_channels == 1


class OneOf:
    """Process `rank` of `size` whose collectives are the identity (as if alone)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def allreduce_mean(self, tensors):
        return list(tensors)


def test_two_processes_with_half_batches_step_like_one_with_the_whole_batch():
    rng = np.random.default_rng(1)
    # Five structures: shares of 3 and 2, so a mean of the processes' mean losses would differ.
    images = rng.random((5, 8, 8, 2)).astype(np.float32)
    data = ImageSet.from_arrays(images, rng.normal(size=5), n_atoms=rng.integers(5, 9, 5))
    keras.utils.set_random_seed(0)
    model = ednn.model.build_ednn(
        4, 2, n_channels=2, conv_layers=[(4, 3, 1, 1)], dense_units=[4], padding="valid"
    )
    start = model.get_weights()
    targets = Targets(np.zeros((0, 1)), np.array([0.1]), True, (4, 4))
    settings = {**DEFAULTS["training"], "loss": "mse", "loss_per_atom": True}
    residual, sizes = targets.residual(data), targets.sizes(data)

    def gradient(rank, size, members):
        # With SGD at rate 1 a step subtracts exactly the (reduced) gradient.
        model.set_weights(start)
        optimizer = keras.optimizers.SGD(learning_rate=1.0)
        optimizer.build(model.trainable_variables)
        step, _ = _make_steps(model, optimizer, OneOf(rank, size), data, targets, settings)
        ones = np.ones(len(members), np.float32)
        step(
            images[members],
            residual[members].astype(np.float32),
            sizes[members].astype(np.float32),
            ones,
            np.int32(len(data)),
        )
        return [before - after for before, after in zip(start, model.get_weights(), strict=True)]

    whole = gradient(0, 1, np.arange(5))
    first, second = gradient(0, 2, np.arange(3)), gradient(1, 2, np.arange(3, 5))
    assert max(np.abs(g).max() for g in whole) > 1e-4
    for full, a, b in zip(whole, first, second, strict=True):
        # allreduce_mean of the two processes' gradients:
        np.testing.assert_allclose((a + b) / 2, full, rtol=1e-4, atol=1e-6)
