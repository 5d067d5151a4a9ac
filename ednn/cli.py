"""The ``ednn`` command: one console script with subcommands.

Each subcommand lives in the module that owns its idea and exposes ``main(argv=None)``,
so tests call it in process; this module only dispatches, importing a subcommand's
module when it is used (``ednn --help`` stays fast).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "energy": ("ednn.predict", "total energy (eV) of structures with a trained model"),
    "rasterize": ("ednn.commands", "structure -> Gaussian image (.npy or .png)"),
    "tiles": ("ednn.commands", "how a structure is cut into focus/context tiles"),
    "info": ("ednn.commands", "describe a saved ednn model"),
    "generate": ("ednn.data.generate", "build and label a reference dataset (resumable)"),
    "train": ("ednn.train", "train a model from a YAML config, with TensorBoard"),
    "ks2d-generate": (
        "ednn.ks2d.generate",
        "2D Kohn-Sham samples (SHO / random potentials, LDA / GGA / hybrid), resumable",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: ednn COMMAND [options]",
        "",
        "Extensive deep neural networks: O(N) energies of large graphene / hBN sheets.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `ednn COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``ednn COMMAND ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from ednn import __version__

        print(f"ednn {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"ednn: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    runner = getattr(module, f"{name.replace('-', '_')}_main", None) or module.main
    try:
        return int(runner(rest) or 0)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
