"""`ednn --help`, `ednn rasterize`, `ednn tiles` and `ednn info`, called in process."""

import json

import numpy as np
import pytest
from ase.io import read, write

from ednn import cli
from ednn.structures import build_sheet


@pytest.fixture(scope="module")
def sheet(tmp_path_factory):
    atoms, _ = build_sheet(np.random.default_rng(0), "hetero", 5, 3, pattern="stripes")
    path = tmp_path_factory.mktemp("cli") / "sheet.extxyz"
    write(path, atoms)
    return path, len(atoms)


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("energy", "rasterize", "tiles", "info", "generate", "train", "ks2d-generate"):
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["rasterise"]) == 2
    assert "unknown command 'rasterise'" in capsys.readouterr().err


def test_rasterize_writes_npy_with_atom_counts(sheet, tmp_path, capsys):
    path, n_atoms = sheet
    out = tmp_path / "image.npy"
    assert cli.main(["rasterize", str(path), "-o", str(out), "--spacing", "0.1"]) == 0
    image = np.load(out)
    assert image.shape[-1] == 4  # C, B, N, height
    cell = read(path).cell
    cell_area = float(cell[0, 0] * cell[1, 1])
    pixel_area = cell_area / (image.shape[0] * image.shape[1])
    assert image[..., :3].sum() * pixel_area == pytest.approx(n_atoms, rel=1e-3)
    assert "channels C, B, N, height" in capsys.readouterr().out


def test_rasterize_writes_png(sheet, tmp_path):
    path, _ = sheet
    out = tmp_path / "image.png"
    assert cli.main(["rasterize", str(path), "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_rasterize_refuses_other_suffix(sheet, tmp_path):
    path, _ = sheet
    assert cli.main(["rasterize", str(path), "-o", str(tmp_path / "image.jpg")]) == 2


def test_rasterize_unknown_species_is_named(tmp_path, capsys):
    atoms, _ = build_sheet(np.random.default_rng(0), "graphene", 5, 3)
    atoms[0].symbol = "Si"
    path = tmp_path / "si.extxyz"
    write(path, atoms)
    assert cli.main(["rasterize", str(path), "-o", str(tmp_path / "x.npy")]) == 1
    assert "Si" in capsys.readouterr().err


def test_tiles_reports_grid_and_counts(sheet, capsys):
    path, n_atoms = sheet
    code = cli.main(
        ["tiles", str(path), "--focus", "8", "--context", "4", "--spacing", "0.3", "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_atoms"] == n_atoms
    assert report["tile_px"] == 16
    assert report["n_tiles"] == report["grid"][0] * report["grid"][1]
    assert report["image_px"] == [8 * report["grid"][0], 8 * report["grid"][1]]


def test_tiles_needs_focus_and_context(sheet, capsys):
    path, _ = sheet
    assert cli.main(["tiles", str(path)]) == 1
    assert "--focus" in capsys.readouterr().err


def test_info_describes_shipped_model(capsys):
    assert cli.main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metadata"]["units"] == "eV"
    assert report["metadata"]["raster"]["species"] == ["C", "B", "N"]
    assert report["focus_px"] == [16, 16]


def test_info_missing_model_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "none.keras")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_energy_with_shipped_model_on_example(capsys):
    from importlib import resources

    example = resources.files("ednn").joinpath("examples", "cbn_sheet.extxyz")
    assert cli.main(["energy", str(example), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n_atoms"] == 416
    # C|BN between graphene (-57.8) and hBN (-63.9 eV/atom) in GFN1-xTB.
    assert -64.0 < record["energy_per_atom_eV"] < -57.5


def test_info_describes_the_wrappers_of_a_ks2d_model(tmp_path, capsys):
    import keras

    from ednn.count_baseline import CountBaseline
    from ednn.model import build_ednn
    from ednn.symmetry import SymmetryAverage

    ednn_model = build_ednn(4, 3, n_channels=2, n_targets=2, conv_layers=[(2, 3, 1, 1)],
                            dense_units=[4], metadata={"units": "Ha"})  # fmt: skip
    inner = CountBaseline(ednn_model, [2, 4], [[1.0, 2.0], [3.0, 4.0]], "channel", 1, 8.0)
    SymmetryAverage(inner, mirror_shift=1).save(tmp_path / "wrapped.keras")
    assert cli.main(["info", str(tmp_path / "wrapped.keras"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wrappers"][0].startswith("SymmetryAverage(elements=[0, 1, 2, 3, 4, 5, 6, 7]")
    assert report["wrappers"][1].startswith("CountBaseline(counts=[2, 4]")
    assert report["n_targets"] == 2 and report["tile_shape"] == [10, 10, 2]
    assert cli.main(["info", str(tmp_path / "wrapped.keras")]) == 0
    assert "input: 2-channel images" in capsys.readouterr().out
    # Moves of the well and a kernel correction around it are described too.
    from ednn.correction import KernelCorrection, fit_kernel_correction
    from ednn.translation import ShiftAverage

    moved = ShiftAverage(SymmetryAverage(inner, mirror_shift=1), 1, [[2, 5], [2, 5]])
    outputs = np.arange(12.0).reshape(6, 2) ** 1.5
    fitted = fit_kernel_correction(outputs, outputs + 0.01, np.repeat([2, 4], 3),
                                   length_scale=0.5, ridge=1e-3)  # fmt: skip
    KernelCorrection(moved, **fitted, count_from="channel", channel=1, count_scale=8.0).save(
        tmp_path / "corrected.keras"
    )
    assert cli.main(["info", str(tmp_path / "corrected.keras"), "--json"]) == 0
    wrappers = json.loads(capsys.readouterr().out)["wrappers"]
    assert wrappers[0] == (
        "KernelCorrection(counts=[2, 4], features=[0, 1], length_scale=0.5, ridge=0.001)"
    )
    assert wrappers[1] == "ShiftAverage(max_shift=1, centre_range=[[2, 5], [2, 5]], channel=0)"
    assert wrappers[2].startswith("SymmetryAverage(") and len(wrappers) == 4
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).save(tmp_path / "plain.keras")
    assert cli.main(["info", str(tmp_path / "plain.keras")]) == 1
    assert "to hold an EDNN model. Received: a Sequential" in capsys.readouterr().err


def test_info_describes_every_branch_of_a_multiscale_model(tmp_path, capsys):
    from ednn.model import build_ednn
    from ednn.multiscale import MultiScaleEDNN

    small = {"conv_layers": [(2, 3, 1, 1)], "dense_units": [4], "n_channels": 2}
    branches = [build_ednn(4, 2, **small), build_ednn(2, 3, name="coarse", **small)]
    model = MultiScaleEDNN(branches, pools=[1, 2])
    model.save(tmp_path / "multiscale.keras")
    assert cli.main(["info", str(tmp_path / "multiscale.keras"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [b["pool"] for b in report["branches"]] == [1, 2]
    assert report["branches"][1]["tile_shape"] == [8, 8, 2]
    assert report["parameters"] == model.count_params() > branches[0].count_params()
    assert cli.main(["info", str(tmp_path / "multiscale.keras")]) == 0
    text = capsys.readouterr().out
    assert "branch on the image pooled 2x: focus (2, 2) px, context (3, 3) px" in text


def test_info_describes_each_member_of_an_ensemble(tmp_path, capsys):
    from ednn.ensemble import ModelAverage
    from ednn.model import build_ednn
    from ednn.symmetry import SymmetryAverage

    small = {"n_channels": 2, "dense_units": [4], "padding": "valid", "boundary": "zero",
             "metadata": {"units": "Ha"}}  # fmt: skip
    plain = build_ednn(8, 4, conv_layers=[(2, 3, 2, 1)], **small)
    placed = build_ednn(8, 4, conv_layers=[(3, 3, 2, 1)], placement_step=4, **small)
    ModelAverage([plain, SymmetryAverage(placed)], [1.0, 3.0]).save(tmp_path / "pair.keras")
    assert cli.main(["info", str(tmp_path / "pair.keras"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["weight"] for m in report["members"]] == [0.25, 0.75]
    assert report["members"][1]["wrappers"][0].startswith("SymmetryAverage(")
    assert "placements every (4, 4) px" in report["members"][1]["tiling"][0]
    assert report["parameters"] == plain.count_params() + placed.count_params()
    assert cli.main(["info", str(tmp_path / "pair.keras")]) == 0
    text = capsys.readouterr().out
    assert "ensemble (ModelAverage) of 2 models" in text
    assert "2. weight 0.750: SymmetryAverage(elements=[0, 1, 2, 3, 4, 5, 6, 7]" in text
