"""experiments/ks2d/train_models.py end to end on a tiny generated dataset (Hartree units)."""

import importlib.util
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from ednn.count_baseline import CountBaseline
from ednn.ensemble import ModelAverage
from ednn.ks2d import generate as gen
from ednn.ks2d.grid import apply_symmetry
from ednn.layers import AppendSqrt, ChannelCeiling
from ednn.multiscale import MultiScaleEDNN
from ednn.symmetry import SymmetryAverage
from ednn.translation import TranslationAverage

SCRIPT = Path(__file__).parents[3] / "experiments" / "ks2d" / "train_models.py"
CONFIG = {
    "functional": "lda",
    "potential": "sho",
    "potential_options": {"omega": [0.8, 1.2], "centre": [-0.5, 0.5]},
    "n_electrons": [2, 4],
    "grid": {"n": 32, "box": 12.0},
    "count": 20,
    "shard_size": 10,
    "seed": 5,
}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ks2d") / "data"
    gen.generate(CONFIG, out, progress=False)
    return out


def test_count_baseline_models_train_save_and_rescore(script, dataset, tmp_path):
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "tiny",
                 "--epochs", "1", "--minutes", "5", "--baseline", "count",
                 "--focus", "16", "--context", "8"]  # fmt: skip
    result = script.main([*arguments, "--only", "density", "v_ext"])
    assert result["schedule"]["baseline"] == "count"
    table = (tmp_path / "tiny_train_models.md").read_text()
    assert "| predict the mean per N |" in table and "less the training mean" in table
    # The per-N reference alone beats the overall mean on E_total (N = 2 vs 4 dominates).
    assert result["count_baseline_mae_mHa"]["e_total"] < result["baseline_mae_mHa"]["e_total"]
    for kind in ("density", "v_ext"):
        # Saved without optimizer state; plain load_model after `import ednn`.
        model = keras.saving.load_model(tmp_path / f"tiny_ednn_energies_from_{kind}.keras")
        assert isinstance(model, CountBaseline)
        np.testing.assert_array_equal(model.counts, [2, 4])
    # Rescoring the saved models (no --only for them) gives the same errors.
    again = script.main([*arguments, "--only", "dcign"])
    for kind in ("density", "v_ext"):
        for term, value in result["energy_mae_mHa"][kind].items():
            assert again["energy_mae_mHa"][kind][term] == pytest.approx(value, rel=1e-4)
        assert again["epochs"][kind] == 1  # read from the results file as it is at rescoring
    stored = json.loads((tmp_path / "tiny_train_models.json").read_text())
    assert "density" in stored and stored["epochs"]["dcign"] == 1
    # By electron count: the per-N errors, weighted by the test samples per N, are the MAE.
    counts = script.load_splits(dataset)[0]["test"]["n_electrons"]
    for kind in ("density", "v_ext"):
        by_count = result["energy_mae_by_count_mHa"][kind]
        assert set(by_count) == {str(n) for n in np.unique(counts)}
        weighted = sum(np.sum(counts == int(n)) * row["e_total"] for n, row in by_count.items())
        assert weighted / len(counts) == pytest.approx(result["energy_mae_mHa"][kind]["e_total"])
    assert "E_total test MAE (mHa) by electron count" in table
    # --rescore trains nothing and scores every saved model again, as the run that trained
    # them (its schedule from the results file, not this command's defaults).
    rescored = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "tiny",
                            "--rescore"])  # fmt: skip
    assert rescored["schedule"] == result["schedule"]
    for kind in ("density", "v_ext"):
        rows = (rescored["energy_mae_mHa"][kind], again["energy_mae_mHa"][kind])
        assert rows[0] == pytest.approx(rows[1], rel=1e-4)
    assert rescored["epochs"] == again["epochs"] and "density" in rescored
    # Results of the first sessions recorded no schedule: rescored with the defaults.
    path = tmp_path / "tiny_train_models.json"
    path.write_text(json.dumps({k: v for k, v in stored.items() if k != "schedule"}))
    oldest = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "tiny",
                          "--rescore"])  # fmt: skip
    assert oldest["schedule"]["baseline"] == "none" and oldest["epochs"] == again["epochs"]


def test_a_run_of_the_same_name_that_finished_meanwhile_keeps_its_row(
    script, dataset, tmp_path, monkeypatch
):
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "side",
                 "--epochs", "1", "--minutes", "5"]  # fmt: skip
    first = script.main([*arguments, "--only", "v_ext"])
    # Rewind to before the v_ext run finished: no results, no model file.
    (results, model) = (
        tmp_path / "side_train_models.json",
        tmp_path / "side_ednn_energies_from_v_ext.keras",
    )
    written = results.read_text()
    results.unlink()
    model.rename(tmp_path / "aside.keras")
    original = script.train_energy_model

    def v_ext_finishes_meanwhile(*args, **kwargs):
        trained = original(*args, **kwargs)
        (tmp_path / "aside.keras").rename(model)
        results.write_text(written)
        return trained

    monkeypatch.setattr(script, "train_energy_model", v_ext_finishes_meanwhile)
    second = script.main([*arguments, "--only", "density"])
    assert second["energy_mae_mHa"]["v_ext"] == first["energy_mae_mHa"]["v_ext"]
    stored = json.loads(results.read_text())
    assert set(stored["energy_mae_mHa"]) == {"density", "v_ext"}
    assert "| v_ext |" in (tmp_path / "side_train_models.md").read_text()


def test_a_potential_ceiling_is_part_of_the_saved_model(script, dataset, tmp_path):
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "capped",
                 "--epochs", "1", "--minutes", "5", "--v-ceiling", "5", "--density-sqrt",
                 "--train-fraction", "0.5", "--width", "0.5", "--activation", "silu",
                 "--dense-units", "256", "64",
                 "--only", "v_ext", "density"]  # fmt: skip
    result = script.main(arguments)
    assert result["schedule"]["v_ceiling_Ha"] == 5.0
    # Half the training split, seeded, its ids stored; val and test whole.
    (splits, _, _) = script.load_splits(dataset)
    train_ids = result["train_ids"]
    assert len(train_ids) == round(len(splits["train"]["id"]) / 2)
    assert set(train_ids) < set(splits["train"]["id"].tolist())
    assert result["sizes"].split("/")[1:] == [str(len(splits[s]["id"])) for s in ("val", "test")]
    model = keras.saving.load_model(tmp_path / "capped_ednn_energies_from_v_ext.keras")
    ceiling = model.tile_network.get_layer("v_ceiling")
    assert isinstance(ceiling, ChannelCeiling)
    assert ceiling.ceiling == 5.0 * script.V_SCALE and ceiling.channels == (0,)
    assert model.metadata["provenance"]["v_ceiling_Ha"] == 5.0
    # --width 0.5: half the filters and units of every hidden layer.
    hidden = [layer for layer in model.tile_network.layers[-1].layers if layer.name != "output"]
    widths = [getattr(layer, "filters", getattr(layer, "units", None)) for layer in hidden]
    # --dense-units 256 64 (halved too): two hidden dense layers.
    assert [w for w in widths if w is not None] == [16, 16, 16, 32, 32, 128, 32]
    # --activation silu: every hidden layer of the saved network, the output stays linear.
    activations = [layer.activation.__name__ for layer in hidden if hasattr(layer, "activation")]
    assert activations and set(activations) == {"silu"}
    assert model.tile_network.layers[-1].get_layer("output").activation.__name__ == "linear"
    assert result["schedule"]["activation"] == "silu"
    density_model = keras.saving.load_model(tmp_path / "capped_ednn_energies_from_density.keras")
    assert isinstance(density_model.tile_network.get_layer("density_sqrt"), AppendSqrt)
    table = (tmp_path / "capped_train_models.md").read_text()
    assert "caps the potential at 5 Ha" in table and "also see √n" in table
    assert "0.5x as wide" in table and "`silu` activations" in table
    assert "hidden dense layers after the convolutions have 256, 64 units" in table
    # split_errors.py scores the saved model on every split; its test row is the script's.
    spec = importlib.util.spec_from_file_location(
        "split_errors", SCRIPT.with_name("split_errors.py")
    )
    split_errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split_errors)
    errors = split_errors.main(
        ["--data", str(dataset), "--out", str(tmp_path), "--names", "capped", "--inputs", "v_ext"]
    )["capped/v_ext"]
    assert set(errors) == {"train", "val", "test"}
    # Its train row scores the half the model trained on.
    model = keras.saving.load_model(tmp_path / "capped_ednn_energies_from_v_ext.keras")
    chosen = np.isin(splits["train"]["id"], train_ids)
    own = split_errors.split_errors(model, splits, "v_ext", train_ids)["train"]
    assert (
        own
        == split_errors.split_errors(
            model, {**splits, "train": {k: v[chosen] for k, v in splits["train"].items()}}, "v_ext"
        )["train"]
    )
    assert errors["train"] == pytest.approx(own, rel=1e-6)
    for term, value in result["energy_mae_mHa"]["v_ext"].items():
        assert errors["test"][term] == pytest.approx(value, rel=1e-4)
    # Scoring another model keeps the rows scored before; scoring one again replaces its rows.
    split_errors.main(
        ["--data", str(dataset), "--out", str(tmp_path), "--names", "capped", "--inputs", "density"]
    )
    stored = json.loads((tmp_path / "data_split_errors.json").read_text())
    assert list(stored) == ["capped/v_ext", "capped/density"]
    for split in ("train", "val", "test"):
        assert stored["capped/v_ext"][split] == pytest.approx(errors[split], rel=1e-12)
    table = (tmp_path / "data_split_errors.md").read_text()
    assert table.count("| capped | v_ext |") == table.count("| capped | density |") == 3


def test_spin_densities_are_a_model_input_of_spin_polarised_sets(script, tmp_path):
    data = tmp_path / "spin"
    gen.generate(
        {**CONFIG, "n_electrons": [1, 2, 3], "count": 12, "magnetization": "lowest"},
        data,
        progress=False,
    )
    result = script.main(["--data", str(data), "--out", str(tmp_path), "--name", "spin",
                          "--epochs", "1", "--minutes", "5", "--baseline", "count",
                          "--only", "spin_density"])  # fmt: skip
    assert set(result["energy_mae_mHa"]) == {"spin_density"}
    assert "| spin densities |" in (tmp_path / "spin_train_models.md").read_text()
    model = keras.saving.load_model(tmp_path / "spin_ednn_energies_from_spin_densities.keras")
    assert isinstance(model, CountBaseline) and model.channels == (0, 1)
    # Two channels, n↑ and n↓; N is read from their summed integral (odd N: n↑ ≠ n↓).
    (splits, _, _) = script.load_splits(data)
    images = script.image(splits["test"], "spin_densities", script.N_SCALE)
    assert images.shape[1:] == (32, 32, 2)
    np.testing.assert_array_equal(model.electron_counts(images), splits["test"]["n_electrons"])
    up = images[..., 0].sum(axis=(1, 2)) * (12.0 / 32) ** 2 / script.N_SCALE
    np.testing.assert_allclose(up, splits["test"]["n_up"], atol=1e-4)
    # The energies of (n↑, n↓) and (n↓, n↑) are the same, for the solver and for the model.
    odd = script.image(splits["train"], "spin_densities", script.N_SCALE)
    odd = odd[splits["train"]["n_electrons"] % 2 == 1]
    assert len(odd) and not np.allclose(odd[..., ::-1], odd)
    np.testing.assert_allclose(
        model.predict(odd[..., ::-1], verbose=0), model.predict(odd, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--v-ceiling", "-1"], "--v-ceiling must be a positive number"),
        (["--width", "0"], "--width must be a positive number"),
        (["--train-fraction", "0"], "--train-fraction must be in (0, 1]"),
        (["--train-fraction", "0.01"], "leaves no training sample"),
        (["--only", "spin_density"], "needs a spin-polarised dataset"),
        (["--rescore", "--only", "v_ext"], "--rescore trains nothing"),
        (["--rescore"], "no results to rescore"),
        (["--extra-train", "x", "--transfer-targets", "y"], "does not combine with"),
        (["--extra-train", "no-such-dir"], "no-such-dir"),
        (["--coarse", "3", "8"], "POOL >= 2 dividing --focus"),
        (["--coarse", "1", "8"], "POOL >= 2 dividing --focus"),
        (["--activation", "tanh"], "invalid choice: 'tanh'"),
        (["--dense-units", "0"], "--dense-units must be positive integers"),
        (["--roll", "0"], "--roll must be a positive number of pixels"),
        (["--move-wells", "0"], "--move-wells must be a positive number of pixels"),
        (["--move-wells", "2"], "pass --only v_ext. Received: --only density v_ext dcign (the"),
        (["--move-wells", "2", "--roll", "2", "--only", "v_ext"], "does not combine with --roll"),
        (["--average-rolls", "5"], "--average-rolls must be a positive divisor of --focus 16"),
        (["--average-rolls", "0"], "--average-rolls must be a positive divisor of --focus 16"),
        (["--placement-step", "4"], "needs valid convolutions: pass --padding valid"),
        (["--placement-step", "6", "--padding", "valid"], "positive divisor of --focus 16"),
    ],
)
def test_bad_options_are_refused(script, dataset, tmp_path, capsys, option, message):
    with pytest.raises(SystemExit):
        script.main(["--data", str(dataset), "--out", str(tmp_path), *option])
    assert message in capsys.readouterr().err


def test_ensemble_scores_each_model_and_their_mean(script, dataset, tmp_path):
    maes = []
    for seed in (0, 1):
        result = script.main(["--data", str(dataset), "--out", str(tmp_path),
                              "--name", f"seed{seed}", "--seed", str(seed), "--epochs", "1",
                              "--minutes", "5", "--only", "v_ext"])  # fmt: skip
        maes.append(result["energy_mae_mHa"]["v_ext"])
    spec = importlib.util.spec_from_file_location("ensemble", SCRIPT.with_name("ensemble.py"))
    ensemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ensemble)
    result = ensemble.main(["--data", str(dataset), "--out", str(tmp_path),
                            "--names", "seed0", "seed1", "--input", "v_ext",
                            "--label", "pair"])  # fmt: skip
    rows = result["test_mae_mHa"]
    for name, mae in zip(("seed0", "seed1"), maes, strict=True):
        assert rows[name] == pytest.approx(mae, rel=1e-4)
    # |mean of errors| <= mean of |errors|, term by term; equal only if they never differ in sign.
    for term, value in rows["mean of the models"].items():
        assert value <= (maes[0][term] + maes[1][term]) / 2 + 1e-9
    assert len(result["e_total_error_correlation"]) == 2
    assert (tmp_path / "data_ensemble_v_ext_pair.md").exists()
    # Weights fit on the validation split, the ensemble saved as one model.
    weighted = ensemble.main(["--data", str(dataset), "--out", str(tmp_path),
                              "--names", "seed0", "seed1", "--fit-weights",
                              "--save", "both"])  # fmt: skip
    weights = list(weighted["weights"].values())
    assert sum(weights) == pytest.approx(1, abs=1e-3) and min(weights) >= 0
    label = "weighted mean (weights fit on val)"
    # Equal weights are where the search starts: it ends no worse on the validation split.
    assert (
        weighted["val_e_total_mae_mHa"][label]
        <= result["val_e_total_mae_mHa"]["mean of the models"] + 1e-6
    )
    saved = keras.saving.load_model(tmp_path / "both_ednn_energies_from_v_ext.keras")
    assert isinstance(saved, ModelAverage)
    np.testing.assert_allclose(saved.member_weights, weights, atol=1e-4)
    test = script.load_splits(dataset)[0]["test"]
    predicted = saved.predict(script.image(test, "v_ext", script.V_SCALE), verbose=0)
    scored = script.mae_mHa(script.energies(test).astype(np.float64), predicted)
    assert scored["e_total"] == pytest.approx(weighted["test_mae_mHa"][label]["e_total"], rel=1e-3)
    with pytest.raises(SystemExit):
        ensemble.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "seed0"])
    with pytest.raises(SystemExit):
        ensemble.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "seed0", "x"])


def test_symmetrize_scores_the_saved_models_as_trained_and_averaged(script, dataset, tmp_path):
    trained = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run",
                           "--epochs", "1", "--minutes", "5", "--only", "v_ext", "density"])  # fmt: skip
    spec = importlib.util.spec_from_file_location("symmetrize", SCRIPT.with_name("symmetrize.py"))
    symmetrize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(symmetrize)
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "run"]
    result = symmetrize.main([*arguments, "--models", "v_ext", "--save"])
    rows = result["mae_mHa"]["v_ext"]
    assert rows["trained"]["test"] == pytest.approx(trained["energy_mae_mHa"]["v_ext"], rel=1e-4)
    # The average of a model over images of the same system is a different, invariant model.
    assert rows["averaged"]["test"] != rows["trained"]["test"]
    saved = keras.saving.load_model(tmp_path / "run_ednn_energies_from_v_ext_symmetric.keras")
    assert isinstance(saved, SymmetryAverage) and saved.mirror_shift == 1
    x = script.image(script.load_splits(dataset)[0]["test"], "v_ext", script.V_SCALE)
    mirrored = np.moveaxis(apply_symmetry(np.moveaxis(x, -1, 1), 3), 1, -1)
    np.testing.assert_allclose(saved.predict(mirrored, verbose=0), saved.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    # Without --models: every saved model; the table has both kinds for each.
    script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run",
                 "--epochs", "1", "--minutes", "5", "--only", "dcign"])  # fmt: skip
    result = symmetrize.main(arguments)
    assert set(result["mae_mHa"]) == {"v_ext", "density", "dcign"}
    table = (tmp_path / "run_symmetry_average.md").read_text()
    assert "| density | averaged | test |" in table and "| averaged | test |" in table
    dcign = result["mae_mHa"]["dcign"]
    stored = json.loads((tmp_path / "run_train_models.json").read_text())["density"]
    assert dcign["trained"]["test"]["integrated"] == pytest.approx(stored["integrated"], rel=1e-4)
    assert dcign["averaged"]["test"]["integrated"] != dcign["trained"]["test"]["integrated"]
    assert set(dcign["averaged"]["test_energies_mae_mHa"]) == set(script.DENSITY_TERMS)
    with pytest.raises(SystemExit):  # no such run
        symmetrize.main([*arguments[:4], "--name", "other"])
    shutil.copy(tmp_path / "run_ednn_energies_from_v_ext_symmetric.keras",
                tmp_path / "avg_ednn_energies_from_v_ext.keras")  # fmt: skip
    # A model saved averaged: its network alone is the trained row, the same numbers.
    again = symmetrize.main([*arguments[:4], "--name", "avg", "--save"])
    for kind in ("trained", "averaged"):
        assert again["mae_mHa"]["v_ext"][kind]["test"] == pytest.approx(rows[kind]["test"])
    assert not (tmp_path / "avg_ednn_energies_from_v_ext_symmetric.keras").exists()
    ensemble = importlib.util.spec_from_file_location("ensemble", SCRIPT.with_name("ensemble.py"))
    module = importlib.util.module_from_spec(ensemble)
    ensemble.loader.exec_module(module)
    script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run1", "--seed", "1",
                 "--epochs", "1", "--minutes", "5", "--only", "v_ext"])  # fmt: skip
    pair = module.main([*arguments[:4], "--names", "run", "run1", "--average-symmetries"])
    assert pair["average_symmetries"]
    assert pair["test_mae_mHa"]["run"] == pytest.approx(rows["averaged"]["test"], rel=1e-4)


def test_average_symmetries_saves_the_invariant_model_and_rescores_it(script, dataset, tmp_path):
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "sym",
                 "--epochs", "1", "--minutes", "5", "--baseline", "count"]  # fmt: skip
    result = script.main([*arguments, "--only", "v_ext", "--average-symmetries"])
    assert result["schedule"]["average_symmetries"] and result["tiles"]["v_ext"] == "16+2x8"
    model = keras.saving.load_model(tmp_path / "sym_ednn_energies_from_v_ext.keras")
    assert isinstance(model, SymmetryAverage) and isinstance(model.model, CountBaseline)
    test = script.load_splits(dataset)[0]["test"]
    x = script.image(test, "v_ext", script.V_SCALE)
    swapped = np.moveaxis(apply_symmetry(np.moveaxis(x, -1, 1), 6), 1, -1)
    np.testing.assert_allclose(model.predict(swapped, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert "8 symmetries of the grid" in (tmp_path / "sym_train_models.md").read_text()
    again = script.main([*arguments[:6], "--rescore"])
    assert again["schedule"]["average_symmetries"]
    for term, value in result["energy_mae_mHa"]["v_ext"].items():
        assert again["energy_mae_mHa"]["v_ext"][term] == pytest.approx(value, rel=1e-4)


def test_roll_trains_on_translated_images_and_average_rolls_saves_the_averaged_model(
    script, dataset, tmp_path
):
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "rolled",
                 "--epochs", "1", "--minutes", "5", "--baseline", "count"]  # fmt: skip
    result = script.main([*arguments, "--only", "v_ext", "--average-symmetries", "--roll", "4",
                          "--average-rolls", "8"])  # fmt: skip
    assert result["schedule"]["roll"] == 4 and result["schedule"]["average_rolls"] == 8
    assert result["tiles"]["v_ext"] == "16+2x8"
    model = keras.saving.load_model(tmp_path / "rolled_ednn_energies_from_v_ext.keras")
    assert isinstance(model, TranslationAverage) and isinstance(model.model, SymmetryAverage)
    assert model.shifts == ((-8, -8), (-8, 0), (0, -8), (0, 0))
    x = script.image(script.load_splits(dataset)[0]["test"], "v_ext", script.V_SCALE)
    each = [model.model.predict(np.roll(x, s, axis=(1, 2)), verbose=0) for s in model.shifts]
    np.testing.assert_allclose(model.predict(x, verbose=0), np.mean(each, axis=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    text = (tmp_path / "rolled_train_models.md").read_text()
    assert "shift of at most 4 pixels along each axis" in text
    assert "rolled by multiples of 8 pixels" in text
    again = script.main([*arguments[:6], "--rescore"])
    assert (again["schedule"]["roll"], again["schedule"]["average_rolls"]) == (4, 8)
    for term, value in result["energy_mae_mHa"]["v_ext"].items():
        assert again["energy_mae_mHa"]["v_ext"][term] == pytest.approx(value, rel=1e-4)
    # A later schedule starts from the averaged model's weights (its network's).
    script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "next",
                 "--epochs", "1", "--minutes", "5", "--baseline", "count",
                 "--only", "v_ext", "--init-from", "rolled", "--lr", "1e-9"])  # fmt: skip
    follow = keras.saving.load_model(tmp_path / "next_ednn_energies_from_v_ext.keras")
    assert isinstance(follow, CountBaseline)
    np.testing.assert_allclose(follow.predict(x, verbose=0), model.model.model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_random_roll_moves_images_and_image_targets_alike_within_the_limits(script):
    image = np.arange(2 * 8 * 8, dtype=np.float32).reshape(8, 8, 2)
    target = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    energies = np.arange(3, dtype=np.float32)
    limits = np.array([[-2, 1], [0, 3]], np.int32)
    apply = script._random_roll(0)
    seen = set()
    for _ in range(300):  # 16 rolls: each drawn with probability 1 - 4e-9
        (x, (n, e)) = apply(image, (target, energies), limits)
        (x, n, e) = (np.asarray(x), np.asarray(n), np.asarray(e))
        (dy, dx) = (int(v) for v in np.argwhere(x[..., 0] == 0)[0])
        shift = ((dy + 4) % 8 - 4, (dx + 4) % 8 - 4)
        seen.add(shift)
        np.testing.assert_array_equal(x, np.roll(image, shift, axis=(0, 1)))
        np.testing.assert_array_equal(n, np.roll(target, shift, axis=(0, 1)))
        np.testing.assert_array_equal(e, energies)
    assert seen == {(dy, dx) for dy in range(-2, 2) for dx in range(4)}  # all, and no other


def test_error_anatomy_groups_every_pooled_sample_once(script, dataset, tmp_path):
    result = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run",
                          "--epochs", "1", "--minutes", "5", "--only", "v_ext"])  # fmt: skip
    spec = importlib.util.spec_from_file_location("anatomy", SCRIPT.with_name("error_anatomy.py"))
    anatomy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anatomy)
    out = anatomy.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run"])
    splits = script.load_splits(dataset)[0]
    pooled = len(splits["val"]["id"]) + len(splits["test"]["id"])
    rows = out["by_count"].values()
    assert sum(r["count"] for r in rows) == pooled
    for row in rows:  # each grouping splits the samples of an N without loss
        assert row["closed"]["count"] + row["partly_filled"]["count"] == row["count"]
        for key in ("mean_omega", "anisotropy"):
            assert sum(b["count"] for b in row[key]) == row["count"]
    total = sum(r["mae_mHa"] * r["count"] for r in rows) / pooled
    assert total == pytest.approx(out["e_total_mae_mHa"])
    assert out["terms_mae_mHa"]["e_total"] == pytest.approx(out["e_total_mae_mHa"])
    assert len(set(out["terms_mae_mHa"].values())) == len(script.TARGETS)
    assert out["sum_of_terms_mae_mHa"] != pytest.approx(out["e_total_mae_mHa"], rel=1e-6)
    correlation = np.array(out["error_correlation"])
    np.testing.assert_allclose(np.diag(correlation), 1.0)
    np.testing.assert_allclose(correlation, correlation.T)
    assert (
        "Correlation of the signed errors" in (tmp_path / "run_error_anatomy_v_ext.md").read_text()
    )
    test_only = result["energy_mae_mHa"]["v_ext"]["e_total"]
    assert out["e_total_mae_mHa"] != test_only  # pooled with the validation split
    assert "| N \\ mean frequency" in (tmp_path / "run_error_anatomy_v_ext.md").read_text()
    # Occupations: full is 2 per level unpolarised, 1 per spin level; NaN pads.
    unpolarised = np.array([[2.0, 2.0, 0.0], [2.0, 1.0, 1.0], [2.0, 1.9995, 5e-4]])
    np.testing.assert_array_equal(anatomy.partly_filled(unpolarised), [False, True, False])
    spin = np.array([[[1.0, 0.0, np.nan], [1.0, np.nan, np.nan]], [[1.0, 0.5, 0.5], [1.0, 0, 0]]])
    np.testing.assert_array_equal(anatomy.partly_filled(spin), [False, True])


def test_init_from_starts_training_at_a_saved_run(script, dataset, tmp_path, capsys):
    base = ["--data", str(dataset), "--out", str(tmp_path), "--epochs", "1", "--minutes", "5",
            "--only", "v_ext", "--baseline", "count"]  # fmt: skip
    first = script.main([*base, "--name", "first", "--average-symmetries"])
    # A vanishing learning rate keeps the weights it starts from: the first run's network.
    again = script.main([*base, "--name", "again", "--init-from", "first", "--lr", "1e-12"])
    assert again["init_from"] == "first"
    saved = keras.saving.load_model(tmp_path / "first_ednn_energies_from_v_ext.keras")
    restarted = keras.saving.load_model(tmp_path / "again_ednn_energies_from_v_ext.keras")
    for old, new in zip(saved.model.get_weights(), restarted.get_weights(), strict=True):
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-8)
    assert first["energy_mae_mHa"]["v_ext"] != again["energy_mae_mHa"]["v_ext"]  # not averaged
    assert (
        "started from the weights of the models of run `first`"
        in (tmp_path / "again_train_models.md").read_text()
    )
    with pytest.raises(ValueError, match="has other weights than this run's"):
        script.main([*base, "--name", "wide", "--init-from", "first", "--width", "2"])
    with pytest.raises(SystemExit):
        script.main([*base, "--name", "none", "--init-from", "missing"])
    # Weights of the same shapes trained with other activations are refused too.
    with pytest.raises(SystemExit):
        script.main([*base, "--name", "smooth", "--init-from", "first", "--activation", "silu"])
    assert "its networks use relu activations, this run silu" in capsys.readouterr().err
    # A larger dense head grown from the first run's computes what it did, then trains on.
    grown = script.main([*base, "--name", "grown", "--init-from", "first", "--lr", "1e-12",
                         "--dense-units", "160", "130"])  # fmt: skip
    assert grown["grown_from_dense_units"] == [128]
    for term, mae in again["energy_mae_mHa"]["v_ext"].items():
        assert grown["energy_mae_mHa"]["v_ext"][term] == pytest.approx(mae, rel=1e-4, abs=1e-6)
    assert "of 128 units, was first grown" in (tmp_path / "grown_train_models.md").read_text()
    with pytest.raises(SystemExit):
        script.main([*base, "--name", "narrow", "--init-from", "first", "--dense-units", "64"])
    assert "at least as wide as the trained one" in capsys.readouterr().err


def test_density_gradient_trains_the_potential_model_on_its_density(
    script, dataset, tmp_path, capsys
):
    base = ["--data", str(dataset), "--out", str(tmp_path), "--epochs", "40", "--minutes", "5",
            "--only", "v_ext", "--baseline", "count", "--lr", "3e-3"]  # fmt: skip
    plain = script.main([*base, "--name", "plain"])
    taught = script.main([*base, "--name", "taught", "--density-gradient", "100"])
    assert taught["schedule"]["density_gradient"] == 100.0
    (before, after) = (r["energy_gradient_density"]["v_ext"] for r in (plain, taught))
    # Without it the energy's derivative is no density; with it, it nears the true one
    # (∫|Δn| / N 1.06 -> 0.54 here, in isolation; other tests run before it move the second
    # number by a few per cent, so the bound leaves room for that).
    assert before["integrated"] > 0.5 and after["integrated"] < 0.6 * before["integrated"]
    text = (tmp_path / "taught_train_models.md").read_text()
    assert "trained on that density too, with weight 100 on its error" in text
    assert "misses the true density by ∫|Δn| / N = " in text
    rescored = script.main(
        ["--data", str(dataset), "--out", str(tmp_path), "--name", "taught", "--rescore"]
    )
    assert rescored["energy_gradient_density"] == taught["energy_gradient_density"]
    # hellmann_feynman.py reports the same error, per block size, and fine-tunes a copy.
    spec = importlib.util.spec_from_file_location("hf", SCRIPT.with_name("hellmann_feynman.py"))
    hf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hf)
    probe = ["--data", str(dataset), "--out", str(tmp_path), "--names", "taught", "plain"]
    report = hf.main(
        [*probe, "--finetune", "1", "1e-3", "1", "--time-steps", "1", "--label", "probe"]
    )
    timing = report["step_seconds"]
    assert timing["ratio"] == pytest.approx(timing["with_density"] / timing["energy_only"])
    for name, stored in (("taught", after), ("plain", before)):
        by_block = report["models"][name]["integrated_by_block"]
        assert list(by_block) == ["1", "2", "4", "8", "16", "32"]
        assert by_block["1"] == pytest.approx(stored["integrated"], rel=1e-4)
    rows = report["finetune"]["rows"]
    assert [row["steps"] for row in rows] == [0, 1]
    assert rows[0]["density_error"] == pytest.approx(after["integrated"], rel=1e-4)
    assert (tmp_path / "taught_hellmann_feynman_probe.md").exists()
    with pytest.raises(SystemExit):
        hf.main([*probe, "--finetune", "1", "1e-3", "1000"])
    assert "--finetune: 1000 steps of 16 need 1 to 1 steps" in capsys.readouterr().err
    for bad in (["--density-gradient", "0"], ["--density-gradient", "1", "--only", "density"]):
        with pytest.raises(SystemExit):
            script.main([*base, "--name", "bad", *bad])
    err = capsys.readouterr().err
    assert "--density-gradient must be a positive weight" in err
    assert "pass --only v_ext. Received: --only density" in err


def test_summary_keeps_the_best_run_per_dataset_and_kind(tmp_path):
    spec = importlib.util.spec_from_file_location("summary", SCRIPT.with_name("summary.py"))
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)

    def energies(total):
        return {
            "t_s": 1.0,
            "e_ext": 2.0,
            "e_hartree": 3.0,
            "e_x": 1.5,
            "e_c": 0.2,
            "e_total": total,
        }

    def write(name, payload):
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))

    write("short_train_models", {"data": "d", "name": "short", "epochs": {"v_ext": 10},
                                 "energy_mae_mHa": {"v_ext": energies(9.0)}})  # fmt: skip
    write("long_train_models", {"data": "d", "name": "long", "epochs": {"v_ext": 90, "dcign": 5},
                                "energy_mae_mHa": {"v_ext": energies(5.0)},
                                "density": {"mae": 1e-4, "integrated": 0.01,
                                            "integrated_max": 0.03}})  # fmt: skip
    averaged = {"trained": {}, "averaged": {"test": energies(4.0)}}
    dcign = {"averaged": {"test": {"mae": 8e-5, "integrated": 0.008, "integrated_max": 0.02}}}
    write("short_symmetry_average", {"mae_mHa": {"v_ext": averaged, "dcign": dcign}})
    chosen = summary.main(["--results", str(tmp_path)])
    row = chosen["energies"]["d v_ext"]
    assert (row["run"], row["averaged"], row["epochs"]) == ("short", True, "10")
    assert chosen["dcign"]["d"]["integrated"] == 0.008
    table = (tmp_path / "summary.md").read_text()
    assert "| **0.2** | 4.0 | short | 10 | yes |" in table and "| 0.80 % |" in table
    # A restart counts the epochs of the run it started from; a supplement is named.
    write("again_train_models", {"data": "d", "name": "again", "epochs": {"v_ext": 30},
                                 "init_from": "long", "extra_train_sizes": {"more": 7},
                                 "energy_mae_mHa": {"v_ext": energies(3.0)}})  # fmt: skip
    row = summary.main(["--results", str(tmp_path)])["energies"]["d v_ext"]
    assert (row["run"], row["epochs"], row["extra_train_samples"]) == ("again", "90+30", 7)
    assert "| again (+7 train samples) | 90+30 | no |" in (tmp_path / "summary.md").read_text()
    # An ensemble (ensemble.py) competes, its members named with their weights.
    write("d_ensemble_v_ext_pair", {"data": "d", "input": "v_ext", "average_symmetries": False,
                                    "weights": {"again": 0.75, "long": 0.25, "short": 0.0},
                                    "test_mae_mHa": {"again": energies(3.0), "long": energies(5.0),
                                                     "short": energies(9.0),
                                                     "weighted mean (weights fit on val)":
                                                         energies(2.5)}})  # fmt: skip
    row = summary.main(["--results", str(tmp_path)])["energies"]["d v_ext"]
    assert row["run"] == "ensemble of again ×0.75, long ×0.25 (`d_ensemble_v_ext_pair`)"
    assert (row["mae_mHa"]["e_total"], row["averaged"]) == (2.5, False)
    # So does a model averaged over moves of the well (shift_average.py).
    write("again_shift_average_m3", {"data": "d", "input": "v_ext", "run": "again", "max_shift": 3,
                                  "mae_mHa": {"shift-averaged": {"test": energies(2.0)}}})  # fmt: skip
    row = summary.main(["--results", str(tmp_path)])["energies"]["d v_ext"]
    assert row["run"] == "again, averaged over moves of up to 3 px"
    assert (row["epochs"], row["extra_train_samples"]) == ("90+30", 7)
    # And a model plus its kernel correction (kernel_correction.py).
    write("again_kernel_correction_m3", {"data": "d", "input": "v_ext", "run": "again",
                                         "max_shift": 3, "mae_mHa": {"corrected": {
                                             "test": energies(1.5)}}})  # fmt: skip
    row = summary.main(["--results", str(tmp_path)])["energies"]["d v_ext"]
    assert row["run"] == (
        "again, averaged over moves of up to 3 px, kernel-corrected (`KernelCorrection`)"
    )
    assert row["mae_mHa"]["e_total"] == 1.5
    write("again_kernel_correction_m3_fit1", {"data": "d", "input": "v_ext", "run": "again",
                                              "max_shift": 3, "fit_shift": 1,
                                              "improves_validation": True, "mae_mHa": {
                                                  "corrected": {"test": energies(1.2)}}})  # fmt: skip
    row = summary.main(["--results", str(tmp_path)])["energies"]["d v_ext"]
    assert row["run"].endswith("(`KernelCorrection`, fitted on moves of up to 1 px)")
    # A correction that does not improve its validation split is left out.
    write("again_kernel_correction_m2", {"data": "d", "input": "v_ext", "run": "again",
                                         "max_shift": 2, "improves_validation": False,
                                         "mae_mHa": {"corrected": {"test": energies(1.0)}}})  # fmt: skip
    assert (
        summary.main(["--results", str(tmp_path)])["energies"]["d v_ext"]["mae_mHa"]["e_total"]
        == 1.2
    )
    with pytest.raises(SystemExit):
        summary.main(["--results", str(tmp_path / "empty")])


def test_extra_train_appends_a_supplement_to_the_training_split(script, dataset, tmp_path):
    extra = tmp_path / "extra"
    gen.generate(
        {**CONFIG, "count": 6, "seed": 11, "splits": {"train": 1.0}}, extra, progress=False
    )
    stored = len(gen.load_dataset(extra)["id"])
    main_train = len(script.load_splits(dataset)[0]["train"]["id"])
    base = ["--data", str(dataset), "--out", str(tmp_path), "--epochs", "1", "--minutes", "5",
            "--only", "v_ext", "--name", "more"]  # fmt: skip
    result = script.main([*base, "--extra-train", str(extra)])
    assert result["extra_train_sizes"] == {str(extra): stored}
    assert result["sizes"].startswith(f"{main_train + stored}/")
    assert "includes the `train` samples of" in (tmp_path / "more_train_models.md").read_text()
    rescored = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "more",
                            "--rescore"])  # fmt: skip
    assert rescored["sizes"] == result["sizes"]
    # A supplement of another functional would teach other energies: refused by name.
    other = tmp_path / "other"
    shutil.copytree(extra, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "functional": "gga"}))
    with pytest.raises(SystemExit):
        script.main([*base, "--name", "bad", "--extra-train", str(other)])
    with pytest.raises(ValueError, match="share the main dataset's functional"):
        script.with_extra_training({}, json.loads((dataset / "config.json").read_text()), [other])


def test_loss_weights_count_terms_by_spread_or_alike_in_hartree(script, dataset, tmp_path):
    std = np.array([0.3, 0.7, 1.0, 0.2, 0.02, 1.7])
    np.testing.assert_allclose(script.loss_weights_for(std, "spread") * std, 1.0)
    uniform = script.loss_weights_for(std, "uniform")
    np.testing.assert_allclose(uniform, 1.0 / std.mean())
    with pytest.raises(ValueError, match="must be"):
        script.loss_weights_for(std, "relative")
    result = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "uniform",
                          "--epochs", "1", "--minutes", "5", "--only", "v_ext",
                          "--loss-weights", "uniform"])  # fmt: skip
    assert result["schedule"]["loss_weights"] == "uniform"
    assert "alike in Hartree" in (tmp_path / "uniform_train_models.md").read_text()


def test_coarse_adds_a_branch_with_a_wide_view_of_the_pooled_image(script, dataset, tmp_path):
    result = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "coarse",
                          "--epochs", "1", "--minutes", "5", "--only", "v_ext", "--baseline",
                          "count", "--coarse", "2", "8"])  # fmt: skip
    assert result["schedule"]["coarse"] == [2, 8]
    table = (tmp_path / "coarse_train_models.md").read_text()
    assert "`--coarse 2 8`" in table and "| 16+2x8; pooled 2x: 8+2x8 |" in table
    model = keras.saving.load_model(tmp_path / "coarse_ednn_energies_from_v_ext.keras")
    multiscale = model.model
    assert isinstance(multiscale, MultiScaleEDNN) and multiscale.pools == [1, 2]
    (fine, wide) = multiscale.branches
    assert (wide.focus, wide.context, wide.boundary) == ((8, 8), (8, 8), "zero")
    assert wide.metadata["provenance"]["coarse_view"] == {"pool": 2, "context": 8}
    # The means are the fine branch's shift; the coarse one learns a correction only.
    assert wide.energy_shift_per_tile == 0.0 and fine.energy_shift_per_tile != 0.0
    assert wide.energy_scale == pytest.approx(fine.energy_scale)
    fresh = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "coarse",
                         "--rescore"])  # fmt: skip
    assert fresh["schedule"]["coarse"] == [2, 8]
    assert fresh["energy_mae_mHa"]["v_ext"] == pytest.approx(
        result["energy_mae_mHa"]["v_ext"], rel=1e-4
    )


def test_virial_checks_labels_and_predictions_and_projects_onto_the_relations(
    script, dataset, tmp_path, capsys
):
    script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "vir",
                 "--epochs", "1", "--minutes", "5", "--only", "v_ext"])  # fmt: skip
    spec = importlib.util.spec_from_file_location("virial", SCRIPT.with_name("virial.py"))
    virial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(virial)
    out = virial.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "vir"])
    # The labels obey the relation to the grid's discretisation; dE_c/dγ is no small term.
    assert abs(out["label_residual_mHa"]["mean"]) < 2.0
    assert out["de_c_dgamma_Ha"]["mean"] < -0.05
    assert out["scaling_fit_mae_mHa"] < 2.0
    assert set(out["projected"]) == {"val", "test"}
    assert "Projected onto both relations" in (tmp_path / "vir_virial_v_ext.md").read_text()
    # The projection removes an error that breaks the relations and nothing else: labels
    # with an E_ext error only, errors of equal spread on every term (Ha).
    splits = script.load_splits(dataset)[0]
    labels = script.energies(splits["train"]).astype(float)
    counts = splits["train"]["n_electrons"]
    de_c = np.full(len(counts), -0.15)
    fit = virial.ScalingFit(labels[:, 4], counts, de_c)
    truth = labels.copy()
    truth[:, 0] = (truth[:, 1] * 2 - truth[:, 2] - truth[:, 3] + 0.15) / 2  # obeys the virial
    truth[:, 5] = truth[:, :5].sum(axis=1)  # and the sum rule
    wrong = truth.copy()
    wrong[:, 1] += 0.003
    moved = virial.project(wrong, counts, fit, np.eye(6) * 1e-6, noise=1e-6)
    assert np.abs(moved - truth).max() < 0.5 * 0.003
    np.testing.assert_allclose(
        virial.project(truth, counts, fit, np.eye(6), 1e-6), truth, atol=1e-9
    )
    with pytest.raises(SystemExit):
        virial.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "nope"])
    # Spin-polarised sets (config 'magnetization') are refused: their correlation differs.
    polarised = tmp_path / "polarised"
    shutil.copytree(dataset, polarised)
    config = json.loads((polarised / "config.json").read_text())
    (polarised / "config.json").write_text(json.dumps({**config, "magnetization": 0}))
    with pytest.raises(SystemExit):
        virial.main(["--data", str(polarised), "--out", str(tmp_path), "--name", "vir"])
    assert "needs a spin-unpolarised SHO dataset" in capsys.readouterr().err


def test_placement_averaged_models_train_save_and_score(script, dataset, tmp_path):
    arguments = ["--data", str(dataset), "--out", str(tmp_path), "--name", "placed",
                 "--epochs", "1", "--minutes", "5", "--baseline", "count", "--only", "v_ext",
                 "--padding", "valid", "--placement-step", "8"]  # fmt: skip
    result = script.main(arguments)
    assert result["schedule"]["placement_step"] == 8
    assert result["schedule"]["padding"] == "valid"
    assert result["tiles"]["v_ext"] == "16+2x8, placements every 8"
    model = keras.saving.load_model(tmp_path / "placed_ednn_energies_from_v_ext.keras")
    ednn_model = model.model
    assert ednn_model.placement_step == (8, 8) and ednn_model.fused_network is not None
    text = (tmp_path / "placed_train_models.md").read_text()
    assert "shifted by multiples of 8 pixels (`--placement-step`" in text
    assert "valid ones (`--padding valid`" in text
    # --rescore trains nothing and scores the saved model alike.
    rescored = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "placed",
                            "--rescore"])  # fmt: skip
    assert rescored["energy_mae_mHa"]["v_ext"] == pytest.approx(result["energy_mae_mHa"]["v_ext"])
    assert rescored["schedule"]["placement_step"] == 8


def test_translation_check_measures_position_noise_and_rolled_averages(script, dataset, tmp_path):
    script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "moved",
                 "--epochs", "1", "--minutes", "5", "--baseline", "count", "--only", "v_ext",
                 "--roll", "2", "--average-rolls", "8"])  # fmt: skip
    spec = importlib.util.spec_from_file_location(
        "translation_check", SCRIPT.with_name("translation_check.py")
    )
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    rows = check.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "moved"])
    row = rows["moved"]
    model = keras.saving.load_model(tmp_path / "moved_ednn_energies_from_v_ext.keras")
    splits = script.load_splits(dataset)[0]
    pooled = {k: np.concatenate([splits[s][k] for s in ("val", "test")]) for k in splits["test"]}
    x = script.image(pooled, "v_ext", script.V_SCALE)
    truth = script.energies(pooled).astype(np.float64)
    # the network as trained (no averaging), then averaged over 4 and 16 rolls
    plain = 1000 * np.abs(model.model.predict(x, verbose=0) - truth).mean(0)
    np.testing.assert_allclose(row["rolled"]["as_given"], plain, rtol=1e-3)
    np.testing.assert_allclose(row["moved_wells"]["mae_unmoved_mHa"], plain, rtol=1e-3)
    four = 1000 * np.abs(model.predict(x, verbose=0) - truth).mean(0)
    np.testing.assert_allclose(row["rolled"]["stride_8"], four, rtol=1e-3)
    assert 0 < row["moved_wells"]["mean_moves_per_sample"] <= 8
    assert min(row["moved_wells"]["position_noise_mHa"]) > 0  # the tiles see the move
    table = (tmp_path / "moved_translation.md").read_text()
    assert "| moved | rolled images, stride 4 (16 rolls) |" in table
    with pytest.raises(SystemExit):
        check.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "nope"])


def test_move_wells_draws_each_sho_well_anew_moved_by_whole_pixels(script, dataset, tmp_path):
    (splits, config, _) = script.load_splits(dataset)
    train = splits["train"]
    wells = script.well_moves(train, config, 3)
    assert wells.limits.shape == (len(train["id"]), 2, 2)
    assert (wells.limits[..., 0] <= 0).all() and (wells.limits[..., 1] >= 0).all()
    x = script.image(train, "v_ext", script.V_SCALE)
    energies = script.energies(train)
    apply = script._moved_wells(0, wells.x, wells.scale)
    for i in range(3):
        well = (wells.omega[i], wells.centre[i])
        # No move: the stored potential image (and count channel) again.
        (same, e) = apply(x[i], energies[i], (*well, np.zeros((2, 2), np.int32)))
        np.testing.assert_allclose(np.asarray(same), x[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(e), energies[i])
        # A move by (1, -2) pixels: the well moved, not wrapped round (inside, a roll).
        (moved, _) = apply(x[i], energies[i], (*well, np.array([[1, 1], [-2, -2]], np.int32)))
        rolled = np.roll(x[i], (1, -2), axis=(0, 1))
        np.testing.assert_allclose(np.asarray(moved)[4:-4, 4:-4], rolled[4:-4, 4:-4], rtol=1e-5)
        assert np.abs(np.asarray(moved)[:, -2:, 0] - rolled[:, -2:, 0]).max() > 1.0
        # A density target (--density-gradient) moves with the well.
        density = train["density"][i][..., None]
        (_, (e, n)) = apply(
            x[i], (energies[i], density), (*well, np.array([[1, 1], [-2, -2]], np.int32))
        )
        np.testing.assert_array_equal(np.asarray(n), np.roll(density, (1, -2), axis=(0, 1)))
        np.testing.assert_array_equal(np.asarray(e), energies[i])
    result = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "moved",
                          "--epochs", "1", "--minutes", "5", "--baseline", "count",
                          "--only", "v_ext", "--move-wells", "2"])  # fmt: skip
    assert result["schedule"]["move_wells"] == 2
    text = (tmp_path / "moved_train_models.md").read_text()
    assert "moved by up to 2 whole pixels along each axis" in text
    blobs = {**train, "params": np.array(['{"kind": "blobs"}'] * len(train["id"]))}
    with pytest.raises(ValueError, match="every training sample must have a SHO potential"):
        script.well_moves(blobs, config, 2)


def test_sho_oracle_fits_the_labels_on_the_two_frequencies(dataset, tmp_path):
    spec = importlib.util.spec_from_file_location("sho_oracle", SCRIPT.with_name("sho_oracle.py"))
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    result = oracle.main(["--data", str(dataset), "--out", str(tmp_path)])
    (splits, _, _) = oracle.tm.load_splits(dataset)
    test = splits["test"]
    assert set(result) == {str(n) for n in np.unique(test["n_electrons"])}
    for n, row in result.items():
        # Far better than each term's spread about its mean over the test samples of this N.
        chosen = test["n_electrons"] == int(n)
        truth = oracle.tm.energies({k: v[chosen] for k, v in test.items()}).astype(float)
        spread = 1000 * np.abs(truth - truth.mean(0)).mean(0)
        mae = np.array([row["test_mae_mHa"][t] for t in oracle.tm.TARGETS])
        assert (mae < spread).all() or len(truth) == 1
        assert row["train_samples"] + row["test_samples"] <= len(splits["train"]["id"]) + len(
            test["id"]
        )
    assert "| N | T_s |" in (tmp_path / "data_sho_oracle.md").read_text()
    blobs = {**test, "params": np.array(['{"kind": "blobs"}'] * len(test["id"]))}
    with pytest.raises(ValueError, match="needs SHO potentials"):
        oracle.frequencies(blobs)


def test_placement_speed_times_every_variant_against_the_fused_model(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "placement_speed", SCRIPT.with_name("placement_speed.py")
    )
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    out = tmp_path / "speed.json"
    result = speed.main(["--repeats", "1", "--steps", "1", "--output", str(out)])
    assert set(result["rows"]) == set(speed.VARIANTS)
    assert result["rows"]["valid, fused"]["ratio"] == 1.0
    assert all(row["ms_per_step"] > 0 for row in result["rows"].values())
    assert json.loads(out.read_text()) == result


def test_shift_average_scores_a_model_as_saved_and_averaged_over_moves(script, dataset, tmp_path):
    trained = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run",
                           "--epochs", "1", "--minutes", "5", "--only", "v_ext"])  # fmt: skip
    spec = importlib.util.spec_from_file_location("shift", SCRIPT.with_name("shift_average.py"))
    shift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shift)
    result = shift.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "run",
                         "--max-shift", "1"])["run"]  # fmt: skip
    rows = result["mae_mHa"]
    assert rows["as saved"]["test"] == pytest.approx(trained["energy_mae_mHa"]["v_ext"], rel=1e-4)
    # The average is a different model (the moves change the images it sees).
    assert rows["shift-averaged"]["test"] != rows["as saved"]["test"]
    (rows_range, cols_range) = result["centre_range_px"]
    assert rows_range[0] <= rows_range[1] and cols_range[0] <= cols_range[1]
    assert "| shift-averaged | test |" in (tmp_path / "run_shift_average_m1.md").read_text()
    with pytest.raises(SystemExit):
        shift.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "other"])
    with pytest.raises(SystemExit):
        shift.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "run",
                    "--max-shift", "0"])  # fmt: skip


def test_kernel_correction_fits_on_train_chooses_on_val_and_saves_the_model(
    script, dataset, tmp_path
):
    trained = script.main(["--data", str(dataset), "--out", str(tmp_path), "--name", "run",
                           "--epochs", "1", "--minutes", "5", "--only", "v_ext"])  # fmt: skip
    spec = importlib.util.spec_from_file_location(
        "correction", SCRIPT.with_name("kernel_correction.py")
    )
    correction = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(correction)
    base = ["--data", str(dataset), "--out", str(tmp_path), "--names", "run"]
    result = correction.main([*base, "--max-shift", "0", "--length-scales", "0.5", "1",
                              "--ridges", "1e-3", "1"])["run"]  # fmt: skip
    rows = result["mae_mHa"]
    assert rows["model"]["test"] == pytest.approx(trained["energy_mae_mHa"]["v_ext"], rel=1e-4)
    # Chosen on the validation split: the lowest validation E_total of the grid.
    assert len(result["grid"]) == 4
    best = min(row["val_mae_mHa"]["e_total"] for row in result["grid"])
    assert rows["corrected"]["val"]["e_total"] == pytest.approx(best)
    # The saved model computes the correction from the images alone.
    assert result["check_max_deviation_Ha"] < 1e-5
    assert result["improves_validation"] == (
        rows["corrected"]["val"]["e_total"] < rows["model"]["val"]["e_total"]
    )
    model = keras.saving.load_model(tmp_path / "run_kernel_corrected_m0.keras")
    assert type(model).__name__ == "KernelCorrection" and model.count_scale == 8.0
    assert "| corrected | test |" in (tmp_path / "run_kernel_correction_m0.md").read_text()
    # The predictions are cached: a second run reads them.
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [
        "run_v_ext_m0_test.npz", "run_v_ext_m0_train.npz", "run_v_ext_m0_val.npz"
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        correction.main([*base, "--input", "density"])  # moves need the potential
    with pytest.raises(SystemExit):
        correction.main(["--data", str(dataset), "--out", str(tmp_path), "--names", "other"])
