"""The committed ks2d results can be reproduced from the committed files alone.

Loads stored potential models with plain Keras (as docs/ks2d.md shows): the best GGA one and
a hybrid one averaged over tile placements (`placement_step`); scores the test split of
its committed dataset and compares with the MAE its results file states. The
kernel-corrected models (session 28) are checked on the first test images against the
predictions their results file stores (the whole split takes minutes per model).
Hartree atomic units; errors in mHa.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.ks2d.generate import load_dataset

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "experiments/ks2d/results"
RUNS = ["sho-gga-2k-big2-restart2", "sho-hybrid-e100-valid-placed4-seed1"]


@pytest.mark.parametrize("run", RUNS)
def test_stored_potential_model_reproduces_its_results_table(run):
    (model_path, results) = (
        RESULTS / f"{run}_ednn_energies_from_v_ext.keras",
        RESULTS / f"{run}_train_models.json",
    )
    if not (model_path.exists() and results.exists()):
        pytest.skip(f"run {run} not present")
    stored = json.loads(results.read_text())
    data = ROOT / stored["data"]
    if not (data / "config.json").exists():
        pytest.skip(f"dataset {stored['data']} not present")
    model = keras.saving.load_model(model_path)
    meta = model.metadata
    assert meta["units"] == "Ha" and meta["provenance"]["input"] == "v_ext"
    test = load_dataset(data, split="test")
    v = test["v_ext"][..., None] * meta["provenance"]["input_scale"]
    count = np.broadcast_to(test["n_electrons"][:, None, None, None] / 8.0, v.shape)
    x = np.concatenate([v, count], axis=-1).astype("float32")
    predicted = model.predict(x, batch_size=64, verbose=0)
    true = np.stack([test[name] for name in meta["target_names"]], axis=1)
    mae_mHa = 1000 * np.abs(predicted - true).mean(axis=0)
    expected = [stored["energy_mae_mHa"]["v_ext"][name] for name in meta["target_names"]]
    np.testing.assert_allclose(mae_mHa, expected, rtol=1e-3, atol=0.01)


CORRECTED = ["sho-gga-2k-big2-restart2_kernel_correction_m3_fit1"]


@pytest.mark.parametrize("stem", CORRECTED)
def test_stored_kernel_corrected_model_reproduces_its_stored_predictions(stem):
    results = RESULTS / f"{stem}.json"
    if not results.exists():
        pytest.skip(f"{stem} not present")
    stored = json.loads(results.read_text())
    model_path = RESULTS / stored["model_file"]
    data = ROOT / stored["data"]
    if not (model_path.exists() and (data / "config.json").exists()):
        pytest.skip(f"model or dataset of {stem} not present")
    model = keras.saving.load_model(model_path)
    expected = np.asarray(stored["check_test_predictions_Ha"])
    test = load_dataset(data, split="test")
    v = test["v_ext"][: len(expected), ..., None] * model.metadata["provenance"]["input_scale"]
    count = np.broadcast_to(test["n_electrons"][: len(expected), None, None, None] / 8.0, v.shape)
    x = np.concatenate([v, count], axis=-1).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=5e-5)
    # And those predictions are close to the labels (the MAE of the whole split: ~1 mHa).
    true = np.stack([test[name][: len(expected)] for name in model.metadata["target_names"]], 1)
    assert np.abs(expected - true).mean() < 5e-3
