"""Tests of fused evaluation: one pass over the padded image equals plain tiling."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ednn.fused import (
    COARSE_ARCHITECTURE,
    DEFAULT_ARCHITECTURE,
    FusedTileNetwork,
    can_fuse,
    pad_context,
)
from ednn.model import EDNN, build_ednn

# Tiles of 8 + 2*6 = 20 pixels; trunk stride 2 divides the focus.
FOCUS = 8
CONTEXT = 6
VALID_NET = {"conv_layers": [(4, 3, 2, 1), (4, 3, 1, 1)], "dense_units": [8], "padding": "valid"}


def models(n_targets=1, boundary="periodic", focus=FOCUS, context=CONTEXT, **kwargs):
    """A tiled and a fused EDNN sharing one tile network."""
    keras.utils.set_random_seed(0)
    tiled = build_ednn(
        focus, context, n_channels=2, n_targets=n_targets, boundary=boundary,
        evaluation="tiles", **VALID_NET, **kwargs,
    )  # fmt: skip
    fused = build_ednn(
        focus, context, n_targets=n_targets, boundary=boundary, evaluation="fused",
        tile_network=tiled.tile_network, **kwargs,
    )  # fmt: skip
    return tiled, fused


def random_images(shape=(2, 24, 40, 2), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def assert_relative(actual, expected, tol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= tol * scale, (actual, expected)


def test_fused_energy_and_tile_map_equal_tiling_periodic():
    tiled, fused = models()
    images = random_images()
    assert fused.fused_network is not None
    assert_relative(fused(images), tiled(images))
    assert_relative(fused.tile_outputs(images), tiled.tile_outputs(images))


def test_fused_equals_tiling_with_zero_boundary():
    tiled, fused = models(boundary="zero")
    images = random_images(seed=1)
    assert_relative(fused(images), tiled(images))
    assert_relative(fused.tile_outputs(images), tiled.tile_outputs(images))


def test_fused_multi_target_applies_energy_scale_and_shift_per_region():
    tiled, fused = models(
        n_targets=3, energy_scale=[2.0, 0.5, 1.0], energy_shift_per_tile=[0.1, 0.0, -3.0]
    )
    images = random_images(seed=2)
    assert fused(images).shape == (2, 3)
    assert_relative(fused(images), tiled(images))
    assert_relative(fused.tile_outputs(images), tiled.tile_outputs(images))


def test_fused_context_wider_than_image_wraps_like_tiling():
    tiled, fused = models(focus=(4, 8), context=(10, 6))
    images = random_images((1, 8, 16, 2), seed=3)
    assert_relative(fused.tile_outputs(images), tiled.tile_outputs(images))


def test_fused_gradients_equal_tiling_gradients():
    tiled, fused = models(n_targets=2)
    images = tf.constant(random_images(seed=4))
    gradients = []
    for model in (tiled, fused):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True) ** 2)
        gradients.append(tape.gradient(loss, model.trainable_variables))
    assert [v.path for v in tiled.trainable_variables] == [
        v.path for v in fused.trainable_variables
    ]
    for g_tiled, g_fused in zip(*gradients, strict=True):
        assert g_fused is not None
        assert_relative(g_fused, g_tiled, tol=1e-4)


def test_fused_uses_the_tile_network_variables_not_copies():
    _, fused = models()
    images = random_images(seed=5)
    before = fused(images).numpy()
    bias = fused.tile_network.layers[-1].bias
    bias.assign(bias + 1.0)
    n_regions = (24 // FOCUS) * (40 // FOCUS)
    np.testing.assert_allclose(fused(images).numpy(), before + n_regions, rtol=1e-5)


def test_fused_works_inside_tf_function_with_unknown_sizes():
    tiled, fused = models()
    run = tf.function(fused.call, input_signature=[tf.TensorSpec([None, None, None, 2])])
    for shape in ((1, 16, 16, 2), (2, 24, 40, 2)):
        images = random_images(shape, seed=6)
        assert_relative(run(images), tiled(images))


def test_fused_image_size_not_multiple_of_focus_raises_naming_sizes():
    _, fused = models()
    with pytest.raises(ValueError, match="must divide the image size 20"):
        fused(random_images((1, 20, 16, 2)))


def test_global_pooling_and_valid_max_pooling_networks_fuse_exactly():
    inputs = keras.Input((20, 20, 2))
    x = keras.layers.Conv2D(3, 3, activation="tanh")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, activation="relu")(x)
    net = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert can_fuse(net, FOCUS, CONTEXT)[0]
    tiled = EDNN(net, FOCUS, CONTEXT, evaluation="tiles")
    fused = EDNN(net, FOCUS, CONTEXT, evaluation="fused")
    images = random_images(seed=7)
    assert_relative(fused.tile_outputs(images), tiled.tile_outputs(images))


def test_periodic_pass_without_halo_equals_padded_pass_and_tiling():
    # Dilated convolution, an overlapping pooling (kernel 3 > stride 2), a strided layer after
    # it and a context that is neither a multiple of the focus nor of the stride: the strided
    # prefix reads one input halo, the head wraps its own input.
    inputs = keras.Input((FOCUS + 2 * 7, FOCUS + 2 * 7, 2))
    x = keras.layers.Conv2D(3, 3, dilation_rate=2, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(pool_size=3, strides=2)(x)
    x = keras.layers.Conv2D(4, 2, strides=2)(x)
    x = keras.layers.Flatten()(x)
    net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(5, activation="tanh")(x)))
    fused = FusedTileNetwork(net, FOCUS, 7)
    images = random_images((2, 16, 24, 2), seed=8)
    padded = fused.on_padded(pad_context(images, 7)).numpy()
    np.testing.assert_allclose(fused.on_periodic(images).numpy(), padded, rtol=1e-6, atol=1e-6)
    tiled = EDNN(net, FOCUS, 7, evaluation="tiles")
    assert_relative(fused(images), tiled.tile_outputs(images))  # scale 1, shift 0


def test_same_padding_network_reports_reason_and_falls_back_to_tiles():
    keras.utils.set_random_seed(0)
    auto = build_ednn(FOCUS, CONTEXT, n_channels=2, conv_layers=[(4, 3, 2, 1)], dense_units=[8])
    (ok, reason) = can_fuse(auto.tile_network, FOCUS, CONTEXT)
    assert not ok
    assert 'padding="same"' in reason and "conv0_0" in reason
    assert auto.fused_network is None
    tiled = EDNN(auto.tile_network, FOCUS, CONTEXT, evaluation="tiles")
    images = random_images(seed=8)
    np.testing.assert_array_equal(auto(images), tiled(images))
    with pytest.raises(ValueError, match='padding="same"'):
        EDNN(auto.tile_network, FOCUS, CONTEXT, evaluation="fused")


def test_stride_that_does_not_divide_focus_is_not_fusable():
    keras.utils.set_random_seed(0)
    net = build_ednn(
        6, 4, n_channels=2, conv_layers=[(4, 3, 4, 1)], dense_units=[], padding="valid"
    ).tile_network
    (ok, reason) = can_fuse(net, 6, 4)
    assert not ok
    assert "total stride (4, 4)" in reason and "divide the focus (6, 6)" in reason


def test_unknown_layer_is_named_in_the_reason():
    inputs = keras.Input((20, 20, 2))
    x = keras.layers.Conv2D(3, 3)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    net = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    (ok, reason) = can_fuse(net, FOCUS, CONTEXT)
    assert not ok and "'bn' (BatchNormalization)" in reason


def test_evaluation_setting_survives_config_round_trip():
    _, fused = models()
    clone = EDNN.from_config(fused.get_config())
    assert clone.evaluation == "fused" and clone.fused_network is not None
    with pytest.raises(ValueError, match="`evaluation` must be one of"):
        EDNN(fused.tile_network, FOCUS, CONTEXT, evaluation="fast")


@pytest.mark.parametrize(
    ("arch", "stride"),
    [(DEFAULT_ARCHITECTURE, 8), (COARSE_ARCHITECTURE, 4)],
    ids=["default", "coarse"],
)
def test_default_architecture_fuses_and_matches_tiling(arch, stride):
    keras.utils.set_random_seed(0)
    tiled = build_ednn(
        arch["focus"], arch["context"], n_channels=6, evaluation="tiles", **arch["tile_network"]
    )
    fused = FusedTileNetwork(tiled.tile_network, arch["focus"], arch["context"])
    assert fused.total_stride == (stride, stride) and fused.final_size == (5, 5)
    images = random_images((1, 32, 48, 6), seed=9)
    assert_relative(fused(images), tiled.tile_outputs(images))


def test_fused_model_trains_with_keras_fit():
    _, fused = models()
    images = random_images((4, 16, 24, 2), seed=10)
    targets = np.linspace(-1.0, 1.0, 4, dtype=np.float32)[:, None]
    fused.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = fused.fit(images, targets, epochs=3, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]
