import numpy as np
import pytest

from ednn.ks2d.grid import Grid
from ednn.ks2d.potentials import (
    harmonic_potential,
    potential_from_params,
    random_blobs,
    random_harmonic,
    sample_potential,
)


def test_harmonic_potential_is_zero_at_its_centre():
    grid = Grid(16, 8.0)
    v = harmonic_potential(grid, (1.0, 0.5), centre=(1.0, -2.0))
    assert v[10, 4] == 0.0  # x = 1, y = -2
    assert v[12, 4] == pytest.approx(0.5 * 1.0**2 * 1.0**2)


def test_random_harmonic_draws_within_its_ranges_and_is_seeded():
    grid = Grid(16, 8.0)
    v1, p1 = random_harmonic(grid, 7, omega=(0.4, 0.6), centre=(-1.0, 1.0))
    v2, p2 = random_harmonic(grid, 7, omega=(0.4, 0.6), centre=(-1.0, 1.0))
    assert p1 == p2 and np.array_equal(v1, v2)
    assert all(0.4 <= w <= 0.6 for w in p1["omega"]) and all(abs(c) <= 1 for c in p1["centre"])


def test_blob_well_is_seeded_bounded_and_vanishes_at_the_edges():
    grid = Grid(64, 24.0)
    v, params = random_blobs(grid, 3)
    again, _ = random_blobs(grid, 3)
    assert np.array_equal(v, again)
    assert v.max() <= 0 and v.min() == pytest.approx(-params["depth"], rel=1e-3)
    assert np.abs(v[0]).max() < 1e-5 * params["depth"]  # 3σ beyond the masked square


def test_blob_well_is_the_same_function_on_every_grid():
    coarse, fine = Grid(32, 24.0), Grid(64, 24.0)
    v_coarse, params = random_blobs(coarse, 11)
    v_fine = potential_from_params(fine, params)
    assert np.allclose(v_fine[::2, ::2], v_coarse, atol=1e-12)


def test_parameters_rebuild_the_potential():
    grid = Grid(32, 24.0)
    for kind in ("sho", "blobs"):
        v, params = sample_potential(kind, grid, 5)
        assert np.allclose(potential_from_params(grid, params), v)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="Received: kind='gauss'"):
        sample_potential("gauss", Grid(16, 8.0), 0)
