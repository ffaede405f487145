"""The ``dyrelu`` command. One module per subcommand; the library never imports this package.

Each subcommand module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and
``run(args) -> int``, uses only dyrelu's public API and imports training-only dependencies lazily.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Modules under dyrelu.cli, one per subcommand, in the order `dyrelu --help` lists them.
_COMMANDS: tuple[str, ...] = (
    "train",
    "eval",
    "export",
    "demo",
    "profile",
    "compare",
    "report",
    "visualize",
    "keypoints",
    "build_kernels",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The ``dyrelu`` parser with one subcommand per module of :data:`_COMMANDS`."""
    from dyrelu import __version__

    parser = argparse.ArgumentParser(prog="dyrelu", description="Dynamic ReLU: train, compare, profile, export.")
    parser.add_argument("--version", action="version", version=f"dyrelu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        mod = importlib.import_module(f"dyrelu.cli.{module}")
        cmd = mod.add_parser(sub)
        cmd.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dyrelu`` with ``argv`` (``None``: ``sys.argv[1:]``); the exit status (2: a user error, in one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    from dyrelu.files import WriteError

    try:
        return int(args._run(args) or 0)
    except (CLIError, WriteError) as err:  # a failed write not handled by the command: what and why, one line
        print(f"dyrelu {args.command}: error: {err}", file=sys.stderr)
        return 2
