import numpy as np
import pytest

from ednn.ks2d.grid import Grid


def test_spacing_and_coordinates_are_centred_on_the_origin():
    grid = Grid(64, 24.0)
    assert grid.h == pytest.approx(0.375)
    assert grid.x[0] == -12.0 and grid.x[32] == 0.0
    assert grid.coordinates()[0].shape == (64, 64)


def test_spectral_laplacian_of_a_gaussian_is_exact():
    grid = Grid(48, 16.0)
    x, y = grid.coordinates()
    r2 = x**2 + y**2
    f = np.exp(-r2 / 2)
    assert np.max(np.abs(grid.laplacian(f) - (r2 - 2) * f)) < 1e-10


def test_divergence_of_gradient_is_the_laplacian():
    grid = Grid(48, 16.0)
    x, y = grid.coordinates()
    f = np.exp(-((x - 1) ** 2) / 2 - (y + 0.5) ** 2 / 1.5)
    assert np.allclose(grid.divergence(grid.gradient(f)), grid.laplacian(f), atol=1e-10)


def test_integral_of_a_normalised_gaussian_is_one():
    grid = Grid(32, 16.0)
    x, y = grid.coordinates()
    assert grid.integrate(np.exp(-(x**2 + y**2) / 2) / (2 * np.pi)) == pytest.approx(1.0, abs=1e-12)


def test_kinetic_operator_batches_over_leading_axes():
    grid = Grid(16, 8.0)
    psi = np.random.default_rng(0).standard_normal((3, 16, 16))
    assert np.allclose(grid.kinetic(psi)[1], -0.5 * grid.laplacian(psi[1]))


@pytest.mark.parametrize(
    ("n", "box", "error"),
    [(15, 8.0, ValueError), (4, 8.0, ValueError), (16, -1.0, ValueError), (16.0, 8.0, TypeError)],
)
def test_bad_grid_arguments_are_rejected(n, box, error):
    with pytest.raises(error, match="Received"):
        Grid(n, box)
