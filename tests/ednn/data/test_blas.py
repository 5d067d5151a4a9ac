"""ednn.data.blas: tblite's BLAS/LAPACK calls go to OpenBLAS, with unchanged energies."""

import ctypes
import json
import os
import subprocess
import sys
import warnings

import pytest

from ednn.data import blas

LABEL = """
import json
from ase.build import graphene
from ednn.data.engines import TBLiteEngine
from ednn.data import blas
engine = TBLiteEngine()
atoms = graphene(a=2.46, vacuum=8.0) * (2, 2, 1)
atoms.pbc = True
print(json.dumps({"energy": engine.energy(atoms), "openblas": blas._LOADED.get("path")}))
"""


def _label(tmp_path, openblas: str | None) -> tuple[dict, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LD_DEBUG": "bindings"}
    env["LD_DEBUG_OUTPUT"] = str(tmp_path / "ld")
    env.pop(blas.ENV, None)
    if openblas is not None:
        env[blas.ENV] = openblas
    run = subprocess.run(
        [sys.executable, "-c", LABEL], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    bindings = "".join(p.read_text(errors="replace") for p in tmp_path.glob("ld.*"))
    for p in tmp_path.glob("ld.*"):
        p.unlink()
    # "binding file <caller> [0] to <provider> [0]: normal symbol `dsygst_'": tblite's call
    targets = [
        line.split(" to ", 1)[1]
        for line in bindings.splitlines()
        if "`dsygst_'" in line and "_libtblite" in line.split(" to ", 1)[0]
    ]
    return json.loads(run.stdout.strip().splitlines()[-1]), "\n".join(targets)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol binding")
def test_tblite_lapack_binds_to_openblas_and_energies_agree(tmp_path):
    pytest.importorskip("tblite")
    found = [p for p in blas.openblas_candidates() if p.exists()]
    if not found:
        pytest.skip("no cmeel-openblas installed")
    try:
        ctypes.CDLL(str(found[0]))
    except OSError as err:  # e.g. no libgfortran.so.5 on this machine: ednn warns and goes on
        pytest.skip(f"OpenBLAS is installed but cannot load here: {err}")
    fast, fast_bindings = _label(tmp_path, None)
    slow, slow_bindings = _label(tmp_path, "off")
    assert fast["openblas"] and slow["openblas"] is None
    assert fast_bindings and "libopenblas" in fast_bindings and "tblite.libs" not in fast_bindings
    assert "tblite.libs/liblapack" in slow_bindings and "libopenblas" not in slow_bindings
    assert fast["energy"] == pytest.approx(slow["energy"], abs=1e-6)  # eV, 32 atoms


def test_missing_library_warns_and_keeps_reference_blas(monkeypatch, tmp_path):
    monkeypatch.setattr(blas, "_LOADED", {})
    monkeypatch.delitem(sys.modules, "tblite.library", raising=False)
    monkeypatch.setenv(blas.ENV, str(tmp_path / "libopenblas.so.0"))
    with pytest.warns(UserWarning, match="does not exist"):
        assert blas.load_openblas() is None


def test_off_disables_the_swap_silently(monkeypatch):
    monkeypatch.setattr(blas, "_LOADED", {})
    monkeypatch.delitem(sys.modules, "tblite.library", raising=False)
    monkeypatch.setenv(blas.ENV, "off")
    assert blas.openblas_candidates() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert blas.load_openblas() is None
