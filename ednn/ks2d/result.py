"""The result of a 2D Kohn–Sham calculation, and its flat form for ``.npz`` storage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

#: Arrays stored per sample (the orbitals are left out: they are large and gauge-dependent).
ARRAY_FIELDS = ("v_ext", "density", "eigenvalues", "occupations", "spin_densities")


@dataclass
class KSResult:
    """A converged 2D Kohn–Sham solution, spin-unpolarised or polarised. Energies in Hartree.

    A spin-polarised solution (``spin_polarized``) has per-spin levels: ``eigenvalues``,
    ``occupations`` of shape ``(2, k)`` and ``orbitals`` of shape ``(2, k, n, n)``, spin
    up first; ``density`` is the total and ``spin_densities`` holds ``(n_↑, n_↓)``.

    Attributes
    ----------
    n : int
        Grid points per side.
    box : float
        Box side in bohr.
    n_electrons : int
        Number of electrons ``N``.
    functional : str
        ``"lda"``, ``"gga"``, ``"hybrid"`` or ``"none"`` (independent electrons).
    exact_exchange : float
        Fraction ``α`` of Fock exchange.
    v_ext : ndarray, shape (n, n)
        External potential (Hartree).
    density : ndarray, shape (n, n)
        Self-consistent (total) density (bohr⁻²), ``∫ n d²r = N``.
    eigenvalues, occupations : ndarray, shape (k,) or (2, k)
        Lowest ``k`` Kohn–Sham levels (Hartree) and their electrons (0 to 2; per spin
        channel 0 to 1).
    t_s, e_ext, e_hartree, e_x, e_c : float
        Non-interacting kinetic, external, Hartree, exchange (local plus ``α`` Fock) and
        correlation energies.
    entropy_term : float
        ``-TS`` of Fermi smearing (0 without smearing).
    e_total : float
        ``T_s + E_ext + E_H + E_x + E_c`` (without ``-TS``).
    iterations : int
        SCF iterations (1 for independent electrons).
    energy_change : float
        ``|ΔE_total|`` between the last two iterations.
    density_residual : float
        ``∫ |n_out - n_in| d²r`` of the last iteration (electrons).
    eigen_residual : float
        Largest ``‖Hφ - εφ‖`` over occupied orbitals (Hartree bohr⁻¹ for unit φ).
    edge_density : float
        Largest density on the outermost row/column of the box (bohr⁻²).
    wall_time : float
        Seconds spent in the solver.
    orbitals : ndarray, shape (k, n, n) or (2, k, n, n), optional
        Orbitals normalised on the grid (not stored by :meth:`to_dict`).
    spin_densities : ndarray, shape (2, n, n), optional
        ``(n_↑, n_↓)`` in bohr⁻² of a spin-polarised solution; None if unpolarised.
    """

    n: int
    box: float
    n_electrons: int
    functional: str
    exact_exchange: float
    v_ext: np.ndarray
    density: np.ndarray
    eigenvalues: np.ndarray
    occupations: np.ndarray
    t_s: float
    e_ext: float
    e_hartree: float
    e_x: float
    e_c: float
    entropy_term: float
    e_total: float
    iterations: int
    energy_change: float
    density_residual: float
    eigen_residual: float
    edge_density: float
    wall_time: float
    orbitals: np.ndarray | None = field(default=None, repr=False)
    spin_densities: np.ndarray | None = field(default=None, repr=False)

    @property
    def e_xc(self) -> float:
        """``E_x + E_c`` in Hartree."""
        return self.e_x + self.e_c

    @property
    def spin_polarized(self) -> bool:
        """True for a spin-polarised solution (two spin channels)."""
        return self.spin_densities is not None

    @property
    def electrons_per_spin(self) -> tuple[int, int] | None:
        """``(n_↑, n_↓)`` of a spin-polarised solution; None if unpolarised."""
        if not self.spin_polarized:
            return None
        up, down = np.rint(np.sum(self.occupations, axis=-1)).astype(int)
        return int(up), int(down)

    @property
    def magnetization(self) -> np.ndarray | None:
        """``n_↑ - n_↓`` in bohr⁻² (integrates to ``n_↑ - n_↓``); None if unpolarised."""
        if self.spin_densities is None:
            return None
        return self.spin_densities[0] - self.spin_densities[1]

    def to_dict(self) -> dict[str, np.ndarray | float | int | str]:
        """Flat dict of everything but the orbitals, for ``np.savez`` or JSON scalars.

        ``spin_densities`` is present only for a spin-polarised solution.
        """
        out = asdict(self)
        out.pop("orbitals")
        if out["spin_densities"] is None:
            out.pop("spin_densities")
        return out

    @classmethod
    def from_dict(cls, data: dict) -> KSResult:
        """Inverse of :meth:`to_dict` (values may be 0-d arrays, as read from ``.npz``)."""
        kwargs = {}
        for name, annotation in cls.__annotations__.items():
            if name == "orbitals" or name not in data:
                continue
            value = data[name]
            if name in ARRAY_FIELDS:
                kwargs[name] = np.asarray(value)
            elif annotation == "int":
                kwargs[name] = int(value)
            elif annotation == "str":
                kwargs[name] = str(value)
            else:
                kwargs[name] = float(value)
        return cls(**kwargs)
