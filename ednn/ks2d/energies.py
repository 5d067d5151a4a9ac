"""Energy terms of a given 2D density, evaluated non-self-consistently (Hartree atomic units).

For a density ``n`` (bohr⁻²) that need not be a Kohn–Sham ground state, e.g. the output of
a network that predicts densities, the terms of the total energy that are explicit
functionals of ``n`` alone are evaluated with the solver's own functions, so that for the
converged density of :func:`ednn.ks2d.scf.solve` they equal the energies it reports:

=============  ==================================================  ==========================
key            term                                                solver function
=============  ==================================================  ==========================
``e_ext``      ``∫ v_ext n d²r``                                   ``Grid.integrate``
``e_hartree``  ``½ ∫∫ n n' / |r - r'|``                            ``hartree.Coulomb.energy``
``e_x``        semi-local exchange (``"lda"``, ``"gga"``)          ``Functional.local_terms``
``e_x_local``  ``(1 - α) E_x^LDA`` of a hybrid (replaces ``e_x``)  ``Functional.local_terms``
``e_c``        correlation (``LDA_C_2D_AMGB`` in every family)     ``Functional.local_terms``
=============  ==================================================  ==========================

Two terms are not returned because a density does not determine them without the
Kohn–Sham orbitals, i.e. without inverting the Kohn–Sham problem for the potential whose
ground state ``n`` is:

- the non-interacting kinetic energy ``T_s[n]`` (and so ``E_total``);
- for a hybrid, the exact-exchange part ``α E_x^Fock[φ]``. Its ``e_x`` is therefore
  returned as ``e_x_local``, the ``(1 - α)`` scaled LDA exchange only, and
  ``e_x = e_x_local + α E_x^Fock`` of the solver is *not* reproduced.

Spin-polarised densities (``spin_polarized=True``) are given as the spin densities
``(n_↑, n_↓)``: ``e_ext`` and ``e_hartree`` take their sum, exchange and correlation the
pair, as in a spin-polarised :func:`ednn.ks2d.scf.solve`.
"""

from __future__ import annotations

import numpy as np

from ednn.ks2d import _validation as check
from ednn.ks2d.grid import Grid
from ednn.ks2d.hartree import Coulomb
from ednn.ks2d.xc import FUNCTIONALS, Functional


def density_energy_keys(functional: str | Functional) -> tuple[str, ...]:
    """Names of the terms that :func:`density_energies` returns for ``functional``.

    Parameters
    ----------
    functional : {"lda", "gga", "hybrid"} or Functional
        Exchange–correlation functional.

    Returns
    -------
    tuple of str
        ``("e_ext", "e_hartree", "e_x", "e_c")``, with ``"e_x_local"`` in place of
        ``"e_x"`` for a functional with exact exchange (``α > 0``).

    Example
    -------
    >>> density_energy_keys("hybrid")
    ('e_ext', 'e_hartree', 'e_x_local', 'e_c')
    """
    functional = _functional(functional)
    exchange = "e_x_local" if functional.exact_exchange else "e_x"
    return ("e_ext", "e_hartree", exchange, "e_c")


def _functional(functional: object) -> Functional:
    if isinstance(functional, Functional):
        return functional
    if not isinstance(functional, str):
        raise TypeError(
            "`functional` must be a string or an ednn.ks2d.xc.Functional. "
            f"Received: functional={functional!r} of type {type(functional).__name__}"
        )
    return Functional(check.choice(functional, "functional", FUNCTIONALS))


def _fields(density: object, v_ext: object, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    # Densities (n, n) or a batch (m, n, n); v_ext the same, or one (n, n) for the batch.
    density = np.asarray(density, dtype=np.float64)
    v_ext = np.asarray(v_ext, dtype=np.float64)
    if density.ndim not in (2, 3) or density.shape[-2:] != grid.shape:
        raise ValueError(
            f"`density` must have the grid shape {grid.shape} or be a batch (m, {grid.n}, "
            f"{grid.n}). Received: density.shape={density.shape}"
        )
    if v_ext.shape not in (grid.shape, density.shape):
        raise ValueError(
            f"`v_ext` must have the grid shape {grid.shape} or the shape of `density` "
            f"{density.shape}. Received: v_ext.shape={v_ext.shape}"
        )
    for name, value in (("density", density), ("v_ext", v_ext)):
        finite = np.isfinite(value).reshape(-1, *grid.shape).all(axis=(1, 2))
        if not finite.all():
            where = "" if value.ndim == 2 else f"[{int(np.argmin(finite))}]"
            raise ValueError(
                f"`{name}` must be finite everywhere. Received: {name}{where} with NaN or inf"
            )
    return density, np.broadcast_to(v_ext, density.shape)


def density_energies(
    density: np.ndarray,
    v_ext: np.ndarray,
    grid: Grid,
    functional: str | Functional = "lda",
    *,
    correction: str = "zeta2",
    spin_polarized: bool = False,
) -> dict[str, float | np.ndarray]:
    """Evaluate the density-only energy terms of the Kohn–Sham energy on a given density.

    Non-self-consistent: the density is taken as it is (not relaxed), and each term is
    computed with the function the SCF uses, so the converged density of
    :func:`ednn.ks2d.scf.solve` gives back its ``e_ext``, ``e_hartree``, ``e_x`` (not for
    a hybrid, see below) and ``e_c``.

    Parameters
    ----------
    density : ndarray, shape (n, n) or (m, n, n); (2, n, n) or (m, 2, n, n) if spin-polarised
        Electron density in bohr⁻² on ``grid``, or a batch of ``m`` densities; with
        ``spin_polarized`` the spin densities ``(n_↑, n_↓)`` on the axis before the grid.
    v_ext : ndarray, shape (n, n) or (m, n, n)
        External potential in Hartree (one for the whole batch, or one per density).
    grid : Grid
        The grid of the fields.
    functional : {"lda", "gga", "hybrid"} or Functional
        The exchange–correlation functional; for the fraction ``α`` of a hybrid other than
        the default 0.25, pass ``Functional("hybrid", α)``.
    correction : {"zeta2", "zeta", "pixel"}
        Coulomb self-cell quadrature; the solver's default is ``"zeta2"``
        (:func:`ednn.ks2d.hartree.coulomb_kernel`).
    spin_polarized : bool
        ``density`` holds spin densities (e.g. ``KSResult.spin_densities`` of a
        spin-polarised :func:`ednn.ks2d.scf.solve`).

    Returns
    -------
    dict
        Keys :func:`density_energy_keys`: ``e_ext``, ``e_hartree``, ``e_x`` (or
        ``e_x_local`` if ``α > 0``), ``e_c``, in Hartree; floats for one density, arrays of
        shape ``(m,)`` for a batch. ``T_s``, ``E_total`` and the exact-exchange part of a
        hybrid are not returned: they need the Kohn–Sham orbitals (see the module notes).

    Raises
    ------
    ValueError
        If a field has the wrong shape or is not finite, or ``functional`` is unknown.

    Notes
    -----
    The density is not checked for sign or normalisation: ``e_ext`` and ``e_hartree`` use
    it as given, while the exchange–correlation terms see ``max(n, 0)``, as in the solver.
    Inputs are converted to float64; a density stored in float32 changes the terms by a
    relative ~1e-7. A ``(2n)²`` Coulomb kernel is set up once per call; a batch costs
    about one Hartree convolution and one libxc evaluation per density.

    Example
    -------
    >>> from ednn.ks2d import Grid, harmonic_potential, solve
    >>> grid = Grid(32, 16.0)
    >>> v_ext = harmonic_potential(grid, (1.0, 1.0))
    >>> result = solve(v_ext, 2, grid, "lda")
    >>> terms = density_energies(result.density, v_ext, grid, "lda")
    >>> sorted(terms)
    ['e_c', 'e_ext', 'e_hartree', 'e_x']
    >>> abs(terms["e_hartree"] - result.e_hartree) < 1e-12
    True
    """
    functional = _functional(functional)
    spins = None
    if spin_polarized:
        spins = np.asarray(density, dtype=np.float64)
        if spins.ndim not in (3, 4) or spins.shape[-3:] != (2, *grid.shape):
            raise ValueError(
                f"`density` must be spin densities of shape (2, {grid.n}, {grid.n}) or a batch "
                f"(m, 2, {grid.n}, {grid.n}) with `spin_polarized=True`. "
                f"Received: density.shape={spins.shape}"
            )
        density = spins.sum(axis=-3)
    density, v_ext = _fields(density, v_ext, grid)
    single = density.ndim == 2
    batch = density.reshape(-1, *grid.shape)
    coulomb = Coulomb(grid, correction)
    e_ext = grid.integrate(v_ext.reshape(batch.shape) * batch)
    e_hartree = coulomb.energy(batch)
    xc_inputs = batch if spins is None else spins.reshape(-1, 2, *grid.shape)
    local = [functional.local_terms(n, grid) for n in xc_inputs]
    e_x = np.array([terms.e_x for terms in local])
    e_c = np.array([terms.e_c for terms in local])
    values = (e_ext, e_hartree, e_x, e_c)
    keys = density_energy_keys(functional)
    if single:
        return {key: float(value[0]) for key, value in zip(keys, values, strict=True)}
    return {
        key: np.asarray(value, dtype=np.float64) for key, value in zip(keys, values, strict=True)
    }
