import numpy as np
import pytest

from ednn.ks2d import harmonic_potential, solve
from ednn.ks2d.grid import Grid, apply_symmetry


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


def test_symmetry_images_form_the_square_group():
    field = np.random.default_rng(0).random((3, 8, 8))
    images = [apply_symmetry(field, e) for e in range(8)]
    np.testing.assert_array_equal(images[0], field)
    # Eight distinct images; each mirror is its own inverse; two transposes are the identity.
    assert len({image.tobytes() for image in images}) == 8
    for e in (1, 2, 3, 4):
        np.testing.assert_array_equal(apply_symmetry(images[e], e), field)
    # x -> -x keeps the grid: the point at -box/2 + i h goes to -box/2 + (n - i) h.
    grid = Grid(8, 4.0)
    x, _ = grid.coordinates()
    mirrored = apply_symmetry(x, 1)
    np.testing.assert_allclose(mirrored[1:], -x[1:])
    np.testing.assert_array_equal(mirrored[0], x[0])


@pytest.mark.parametrize("functional", ["lda", "hybrid"])
def test_solver_commutes_with_grid_symmetries(functional):
    grid = Grid(32, 20.0)
    v_ext = harmonic_potential(grid, (0.6, 0.9), (1.3, -0.8))
    reference = solve(v_ext, 4, grid, functional)
    for element in (1, 6):
        mapped = solve(apply_symmetry(v_ext, element), 4, grid, functional)
        assert abs(mapped.e_total - reference.e_total) < 1e-9
        np.testing.assert_allclose(mapped.eigenvalues, reference.eigenvalues, atol=1e-8)
        np.testing.assert_allclose(
            mapped.density, apply_symmetry(reference.density, element), atol=1e-8
        )


@pytest.mark.parametrize(
    ("field", "element", "match"),
    [(np.zeros((4, 6)), 0, "shape"), (np.zeros((4, 4)), 8, "0 to 7"), (np.zeros(4), 1, "shape")],
)
def test_apply_symmetry_rejects_bad_input(field, element, match):
    with pytest.raises(ValueError, match=match):
        apply_symmetry(field, element)
