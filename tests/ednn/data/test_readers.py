"""Readers of training data: ASE files with energies, dataset directories, EDNN HDF5."""

import gzip
import json

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from ednn.data.readers import (
    DataError,
    check_species,
    detect_format,
    read_dataset_dir,
    read_hdf5_images,
    read_labelled,
)
from ednn.structio import StructureFileError


def sheet(energy=None, symbols="C4", ident=None):
    atoms = Atoms(
        symbols,
        positions=[[0.0, 0.0, 5.0], [1.23, 0.71, 5.0], [1.23, 2.13, 5.0], [0.0, 2.84, 5.0]],
        cell=[2.46, 4.26, 10.0],
        pbc=True,
    )
    if ident is not None:
        atoms.info["id"] = ident
    if energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
    return atoms


def write_extxyz(path, frames):
    if str(path).endswith(".gz"):
        import io

        buffer = io.StringIO()
        write(buffer, frames, format="extxyz")
        path.write_bytes(gzip.compress(buffer.getvalue().encode()))
    else:
        write(path, frames, format="extxyz")


def test_gzipped_extxyz_frames_keep_energies_and_get_ids(tmp_path):
    path = tmp_path / "frames.extxyz.gz"
    write_extxyz(path, [sheet(-36.0), sheet(-35.5)])
    frames = read_labelled(path)
    assert [a.get_potential_energy() for a in frames] == [-36.0, -35.5]
    assert [a.info["id"] for a in frames] == ["frames.extxyz.gz:0", "frames.extxyz.gz:1"]


def test_frame_without_energy_is_named_with_its_file(tmp_path):
    path = tmp_path / "frames.extxyz"
    write_extxyz(path, [sheet(-36.0), sheet(None)])
    with pytest.raises(DataError, match=r"frames\.extxyz, frame 1 .*no 'energy'"):
        read_labelled(path)


def test_nan_energy_is_refused(tmp_path):
    path = tmp_path / "frames.extxyz"
    write_extxyz(path, [sheet(float("nan"))])
    with pytest.raises(DataError, match=r"frame 0.*must be finite"):
        read_labelled(path)


def test_other_targets_come_from_info(tmp_path):
    atoms = sheet(-36.0)
    atoms.info["tersoff_energy"] = -30.0
    path = tmp_path / "frames.extxyz"
    write_extxyz(path, [atoms])
    read_labelled(path, targets=("energy", "tersoff_energy"))
    with pytest.raises(DataError, match="no 'dft_energy'"):
        read_labelled(path, targets=("dft_energy",))


def test_corrupt_file_message_names_the_file(tmp_path):
    path = tmp_path / "broken.extxyz.gz"
    path.write_bytes(b"\x1f\x8b this is not gzip data")
    with pytest.raises(StructureFileError, match=r"broken\.extxyz\.gz"):
        read_labelled(path)


def test_unknown_species_names_symbol_and_structure():
    frames = [sheet(-1.0, "C4", "ok"), sheet(-1.0, "C2SiC", "bad-one")]
    with pytest.raises(DataError, match=r"Si in bad-one.*data\.species"):
        check_species(frames, ("C", "B", "N"), "training data")


def test_dataset_directory_reads_shards_and_work_with_splits(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "_work").mkdir()
    packed = [sheet(-36.0, ident="a"), sheet(-35.0, ident="b")]
    for atoms in packed:
        atoms.info["split"] = "train"
    write_extxyz(tmp_path / "shards" / "shard-00000.extxyz.gz", packed)
    loose = sheet(-34.0, ident="c")
    loose.info["split"] = "test"
    write_extxyz(tmp_path / "_work" / "c.extxyz", [loose])
    # A structure both packed and unpacked (the generator packing meanwhile) is read once.
    write_extxyz(tmp_path / "_work" / "a.extxyz", [packed[0]])
    splits = {"ids": {"train": ["a"], "validation": ["b"], "test": []}}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    frames = read_dataset_dir(tmp_path)
    assert detect_format(tmp_path) == "ednn-dir"
    assert {a.info["id"]: a.info["split"] for a in frames} == {
        "a": "train",
        "b": "validation",  # splits.json wins over info
        "c": "test",  # not yet in splits.json: the generator's own split
    }


def test_empty_dataset_directory_is_an_error(tmp_path):
    with pytest.raises(DataError, match="expected labelled structures"):
        read_dataset_dir(tmp_path)


def test_hdf5_images_get_a_channel_axis(tmp_path):
    path = tmp_path / "ednn.h5"
    with h5py.File(path, "w") as handle:
        handle["X"] = np.ones((3, 8, 12))
        handle["Y"] = np.array([-1.0, -2.0, -3.0])
    arrays = read_hdf5_images(path)
    assert detect_format(path) == "hdf5"
    assert arrays.images.shape == (3, 8, 12, 1) and arrays.images.dtype == np.float32
    assert arrays.energies.tolist() == [[-1.0], [-2.0], [-3.0]]
    assert arrays.n_atoms is None


def test_hdf5_without_energies_names_what_is_missing(tmp_path):
    path = tmp_path / "ednn.h5"
    with h5py.File(path, "w") as handle:
        handle["X"] = np.ones((3, 8, 12))
    with pytest.raises(DataError, match=r"missing \['Y'\]"):
        read_hdf5_images(path)


def test_hdf5_nan_energy_names_the_index(tmp_path):
    path = tmp_path / "ednn.h5"
    with h5py.File(path, "w") as handle:
        handle["X"] = np.ones((3, 8, 8))
        handle["Y"] = np.array([-1.0, np.nan, -3.0])
    with pytest.raises(DataError, match=r"'Y' must be finite.*indices 1"):
        read_hdf5_images(path)


def test_corrupt_hdf5_names_the_file(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match=r"broken\.h5: could not read as HDF5"):
        read_hdf5_images(path)
