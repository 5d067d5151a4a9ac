"""Tests of the EDNN model: extensivity, tile networks, saving and loading."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import ednn
from ednn.model import (
    EDNN,
    build_ednn,
    channel_symmetric,
    default_tile_network,
    load_ednn,
    predict_image,
)

# Tiles of 4 + 2*3 = 10 pixels; a tiny tile network keeps the tests fast.
FOCUS = 4
CONTEXT = 3
SMALL_NET = {"conv_layers": [(4, 3, 2, 1), (4, 3, 1, 1)], "dense_units": [8]}
METADATA = {
    "raster": {"species": ["Mo", "S"], "spacing": 0.2, "sigma": 0.4, "height_channel": False},
    "reference_energies": {"Mo": -1.5, "S": -0.25},
    "provenance": {"dataset": "unit-test"},
}


def small_ednn(n_targets=None, **kwargs):
    keras.utils.set_random_seed(0)
    return build_ednn(FOCUS, CONTEXT, n_channels=2, n_targets=n_targets, **SMALL_NET, **kwargs)


def random_image(shape=(8, 12, 2), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def user_tile_network(tile_shape=(10, 10, 2), n_targets=1):
    inputs = keras.Input(tile_shape)
    x = keras.layers.Conv2D(3, 3, activation="tanh")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n_targets)(x), name="user_net")


def test_default_tile_network_has_original_architecture():
    net = default_tile_network(32, n_channels=3)
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == (
        [(64, (3, 3), (2, 2))] * 2
        + [(16, (4, 4), (1, 1))] * 6
        + [(64, (3, 3), (2, 2))]
        + [(32, (3, 3), (1, 1))] * 4
    )
    assert [layer.units for layer in net.layers if isinstance(layer, keras.layers.Dense)] == [
        1024,
        1,
    ]
    assert net.input_shape == (None, 32, 32, 3)
    assert net.output_shape == (None, 1)


def test_zero_output_initializer_starts_every_tile_at_zero_energy():
    network = default_tile_network(
        10, 2, conv_layers=[(4, 3, 2, 1)], dense_units=[8], output_initializer="zeros"
    )
    tiles = np.random.default_rng(0).random((5, 10, 10, 2)).astype("float32")
    np.testing.assert_array_equal(np.asarray(network(tiles)), 0.0)
    hidden = network.get_layer("dense0").kernel.numpy()
    assert np.std(hidden) > 0.1  # He-normal hidden layers, not zeros


def test_default_tile_network_valid_padding_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        default_tile_network(8, n_channels=1, padding="valid")


def test_periodic_2x2_supercell_gives_4x_output():
    model = small_ednn()
    image = random_image()
    single = model(image[None])
    supercell = model(np.tile(image, (2, 2, 1))[None])
    np.testing.assert_allclose(supercell, 4 * single, rtol=1e-5, atol=1e-6)


def test_each_target_of_multi_target_head_scales_with_supercell():
    model = small_ednn(n_targets=3)
    image = random_image()
    single = model(image[None]).numpy()
    supercell = model(np.tile(image, (3, 2, 1))[None]).numpy()
    assert single.shape == (1, 3)
    np.testing.assert_allclose(supercell, 6 * single, rtol=1e-5, atol=1e-6)


def test_tile_outputs_sum_to_model_output():
    model = small_ednn(n_targets=2)
    images = np.stack([random_image(seed=1), random_image(seed=2)])
    tile_map = model.tile_outputs(images)
    assert tile_map.shape == (2, 2, 3, 2)
    np.testing.assert_allclose(tf.reduce_sum(tile_map, axis=[1, 2]), model(images), rtol=1e-6)


def test_energy_scale_and_shift_apply_to_every_tile():
    raw = small_ednn()
    scaled = small_ednn(energy_scale=2.5, energy_shift_per_tile=-0.75)
    scaled.tile_network.set_weights(raw.tile_network.get_weights())
    image = random_image()[None]
    n_tiles = (8 // FOCUS) * (12 // FOCUS)
    np.testing.assert_allclose(scaled(image), 2.5 * raw(image) - 0.75 * n_tiles, rtol=1e-5)


def test_call_on_tiles_with_segment_ids_matches_per_image_calls():
    model = small_ednn(n_targets=2)
    images = [random_image((8, 12, 2), seed=3), random_image((4, 16, 2), seed=4)]
    tiles = [model.extract_tiles(image[None]) for image in images]
    segment_ids = np.repeat([0, 1], [len(t) for t in tiles])
    sums = model.call_on_tiles(tf.concat(tiles, axis=0), segment_ids, 2)
    expected = np.concatenate([model(image[None]) for image in images])
    np.testing.assert_allclose(sums, expected, rtol=1e-5)


def test_predict_image_handles_batch_axis_and_tile_batches():
    model = small_ednn(n_targets=2)
    images = np.stack([random_image(seed=5), random_image(seed=6)]).astype(np.float64)
    batch = predict_image(model, images)
    assert batch.shape == (2, 2)
    assert batch.dtype == np.float32
    single = predict_image(model, images[1])
    assert single.shape == (2,)
    np.testing.assert_allclose(single, batch[1], rtol=1e-6)
    np.testing.assert_allclose(predict_image(model, images, tile_batch_size=5), batch, rtol=1e-5)


def test_image_size_not_multiple_of_focus_raises_naming_sizes():
    model = small_ednn()
    with pytest.raises(ValueError, match=r"image size 10 along axis 1\. Received: focus=\(4, 4\)"):
        model(np.zeros((1, 8, 10, 2), np.float32))


def test_wrong_channel_count_raises():
    model = small_ednn()
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, height, width, 2\)"):
        model(np.zeros((1, 8, 8, 3), np.float32))


def test_metadata_gets_defaults_and_must_be_json_serializable():
    model = small_ednn(metadata={**METADATA, "sigma_scale": np.float32(0.5)})
    metadata = model.metadata
    assert metadata["units"] == "eV"
    assert metadata["target_names"] == ["energy"]
    assert metadata["ednn_version"] == ednn.__version__
    assert metadata["raster"] == METADATA["raster"]
    assert metadata["sigma_scale"] == pytest.approx(0.5)
    with pytest.raises(TypeError, match="JSON-serializable"):
        small_ednn(metadata={"bad": object()})
    with pytest.raises(ValueError, match="target_names"):
        small_ednn(n_targets=2, metadata={"target_names": ["energy"]})


def test_save_load_round_trip_keeps_predictions_and_metadata(tmp_path):
    model = small_ednn(
        n_targets=2,
        boundary="zero",
        metadata={**METADATA, "target_names": ["energy", "dipole"]},
        energy_scale=[2.0, 0.5],
        energy_shift_per_tile=0.25,
    )
    images = np.stack([random_image(seed=7), random_image(seed=8)])
    expected = model(images)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, EDNN)
    np.testing.assert_array_equal(restored(images), expected)
    assert restored.metadata == model.metadata
    assert (restored.focus, restored.context, restored.boundary) == ((4, 4), (3, 3), "zero")
    assert (restored.energy_scale, restored.energy_shift_per_tile) == ((2.0, 0.5), 0.25)
    np.testing.assert_array_equal(restored(random_image((4, 4, 2))[None]).shape, (1, 2))


def test_saved_model_loads_in_fresh_process_with_plain_keras(tmp_path):
    model = small_ednn(metadata=METADATA)
    image = random_image()
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(
        f"""
        import json
        import numpy as np
        import ednn
        import keras
        model = keras.saving.load_model({str(path)!r})
        image = np.load({str(tmp_path / "image.npy")!r})
        print(json.dumps({{
            "class": type(model).__name__,
            "prediction": np.asarray(model(image[None])).tolist(),
            "metadata": model.metadata,
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["class"] == "EDNN"
    np.testing.assert_array_equal(np.float32(loaded["prediction"]), model(image[None]))
    assert loaded["metadata"] == model.metadata


def test_load_ednn_rejects_models_that_are_not_ednn(tmp_path):
    path = tmp_path / "plain.keras"
    user_tile_network().save(path)
    with pytest.raises(TypeError, match="EDNN"):
        load_ednn(path)
    model_path = tmp_path / "ednn.keras"
    small_ednn().save(model_path)
    assert isinstance(load_ednn(model_path), EDNN)


def test_user_keras_model_as_tile_network():
    net = user_tile_network(n_targets=2)
    model = build_ednn(FOCUS, CONTEXT, tile_network=net)
    assert (model.n_channels, model.n_targets) == (2, 2)
    image = random_image()
    expected = net(model.extract_tiles(image[None])).numpy().sum(axis=0)
    np.testing.assert_allclose(predict_image(model, image), expected, rtol=1e-5)


def test_tile_network_from_keras_file(tmp_path):
    net = user_tile_network()
    path = tmp_path / "tile_net.keras"
    net.save(path)
    model = build_ednn(FOCUS, CONTEXT, tile_network=str(path))
    image = random_image()[None]
    np.testing.assert_allclose(
        model(image), tf.reduce_sum(net(model.extract_tiles(image)), axis=0, keepdims=True)
    )


def test_trained_ednn_gives_its_tile_network_with_weights_for_fine_tuning(tmp_path):
    pretrained = build_ednn(FOCUS, CONTEXT, tile_network=user_tile_network(), energy_scale=2.0)
    path = tmp_path / "pretrained.keras"
    pretrained.save(path)
    image = random_image()[None]
    before = pretrained(image).numpy()
    for source in (str(path), pretrained):
        model = build_ednn(FOCUS, CONTEXT, tile_network=source, energy_scale=3.0)
        # Same tile network (weights included), the new model's own energy scale.
        np.testing.assert_allclose(model(image), 1.5 * before, rtol=1e-5)
        # A copy: changing the new model's weights leaves the pre-trained model as it was.
        model.tile_network.set_weights([w + 1.0 for w in model.tile_network.get_weights()])
        np.testing.assert_array_equal(pretrained(image).numpy(), before)


def test_tile_network_with_wrong_input_shape_raises():
    with pytest.raises(ValueError, match=r"tiles of shape \(10, 10, 2\).*Received.*\(12, 12, 2\)"):
        build_ednn(FOCUS, CONTEXT, n_channels=2, tile_network=user_tile_network((12, 12, 2)))


def test_tile_network_with_wrong_output_shape_raises():
    inputs = keras.Input((10, 10, 2))
    net = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match=r"\(batch, n_targets\)"):
        build_ednn(FOCUS, CONTEXT, tile_network=net)
    with pytest.raises(ValueError, match="3 values per tile"):
        build_ednn(FOCUS, CONTEXT, n_targets=3, tile_network=user_tile_network())


def test_model_trains_with_keras_fit():
    model = small_ednn()
    images = np.stack([random_image(seed=s) for s in range(4)])
    energies = images.sum(axis=(1, 2, 3))[:, None]
    before = [w.copy() for w in model.tile_network.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(images, energies, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = model.tile_network.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_channel_symmetric_ednn_is_invariant_to_the_swap_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    plain = default_tile_network(FOCUS + 2 * CONTEXT, 2, 3, **SMALL_NET)
    symmetric = channel_symmetric(plain, [(0, 1), (1, 0)])
    model = build_ednn(FOCUS, CONTEXT, n_channels=2, tile_network=symmetric)
    image = random_image((2, 8, 12, 2))
    swapped = image[..., ::-1]
    np.testing.assert_allclose(model.predict(swapped, verbose=0), model(image), rtol=1e-5)
    # It is the mean of the network over the two orders, not the network itself.
    alone = build_ednn(FOCUS, CONTEXT, n_channels=2, tile_network=plain)
    np.testing.assert_allclose(
        model(image), (alone(image) + alone(swapped)) / 2, rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(alone(image), alone(swapped), rtol=1e-3)
    model.save(tmp_path / "symmetric.keras")
    loaded = keras.saving.load_model(tmp_path / "symmetric.keras")
    np.testing.assert_allclose(loaded(image), model(image), rtol=1e-6)
    assert len(loaded.trainable_weights) == len(plain.trainable_weights)


@pytest.mark.parametrize(
    ("permutations", "match"),
    [
        ([(1, 0)], "must hold the identity"),
        ([(0, 1, 2), (1, 0)], "must hold the identity and permute the same channels"),
        ([(0, 1, 2), (1, 2, 0)], "closed under composition"),
        ([(0, 1, 2), (2, 1, 0)], "permute 3 channels; the tile network takes 2"),
        ([(0, 2)], "must be a permutation"),
    ],
)
def test_channel_symmetric_rejects_what_is_not_a_group_of_the_channels(permutations, match):
    plain = default_tile_network(FOCUS + 2 * CONTEXT, 2, 1, **SMALL_NET)
    with pytest.raises(ValueError, match=match):
        channel_symmetric(plain, permutations)


def test_predict_with_other_channels_after_a_first_predict_names_the_shape():
    # The second call retraces with the channels unknown; the check runs before the graph.
    model = small_ednn()
    model.predict(random_image((1, 8, 12, 2)), verbose=0)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, height, width, 2\)"):
        model.predict(random_image((1, 8, 12, 3)), verbose=0)
    with pytest.raises(ValueError, match="expected images of shape"):
        model.evaluate(random_image((1, 8, 12, 1)), np.zeros((1, 1)), verbose=0)
