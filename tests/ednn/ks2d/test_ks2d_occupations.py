import numpy as np
import pytest

from ednn.ks2d.occupations import occupations


def test_closed_shells_get_integer_occupations():
    occ, entropy = occupations(np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0]), 6)
    assert occ.tolist() == [2, 2, 2, 0, 0, 0] and entropy == 0.0


def test_an_open_degenerate_shell_is_shared_equally():
    occ, _ = occupations(np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0]), 8)
    assert np.allclose(occ, [2, 2, 2, 2 / 3, 2 / 3, 2 / 3, 0])


def test_fermi_smearing_conserves_the_electron_count():
    eps = np.array([-1.0, -0.5, -0.49, 0.3, 1.0])
    occ, entropy = occupations(eps, 4, smearing=0.01)
    assert occ.sum() == pytest.approx(4.0, abs=1e-10)
    assert 0 < occ[2] < 2 and entropy < 0


def test_a_shell_cut_by_the_computed_levels_is_an_error():
    with pytest.raises(ValueError, match="compute more orbitals"):
        occupations(np.array([1.0, 2.0, 2.0]), 4)


def test_too_few_levels_is_an_error():
    with pytest.raises(ValueError, match="Received"):
        occupations(np.array([1.0, 2.0]), 6)
