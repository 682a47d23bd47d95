"""``galaxy-pipeline <command>``: a thin command line over the package's modules.

Each command is a function ``run_<name>(args)``; its arguments are declared in
:func:`build_parser`. Errors a user can fix (bad paths, bad values, bad files) are printed as
one line and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from galaxy_pipeline import __version__

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, KeyError)


def run_info(args: argparse.Namespace) -> int:
    """Print the versions of the package and its main dependencies, and the compute device."""
    import accelerate
    import datasets
    import diffusers
    import huggingface_hub
    import photutils
    import torch
    import transformers

    versions = {
        "galaxy_pipeline": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "photutils": photutils.__version__,
    }
    for name, version in versions.items():
        print(f"{name:>16}: {version}")
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    elif torch.backends.mps.is_available():
        device = "mps"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    print(f"{'device':>16}: {device}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``galaxy-pipeline`` command."""
    parser = argparse.ArgumentParser(
        prog="galaxy-pipeline", description="Redshift-conditioned diffusion models of HSC galaxies."
    )
    parser.add_argument("--version", action="version", version=f"galaxy_pipeline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="print package versions and the compute device")
    info.set_defaults(handler=run_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``galaxy-pipeline`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"galaxy-pipeline {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
