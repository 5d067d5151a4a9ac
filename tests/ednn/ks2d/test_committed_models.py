"""The committed ks2d results can be reproduced from the committed files alone.

Loads the best stored GGA potential model with plain Keras (as docs/ks2d.md shows), scores
the test split of its committed dataset and compares with the MAE its results file states.
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
RUN = "sho-gga-2k-big2-restart2"
MODEL = ROOT / "experiments/ks2d/results" / f"{RUN}_ednn_energies_from_v_ext.keras"
RESULTS = ROOT / "experiments/ks2d/results" / f"{RUN}_train_models.json"


@pytest.mark.skipif(not (MODEL.exists() and RESULTS.exists()), reason=f"run {RUN} not present")
def test_stored_gga_potential_model_reproduces_its_results_table():
    stored = json.loads(RESULTS.read_text())
    data = ROOT / stored["data"]
    if not (data / "config.json").exists():
        pytest.skip(f"dataset {stored['data']} not present")
    model = keras.saving.load_model(MODEL)
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
