"""Screen structures before labelling: too-close pairs and over-coordinated atoms.

Tersoff MD of B–B / N–N antisites can collapse pairs to 0.2–0.9 Å; such a structure would
give a label tens of eV off.  :func:`screen` says whether a structure is physical enough
to label, and why not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list


@dataclass(frozen=True)
class ScreenResult:
    """Outcome of :func:`screen`; distances in Å."""

    ok: bool
    reason: str
    min_distance: float
    max_coordination: int
    min_coordination: int

    def to_dict(self) -> dict:
        return asdict(self)


def screen(
    atoms: Atoms,
    min_distance: float = 1.1,
    bond_cutoff: float = 1.85,
    max_coordination: int = 4,
) -> ScreenResult:
    """Check the minimum interatomic distance and the coordination of every atom.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic sheet.
    min_distance : float
        Smallest allowed interatomic distance in Å.
    bond_cutoff : float
        Distance in Å below which two atoms count as bonded.
    max_coordination : int
        Largest allowed number of bonded neighbours; isolated atoms (0) are also rejected.
    """
    i, d = neighbor_list("id", atoms, max(bond_cutoff, min_distance) + 0.5)
    dmin = float(d.min()) if len(d) else float("inf")
    coordination = np.bincount(i[d < bond_cutoff], minlength=len(atoms))
    cmax, cmin = int(coordination.max()), int(coordination.min())
    reasons = []
    if dmin < min_distance:
        reasons.append(f"pair closer than {min_distance} Å ({dmin:.3f} Å)")
    if cmax > max_coordination:
        reasons.append(f"atom with {cmax} neighbours within {bond_cutoff} Å")
    if cmin == 0:
        reasons.append(f"isolated atom (no neighbour within {bond_cutoff} Å)")
    return ScreenResult(not reasons, "; ".join(reasons), dmin, cmax, cmin)
