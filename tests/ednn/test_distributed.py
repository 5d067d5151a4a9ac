"""ednn.distributed: the single-process backend, and Horovod runs of 2 processes vs 1.

The Horovod tests launch ``horovodrun --gloo -np 2 -H localhost:2`` on small worker scripts
written into ``tmp_path`` and compare what the ranks wrote with a single-process run.  They
are marked ``horovod`` and skipped where horovod is not installed
(``bash scripts/install_horovod.sh`` builds it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ednn import distributed


def _horovodrun() -> str | None:
    beside = Path(sys.executable).with_name("horovodrun")
    return str(beside) if beside.exists() else shutil.which("horovodrun")


def _horovod_missing() -> str | None:
    if importlib.util.find_spec("horovod") is None:
        return "horovod is not installed (build it with `bash scripts/install_horovod.sh`)"
    if _horovodrun() is None:
        return "horovod is installed but its `horovodrun` launcher is not on PATH"
    return None


_MISSING = _horovod_missing()
requires_horovod = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

# Quiet, deterministic, one thread per process: two ranks share the machine's cores.
_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_DETERMINISTIC_OPS": "1",
    "OMP_NUM_THREADS": "1",
    "HOROVOD_GLOO_TIMEOUT_SECONDS": "120",
    "PYTHONHASHSEED": "0",
}

# Put first in every worker script: one intra-op thread, before TensorFlow runs anything.
_PRELUDE = """
import json, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
"""


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "PMI_"))}
    return {**env, **_ENV}


def _write_script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(_PRELUDE + textwrap.dedent(body), encoding="utf-8")
    return path


def _run(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited with {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-6000:]}"
        )
    return done


def _horovod(script: Path, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [_horovodrun(), "--gloo", "-np", str(processes), "-H", f"localhost:{processes}"]
    return _run([*command, sys.executable, str(script), *args], cwd=script.parent)


def _python(script: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, str(script), *args], cwd=script.parent)


# --- without horovod ---------------------------------------------------------------------


@pytest.fixture
def no_horovod(monkeypatch):
    """Block `import horovod` (as if it were not installed) and forget the cached backend."""
    for name in [m for m in sys.modules if m == "horovod" or m.startswith("horovod.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "horovod", None)
    monkeypatch.setattr(distributed, "_BACKEND", None)
    for name in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_auto_backend_without_horovod_is_a_single_process(no_horovod):
    backend = distributed.get_backend()
    assert type(backend) is distributed.SingleProcess
    assert (backend.rank, backend.size, backend.is_chief) == (0, 1, True)
    assert distributed.get_backend() is backend


def test_single_process_collectives_are_identities(no_horovod):
    import keras
    import tensorflow as tf

    backend = distributed.get_backend("single")
    gradients = [tf.constant([1.0, 2.0]), None]
    averaged = backend.allreduce_mean(gradients)
    assert averaged[1] is None
    np.testing.assert_array_equal(averaged[0], [1.0, 2.0])
    np.testing.assert_array_equal(backend.allreduce_sum(np.array([3.0, 4.0])), [3.0, 4.0])
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    before = [v.numpy().copy() for v in layer.variables]
    backend.broadcast_variables(layer.variables)
    backend.barrier()
    for old, new in zip(before, layer.variables, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_asking_for_horovod_without_it_names_the_installer(no_horovod):
    with pytest.raises(ImportError, match=r"install_horovod\.sh"):
        distributed.get_backend("horovod")


def test_auto_backend_refuses_a_multi_process_launch_without_horovod(no_horovod, monkeypatch):
    # Otherwise each of the launched processes would train alone into the same run directory.
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ImportError, match="2 processes were launched"):
        distributed.get_backend()


def test_unknown_backend_kind_is_a_value_error():
    with pytest.raises(ValueError, match="Received: kind='mpi'"):
        distributed.get_backend("mpi")


# --- Horovod: low-level collectives on Keras 3 variables ---------------------------------

_COLLECTIVES = """
import keras
from ednn.distributed import get_backend

out = sys.argv[1]
backend = get_backend()
rank = backend.rank
keras.utils.set_random_seed(100 + rank)  # different initial weights on each rank
layer = keras.layers.Dense(3)
layer.build((None, 4))
optimizer = keras.optimizers.Adam()
optimizer.build(layer.trainable_variables)
optimizer.iterations.assign(10 * (rank + 1))
plain = tf.Variable(tf.fill([2], float(rank + 1)))
backend.broadcast_variables([*layer.variables, *optimizer.variables, plain])

@tf.function
def step(x):
    return backend.allreduce_mean([x * (rank + 1), None, tf.constant(float(rank))])

mean, unused, rank_mean = step(tf.ones([2, 2]))
summed_numpy = backend.allreduce_sum(np.array([1.0, rank], np.float64))
summed_tensor = backend.allreduce_sum(tf.constant(rank + 1, tf.int32))
# Weights are equal on every rank exactly when they equal their average.
weights = [v.numpy() for v in layer.variables]
averages = backend.allreduce_mean([tf.constant(w) for w in weights])
# Each barrier waits for the other rank: rank 0 sees the mark rank 1 made before it.
import os, time
marks_seen = []
for i in range(3):
    if rank == 1:
        time.sleep(0.5)
        open(f"{out}/mark{i}", "w").close()
    backend.barrier()
    marks_seen.append(os.path.exists(f"{out}/mark{i}"))
json.dump({
    "backend": backend.name, "rank": rank, "size": backend.size, "chief": backend.is_chief,
    "weights_equal_average": all(np.array_equal(w, a.numpy()) for w, a in zip(weights, averages)),
    "kernel": weights[0].tolist(),
    "iterations": int(optimizer.iterations.numpy()),
    "plain": plain.numpy().tolist(),
    "mean": mean.numpy().tolist(), "unused": unused is None, "rank_mean": float(rank_mean),
    "summed_numpy": summed_numpy.tolist(), "summed_numpy_type": type(summed_numpy).__name__,
    "summed_tensor": int(summed_tensor), "summed_tensor_is_tensor": tf.is_tensor(summed_tensor),
    "marks_seen": marks_seen,
}, open(f"{out}/rank{rank}.json", "w"))
"""


@pytest.mark.horovod
@requires_horovod
def test_horovod_collectives_on_keras_variables(tmp_path):
    script = _write_script(tmp_path, "collectives.py", _COLLECTIVES)
    _horovod(script, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["backend"], r["rank"], r["size"], r["chief"]) for r in ranks] == [
        ("horovod", 0, 2, True),
        ("horovod", 1, 2, False),
    ]
    for result in ranks:
        assert result["weights_equal_average"]
        assert result["kernel"] == ranks[0]["kernel"]
        assert result["iterations"] == 10  # rank 0's optimizer state, int64
        assert result["plain"] == [1.0, 1.0]  # a plain tf.Variable too
        np.testing.assert_allclose(result["mean"], np.full((2, 2), 1.5))
        assert result["unused"]
        assert result["rank_mean"] == 0.5
        assert result["summed_numpy"] == [2.0, 1.0]
        assert result["summed_numpy_type"] == "ndarray"
        assert result["summed_tensor"] == 3 and result["summed_tensor_is_tensor"]
        assert result["marks_seen"] == [True, True, True]


@pytest.mark.horovod
@requires_horovod
def test_horovod_backend_is_single_process_without_a_launcher(tmp_path):
    """A plain `python` run with horovod installed is one process of size 1."""
    script = _write_script(
        tmp_path,
        "plain.py",
        """
        from ednn.distributed import get_backend
        backend = get_backend()
        print(json.dumps([backend.name, backend.rank, backend.size]))
        """,
    )
    assert json.loads(_python(script).stdout.strip().splitlines()[-1]) == ["horovod", 0, 1]


# --- Horovod: training and evaluation, 2 processes vs 1 ----------------------------------

_DATA = """
import ase.io
from ednn.structures import build_sheet

rng = np.random.default_rng(3)
frames = []
for i in range(12):
    material = ["graphene", "hbn", "hetero"][i % 3]
    atoms, _ = build_sheet(rng, material, 4, 3, defect="vacancy" if i % 4 == 0 else "none")
    symbols = atoms.get_chemical_symbols()
    atoms.info["energy"] = (
        -9.2 * symbols.count("C") - 7.0 * symbols.count("B") - 8.1 * symbols.count("N")
        + 0.5 * rng.normal()
    )
    frames.append(atoms)
ase.io.write(sys.argv[1], frames)
"""

# 9 training structures in global batches of 4 (4 + 4 + 1: on 2 ranks the last share of
# rank 1 is empty and masked), no shuffling or augmentation, a tiny network.
_TRAIN = """
from ednn.train import train

data, run_dir, backend = sys.argv[1:4]
config = {
    "data": {
        "path": data,
        "species": ["C", "B", "N"],
        "spacing_tolerance": None,
        "splits": {"source": "random", "validation": 0.25, "test": 0.0, "seed": 0},
    },
    "model": {
        "focus": 8,
        "context": 8,
        "architecture": {"conv_layers": [[4, 3, 2, 1]], "dense_units": [8]},
    },
    "training": {
        "epochs": 3, "batch_size": 4, "seed": 0, "shuffle": False, "augment": False,
        "workers": 1, "eval_batch_size": 4, "backend": backend,
        "optimizer": {"learning_rate": 0.01}, "schedule": {"name": "constant"},
        "early_stopping": {"patience": 0},
    },
    "output": {"log_images": False, "log_histograms": False},
}
summary = train(config, run_dir, progress=False)
from ednn.distributed import get_backend
b = get_backend()
json.dump({"rank": b.rank, "size": b.size, "history": summary["history"]},
          open(f"{run_dir}.rank{b.rank}.json", "w"))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The same training run with 1 process and with 2 Horovod processes."""
    if _MISSING:
        pytest.skip(_MISSING)
    work = tmp_path_factory.mktemp("distributed_training")
    _python(_write_script(work, "data.py", _DATA), "sheets.extxyz")
    script = _write_script(work, "train.py", _TRAIN)
    _python(script, "sheets.extxyz", "single", "single")
    _horovod(script, "sheets.extxyz", "horovod", "horovod")
    return work


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


@pytest.mark.horovod
@requires_horovod
def test_two_process_training_equals_one_process_with_the_same_global_batch(trained):
    single = json.loads((trained / "single.rank0.json").read_text())
    ranks = [json.loads((trained / f"horovod.rank{r}.json").read_text()) for r in range(2)]
    assert single["size"] == 1 and [r["size"] for r in ranks] == [2, 2]
    assert len(single["history"]) == len(ranks[0]["history"]) == 3
    for rank in ranks:  # every rank saw the same (all-reduced) metrics
        for one, two in zip(single["history"], rank["history"], strict=True):
            for split in ("train", "validation"):
                for key in ("loss", "mae", "rmse"):
                    assert two[split][key] == pytest.approx(one[split][key], rel=1e-5), (
                        f"epoch {one['epoch']} {split} {key}"
                    )
    expected = _weights(trained / "single" / "model.keras")
    received = _weights(trained / "horovod" / "model.keras")
    assert len(expected) == len(received)
    for a, b in zip(expected, received, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # Training did something: the comparison is not between two untouched models.
    losses = [epoch["train"]["loss"] for epoch in single["history"]]
    assert losses[0] != losses[-1]
    assert json.loads((trained / "horovod" / "metrics.json").read_text())["epochs_run"] == 3


_PREDICT_WITHOUT_HOROVOD = """
sys.modules["horovod"] = None  # as on a machine without horovod
import ase.io
import ednn
import keras
from ednn.distributed import SingleProcess, get_backend
from ednn.predict import Predictor

model = keras.saving.load_model(sys.argv[1], compile=False)
predictor = Predictor(model)
energies = [predictor.predict(atoms).energy for atoms in ase.io.read(sys.argv[2], ":")]
print(json.dumps({
    "energies": energies,
    "single": type(get_backend()) is SingleProcess,
    "horovod_modules": sorted(m for m in sys.modules if m.startswith("horovod.")),
}))
"""


@pytest.mark.horovod
@requires_horovod
def test_model_trained_under_horovod_predicts_where_horovod_is_not_importable(trained):
    import ase.io
    import keras

    from ednn.predict import Predictor

    path = trained / "horovod" / "model.keras"
    script = _write_script(trained, "predict.py", _PREDICT_WITHOUT_HOROVOD)
    result = json.loads(_python(script, str(path), "sheets.extxyz").stdout.strip().splitlines()[-1])
    assert result["single"] and result["horovod_modules"] == []
    predictor = Predictor(keras.saving.load_model(path, compile=False))
    frames = ase.io.read(trained / "sheets.extxyz", ":")
    expected = [predictor.predict(atoms).energy for atoms in frames]
    np.testing.assert_allclose(result["energies"], expected, rtol=1e-6)
    # Reference energies travel with the model: predictions are near the labels (eV).
    labels = [a.get_potential_energy() for a in frames]
    np.testing.assert_allclose(result["energies"], labels, atol=3.0)


_SHEET = """
import keras
from ednn.distributed import get_backend
from ednn.stream import evaluate_sheet
from ednn.structures import build_sheet

model_path, out = sys.argv[1:3]
backend = get_backend()
model = keras.saving.load_model(model_path, compile=False)
atoms, _ = build_sheet(np.random.default_rng(5), "hetero", 20, 12, pattern="dot")
result = evaluate_sheet(model, atoms, band_rows=2, backend=backend, return_map=True)
np.savez(f"{out}.rank{backend.rank}.npz", energy=result.energy_eV, values=result.values,
         map=result.per_region_map, n_bands=result.timings["n_bands"], size=backend.size)
"""


@pytest.mark.horovod
@requires_horovod
def test_two_process_sheet_evaluation_equals_one_process(trained):
    script = _write_script(trained, "sheet.py", _SHEET)
    model = str(trained / "horovod" / "model.keras")
    _python(script, model, "sheet_single")
    _horovod(script, model, "sheet_horovod")
    one = np.load(trained / "sheet_single.rank0.npz")
    assert int(one["size"]) == 1 and int(one["n_bands"]) > 2  # several bands to share
    for rank in range(2):
        two = np.load(trained / f"sheet_horovod.rank{rank}.npz")
        assert int(two["size"]) == 2
        assert float(two["energy"]) == pytest.approx(float(one["energy"]), rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(two["values"], one["values"], rtol=1e-12)
        np.testing.assert_array_equal(two["map"], one["map"])


@pytest.mark.horovod
@requires_horovod
def test_ednn_energy_under_horovodrun_equals_one_process(tmp_path):
    from ase.io import write

    from ednn.structures import build_sheet

    cell, _ = build_sheet(np.random.default_rng(5), "hetero", 7, 6, pattern="dot")
    path = tmp_path / "cell.extxyz"
    write(path, cell)
    ednn = str(Path(sys.executable).with_name("ednn"))
    args = [ednn, "energy", str(path), "--repeat", "6", "6", "--json"]
    single = _run(args, cwd=tmp_path)
    launcher = [_horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2"]
    double = _run([*launcher, *args], cwd=tmp_path)
    one = json.loads(single.stdout.strip().splitlines()[-1])
    # horovodrun prefixes each line with "[rank,0]<stdout>:" where it tags output.
    lines = [line for line in double.stdout.splitlines() if '"energy_eV"' in line]
    records = [json.loads(line[line.index("{") :]) for line in lines]
    assert len(records) == 1  # only rank 0 reports
    assert records[0]["n_atoms"] == 36 * len(cell)
    assert records[0]["energy_eV"] == pytest.approx(one["energy_eV"], rel=1e-9)
