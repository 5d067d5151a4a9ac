"""Pulay (DIIS) mixing of the density for the self-consistent field.

With input densities ``n_in^(i)`` and residuals ``R^(i) = n_out^(i) - n_in^(i)`` from the
last ``history`` iterations, the next input is

    n_in = Σ_i c_i (n_in^(i) + β R^(i)),   c = argmin ‖Σ_i c_i R^(i)‖²  s.t.  Σ_i c_i = 1,

with ``‖·‖`` the L² norm on the grid (Pulay, Chem. Phys. Lett. 73, 393 (1980); in the
density-mixing form of Kresse & Furthmüller, Phys. Rev. B 54, 11169 (1996)). The result
is clipped at zero and renormalised to ``N``: an extrapolated density can dip below zero
in the tails, where ``n^{1/2}`` in the LDA would be undefined.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ednn.ks2d import _validation as check


class PulayMixer:
    """Pulay/DIIS density mixer.

    Parameters
    ----------
    beta : float
        Fraction of the residual added to the input (linear-mixing weight), in (0, 1].
    history : int
        Number of past iterations used in the extrapolation.
    area_element : float
        ``h²`` in bohr², for L² norms and for the renormalisation.

    Example
    -------
    >>> mixer = PulayMixer(beta=0.5, history=6, area_element=0.25)
    """

    def __init__(self, beta: float = 0.5, history: int = 8, area_element: float = 1.0) -> None:
        self.beta = check.positive(beta, "beta")
        if self.beta > 1:
            raise ValueError(f"`beta` must lie in (0, 1]. Received: beta={beta!r}")
        self.history = check.integer(history, "history", minimum=1)
        self.area_element = check.positive(area_element, "area_element")
        self._inputs: deque[np.ndarray] = deque(maxlen=self.history)
        self._residuals: deque[np.ndarray] = deque(maxlen=self.history)

    def reset(self) -> None:
        """Forget the history (restart as linear mixing)."""
        self._inputs.clear()
        self._residuals.clear()

    def __call__(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        """Return the next input density from this iteration's input and output (bohr⁻²)."""
        n_electrons = float(np.sum(n_out)) * self.area_element
        self._inputs.append(n_in.copy())
        self._residuals.append(n_out - n_in)
        residuals = np.array([r.ravel() for r in self._residuals])
        m = len(residuals)
        overlap = residuals @ residuals.T * self.area_element
        # Bordered system for the constraint Σ c = 1; scaled for conditioning.
        scale = max(float(np.max(np.abs(np.diag(overlap)))), 1e-300)
        system = np.zeros((m + 1, m + 1))
        system[:m, :m] = overlap / scale
        system[:m, m] = system[m, :m] = 1.0
        rhs = np.zeros(m + 1)
        rhs[m] = 1.0
        try:
            coeff = np.linalg.solve(system, rhs)[:m]
            if not np.all(np.isfinite(coeff)):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            coeff = np.zeros(m)
            coeff[-1] = 1.0
        mixed = sum(
            c * (x + self.beta * r)
            for c, x, r in zip(coeff, self._inputs, self._residuals, strict=True)
        )
        mixed = np.maximum(mixed, 0.0)
        total = float(np.sum(mixed)) * self.area_element
        return mixed * (n_electrons / total) if total > 0 else n_out.copy()
