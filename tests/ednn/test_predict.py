"""`ednn energy`, the Predictor and the ASE calculator."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene
from ase.io import write

from ednn import cells, predict
from ednn.ase import EDNNCalculator
from ednn.model import build_ednn
from ednn.raster import RasterSpec
from ednn.structures import build_sheet

SPEC = RasterSpec(species=("C", "B", "N"), spacing=0.3, sigma=0.35)
REFERENCE = {"C": -57.8, "B": -60.1, "N": -63.2}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = build_ednn(
        focus=8,
        context=4,
        n_channels=SPEC.n_channels,
        conv_layers=((8, 3, 2, 1), (8, 3, 1, 1)),
        dense_units=(16,),
        padding="valid",
        metadata={"raster": SPEC.to_dict(), "reference_energies": REFERENCE},
    )
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def sheet_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    a, _ = build_sheet(rng, "hetero", 5, 3, pattern="stripes")
    b, _ = build_sheet(rng, "graphene", 5, 3, defect="vacancy")
    path = tmp_path_factory.mktemp("sheets") / "two.extxyz"
    write(path, [a, b])
    return path


def _run(capsys, *argv):
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_one_object_per_frame(capsys, model_path, sheet_file):
    code, out, _ = _run(capsys, sheet_file, "--model", model_path, "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in records] == [0, 1]
    for record in records:
        assert record["energy_eV"] == pytest.approx(
            record["energy_per_atom_eV"] * record["n_atoms"]
        )
    assert records[1]["n_atoms"] == 59


def test_text_output_names_energy_and_atoms(capsys, model_path, sheet_file):
    code, out, _ = _run(capsys, sheet_file, "--model", model_path)
    assert code == 0
    assert "eV/atom" in out and "60 atoms" in out


def test_calculator_matches_command(capsys, model_path, sheet_file):
    from ase.io import read

    _, out, _ = _run(capsys, sheet_file, "--model", model_path, "--json")
    expected = [json.loads(line)["energy_eV"] for line in out.splitlines()]
    calc = EDNNCalculator(model=model_path)
    for atoms, energy in zip(read(sheet_file, ":"), expected, strict=True):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-6)
        assert calc.get_property("free_energy", atoms) == pytest.approx(energy, rel=1e-6)
    _, out, _ = _run(
        capsys, sheet_file, "--model", model_path, "--json", "--precision", "mixed_bfloat16"
    )
    expected = [json.loads(line)["energy_eV"] for line in out.splitlines()]
    calc = EDNNCalculator(model_path, evaluation_options={"precision": "mixed_bfloat16"})
    for atoms, energy in zip(read(sheet_file, ":"), expected, strict=True):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-6)


def test_periodic_supercell_is_extensive(model_path):
    predictor = predict.Predictor(predict.load_model(model_path))
    atoms, _ = build_sheet(np.random.default_rng(2), "hetero", 5, 3, pattern="dot")
    single = predictor.predict(atoms)
    double = predictor.predict(atoms.repeat((2, 2, 1)))
    assert double.energy == pytest.approx(4 * single.energy, rel=1e-5)


def test_prediction_equals_the_model_called_on_the_whole_image(model_path):
    # Predictor goes band by band through a traced network; the model called eagerly on
    # the in-memory image of the same cell must give the same map and energy.
    from ednn.raster import rasterize

    predictor = predict.Predictor(predict.load_model(model_path))
    atoms, _ = build_sheet(np.random.default_rng(3), "hetero", 5, 3, pattern="stripes")
    result = predictor.predict(atoms, tile_map=True)
    sheet, multiplicity = predictor.evaluation_cell(atoms)
    image = rasterize(sheet, predictor.spec)[None]
    expected = np.asarray(predictor.model.tile_outputs(image), np.float64)[0, ..., 0]
    np.testing.assert_allclose(result.tile_map, expected, rtol=1e-5, atol=1e-6)
    network = expected.sum() / multiplicity
    assert result.energy == pytest.approx(network + predictor.reference_energy(atoms), rel=1e-6)


def test_evaluation_cell_follows_a_stored_raster_multiple(tmp_path):
    # A hand-built model whose stored raster multiple (3 px) is not the focus (8 px): the
    # image must be a multiple of both (24 px), and evaluation_cell must be the cell that
    # evaluate_sheet rasterizes, or the multiplicity divides the wrong energy.
    import dataclasses

    import keras

    from ednn.raster import rasterize
    from ednn.stream import model_raster_spec

    keras.utils.set_random_seed(1)
    spec = dataclasses.replace(SPEC, multiple_of=(3, 3))
    model = build_ednn(
        focus=8,
        context=4,
        n_channels=spec.n_channels,
        conv_layers=((4, 3, 1, 1),),
        dense_units=(8,),
        padding="valid",
        metadata={"raster": spec.to_dict()},
    )
    predictor = predict.Predictor(model)
    assert predictor.spec == model_raster_spec(model)
    assert predictor.spec.multiple_of == (24, 24)
    # 4.8 x 7.2 Å is 16 x 24 px: only a threefold repeat along x fits 24-px regions.
    atoms = Atoms("C3", positions=[(0.5, 1.0, 10.0), (2.0, 3.0, 10.0), (3.5, 5.5, 10.0)])
    atoms.cell = (4.8, 7.2, 20.0)
    atoms.pbc = True
    result = predictor.predict(atoms)
    sheet, multiplicity = predictor.evaluation_cell(atoms)
    image = rasterize(sheet, predictor.spec)
    assert multiplicity == 3 and image.shape[:2] == (24, 48)
    network = float(np.asarray(model(image[None]))[0, 0])
    assert result.energy == pytest.approx(network / multiplicity, rel=1e-5)


def test_hexagonal_cell_gives_same_energy_per_atom_as_rectangular(model_path):
    predictor = predict.Predictor(predict.load_model(model_path))
    hexagonal = graphene(vacuum=15.0) * (5, 5, 1)
    rectangular = cells.to_rectangular(hexagonal)
    e_hex = predictor.predict(hexagonal)
    e_rect = predictor.predict(rectangular)
    assert e_hex.n_atoms == 50 and e_rect.n_atoms == 100
    assert e_hex.energy_per_atom == pytest.approx(e_rect.energy_per_atom, rel=1e-6)


def test_reference_energies_are_added_on_counts(model_path):
    predictor = predict.Predictor(predict.load_model(model_path))
    atoms, _ = build_sheet(np.random.default_rng(3), "hbn", 5, 3)
    assert predictor.reference_energy(atoms) == pytest.approx(30 * (-60.1 - 63.2))


def test_unknown_species_is_named(capsys, model_path, tmp_path):
    atoms, _ = build_sheet(np.random.default_rng(0), "graphene", 5, 3)
    atoms[0].symbol = "Si"
    path = tmp_path / "si.extxyz"
    write(path, atoms)
    code, _, err = _run(capsys, path, "--model", model_path)
    assert code != 0
    assert "Si" in err and str(path) in err


def test_calculator_raises_input_error_for_unknown_species(model_path):
    from ase.calculators.calculator import InputError

    atoms, _ = build_sheet(np.random.default_rng(0), "graphene", 5, 3)
    atoms[3].symbol = "O"
    atoms.calc = EDNNCalculator(model=model_path)
    with pytest.raises(InputError, match="O"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("content", ["", "not a structure\n"])
def test_empty_or_corrupt_file_is_a_clear_error(capsys, model_path, tmp_path, content):
    path = tmp_path / "broken.extxyz"
    path.write_text(content)
    code, _, err = _run(capsys, path, "--model", model_path)
    assert code != 0
    assert str(path) in err and ("empty" in err or "could not read" in err)


def test_missing_file_and_model_are_clear_errors(capsys, model_path, tmp_path):
    code, _, err = _run(capsys, tmp_path / "nope.xyz", "--model", model_path)
    assert code != 0 and "no such file" in err
    code, _, err = _run(capsys, tmp_path / "nope.xyz", "--model", tmp_path / "missing.keras")
    assert code == 2 and "missing.keras" in err


def test_nan_positions_are_a_clear_error(capsys, model_path, tmp_path):
    atoms, _ = build_sheet(np.random.default_rng(0), "graphene", 5, 3)
    atoms.positions[4, 0] = np.nan
    path = tmp_path / "nan.extxyz"
    write(path, atoms)
    code, _, err = _run(capsys, path, "--model", model_path)
    assert code != 0 and "4" in err


def test_map_writes_png(capsys, model_path, sheet_file, tmp_path):
    out = tmp_path / "map.png"
    code, _, _ = _run(capsys, sheet_file, "--model", model_path, "--map", out)
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flake_is_evaluated_in_a_box(model_path):
    predictor = predict.Predictor(predict.load_model(model_path))
    atoms, _ = build_sheet(np.random.default_rng(0), "graphene", 4, 3)
    flake = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, pbc=False)
    assert np.isfinite(predictor.predict(flake).energy)


def test_repeat_option_equals_explicit_repeat(capsys, model_path, tmp_path):
    atoms, _ = build_sheet(np.random.default_rng(4), "hetero", 5, 3, pattern="dot")
    cell = tmp_path / "cell.extxyz"
    big = tmp_path / "big.extxyz"
    write(cell, atoms)
    write(big, atoms.repeat((3, 2, 1)))
    _, out, _ = _run(capsys, cell, "--model", model_path, "--json", "--repeat", "3", "2")
    repeated = json.loads(out)
    _, out, _ = _run(capsys, big, "--model", model_path, "--json")
    explicit = json.loads(out)
    assert repeated["n_atoms"] == explicit["n_atoms"] == 6 * len(atoms)
    assert repeated["energy_eV"] == pytest.approx(explicit["energy_eV"], rel=1e-6)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_is_close_to_float32_but_not_equal(
    capsys, model_path, sheet_file, precision
):
    from ase.io import read

    _, out, _ = _run(capsys, sheet_file, "--model", model_path, "--json")
    full = [json.loads(line) for line in out.splitlines()]
    code, out, _ = _run(
        capsys, sheet_file, "--model", model_path, "--json", "--precision", precision,
        "--regions-per-band", "4", "--batch-size", "3",
    )  # fmt: skip
    assert code == 0
    mixed = [json.loads(line) for line in out.splitlines()]
    predictor = predict.Predictor(predict.load_model(model_path))
    for a, b in zip(full, mixed, strict=True):
        # The network's part (the energy less the reference energies) moves, by under 2 %.
        network = a["energy_eV"] - predictor.reference_energy(read(sheet_file, index=a["frame"]))
        assert b["energy_eV"] != a["energy_eV"]
        assert abs(b["energy_eV"] - a["energy_eV"]) < 0.02 * abs(network)


def test_mixed_precision_copy_follows_the_model_weights(model_path, sheet_file):
    from ase.io import read

    model = predict.load_model(model_path)
    atoms = read(sheet_file, index=0)
    predictor = predict.Predictor(model, precision="mixed_bfloat16")
    before = predictor.predict(atoms).energy
    bias = model.tile_network.layers[-1].bias
    bias.assign(bias + 0.5)
    mapped = predictor.predict(atoms, tile_map=True)  # of the evaluated (super)cell
    regions = mapped.tile_map.size / mapped.supercell
    after = predictor.predict(atoms).energy
    scale = float(np.ravel(model.energy_scale)[0])
    assert after - before == pytest.approx(0.5 * scale * regions, rel=1e-2)


def test_bad_speed_options_are_clear_errors(capsys, model_path, sheet_file):
    code, _, err = _run(capsys, sheet_file, "--model", model_path, "--regions-per-band", "0")
    assert code == 2 and "--regions-per-band must be a positive integer: 0" in err
    with pytest.raises(SystemExit):
        _run(capsys, sheet_file, "--model", model_path, "--precision", "float8")
    assert "invalid choice: 'float8'" in capsys.readouterr().err
    with pytest.raises(TypeError, match="Unknown options"):
        predict.Predictor(predict.load_model(model_path), precison="mixed_bfloat16")
    # TensorFlow already runs in this process: the thread count is refused with a warning.
    with pytest.warns(UserWarning, match="thread pools are already fixed"):
        code, out, _ = _run(capsys, sheet_file, "--model", model_path, "--threads", "1", "--json")
    assert code == 0 and len(out.splitlines()) == 2
