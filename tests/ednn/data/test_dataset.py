"""Training images: reference energies, batching by shape, exact augmentations, sharding."""

import numpy as np
import pytest
from ase.build import graphene
from ase.calculators.singlepoint import SinglePointCalculator

from ednn import cells
from ednn.data.augment import augment_image, mirror, roll
from ednn.data.dataset import (
    ImageSet,
    batch_plan,
    commensurate_sheet,
    fit_reference_energies,
    make_tf_dataset,
    random_split,
    shard,
)
from ednn.raster import RasterSpec, rasterize

SPEC = RasterSpec(species=("C", "B", "N"), spacing=0.25, sigma=0.3, multiple_of=8)


def rippled_sheet(seed=0, repeat=(3, 2, 1)):
    """A rectangular graphene cell with random in-plane and out-of-plane displacements."""
    atoms = cells.to_rectangular(graphene(vacuum=10.0)) * repeat
    atoms.rattle(0.1, seed=seed)
    return atoms


def test_reference_energies_recover_known_species_energies():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 60, size=(40, 3)).astype(float)
    known = np.array([-9.2, -7.5, -6.1])
    energies = counts @ known + rng.normal(0.0, 1e-3, size=40)
    fitted = fit_reference_energies(counts, energies)
    np.testing.assert_allclose(fitted.ravel(), known, atol=1e-4)


def test_reference_energy_of_an_absent_species_is_zero():
    counts = np.array([[10.0, 0.0, 0.0], [20.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    fitted = fit_reference_energies(counts, counts[:, 0] * -9.0)
    np.testing.assert_allclose(fitted.ravel(), [-9.0, 0.0, 0.0], atol=1e-12)


def test_batches_hold_one_shape_and_cover_every_structure_once():
    shapes = np.array([[8, 8], [8, 16], [8, 8], [16, 16], [8, 16], [8, 8], [8, 8]])
    plan = batch_plan(shapes, 2, seed=3, epoch=1)
    assert all(len({tuple(shapes[i]) for i in batch}) == 1 for batch in plan)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(shapes)))
    assert all(len(batch) <= 2 for batch in plan)


def test_batch_plan_is_reproducible_and_changes_with_the_epoch():
    shapes = np.tile([[8, 8]], (40, 1))
    first = batch_plan(shapes, 4, seed=1, epoch=0)
    again = batch_plan(shapes, 4, seed=1, epoch=0)
    later = batch_plan(shapes, 4, seed=1, epoch=1)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert [b.tolist() for b in first] != [b.tolist() for b in later]


def test_roll_of_periodic_image_is_raster_of_translated_structure():
    atoms = rippled_sheet()
    image = rasterize(atoms, SPEC)
    (height, width) = image.shape[:2]
    (dx, dy) = (atoms.cell[0, 0] / width, atoms.cell[1, 1] / height)
    moved = atoms.copy()
    moved.positions += [5 * dx, 3 * dy, 0.7]  # z shifts leave the height channel alone
    np.testing.assert_allclose(roll(image, (3, 5)), rasterize(moved, SPEC), atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1])
def test_mirror_of_image_is_raster_of_mirrored_structure(axis):
    atoms = rippled_sheet(seed=1)
    lengths = (atoms.cell[0, 0], atoms.cell[1, 1])
    mirrored = atoms.copy()
    column = 1 - axis  # image axis 0 is y (column 1 of positions)
    mirrored.positions[:, column] = lengths[column] - atoms.positions[:, column]
    expected = rasterize(mirrored, SPEC)
    np.testing.assert_allclose(mirror(rasterize(atoms, SPEC), axis), expected, atol=1e-5)


def test_augmentation_moves_pixels_only_and_never_translates_flakes():
    image = rasterize(rippled_sheet(), SPEC)
    out = augment_image(image, np.random.default_rng(0))
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(image, axis=None))
    fixed = augment_image(image, np.random.default_rng(1), periodic=False, flip=False)
    np.testing.assert_array_equal(fixed, image)


def test_commensurate_sheet_fits_the_pixel_grid_within_tolerance():
    atoms = graphene(vacuum=10.0) * (5, 8, 1)  # hexagonal: 2 copies in the rectangular cell
    sheet = commensurate_sheet(atoms, SPEC, tolerance=0.02)
    for length, multiple in ((sheet.cell[0, 0], 8), (sheet.cell[1, 1], 8)):
        n = multiple * round(length / (SPEC.spacing * multiple))
        assert abs(length / n - SPEC.spacing) <= 0.02 * SPEC.spacing
    assert len(sheet) % len(atoms) == 0


def test_targets_and_counts_scale_with_the_copies_imaged():
    atoms = graphene(vacuum=10.0) * (5, 8, 1)
    atoms.calc = SinglePointCalculator(atoms, energy=-9.0 * len(atoms))
    data = ImageSet.from_structures([atoms], SPEC, spacing_tolerance=0.02)
    copies = data.n_atoms[0] / len(atoms)
    assert copies == int(copies) >= 2
    assert data.targets[0, 0] == pytest.approx(-9.0 * data.n_atoms[0])
    assert data.counts[0].tolist() == [data.n_atoms[0], 0, 0]
    image = data.image(0)
    assert image.shape[:2] == tuple(data.shapes[0])
    pixel_area = (data.frames_[0].cell[0, 0] / image.shape[1]) * (
        data.frames_[0].cell[1, 1] / image.shape[0]
    )
    assert image[..., 0].sum() * pixel_area == pytest.approx(data.n_atoms[0], rel=1e-4)


def test_random_split_keeps_groups_together():
    groups = [f"traj{k // 2}" for k in range(40)]
    splits = random_split(groups, {"validation": 0.2, "test": 0.1}, seed=4)
    for k in range(0, 40, 2):
        assert splits[k] == splits[k + 1]
    assert set(splits) == {"train", "validation", "test"}


def test_shards_of_every_rank_rebuild_the_batch():
    batch = np.arange(7)
    parts = [shard(batch, rank, 3) for rank in range(3)]
    assert np.concatenate(parts).tolist() == batch.tolist()
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_rank_with_an_empty_share_gets_a_masked_structure():
    images = np.random.default_rng(0).random((3, 8, 8, 2)).astype(np.float32)
    data = ImageSet.from_arrays(images, np.arange(3.0))
    batches = [np.array([0, 1, 2]), np.array([1])]
    stream = make_tf_dataset(data, batches, data.targets, rank=1, size=2)
    masks = [mask.numpy().tolist() for (_, _, _, mask, _) in stream]
    assert masks == [[1.0], [0.0]]  # rank 1 holds [2] of the first batch, nothing of [1]


def sheet_set(**kwargs) -> ImageSet:
    frames = [rippled_sheet(seed) for seed in range(3)]
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=-9.0 * len(atoms))
    return ImageSet.from_structures(frames, SPEC, **kwargs)


def test_translated_image_rolls_by_whole_pixels_and_moves_atoms_between_pixels():
    data = sheet_set()
    image = data.image(0)
    np.testing.assert_allclose(data.translated_image(0, (3, 5)), roll(image, (3, 5)), atol=1e-5)
    half = data.translated_image(0, (0.5, 0.5))
    assert half.shape == image.shape
    assert np.abs(half - image).max() > 0.1  # Gaussians now between the pixel centres
    # The Gaussians only moved: each species channel keeps its total weight.
    np.testing.assert_allclose(half[..., :3].sum((0, 1)), image[..., :3].sum((0, 1)), rtol=1e-4)


def test_subpixel_augmentation_redraws_images_reproducibly_and_needs_structures():
    data = sheet_set()
    data.cache()
    plan = [np.array([0, 1, 2])]
    targets = data.targets

    def first_batch(epoch, augment):
        stream = make_tf_dataset(data, plan, targets, augment=augment, seed=4, epoch=epoch)
        return next(iter(stream))[0].numpy()

    still = {"translate": False, "flip": False, "subpixel": True}
    moved = first_batch(0, still)
    np.testing.assert_array_equal(moved, first_batch(0, still))
    assert not np.allclose(moved, first_batch(1, still))
    cached = np.stack(data.images([0, 1, 2]))
    assert np.abs(moved - cached).max() > 0.05
    ready_made = ImageSet.from_arrays(cached, targets)
    with pytest.raises(ValueError, match="ready-made images"):
        make_tf_dataset(ready_made, plan, targets, augment=still)
