"""The virial theorem of 2D Kohn–Sham electrons in a harmonic well (Hartree atomic units).

Under the uniform scaling ``n_γ(r) = γ² n(γ r)`` of a 2D density (``N`` electrons kept),
``T_s`` scales as ``γ²``, the Hartree and exchange energies as ``γ`` (the 2D LDA and B88
exchange and Fock exchange alike: ``|∇n| / n^{3/2}`` is scale invariant) and the energy in
a harmonic well ``½ ω_x² x² + ½ ω_y² y²`` as ``γ⁻²``. The self-consistent density minimises
the total energy along the scaling, so ``dE/dγ = 0`` at ``γ = 1``:

    2 T_s - 2 E_ext + E_H + E_x + dE_c/dγ = 0.

Correlation does not scale homogeneously; for the local ``LDA_C_2D_AMGB`` of every family,
``E_c[n_γ] = ∫ n(u) ε_c(γ² n(u)) d²u``, hence

    dE_c/dγ = 2 ∫ n² ε_c'(n) d²r = 2 ∫ n (v_c - ε_c) d²r,

with ``v_c = ∂(n ε_c)/∂n``. On a grid the relation holds to the discretisation (the SHO
datasets' labels: -0.4 ± 0.3 mHa on 48² points over 24 bohr) and the GGA's switch to the
LDA in the far tail (fixed densities, not scaled) breaks it slightly. It ties the five
terms together: an error of E_ext that the others do not share shows in the residual.
"""

from __future__ import annotations

import numpy as np

from ednn.ks2d.grid import Grid
from ednn.ks2d.xc import Functional


def correlation_scaling_derivative(
    density: np.ndarray, grid: Grid, functional: str | Functional = "lda"
) -> float:
    """``dE_c[n_γ]/dγ`` at ``γ = 1`` for the scaling ``n_γ(r) = γ² n(γ r)``, in Hartree.

    Parameters
    ----------
    density : ndarray, shape (n, n)
        Spin-unpolarised density in bohr⁻².
    grid : Grid
        The grid of ``density``.
    functional : {"lda", "gga", "hybrid"} or Functional
        The family; its correlation (``LDA_C_2D_AMGB`` in all three) is used.

    Returns
    -------
    float
        ``2 ∫ n (v_c - ε_c) d²r`` (Hartree); negative for ``LDA_C_2D_AMGB``.
    """
    from pyscf.dft import libxc  # deferred: pyscf is the optional `ks2d` extra

    functional = functional if isinstance(functional, Functional) else Functional(functional)
    code = functional.correlation
    if libxc.xc_type(code) != "LDA":
        raise ValueError(f"expected a local (LDA) correlation. Received: {code!r}")
    density = np.asarray(density, dtype=float)
    if density.shape != grid.shape:
        raise ValueError(
            f"`density` must have the grid shape {grid.shape}. Received: {density.shape}"
        )
    rho = np.maximum(density, 0.0)
    exc, vxc, _, _ = libxc.eval_xc(code, rho.ravel(), spin=0, deriv=1)
    slope = np.asarray(vxc[0]).reshape(rho.shape) - exc.reshape(rho.shape)  # n ε_c'(n)
    return float(2.0 * grid.integrate(rho * slope))


def virial_residual(
    t_s: np.ndarray | float,
    e_ext: np.ndarray | float,
    e_hartree: np.ndarray | float,
    e_x: np.ndarray | float,
    de_c_dgamma: np.ndarray | float,
) -> np.ndarray | float:
    """``2 T_s - 2 E_ext + E_H + E_x + dE_c/dγ`` (Hartree): zero at self-consistency.

    Holds for a harmonic external potential without a constant offset; arguments are
    energies in Hartree (scalars or arrays of samples, broadcast together).
    """
    return 2.0 * np.asarray(t_s) - 2.0 * np.asarray(e_ext) + e_hartree + e_x + de_c_dgamma
