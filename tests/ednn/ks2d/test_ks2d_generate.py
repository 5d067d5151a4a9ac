import itertools
import json

import numpy as np
import pytest

from ednn.ks2d import generate as gen
from ednn.ks2d.scf import SCFNotConverged

CONFIG = {
    "functional": "lda",
    "potential": "sho",
    "potential_options": {"omega": [0.8, 1.2], "centre": [-0.5, 0.5]},
    "n_electrons": [2],
    "grid": {"n": 32, "box": 12.0},
    "count": 5,
    "shard_size": 2,
    "seed": 3,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ks2d") / "data"
    manifest = gen.generate(CONFIG, out, progress=False)
    return out, manifest


def test_dataset_has_shards_splits_and_manifest(dataset):
    out, manifest = dataset
    assert manifest["stored"] == 5 and manifest["failed"] == 0
    assert sorted(p.name for p in out.glob("shard_*.npz")) == [
        "shard_00000.npz",
        "shard_00001.npz",
        "shard_00002.npz",
    ]
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(itertools.chain(*splits.values())) == [0, 1, 2, 3, 4]
    assert not list((out / "pending").iterdir()) and not list(out.glob("*.tmp"))


def test_loaded_samples_are_converged_and_normalised(dataset):
    out, _ = dataset
    data = gen.load_dataset(out)
    assert data["id"].tolist() == [0, 1, 2, 3, 4]
    assert data["density"].dtype == np.float32 and data["density"].shape == (5, 32, 32)
    h2 = (12.0 / 32) ** 2
    assert np.allclose(data["density"].sum(axis=(1, 2)) * h2, 2.0, atol=1e-5)
    assert np.all(data["density_residual"] < 1e-5)
    params = json.loads(str(data["params"][0]))
    assert params["kind"] == "sho" and 0.8 <= params["omega"][0] <= 1.2


def test_a_sample_is_a_function_of_seed_and_id_only(dataset):
    out, _ = dataset
    data = gen.load_dataset(out)
    again = gen.solve_sample(gen.load_config(CONFIG), 3)
    assert again["e_total"] == pytest.approx(data["e_total"][3], abs=1e-9)


def test_rerun_recomputes_nothing(dataset, monkeypatch):
    out, _ = dataset

    def forbidden(config, sample_id):
        raise AssertionError(f"sample {sample_id} was recomputed")

    monkeypatch.setattr(gen, "solve_sample", forbidden)
    assert gen.generate(CONFIG, out, progress=False)["stored"] == 5


def test_failures_are_logged_skipped_and_not_retried(tmp_path, monkeypatch):
    real = gen.solve_sample

    def flaky(config, sample_id):
        if sample_id == 1:
            raise SCFNotConverged("expected convergence. Received: none", [])
        return real(config, sample_id)

    monkeypatch.setattr(gen, "solve_sample", flaky)
    config = {**CONFIG, "count": 3}
    manifest = gen.generate(config, tmp_path, progress=False)
    assert manifest["stored"] == 2 and manifest["failed"] == 1
    failure = json.loads((tmp_path / "failures.jsonl").read_text().splitlines()[0])
    assert failure["id"] == 1 and failure["error"] == "SCFNotConverged"
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert 1 not in itertools.chain(*splits.values())
    monkeypatch.setattr(gen, "solve_sample", lambda c, i: pytest.fail("recomputed"))
    assert gen.generate(config, tmp_path, progress=False)["failed"] == 1


def test_interrupted_run_resumes_from_pending_samples(tmp_path, monkeypatch):
    real = gen.solve_sample
    calls = []

    def interrupted(config, sample_id):
        if sample_id == 3:
            raise KeyboardInterrupt
        calls.append(sample_id)
        return real(config, sample_id)

    monkeypatch.setattr(gen, "solve_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(CONFIG, tmp_path, progress=False)
    assert (tmp_path / "shard_00000.npz").exists()
    assert [p.name for p in (tmp_path / "pending").iterdir()] == ["00000002.npz"]
    monkeypatch.setattr(gen, "solve_sample", real)
    assert gen.generate(CONFIG, tmp_path, progress=False)["stored"] == 5
    assert calls == [0, 1, 2]


def test_a_different_config_in_the_same_directory_is_refused(dataset):
    out, _ = dataset
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        gen.generate({**CONFIG, "seed": 4}, out, progress=False)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="functionnal"):
        gen.load_config({"functionnal": "lda"})


def test_splits_are_stable_and_cover_all_ids():
    splits = gen.split_ids(100, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert [len(v) for v in splits.values()] == [80, 10, 10]
    assert splits == gen.split_ids(100, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)


def test_command_line_runs_in_process(tmp_path, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps({**CONFIG, "count": 1}))  # JSON is valid YAML
    assert gen.main([str(config_path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["stored"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("grid: [", "not valid YAML"),
        ("- a list", "mapping"),
        ("functionnal: lda", "functionnal"),
    ],
)
def test_command_line_config_errors_are_one_line(tmp_path, capsys, content, message):
    config_path = tmp_path / "config.yaml"
    if content is not None:
        config_path.write_text(content)
    assert gen.main([str(config_path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ednn ks2d-generate: error:") and message in err
    assert "Traceback" not in err


def test_polarized_samples_store_spin_densities_per_channel(tmp_path):
    config = {**CONFIG, "n_electrons": [2, 3], "count": 4, "magnetization": "lowest"}
    manifest = gen.generate(config, tmp_path, progress=False)
    assert manifest["stored"] == 4
    data = gen.load_dataset(tmp_path)
    n = data["n_electrons"]
    assert sorted(set(n.tolist())) == [2, 3]  # a doublet and a closed shell
    assert np.array_equal(data["n_up"] - data["n_down"], n % 2)
    assert np.array_equal(data["n_up"] + data["n_down"], n)
    spins = data["spin_densities"]
    assert spins.shape == (4, 2, 32, 32) and data["eigenvalues"].shape[:2] == (4, 2)
    h2 = (12.0 / 32) ** 2
    assert np.allclose(spins.sum(axis=1), data["density"], atol=1e-6)
    per_channel = spins.sum(axis=(2, 3)) * h2
    assert np.allclose(per_channel, np.stack([data["n_up"], data["n_down"]], axis=1), atol=1e-5)
    occupied = np.nansum(data["occupations"], axis=2)
    assert np.allclose(occupied, per_channel, atol=1e-6)


def test_closed_shell_polarized_run_reproduces_the_unpolarised_samples(dataset, tmp_path):
    out, _ = dataset
    unpolarised = gen.load_dataset(out)
    config = {**CONFIG, "count": 2, "magnetization": 0}
    gen.generate(config, tmp_path, progress=False)
    polarised = gen.load_dataset(tmp_path)
    assert polarised["n_up"].tolist() == polarised["n_down"].tolist() == [1, 1]
    assert np.allclose(polarised["e_total"], unpolarised["e_total"][:2], atol=1e-6)
    assert np.allclose(polarised["density"], unpolarised["density"][:2], atol=1e-4)


@pytest.mark.parametrize(
    ("value", "message"),
    [(1, "n_electrons=2"), ([3], "n_electrons=2"), ("highest", "'highest'"), (-2, "-2")],
)
def test_impossible_magnetization_is_named(value, message):
    with pytest.raises(ValueError, match=message):
        gen.load_config({**CONFIG, "magnetization": value})


def test_magnetization_draws_among_admissible_values():
    rng = np.random.default_rng(0)
    config = {"magnetization": [0, 1, 2]}
    drawn = {gen.spin_counts(config, 4, rng) for _ in range(40)}
    assert drawn == {(2, 2), (3, 1)}
    assert gen.spin_counts(config, 3, rng) == (2, 1)
