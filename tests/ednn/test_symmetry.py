import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.count_baseline import CountBaseline
from ednn.dcign import DensityDCIGN
from ednn.ks2d.grid import apply_symmetry
from ednn.model import build_ednn
from ednn.symmetry import (
    SQUARE_GROUP,
    SymmetryAverage,
    check_group,
    inverse_element,
    transform_images,
)

# 12 x 12 images in tiles of 4 + 2*3 pixels; a tiny tile network keeps the tests fast.
SMALL_NET = {"conv_layers": [(4, 3, 2, 1), (4, 3, 1, 1)], "dense_units": [8]}


def small_ednn(n_channels=2, n_targets=3):
    keras.utils.set_random_seed(0)
    return build_ednn(4, 3, n_channels=n_channels, n_targets=n_targets, **SMALL_NET)


def images(shape=(3, 12, 12, 2), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("element", SQUARE_GROUP)
def test_transform_with_shift_1_is_the_ks2d_grid_symmetry(element):
    x = images()
    expected = np.moveaxis(apply_symmetry(np.moveaxis(x, -1, 1), element), 1, -1)
    np.testing.assert_array_equal(transform_images(x, element, mirror_shift=1), expected)
    tensor = transform_images(keras.ops.convert_to_tensor(x), element, mirror_shift=1)
    np.testing.assert_array_equal(np.asarray(tensor), expected)


def test_transform_with_shift_0_mirrors_about_the_image_centre():
    x = images((1, 5, 7, 1))
    np.testing.assert_array_equal(transform_images(x, 1), x[:, ::-1])
    np.testing.assert_array_equal(transform_images(x, 2), x[:, :, ::-1])
    np.testing.assert_array_equal(transform_images(x, 4), x.transpose(0, 2, 1, 3))


@pytest.mark.parametrize("group", [SQUARE_GROUP, (0,), (0, 4), (0, 1), (0, 1, 2, 3), (0, 3, 4, 7)])
def test_subgroups_of_the_square_are_accepted(group):
    assert check_group(group) == tuple(sorted(group))


@pytest.mark.parametrize(
    ("elements", "match"),
    [
        ((1, 2, 3), "must hold the identity 0"),
        ((0, 1, 4), r"closed under composition .* missing"),
        ((0, 8), "integer 0 to 7"),
        ((0, 1.5), "integer 0 to 7"),
        ((0, True), "integer 0 to 7"),
    ],
)
def test_what_is_not_a_group_is_refused(elements, match):
    with pytest.raises(ValueError, match=match):
        check_group(elements)


@pytest.mark.parametrize("mirror_shift", [0, 1])
def test_average_is_invariant_and_the_mean_over_the_images(mirror_shift):
    plain = small_ednn()
    averaged = SymmetryAverage(plain, mirror_shift=mirror_shift)
    x = images()
    moved = [transform_images(x, g, mirror_shift) for g in SQUARE_GROUP]
    outputs = [np.asarray(plain(m)) for m in moved]
    # The plain EDNN is not invariant (the tiles cut a mirrored image elsewhere) ...
    assert not np.allclose(outputs[0], outputs[5], rtol=1e-3)
    # ... its average is, exactly but for rounding, and is the mean over the 8 images.
    expected = np.mean(outputs, axis=0)
    for m in moved:
        np.testing.assert_allclose(averaged.predict(m, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_average_of_a_count_baseline_round_trips_with_plain_keras(tmp_path):
    inner = CountBaseline(
        small_ednn(), [2, 4], [[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]], "channel", 1, 8.0
    )
    averaged = SymmetryAverage(inner, elements=(0, 4), mirror_shift=1, name="swap_average")
    x = images()
    x[..., 1] = 3 / 8  # the count channel: N = 3, between the references
    averaged.save(tmp_path / "averaged.keras")  # before any call: built with its model
    before = averaged.predict(x, verbose=0)
    loaded = keras.saving.load_model(tmp_path / "averaged.keras")
    assert isinstance(loaded, SymmetryAverage)
    assert (loaded.elements, loaded.mirror_shift, loaded.n_targets) == ((0, 4), 1, 3)
    # the EDNN's metadata (units, target names, provenance) reads through both wrappers
    assert loaded.metadata == loaded.model.metadata == loaded.model.model.metadata
    assert loaded.metadata["target_names"] == inner.model.metadata["target_names"]
    assert "units" in loaded.metadata
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-6)
    swapped = transform_images(x, 4)
    np.testing.assert_allclose(loaded.predict(swapped, verbose=0), before, rtol=1e-5, atol=1e-6)


def test_training_the_average_trains_the_shared_weights():
    plain = small_ednn(n_targets=1)
    averaged = SymmetryAverage(plain)
    averaged.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = [w.copy() for w in plain.get_weights()]
    x = images((4, 12, 12, 2))
    averaged.fit(x, np.ones((4, 1), "float32"), epochs=2, verbose=0)
    assert len(averaged.trainable_weights) == len(plain.trainable_weights)
    assert any(not np.array_equal(a, b) for a, b in zip(before, plain.get_weights(), strict=True))


def test_wrong_channels_and_image_outputs_are_named():
    averaged = SymmetryAverage(small_ednn())
    averaged.predict(images(), verbose=0)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, height, width, 2\)"):
        averaged.predict(images((1, 12, 12, 3)), verbose=0)
    with pytest.raises(ValueError, match=r"\(batch, height, width, C\)"):
        averaged(images((12, 12, 2)))
    inputs = keras.Input((4, 4, 1))
    flat = keras.Model(inputs, keras.layers.Reshape((4, 4))(inputs))
    with pytest.raises(ValueError, match=r"outputs of shape \(batch, n_targets\) or images"):
        SymmetryAverage(flat)(images((1, 4, 4, 1)))


@pytest.mark.parametrize("mirror_shift", [0, 1])
def test_image_outputs_are_mapped_back_so_the_identity_stays_the_identity(mirror_shift):
    inputs = keras.Input((None, None, 2))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    x = images((2, 6, 6, 2))
    np.testing.assert_allclose(
        SymmetryAverage(identity, mirror_shift=mirror_shift)(x), x, rtol=1e-6
    )
    for g in SQUARE_GROUP:
        back = transform_images(
            transform_images(x, g, mirror_shift), inverse_element(g), mirror_shift
        )
        np.testing.assert_array_equal(back, x)


def test_averaged_dcign_is_equivariant_and_keeps_the_electron_count(tmp_path):
    keras.utils.set_random_seed(0)
    dcign = DensityDCIGN(focus=8, context=4, pixel_area=0.25, filters=(4, 8), electron_scale=0.1)
    averaged = SymmetryAverage(dcign, mirror_shift=1)
    v = 10 * images((2, 16, 16, 1))
    n = np.array([2.0, 4.0], "float32")
    density = np.asarray(averaged((v, n)))
    np.testing.assert_allclose(density.sum(axis=(1, 2, 3)) * 0.25, n, rtol=1e-5)
    for g in (1, 5, 6):  # a mirror, and two of mirror and swap (each other's inverses)
        moved = np.asarray(averaged((transform_images(v, g, 1), n)))
        np.testing.assert_allclose(moved, transform_images(density, g, 1), rtol=1e-4, atol=1e-7)
    plain = np.asarray(dcign((v, n)))
    assert not np.allclose(plain, density, rtol=1e-3)
    averaged.save(tmp_path / "dcign.keras")
    loaded = keras.saving.load_model(tmp_path / "dcign.keras")
    np.testing.assert_allclose(loaded.predict((v, n), verbose=0), density, rtol=1e-5, atol=1e-8)
    assert loaded.metadata == {}  # a DCIGN carries none


@pytest.mark.parametrize("mirror_shift", [2, -1, True])
def test_mirror_shift_is_0_or_1(mirror_shift):
    with pytest.raises(ValueError, match="`mirror_shift` must be 0 or 1"):
        SymmetryAverage(small_ednn(), mirror_shift=mirror_shift)
