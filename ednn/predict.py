"""Energies of structures with a trained EDNN: the ``ednn energy`` command.

A structure becomes an image of a whole number of focus regions; the model sums its tile
outputs; the per-species reference energies stored with the model are added back on the
atom counts.  Periodic cells whose lengths do not split into focus regions at the model's
pixel size are evaluated as the smallest commensurate periodic supercell and divided by
its multiplicity, which is exact for a periodic crystal.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms

from ednn.raster import SPACING_TOLERANCE, commensurate_sheet
from ednn.structio import StructureFileError, read_frames

#: Above this many atoms (in the evaluated cell) ``ednn energy`` shows a progress bar over
#: the bands. Every structure is evaluated band by band, in bounded memory.
STREAM_THRESHOLD = 50_000


def default_model_path() -> Path:
    """Path of the default model shipped inside the package."""
    return Path(str(resources.files("ednn").joinpath("models", "default.keras")))


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from ednn.model import load_ednn

    return load_ednn(path)


def load_model(path: str | os.PathLike | None = None):
    """Load an EDNN model (cached); the shipped default model when ``path`` is None."""
    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        if path == default_model_path():
            raise FileNotFoundError(
                f"The default model is missing from the installation ({path}); reinstall "
                "ednn or pass --model PATH"
            )
        raise FileNotFoundError(f"{path}: no such model file")
    return _load(str(path.resolve()))


@dataclasses.dataclass
class Prediction:
    """Energy of one structure.

    Attributes
    ----------
    energy : float
        Total energy in eV (network sum plus reference energies).
    n_atoms : int
        Atoms of the structure as given.
    tile_map : ndarray or None
        Per-focus-region network energies (eV) of the evaluated image, shape (nH, nW).
    supercell : tuple of int
        Multiplicity of the evaluated image relative to the structure as given.
    """

    energy: float
    n_atoms: int
    tile_map: np.ndarray | None = None
    supercell: int = 1

    @property
    def energy_per_atom(self) -> float:
        return self.energy / self.n_atoms


class Predictor:
    """Evaluate structures with one model.

    Parameters
    ----------
    model : EDNN
        A trained model whose metadata carries ``raster`` settings and optionally
        ``reference_energies`` (eV per atom by species).
    **options
        Passed to :func:`ednn.stream.evaluate_sheet` for every structure: ``precision``,
        ``batch_size``, ``regions_per_band``, ``evaluation``, ``prefetch``.
    """

    def __init__(self, model, **options) -> None:
        from ednn.stream import _defaults

        per_call = {"progress", "backend", "return_map"} & set(options)
        if per_call:
            raise TypeError(f"{sorted(per_call)} are arguments of Predictor.predict.")
        _defaults(options)  # an unknown option is an error now, not at the first structure
        self.options = options
        meta = model.metadata
        if "raster" not in meta:
            raise ValueError("the model carries no `raster` settings in its metadata")
        from ednn.stream import model_raster_spec

        self.model = model
        # The same grid rule as evaluate_sheet (lcm of the stored multiple and the focus), so
        # evaluation_cell is the cell that is actually rasterized.
        self.spec = model_raster_spec(model)
        self.reference = {
            str(k): float(v) for k, v in (meta.get("reference_energies") or {}).items()
        }

    def check_species(self, atoms: Atoms) -> None:
        """Raise a ValueError naming symbols the model does not know."""
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.spec.species))
        if unknown:
            raise ValueError(
                f"species {', '.join(unknown)} unknown to this model, which knows "
                f"{', '.join(self.spec.species)}"
            )

    def reference_energy(self, atoms: Atoms) -> float:
        """Sum of the per-species reference energies over the atoms (eV)."""
        symbols = atoms.get_chemical_symbols()
        return float(sum(self.reference.get(s, 0.0) for s in symbols))

    def evaluation_cell(self, atoms: Atoms) -> tuple[Atoms, int]:
        """The structure actually rasterized, and its multiplicity relative to ``atoms``."""
        sheet = commensurate_sheet(atoms, self.spec, SPACING_TOLERANCE)
        multiplicity = len(sheet) / len(atoms)
        if abs(multiplicity - round(multiplicity)) > 1e-9:
            raise ValueError("internal error: the rectangular supercell is not a whole multiple")
        return sheet, round(multiplicity)

    def predict(
        self, atoms: Atoms, tile_map: bool = False, progress: bool = False, backend=None
    ) -> Prediction:
        """Energy of one structure (any size; large sheets go band by band).

        Parameters
        ----------
        atoms : ase.Atoms
            Periodic sheet (any supported cell) or flake; positions in Å.
        tile_map : bool
            Also return the per-focus-region energy map (eV per region).
        progress : bool
            Show a progress bar over bands for large sheets (more than
            ``STREAM_THRESHOLD`` atoms in the evaluated cell).
        backend : ednn.distributed backend, optional
            Splits the bands of a large sheet across processes (``horovodrun``).
        """
        self.check_species(atoms)
        sheet, multiplicity = self.evaluation_cell(atoms)
        # One path for every size: the streaming evaluation runs the network as a traced
        # function (faster than an eager model call even for one band), band by band.
        from ednn.stream import evaluate_sheet

        result = evaluate_sheet(
            self.model,
            sheet,
            progress=progress and len(sheet) > STREAM_THRESHOLD,
            backend=backend,
            return_map=tile_map,
            **self.options,
        )
        network = float(result.energy_eV)
        energy_map = None if result.per_region_map is None else result.per_region_map[..., 0]
        energy = network / multiplicity + self.reference_energy(atoms)
        return Prediction(energy, len(atoms), energy_map, multiplicity)


def _map_png(tile_map: np.ndarray, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ednn import _io

    fig, ax = plt.subplots(figsize=(6, 6 * tile_map.shape[0] / max(tile_map.shape[1], 1) + 0.8))
    im = ax.imshow(tile_map * 1000.0, origin="lower", cmap="viridis")
    fig.colorbar(im, ax=ax, label="network energy per focus region (meV)")
    ax.set_title(title)
    ax.set_xlabel("focus region along x")
    ax.set_ylabel("focus region along y")
    fig.tight_layout()
    _io.atomic_savefig(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``ednn energy STRUCTURE... [--model PATH] [--json] [--map OUT.png] [--repeat NX NY]
    [--precision P] [--threads N] [--regions-per-band R] [--batch-size B]``."""
    parser = argparse.ArgumentParser(
        prog="ednn energy",
        description="Total energy (eV), energy per atom and atom count of each frame.",
    )
    parser.add_argument("structures", nargs="+", help="ASE-readable files (multi-frame too)")
    parser.add_argument("--model", default=None, help="a .keras model (default: the shipped model)")
    parser.add_argument("--json", action="store_true", help="one JSON object per frame per line")
    parser.add_argument(
        "--map", default=None, help="write the local energy map of the first frame to this PNG"
    )
    parser.add_argument(
        "--repeat",
        nargs=2,
        type=int,
        metavar=("NX", "NY"),
        default=None,
        help="evaluate the periodic NX x NY repeat as a whole sheet",
    )
    from ednn.stream import PRECISIONS, configure_threads

    tuning = parser.add_argument_group("speed (the defaults suit most machines)")
    tuning.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="network precision; mixed_bfloat16 runs the network ~2x faster on CPUs with "
        "AMX / AVX-512 BF16 (the whole evaluation ~1.2x) and moves energies by ~0.3 meV/atom; "
        "mixed_float16 is for GPUs (default: float32)",
    )
    tuning.add_argument(
        "--threads", type=int, default=None, help="TensorFlow threads per op (default: all cores)"
    )
    tuning.add_argument(
        "--regions-per-band",
        type=int,
        default=None,
        help="focus regions per network call on large sheets (default 8192; memory grows with it)",
    )
    tuning.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per call for models that cannot be fused (default 256)",
    )
    args = parser.parse_args(argv)
    options = {"precision": args.precision}
    for name in ("regions_per_band", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            print(
                f"ednn energy: error: {flag} must be a positive integer: {value}", file=sys.stderr
            )
            return 2
        if value is not None and name != "threads":
            options[name] = value
    if args.threads is not None:
        configure_threads(intra_op=args.threads)
    try:
        predictor = Predictor(load_model(args.model), **options)
    except (OSError, ValueError, TypeError) as err:
        print(f"ednn energy: error: {err}", file=sys.stderr)
        return 2
    from ednn.distributed import get_backend

    backend = get_backend()  # Horovod under horovodrun: bands of large sheets split by rank
    chief = backend.is_chief
    status = 0
    wrote_map = False
    for path in args.structures:
        try:
            frames = read_frames(path)
        except StructureFileError as err:
            print(f"ednn energy: error: {err}", file=sys.stderr)
            status = 1
            continue
        for k, atoms in enumerate(frames):
            try:
                if args.repeat is not None:
                    nx, ny = args.repeat
                    if nx < 1 or ny < 1:
                        raise ValueError(f"--repeat needs positive counts. Received: {nx} {ny}")
                    predictor.check_species(atoms)
                    from ednn.stream import evaluate_repeat

                    sheet, multiplicity = predictor.evaluation_cell(atoms)
                    result = evaluate_repeat(
                        predictor.model,
                        sheet,
                        nx,
                        ny,
                        progress=chief,
                        backend=backend,
                        **predictor.options,
                    )
                    n_atoms = len(atoms) * nx * ny
                    energy = (
                        result.energy_eV / multiplicity
                        + predictor.reference_energy(atoms) * nx * ny
                    )
                    pred = Prediction(energy, n_atoms)
                else:
                    pred = predictor.predict(
                        atoms,
                        tile_map=bool(args.map) and not wrote_map,
                        progress=chief,
                        backend=backend,
                    )
            except (ValueError, TypeError) as err:
                print(f"ednn energy: error: {path} frame {k}: {err}", file=sys.stderr)
                status = 1
                continue
            if not math.isfinite(pred.energy):
                print(
                    f"ednn energy: error: {path} frame {k}: the model returned {pred.energy}",
                    file=sys.stderr,
                )
                status = 1
                continue
            if not chief:
                continue  # every rank computed the sum; only rank 0 reports it
            if args.map and pred.tile_map is not None and not wrote_map:
                _map_png(pred.tile_map, args.map, f"{Path(path).name} frame {k}")
                wrote_map = True
            record = {
                "file": path,
                "frame": k,
                "n_atoms": pred.n_atoms,
                "energy_eV": pred.energy,
                "energy_per_atom_eV": pred.energy_per_atom,
                "formula": atoms.get_chemical_formula(),
            }
            if args.json:
                print(json.dumps(record), flush=True)
            else:
                print(
                    f"{path} [{k}] {record['formula']}: E = {pred.energy:.6f} eV, "
                    f"{pred.energy_per_atom:.6f} eV/atom, {pred.n_atoms} atoms",
                    flush=True,
                )
    return status
