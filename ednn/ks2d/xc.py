"""2D exchange–correlation functionals through libxc (via :func:`pyscf.dft.libxc.eval_xc`).

Three families, named as in Ryczko, Strubbe & Tamblyn (2019):

=========  ==========================================  ==================================
name       exchange                                    correlation
=========  ==========================================  ==================================
"lda"      ``LDA_X_2D`` (libxc 19)                     ``LDA_C_2D_AMGB`` (libxc 15)
"gga"      ``GGA_X_2D_B88`` (libxc 127)                ``LDA_C_2D_AMGB``
"hybrid"   ``α`` exact (Fock) + ``(1-α) LDA_X_2D``     ``LDA_C_2D_AMGB``
=========  ==========================================  ==================================

libxc conventions (checked against pyscf 2.14 / libxc 7): ``eval_xc`` returns the energy
per particle ``ε_xc(n)`` (Hartree), so ``E_xc = ∫ n ε_xc d²r``, and
``vxc = (vrho, vsigma, ...)`` with ``vrho = ∂(n ε)/∂n`` and ``vsigma = ∂(n ε)/∂σ``,
``σ = |∇n|²``. The 2D functionals take the density per area (bohr⁻²); for a GGA the
gradient rows are ``(∂n/∂x, ∂n/∂y, 0)``, so σ is the in-plane ``|∇n|²``. The GGA
potential is ``v = vrho - 2 ∇·(vsigma ∇n)``, with spectral derivatives.

The 2D Slater exchange of the uniform gas, which ``LDA_X_2D`` reproduces to machine
precision, is ``ε_x(n) = -(4/3) √(2/π) n^{1/2}``, i.e. ``e_x = n ε_x = -(4/3) √(2/π) n^{3/2}``
per area and ``v_x = -2 √(2/π) n^{1/2}`` (see :func:`gaussian_lda_exchange_energy`).

Spin polarisation: :meth:`Functional.local_terms` also takes the spin densities
``(n_↑, n_↓)`` as an array of shape ``(2, n, n)`` and returns one potential per spin.
LDA-type terms go to libxc with ``spin=1`` (input ``(n_↑, n_↓)``; ``vrho`` of shape
``(points, 2)``, ``exc`` per particle of the total density). A GGA exchange is evaluated by
the exact spin-scaling relation of exchange (Oliver & Perdew, Phys. Rev. A 20, 397 (1979)),

    E_x[n_↑, n_↓] = ½ E_x[2 n_↑] + ½ E_x[2 n_↓],   v_x^σ = v_x[2 n_σ],

which is what libxc's ``spin=1`` GGA exchange computes (input rows ``(n_σ, ∂_x n_σ,
∂_y n_σ, 0)`` per spin, ``vsigma`` columns ``(↑↑, ↑↓, ↓↓)``; checked in the tests), but
lets the tail switch below act on each spin channel's own density: a minority density
far below the majority's would otherwise reach the GGA where its ``∇n_σ / n_σ^{3/2}`` is
noise. For ``n_↑ = n_↓ = n/2`` every term equals the unpolarised one.

Exact exchange lives in :mod:`ednn.ks2d.exchange`; here a hybrid only scales the local
exchange by ``1 - α`` and reports ``α``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ednn.ks2d import _validation as check
from ednn.ks2d.grid import Grid

FUNCTIONALS = ("lda", "gga", "hybrid")

#: (exchange, correlation) libxc names of each family.
LIBXC_NAMES = {
    "lda": ("LDA_X_2D", "LDA_C_2D_AMGB"),
    "gga": ("GGA_X_2D_B88", "LDA_C_2D_AMGB"),
    "hybrid": ("LDA_X_2D", "LDA_C_2D_AMGB"),
}

#: The LDA that a GGA falls back to in the far tail of the density.
LDA_REFERENCE = {"GGA_X_2D_B88": "LDA_X_2D", "GGA_X_2D_B86": "LDA_X_2D", "GGA_X_2D_PBE": "LDA_X_2D"}

#: Default fraction of exact exchange of the "hybrid" family.
DEFAULT_HYBRID_FRACTION = 0.25

#: Densities (bohr⁻²) between which a GGA is switched over to its LDA, smoothly in log n.
#: In the tails B88's potential depends on ``|∇n| / n^{3/2}``, which the spectral
#: derivatives resolve worse and worse: with the window at (1e-9, 1e-7) the potential had
#: spikes of -20 to -80 Ha that trapped orbitals and the SCF diverged; at (1e-6, 1e-4) it
#: converged for SHO wells but stalled at ∫|Δn| ~ 5e-5 for 4 of 10 random SHO/blob samples
#: (64²); at (3e-6, 3e-4) all 10 converged in ~13 iterations at 64² and 96². The window is
#: part of the functional's definition (fixed, not relative to the system); it moves
#: E_total by ~2e-5 Ha against (1e-6, 1e-4) and by ~7e-5 Ha against (1e-5, 1e-3).
GGA_TAIL_WINDOW = (3e-6, 3e-4)


@dataclass(frozen=True)
class XCTerms:
    """Local exchange–correlation energies (Hartree) and potential on the grid.

    Attributes
    ----------
    e_x : float
        Local (semi-local) exchange energy, already scaled by ``1 - α`` for a hybrid.
    e_c : float
        Correlation energy.
    potential : ndarray, shape (n, n) or (2, n, n)
        ``v_xc = δ(E_x + E_c)/δn`` in Hartree (local parts only); one per spin,
        ``δE_xc/δn_σ``, for spin densities.
    """

    e_x: float
    e_c: float
    potential: np.ndarray


@dataclass(frozen=True)
class Functional:
    """A 2D exchange–correlation functional of the ``lda``, ``gga`` or ``hybrid`` family.

    Parameters
    ----------
    name : {"lda", "gga", "hybrid"}
        Family; see the module table.
    exact_exchange : float, optional
        Fraction ``α`` of Fock exchange (only for ``"hybrid"``; default 0.25).

    Example
    -------
    >>> Functional("hybrid").exact_exchange
    0.25
    >>> Functional("lda").exact_exchange
    0.0
    """

    name: str
    exact_exchange: float | None = None

    def __post_init__(self) -> None:
        check.choice(self.name, "name", FUNCTIONALS)
        alpha = self.exact_exchange
        if self.name == "hybrid":
            alpha = DEFAULT_HYBRID_FRACTION if alpha is None else alpha
            alpha = check.positive(alpha, "exact_exchange", allow_zero=True)
            if alpha > 1:
                raise ValueError(
                    f"`exact_exchange` must lie in [0, 1]. Received: exact_exchange={alpha!r}"
                )
        elif alpha not in (None, 0, 0.0):
            raise ValueError(
                "`exact_exchange` applies only to the 'hybrid' family. "
                f"Received: name={self.name!r}, exact_exchange={alpha!r}"
            )
        else:
            alpha = 0.0
        object.__setattr__(self, "exact_exchange", float(alpha))

    @property
    def exchange(self) -> str:
        """libxc name of the (semi-)local exchange."""
        return LIBXC_NAMES[self.name][0]

    @property
    def correlation(self) -> str:
        """libxc name of the correlation."""
        return LIBXC_NAMES[self.name][1]

    @property
    def is_gga(self) -> bool:
        """True if the local part depends on ``∇n``."""
        return self.name == "gga"

    @property
    def label(self) -> str:
        """A short description, e.g. ``"0.25*HF + 0.75*LDA_X_2D + LDA_C_2D_AMGB"``."""
        if self.name != "hybrid":
            return f"{self.exchange} + {self.correlation}"
        a = self.exact_exchange
        return f"{a:g}*HF + {1 - a:g}*{self.exchange} + {self.correlation}"

    def local_terms(self, density: np.ndarray, grid: Grid) -> XCTerms:
        """Evaluate the local exchange and correlation energies and potential.

        Parameters
        ----------
        density : ndarray, shape (n, n) or (2, n, n)
            Electron density in bohr⁻² (non-negative), or the spin densities
            ``(n_↑, n_↓)`` stacked on a leading axis of length 2.
        grid : Grid
            The grid of ``density``.

        Returns
        -------
        XCTerms
            ``E_x`` (scaled by ``1 - α``), ``E_c`` and ``v_xc`` in Hartree; ``v_xc`` has
            the shape of ``density`` (one potential per spin for spin densities).

        Example
        -------
        >>> grid = Grid(16, 8.0)
        >>> up = np.full(grid.shape, 0.01)
        >>> terms = Functional("lda").local_terms(np.stack([up, 0 * up]), grid)
        >>> terms.potential.shape
        (2, 16, 16)
        """
        if np.ndim(density) == 3:
            return self._spin_local_terms(np.asarray(density, dtype=float), grid)
        e_x, v_x = _libxc_energy_potential(self.exchange, density, grid)
        e_c, v_c = _libxc_energy_potential(self.correlation, density, grid)
        scale = 1.0 - self.exact_exchange
        return XCTerms(e_x=scale * e_x, e_c=e_c, potential=scale * v_x + v_c)

    def _spin_local_terms(self, spin_densities: np.ndarray, grid: Grid) -> XCTerms:
        if spin_densities.shape != (2, *grid.shape):
            raise ValueError(
                f"`density` must have the grid shape {grid.shape} or be spin densities of "
                f"shape (2, {grid.n}, {grid.n}). Received: density.shape={spin_densities.shape}"
            )
        if self.is_gga:  # spin scaling of exchange, see the module notes
            parts = [_libxc_energy_potential(self.exchange, 2.0 * n, grid) for n in spin_densities]
            e_x = 0.5 * (parts[0][0] + parts[1][0])
            v_x = np.stack([parts[0][1], parts[1][1]])
        else:
            e_x, v_x = _libxc_spin_energy_potential(self.exchange, spin_densities, grid)
        e_c, v_c = _libxc_spin_energy_potential(self.correlation, spin_densities, grid)
        scale = 1.0 - self.exact_exchange
        return XCTerms(e_x=scale * e_x, e_c=e_c, potential=scale * v_x + v_c)


def _libxc_spin_energy_potential(
    code: str, spin_densities: np.ndarray, grid: Grid
) -> tuple[float, np.ndarray]:
    # A spin-polarised LDA-type term: libxc with spin=1 on (n_↑, n_↓).
    from pyscf.dft import libxc

    if libxc.xc_type(code) != "LDA":
        raise ValueError(f"expected an LDA-type libxc functional. Received: code={code!r}")
    rho = np.maximum(spin_densities, 0.0)
    exc, vxc, _, _ = libxc.eval_xc(code, (rho[0].ravel(), rho[1].ravel()), spin=1, deriv=1)
    total = rho[0] + rho[1]
    energy = float(grid.integrate(total * exc.reshape(total.shape)))
    potential = np.asarray(vxc[0]).T.reshape(rho.shape)
    return energy, potential


def _libxc_energy_potential(code: str, density: np.ndarray, grid: Grid) -> tuple[float, np.ndarray]:
    from pyscf.dft import libxc  # deferred: pyscf is the optional `ks2d` extra

    rho = np.maximum(density, 0.0)
    if libxc.xc_type(code) != "GGA":
        exc, vxc, _, _ = libxc.eval_xc(code, rho.ravel(), spin=0, deriv=1)
        energy_density = rho * exc.reshape(rho.shape)
        return float(grid.integrate(energy_density)), np.asarray(vxc[0]).reshape(rho.shape)
    # e = e_LDA + m(n) (e_GGA - e_LDA): the GGA, switched off smoothly in the far tail,
    # where the spectral ∇n/n is rounding noise (see GGA_TAIL_WINDOW). The potential is
    # the exact functional derivative of this e, so the SCF stays variational.
    gradient = grid.gradient(rho)
    inp = np.zeros((4, rho.size))
    inp[0] = rho.ravel()
    inp[1] = gradient[0].ravel()
    inp[2] = gradient[1].ravel()
    exc, vxc, _, _ = libxc.eval_xc(code, inp, spin=0, deriv=1)
    exc_lda, vxc_lda, _, _ = libxc.eval_xc(LDA_REFERENCE[code], rho.ravel(), spin=0, deriv=1)
    e_gga = rho * exc.reshape(rho.shape)
    e_lda = rho * exc_lda.reshape(rho.shape)
    v_lda = np.asarray(vxc_lda[0]).reshape(rho.shape)
    mask, mask_slope = _tail_mask(rho)
    vrho = np.asarray(vxc[0]).reshape(rho.shape)
    vsigma = np.asarray(vxc[1]).reshape(rho.shape)
    energy_density = e_lda + mask * (e_gga - e_lda)
    potential = (
        v_lda
        + mask * (vrho - v_lda)
        + mask_slope * (e_gga - e_lda)
        - 2.0 * grid.divergence(mask * vsigma * gradient)
    )
    return float(grid.integrate(energy_density)), potential


def _tail_mask(density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Smoothstep in t = log(n) between the window's ends; returns m(n) and dm/dn.
    low, high = np.log(GGA_TAIL_WINDOW[0]), np.log(GGA_TAIL_WINDOW[1])
    safe = np.maximum(density, 1e-300)
    t = np.clip((np.log(safe) - low) / (high - low), 0.0, 1.0)
    slope = 6.0 * t * (1.0 - t) / ((high - low) * safe)
    return t * t * (3.0 - 2.0 * t), slope


def lda_exchange_energy_density(density: np.ndarray) -> np.ndarray:
    """Analytic 2D Slater exchange per area, ``e_x = -(4/3) √(2/π) n^{3/2}`` (Hartree bohr⁻²).

    Parameters
    ----------
    density : ndarray
        Spin-unpolarised density ``n`` in bohr⁻². A fully polarised density has
        ``√2`` times this exchange: ``e_x[n, 0] = ½ e_x[2n] = √2 e_x[n]``.

    Returns
    -------
    ndarray
        Same shape as ``density``.
    """
    return -(4.0 / 3.0) * np.sqrt(2.0 / np.pi) * np.maximum(density, 0.0) ** 1.5


def gaussian_lda_exchange_energy(n_electrons: float, width: float) -> float:
    """Exact 2D LDA exchange energy of the Gaussian density ``N/(2πs²) exp(-r²/2s²)``.

    ``E_x = -(4/3) √(2/π) ∫ n^{3/2} d²r`` with
    ``∫ n^{3/2} d²r = (N / 2πs²)^{3/2} ∫ exp(-3r²/4s²) 2πr dr = (N / 2πs²)^{3/2} 4πs²/3``,
    and ``√(2/π) (2π)^{-3/2} 4π = 2/π``, hence

        E_x = -8 N^{3/2} / (9 π s)   Hartree.

    Parameters
    ----------
    n_electrons : float
        ``N``.
    width : float
        ``s`` in bohr.

    Returns
    -------
    float
    """
    return -8.0 * n_electrons**1.5 / (9.0 * np.pi * width)
