"""Small inspection commands: ``ednn rasterize``, ``ednn tiles`` and ``ednn info``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ednn import _io
from ednn.structio import StructureFileError, read_frames


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="take species, spacing, sigma and focus from this model")
    parser.add_argument(
        "--species", default="C,B,N", help="comma-separated species (default C,B,N)"
    )
    parser.add_argument("--spacing", type=float, default=0.1, help="pixel size in Å (default 0.1)")
    parser.add_argument(
        "--sigma", type=float, default=0.2, help="Gaussian width in Å (default 0.2)"
    )
    parser.add_argument("--no-height", action="store_true", help="omit the height channel")
    parser.add_argument("--z-weighted", action="store_true", help="one Z-weighted channel")
    parser.add_argument("--frame", type=int, default=0, help="frame of a multi-frame file")


def _spec_from_args(args: argparse.Namespace, multiple_of=1):
    from ednn.raster import RasterSpec

    if args.model:
        from ednn.model import load_ednn

        model = load_ednn(args.model)
        raster = dict(model.metadata.get("raster") or {})
        if not raster:
            raise ValueError(f"{args.model}: the model carries no raster settings")
        return RasterSpec.from_dict(raster), model
    return (
        RasterSpec(
            species=tuple(s.strip() for s in args.species.split(",") if s.strip()),
            spacing=args.spacing,
            sigma=args.sigma,
            height_channel=not args.no_height,
            z_weighted=args.z_weighted,
            multiple_of=multiple_of,
        ),
        None,
    )


def _frame(path: str, index: int):
    frames = read_frames(path)
    if not -len(frames) <= index < len(frames):
        raise StructureFileError(
            f"{path}: has {len(frames)} frame(s); --frame {index} is out of range"
        )
    return frames[index]


def rasterize_main(argv: Sequence[str] | None = None) -> int:
    """``ednn rasterize STRUCTURE -o image.npy|image.png``."""
    from ednn.raster import image_to_png, raster_layout, rasterize

    parser = argparse.ArgumentParser(
        prog="ednn rasterize",
        description="Turn a structure into a Gaussian image (one channel per species).",
    )
    parser.add_argument("structure", help="any ASE-readable file")
    parser.add_argument(
        "-o", "--output", required=True, help="image.npy (array) or image.png (picture)"
    )
    _spec_arguments(parser)
    args = parser.parse_args(argv)
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".npy", ".png"):
        parser.error(f"--output must end in .npy or .png. Received: {args.output}")
    try:
        spec, _ = _spec_from_args(args)
        atoms = _frame(args.structure, args.frame)
        layout = raster_layout(atoms, spec)
        image = rasterize(atoms, spec)
    except (ValueError, TypeError) as err:
        print(f"ednn rasterize: error: {err}", file=sys.stderr)
        return 1
    if suffix == ".npy":
        with _io.atomic_path(args.output) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, image)
    else:
        image_to_png(image, args.output, height_channel=spec.height_channel)
    dy, dx = layout.spacing
    print(
        f"{args.output}: image {image.shape[0]}x{image.shape[1]} px, channels "
        f"{', '.join(spec.channel_names)}; {len(layout.sheet)} atoms in the rectangular cell; "
        f"pixel {dx:.4f} x {dy:.4f} Å"
    )
    return 0


def tiles_main(argv: Sequence[str] | None = None) -> int:
    """``ednn tiles STRUCTURE --focus F --context C``: how a structure is cut into tiles."""
    from ednn.raster import raster_layout

    parser = argparse.ArgumentParser(
        prog="ednn tiles", description="Show how a structure is cut into focus/context tiles."
    )
    parser.add_argument("structure", help="any ASE-readable file")
    parser.add_argument("--focus", type=int, default=None, help="focus size in pixels")
    parser.add_argument("--context", type=int, default=None, help="context size in pixels")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _spec_arguments(parser)
    args = parser.parse_args(argv)
    try:
        spec, model = _spec_from_args(args)
        focus = args.focus or (model.focus[0] if model else None)
        context = (
            args.context if args.context is not None else (model.context[0] if model else None)
        )
        if focus is None or context is None:
            raise ValueError("give --focus and --context in pixels, or --model")
        if focus <= 0 or context < 0:
            raise ValueError(
                f"--focus must be > 0 and --context >= 0. Received: {focus}, {context}"
            )
        from dataclasses import replace

        spec = replace(spec, multiple_of=(focus, focus))
        atoms = _frame(args.structure, args.frame)
        layout = raster_layout(atoms, spec)
    except (ValueError, TypeError) as err:
        print(f"ednn tiles: error: {err}", file=sys.stderr)
        return 1
    h, w = layout.shape
    dy, dx = layout.spacing
    tile = focus + 2 * context
    n = (h // focus) * (w // focus)
    report = {
        "structure": args.structure,
        "n_atoms": len(layout.sheet),
        "image_px": [h, w],
        "pixel_A": [dy, dx],
        "focus_px": focus,
        "context_px": context,
        "tile_px": tile,
        "focus_A": [focus * dy, focus * dx],
        "tile_A": [tile * dy, tile * dx],
        "grid": [h // focus, w // focus],
        "n_tiles": n,
        "atoms_per_tile": len(layout.sheet) / n,
        "tile_memory_MB": n * tile * tile * spec.n_channels * 4 / 2**20,
        "redundancy": tile * tile / focus**2,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{args.structure}: {report['n_atoms']} atoms, image {h}x{w} px "
            f"({dy:.4f} x {dx:.4f} Å/px)\n"
            f"focus {focus} px ({focus * dx:.2f} Å), context {context} px, tile {tile} px "
            f"({tile * dx:.2f} Å)\n"
            f"grid {h // focus} x {w // focus} = {n} tiles, {report['atoms_per_tile']:.2f} atoms "
            f"per focus region, tiles {report['tile_memory_MB']:.1f} MB "
            f"({report['redundancy']:.1f}x the image)"
        )
    return 0


# Models that wrap an EDNN, and the settings `ednn info` shows of each.
WRAPPER_KEYS = {
    "SymmetryAverage": ("elements", "mirror_shift"),
    "CountBaseline": ("counts", "count_from", "channel", "count_scale"),
    "ShiftAverage": ("max_shift", "centre_range", "channel"),
    "KernelCorrection": ("counts", "features", "length_scale", "ridge"),
}


def _unwrap(model, path) -> tuple:
    """The EDNN (or MultiScaleEDNN) inside the weightless wrappers, and those wrappers."""
    from ednn.model import EDNN
    from ednn.multiscale import MultiScaleEDNN

    wrappers = []
    while not isinstance(model, EDNN) and type(model).__name__ in WRAPPER_KEYS:
        config = model.get_config()
        keys = WRAPPER_KEYS[type(model).__name__]
        wrappers.append(f"{type(model).__name__}({', '.join(f'{k}={config[k]}' for k in keys)})")
        model = model.model
    if not isinstance(model, EDNN | MultiScaleEDNN):
        raise TypeError(
            f"Expected {path!r} to hold an EDNN model. Received: a {type(model).__name__}"
        )
    return (model, wrappers)


def _branches(model) -> tuple[list, list]:
    from ednn.multiscale import MultiScaleEDNN

    if isinstance(model, MultiScaleEDNN):
        return (list(model.branches), list(model.pools))
    return ([model], [1])


def _tiling(branch) -> str:
    step = getattr(branch, "placement_step", None)
    return (
        f"focus {branch.focus} px, context {branch.context} px, tile {branch.tile_shape}, "
        f"boundary {branch.boundary}"
        + ("" if step is None else f", mean over tile placements every {step} px")
    )


def info_main(argv: Sequence[str] | None = None) -> int:
    """``ednn info MODEL``: what a saved model computes and from what."""
    parser = argparse.ArgumentParser(prog="ednn info", description="Describe a saved ednn model.")
    parser.add_argument(
        "model", nargs="?", default=None, help=".keras file (default: the shipped model)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    import keras

    from ednn.ensemble import ModelAverage

    path = args.model
    if path is None:
        from ednn.predict import default_model_path

        path = str(default_model_path())
    try:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")
        loaded = keras.saving.load_model(path, compile=False)
        # An ensemble: each member described; the rest of the report is its first member's.
        members = [
            (weight, *_unwrap(member, path))
            for (member, weight) in (
                zip(loaded.members, loaded.member_weights, strict=True)
                if isinstance(loaded, ModelAverage)
                else []
            )
        ]
        # Wrappers without weights of their own (symmetry average, reference per count).
        (model, wrappers) = (members[0][1], members[0][2]) if members else _unwrap(loaded, path)
    except (OSError, ValueError, TypeError) as err:
        print(f"ednn info: error: {err}", file=sys.stderr)
        return 1
    (branches, pools) = _branches(model)
    first = branches[0]
    report = {
        "path": path,
        "wrappers": wrappers,
        "focus_px": list(first.focus),
        "context_px": list(first.context),
        "boundary": first.boundary,
        "tile_shape": list(first.tile_shape),
        "placement_step": None if first.placement_step is None else list(first.placement_step),
        "n_targets": model.n_targets,
        "parameters": int(loaded.count_params()),
        "metadata": model.metadata,
    }
    if members:
        report["members"] = [
            {
                "weight": weight,
                "wrappers": member_wrappers,
                "tiling": [_tiling(b) for b in _branches(member)[0]],
                "parameters": int(member.count_params()),
            }
            for (weight, member, member_wrappers) in members
        ]
    if len(branches) > 1:  # MultiScaleEDNN: the tiling of every branch
        report["branches"] = [
            {
                "pool": pool,
                "focus_px": list(b.focus),
                "context_px": list(b.context),
                "tile_shape": list(b.tile_shape),
                "boundary": b.boundary,
            }
            for (b, pool) in zip(branches, pools, strict=True)
        ]
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    meta = report["metadata"]
    raster = meta.get("raster", {})
    print(f"{path}")
    if members:
        print(f"  ensemble (ModelAverage) of {len(members)} models, the weighted mean:")
        for index, member in enumerate(report["members"]):
            around = "".join(f"{w} around " for w in member["wrappers"])
            print(
                f"    {index + 1}. weight {member['weight']:.3f}: {around}"
                f"{'; '.join(member['tiling'])}; {member['parameters']:,} parameters"
            )
        print("  member 1:")
    for wrapper in wrappers:
        print(f"  around the EDNN: {wrapper}")
    print(f"  targets: {', '.join(meta.get('target_names', []))} ({meta.get('units', '?')})")
    if raster:
        print(
            f"  species: {', '.join(raster.get('species', []))}; spacing {raster.get('spacing')} "
            f"Å; sigma {raster.get('sigma')} Å; height channel {raster.get('height_channel')}; "
            f"stretch channels {raster.get('spacing_channels', False)}"
        )
    else:
        print(f"  input: {first.n_channels}-channel images (no atom rasterization recorded)")
    for branch, pool in zip(branches, pools, strict=True):
        prefix = "  " if len(branches) == 1 else f"  branch on the image pooled {pool}x: "
        print(f"{prefix}{_tiling(branch)}")
    print(f"  parameters: {report['parameters']:,}")
    for key in ("reference_energies", "provenance", "metrics", "ednn_version", "created"):
        if key in meta:
            print(f"  {key}: {json.dumps(meta[key])}")
    return 0
