import numpy as np
import pytest

from ednn.ks2d.mixing import PulayMixer


def _fixed_point_iterations(mixer, n_in, target, response, steps):
    for step in range(steps):
        n_out = target + response @ (n_in - target)
        if np.abs(n_out - n_in).sum() < 1e-10:
            return step
        n_in = mixer(n_in, n_out)
    return steps


def test_pulay_beats_linear_mixing_on_a_linear_problem():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    # Charge-conserving response (1ᵀR = 0), as for a density; linear mixing crawls on it.
    project = np.eye(20) - np.ones((20, 20)) / 20
    response = project @ q @ np.diag(np.linspace(-3.0, 0.5, 20)) @ q.T @ project
    target = 1.0 + rng.random(20)
    start = np.full(20, target.mean())
    pulay = _fixed_point_iterations(PulayMixer(0.3, 20), start, target, response, 200)
    linear = _fixed_point_iterations(PulayMixer(0.3, 1), start, target, response, 200)
    assert pulay < 30 and linear > 100


def test_mixed_density_is_non_negative_with_the_output_charge():
    mixer = PulayMixer(beta=0.9, history=4, area_element=0.5)
    n_in = np.array([1.0, 0.0, 1.0, 2.0])
    n_out = np.array([0.0, 1.0, 3.0, 0.0])
    mixed = mixer(n_in, n_out)
    assert mixed.min() >= 0 and mixed.sum() * 0.5 == pytest.approx(n_out.sum() * 0.5)


def test_bad_mixing_weight_is_rejected():
    with pytest.raises(ValueError, match=r"Received: beta=1\.5"):
        PulayMixer(beta=1.5)
