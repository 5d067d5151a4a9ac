"""Models for the 2D Kohn–Sham data: the tiled DCIGN (potential -> density) and the
multi-output EDNN (image -> [T_s, E_ext, E_H, E_x, E_c, E_total]). Hartree atomic units."""

import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
import tiling
from ednn.dcign import DensityDCIGN, IntegratedDensityError, StitchTiles, density_errors
from ednn.layers import ExtractTiles
from ednn.model import build_ednn

PIXEL_AREA = 0.25  # bohr², h = 0.5 bohr


def _potentials(count: int = 2, n: int = 32) -> np.ndarray:
    x = (np.arange(n) - n // 2) * 0.5
    (xx, yy) = np.meshgrid(x, x, indexing="ij")
    omegas = np.linspace(0.4, 0.9, count)
    return np.stack([0.5 * w**2 * (xx**2 + yy**2) for w in omegas])[..., None].astype("float32")


def _dcign(**kwargs) -> DensityDCIGN:
    options = {"focus": 8, "context": 4, "pixel_area": PIXEL_AREA, "filters": (4, 8)}
    return DensityDCIGN(**{**options, **kwargs})


def test_stitch_tiles_inverts_extract_tiles_focus():
    images = np.random.default_rng(0).normal(size=(2, 16, 24, 3)).astype("float32")
    extract = ExtractTiles(8, 4, "zero")
    tiles = extract(images)
    focus = tiles[:, 4:12, 4:12, :]
    stitched = StitchTiles(8)(focus, extract.grid_shape(images))
    np.testing.assert_array_equal(np.asarray(stitched), images)


def test_stitch_tiles_matches_numpy_tiling():
    image = np.random.default_rng(1).normal(size=(16, 24, 2))
    tiles = tiling.extract_tiles(image, 8, 0, boundary="zero")
    stitched = StitchTiles(8)(tiles.reshape(-1, 8, 8, 2).astype("float32"), np.array([2, 3]))
    np.testing.assert_allclose(np.asarray(stitched)[0], image, rtol=1e-6)


def test_dcign_density_is_positive_and_integrates_to_n_electrons():
    model = _dcign()
    n_electrons = np.array([2.0, 6.0], "float32")
    density = np.asarray(model((_potentials(), n_electrons)))
    assert density.shape == (2, 32, 32, 1)
    assert density.min() > 0
    np.testing.assert_allclose(density.sum(axis=(1, 2, 3)) * PIXEL_AREA, n_electrons, rtol=1e-5)


def test_dcign_density_shape_depends_on_n_with_electron_channel():
    v = np.repeat(_potentials(1), 2, axis=0)
    counts = np.array([2.0, 8.0], "float32")
    plain = np.asarray(_dcign()((v, counts)))
    # Without the channel N only rescales: equal shapes, ratio 4.
    np.testing.assert_allclose(plain[1] / plain[0], 4.0, rtol=1e-5)
    with_channel = np.asarray(_dcign(electron_scale=0.125)((v, counts)))
    np.testing.assert_allclose(with_channel.sum(axis=(1, 2, 3)) * PIXEL_AREA, counts, rtol=1e-5)
    assert not np.allclose(with_channel[1] / with_channel[0], 4.0, rtol=1e-3)


def test_dcign_runs_on_other_image_sizes():
    model = _dcign()
    density = np.asarray(model((_potentials(1, 48)[:, :, :40], np.array([4.0]))))
    assert density.shape == (1, 48, 40, 1)
    np.testing.assert_allclose(density.sum() * PIXEL_AREA, 4.0, rtol=1e-5)


def test_dcign_is_local_to_the_tile_before_normalisation():
    # A change of the potential beyond a tile's context leaves that tile's raw output (and
    # so the density ratio between its pixels) unchanged.
    model = _dcign()
    v = _potentials(1)
    changed = v.copy()
    changed[:, 24:, 24:] += 5.0  # far from focus (0, 0): rows/cols 0..8 + context 4 = 12
    (a, b) = (np.asarray(model((x, np.array([2.0])))) for x in (v, changed))
    ratio_a = a[0, :8, :8] / a[0, 0, 0]
    ratio_b = b[0, :8, :8] / b[0, 0, 0]
    np.testing.assert_allclose(ratio_a, ratio_b, rtol=1e-5)


def test_dcign_rejects_focus_not_dividing_the_tile_levels():
    with pytest.raises(ValueError, match="tile_shape"):
        _dcign(focus=6, context=4, filters=(4, 8, 16))  # tile 14 not divisible by 4


def test_dcign_saves_and_loads_as_keras_file(tmp_path):
    model = _dcign(input_scale=0.1, electron_scale=0.125)
    inputs = (_potentials(), np.array([2.0, 4.0], "float32"))
    expected = np.asarray(model(inputs))
    path = tmp_path / "dcign.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DensityDCIGN)
    assert (loaded.input_scale, loaded.electron_scale) == pytest.approx((0.1, 0.125))
    np.testing.assert_allclose(np.asarray(loaded(inputs)), expected, rtol=1e-6)


def test_dcign_fits_a_batch():
    model = _dcign()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="mae", metrics=[IntegratedDensityError()]
    )
    v = _potentials(4)
    n_electrons = np.full(4, 2.0, "float32")
    target = np.exp(-v / 2.0)
    target *= 2.0 / (target.sum(axis=(1, 2, 3), keepdims=True) * PIXEL_AREA)
    before = model.evaluate((v, n_electrons), target, verbose=0, return_dict=True)
    model.fit((v, n_electrons), target, epochs=15, batch_size=4, verbose=0)
    after = model.evaluate((v, n_electrons), target, verbose=0, return_dict=True)
    assert after["integrated_density_error"] < before["integrated_density_error"]


def test_integrated_density_error_identities():
    rng = np.random.default_rng(2)
    true = rng.uniform(0.1, 1.0, (3, 8, 8, 1))
    assert density_errors(true, true)["integrated"] == 0.0
    # Twice the density: ∫|Δn| = ∫n, so ∫|Δn| / N = 1.
    errors = density_errors(true, 2 * true)
    np.testing.assert_allclose(errors["integrated_per_image"], 1.0)
    metric = IntegratedDensityError()
    metric.update_state(true.astype("float32"), 2 * true.astype("float32"))
    assert float(metric.result()) == pytest.approx(1.0, rel=1e-6)


def test_multi_output_ednn_predicts_six_energies_and_is_additive_in_vacuum():
    model = build_ednn(
        8,
        4,
        n_channels=1,
        n_targets=6,
        boundary="zero",
        conv_layers=((4, 3, 1, 1),),
        dense_units=(8,),
        metadata={
            "units": "Ha",
            "target_names": ["t_s", "e_ext", "e_hartree", "e_x", "e_c", "e_total"],
        },
    )
    density = np.zeros((1, 32, 32, 1), "float32")
    density[0, 4:12, 4:12] = 0.1
    out = np.asarray(model(density))
    assert out.shape == (1, 6)
    # Two copies of an isolated system, farther apart than a tile, give twice the outputs
    # minus the empty-tile offset: E(A+B) - E(0) = (E(A) - E(0)) + (E(B) - E(0)).
    empty = np.asarray(model(np.zeros_like(density)))
    both = density.copy()
    both[0, 20:28, 20:28] = 0.1
    other = np.zeros_like(density)
    other[0, 20:28, 20:28] = 0.1
    np.testing.assert_allclose(
        np.asarray(model(both)) - empty,
        (out - empty) + (np.asarray(model(other)) - empty),
        rtol=1e-4,
        atol=1e-5,
    )
