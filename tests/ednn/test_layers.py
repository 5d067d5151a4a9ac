"""Tests of the in-graph tiling layers against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiling
from ednn.layers import AppendSqrt, ChannelCeiling, ChannelPermutation, ExtractTiles, SumTiles


def reference_tiles(image, focus, context, boundary="periodic"):
    """Tiles of one (H, W, C) image by slicing the padded image, in row-major order."""
    (f0, f1) = (focus, focus) if isinstance(focus, int) else focus
    (c0, c1) = (context, context) if isinstance(context, int) else context
    pad = ((c0, c0), (c1, c1), (0, 0))
    padded = np.pad(image, pad, mode="wrap") if boundary == "periodic" else np.pad(image, pad)
    return np.stack(
        [
            padded[i * f0 : i * f0 + f0 + 2 * c0, j * f1 : j * f1 + f1 + 2 * c1]
            for i in range(image.shape[0] // f0)
            for j in range(image.shape[1] // f1)
        ]
    )


def reference_batch(images, focus, context, boundary="periodic"):
    return np.concatenate([reference_tiles(image, focus, context, boundary) for image in images])


def random_images(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize(
    ("shape", "focus", "context"),
    [
        ((2, 8, 12, 3), 4, 2),
        ((1, 6, 9, 1), (2, 3), (1, 0)),
        ((2, 4, 6, 2), 2, 5),  # context larger than the image: wraps several times
        ((1, 4, 4, 1), 4, 9),  # a single tile, context more than twice the image
    ],
)
def test_extract_tiles_periodic_matches_numpy_reference(shape, focus, context):
    images = random_images(shape)
    tiles = ExtractTiles(focus, context)(images)
    np.testing.assert_array_equal(tiles, reference_batch(images, focus, context))


@pytest.mark.parametrize(("focus", "context"), [(4, 2), ((2, 3), (3, 1)), (2, 7)])
def test_extract_tiles_zero_matches_numpy_reference(focus, context):
    images = random_images((2, 4, 12, 2))
    tiles = ExtractTiles(focus, context, boundary="zero")(images)
    np.testing.assert_array_equal(tiles, reference_batch(images, focus, context, "zero"))


@pytest.mark.skipif(
    not hasattr(tiling, "extract_tiles"), reason="tiling.extract_tiles is not written yet"
)
@pytest.mark.parametrize("boundary", ["periodic", "zero"])
@pytest.mark.parametrize(("focus", "context"), [(4, 2), ((2, 4), (3, 1)), (2, 5)])
def test_extract_tiles_matches_tiling_extract_tiles(boundary, focus, context):
    images = random_images((2, 8, 4, 3), seed=1)
    tiles = ExtractTiles(focus, context, boundary=boundary)(images)
    expected = np.concatenate(
        [tiling.extract_tiles(image, focus, context, boundary=boundary) for image in images]
    )
    np.testing.assert_array_equal(tiles, expected)


def test_extract_tiles_count_and_shape():
    layer = ExtractTiles(focus=(4, 2), context=(1, 3))
    tiles = layer(np.zeros((3, 8, 10, 5), np.float32))
    assert tiles.shape == (3 * 2 * 5, 6, 8, 5)
    assert layer.compute_output_shape((3, 8, 10, 5)) == (30, 6, 8, 5)
    assert layer.compute_output_shape((None, None, None, 5)) == (None, 6, 8, 5)
    np.testing.assert_array_equal(layer.grid_shape(tf.zeros((3, 8, 10, 5))), [2, 5])


def test_extract_tiles_with_dynamic_height_and_width():
    layer = ExtractTiles(focus=2, context=3)
    extract = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2))])
    for shape in [(1, 4, 6, 2), (2, 8, 2, 2)]:
        images = random_images(shape)
        tiles = extract(images)
        np.testing.assert_array_equal(tiles, reference_batch(images, 2, 3))
    assert extract.get_concrete_function().output_shapes.as_list() == [None, 8, 8, 2]


def test_extract_tiles_compiles_with_xla():
    layer = ExtractTiles(focus=2, context=1)
    extract = tf.function(
        layer, input_signature=[tf.TensorSpec((None, None, None, 1))], jit_compile=True
    )
    images = random_images((1, 4, 6, 1))
    np.testing.assert_array_equal(extract(images), reference_batch(images, 2, 1))


def test_extract_tiles_rejects_size_not_multiple_of_focus():
    with pytest.raises(ValueError, match=r"image size 10 along axis 1\. Received: focus=\(4, 4\)"):
        ExtractTiles(focus=4, context=1)(np.zeros((1, 8, 10, 1), np.float32))


def test_extract_tiles_dynamic_size_not_multiple_of_focus_names_sizes():
    layer = ExtractTiles(focus=(2, 4), context=1)
    extract = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 1))])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"image size 9 along axis 0\. Received: focus"
    ):
        extract(np.zeros((1, 9, 8, 1), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"focus": 0, "context": 1}, ValueError, "focus=0"),
        ({"focus": 2, "context": -1}, ValueError, "context=-1"),
        ({"focus": 2.0, "context": 1}, TypeError, "focus=2.0"),
        ({"focus": (2, 2, 2), "context": 1}, TypeError, r"focus=\(2, 2, 2\)"),
        ({"focus": 2, "context": 1, "boundary": "reflect"}, ValueError, "boundary='reflect'"),
    ],
)
def test_extract_tiles_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ExtractTiles(**kwargs)


def test_extract_tiles_config_round_trip():
    layer = ExtractTiles(focus=(2, 4), context=(3, 1), boundary="zero", name="tiles")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ExtractTiles)
    assert (restored.focus, restored.context, restored.boundary) == ((2, 4), (3, 1), "zero")


def test_sum_tiles_sums_each_image_and_returns_tile_map():
    values = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2 * 6, 3)
    (sums, tile_map) = SumTiles(return_tile_map=True)(values, grid_shape=(2, 3))
    np.testing.assert_array_equal(tile_map, values.reshape(2, 2, 3, 3))
    np.testing.assert_array_equal(sums, values.reshape(2, 6, 3).sum(axis=1))
    np.testing.assert_array_equal(SumTiles()(values, tf.constant([3, 2])), sums)


def test_channel_ceiling_caps_only_its_channels_and_commutes_with_tiling():
    images = np.random.default_rng(3).uniform(-2.0, 6.0, (2, 8, 12, 2)).astype("float32")
    layer = ChannelCeiling(1.5, channels=[0])
    capped = keras.ops.convert_to_numpy(layer(images))
    np.testing.assert_array_equal(capped[..., 0], np.minimum(images[..., 0], 1.5))
    np.testing.assert_array_equal(capped[..., 1], images[..., 1])
    # Pixel-wise and zero-preserving: capping tiles equals tiling the capped image.
    for boundary in ("periodic", "zero"):
        extract = ExtractTiles(4, 3, boundary)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(layer(extract(images))),
            keras.ops.convert_to_numpy(extract(capped)),
        )


def test_channel_ceiling_round_trips_through_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 3)), ChannelCeiling(0.5, channels=(0, 2))])
    path = tmp_path / "ceiling.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].get_config()["channels"] == [0, 2]
    images = np.random.default_rng(4).random((1, 4, 4, 3), dtype=np.float32)
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ceiling": float("nan")}, ValueError, "ceiling"),
        ({"ceiling": "20"}, TypeError, "ceiling"),
        ({"ceiling": 1.0, "channels": []}, ValueError, "channels"),
        ({"ceiling": 1.0, "channels": [-1]}, ValueError, "channels"),
    ],
)
def test_channel_ceiling_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ChannelCeiling(**kwargs)


def test_channel_ceiling_rejects_a_channel_the_images_lack():
    with pytest.raises(ValueError, match="must index the input's 2 channels"):
        ChannelCeiling(1.0, channels=[2])(np.zeros((1, 4, 4, 2), "float32"))


def test_append_sqrt_appends_the_root_of_one_channel_and_commutes_with_tiling():
    images = np.random.default_rng(5).uniform(-0.1, 1.0, (2, 8, 12, 2)).astype("float32")
    layer = AppendSqrt(channel=1)
    out = keras.ops.convert_to_numpy(layer(images))
    assert out.shape == (2, 8, 12, 3)
    np.testing.assert_array_equal(out[..., :2], images)
    np.testing.assert_allclose(out[..., 2], np.sqrt(np.maximum(images[..., 1], 0)), rtol=1e-6)
    for boundary in ("periodic", "zero"):
        extract = ExtractTiles(4, 3, boundary)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(extract(images))),
            keras.ops.convert_to_numpy(extract(out)),
            rtol=1e-6,
        )
    config = layer.get_config()
    assert AppendSqrt.from_config(config).channel == 1


def test_append_sqrt_rejects_a_bad_channel():
    with pytest.raises(ValueError, match="channel"):
        AppendSqrt(channel=-1)
    with pytest.raises(ValueError, match="must index the input's 2 channels"):
        AppendSqrt(channel=2)(np.zeros((1, 4, 4, 2), "float32"))


def test_channel_permutation_reorders_channels_and_round_trips(tmp_path):
    images = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    model = keras.Sequential([keras.Input((4, 4, 3)), ChannelPermutation((2, 0, 1))])
    np.testing.assert_array_equal(model(images), images[..., [2, 0, 1]])
    model.save(tmp_path / "permute.keras")
    loaded = keras.saving.load_model(tmp_path / "permute.keras")
    np.testing.assert_array_equal(loaded(images), images[..., [2, 0, 1]])


@pytest.mark.parametrize("order", [(), (0, 0), (1, 2), (0, 1.0), "10", (True, False)])
def test_channel_permutation_rejects_what_is_not_a_permutation(order):
    with pytest.raises(ValueError, match="must be a permutation"):
        ChannelPermutation(order)


def test_channel_permutation_rejects_images_with_other_channels():
    with pytest.raises(ValueError, match="must permute the input's 3 channels"):
        ChannelPermutation((1, 0))(np.zeros((1, 4, 4, 3), "float32"))
