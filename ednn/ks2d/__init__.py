"""A real-space 2D Kohn–Sham solver for datasets of model systems (Hartree atomic units).

Electrons confined to a plane, interacting by ``1/r``, in an external potential ``v(x, y)``,
spin-unpolarised or polarised, with 2D LDA, GGA or hybrid exchange–correlation from libxc
(via pyscf, the ``ks2d`` extra), after Ryczko, Strubbe & Tamblyn, Phys. Rev. A 100, 022512 (2019).

One module per idea; none imports TensorFlow:

- :mod:`~ednn.ks2d.grid`: the square grid, spectral derivatives;
- :mod:`~ednn.ks2d.hartree`: the aperiodic ``1/r`` convolution (Hartree, exact exchange);
- :mod:`~ednn.ks2d.xc`: 2D functionals through libxc;
- :mod:`~ednn.ks2d.exchange`: Fock exchange and its compressed (ACE) operator;
- :mod:`~ednn.ks2d.eigensolver`: block LOBPCG for the lowest orbitals;
- :mod:`~ednn.ks2d.occupations`, :mod:`~ednn.ks2d.mixing`: aufbau/smearing, Pulay mixing;
- :mod:`~ednn.ks2d.scf`: the self-consistent loop, :func:`solve`;
- :mod:`~ednn.ks2d.spin`: its spin-polarised form, ``solve(..., spin=(n_up, n_down))``;
- :mod:`~ednn.ks2d.result`: :class:`KSResult`;
- :mod:`~ednn.ks2d.potentials`: harmonic wells and random smooth wells;
- :mod:`~ednn.ks2d.generate`: sharded, resumable dataset generation and its command line
  (:func:`generate_dataset`, :func:`load_dataset`, ``generate.main``).

Example
-------
>>> from ednn.ks2d import Grid, harmonic_potential, solve
>>> grid = Grid(48, 16.0)
>>> result = solve(harmonic_potential(grid, (1.0, 1.0)), 2, grid, "lda")
>>> result.iterations > 1
True
"""

from ednn.ks2d.energies import density_energies
from ednn.ks2d.grid import Grid, apply_symmetry
from ednn.ks2d.hartree import Coulomb, hartree_energy, hartree_potential
from ednn.ks2d.potentials import (
    harmonic_potential,
    potential_from_params,
    random_blobs,
    random_harmonic,
    sample_potential,
)
from ednn.ks2d.result import KSResult
from ednn.ks2d.scf import DensityNotConfined, KSFailure, SCFNotConverged, solve
from ednn.ks2d.xc import Functional

__all__ = [
    "Coulomb",
    "DensityNotConfined",
    "Functional",
    "Grid",
    "KSFailure",
    "KSResult",
    "SCFNotConverged",
    "apply_symmetry",
    "density_energies",
    "generate_dataset",
    "harmonic_potential",
    "hartree_energy",
    "hartree_potential",
    "load_dataset",
    "potential_from_params",
    "random_blobs",
    "random_harmonic",
    "sample_potential",
    "solve",
]


def __getattr__(name: str) -> object:
    # Lazy, so that `python -m ednn.ks2d.generate` does not import the module twice.
    if name in ("generate_dataset", "load_dataset"):
        import importlib

        module = importlib.import_module("ednn.ks2d.generate")
        return module.generate if name == "generate_dataset" else module.load_dataset
    raise AttributeError(f"module 'ednn.ks2d' has no attribute {name!r}")
