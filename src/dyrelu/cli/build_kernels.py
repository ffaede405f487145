"""``dyrelu build-kernels``: build the native CPU kernels now, ahead of the first forward pass.

The first forward pass of a DY-ReLU on the CPU otherwise builds them (about a minute, once per machine and
torch version). ``make`` runs this after installing. Exit status 0 when the kernels are ready, or when
there is nothing to build them with (no C++ compiler: dyrelu then uses its slower ATen implementation) or
they are switched off (``DYRELU_NATIVE=0``); 1 when a compiler is present and the build fails, with the
compiler's output.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``build-kernels`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "build-kernels",
        help="build the native CPU kernels now (else the first forward pass does, once)",
        description=(
            "Build (or load, when built before) dyrelu's fused C++ kernels of the piecewise maximum with the system's "
            "C++ compiler, so that the first forward pass does not wait for it. Fails (exit status 1) when a compiler "
            "is present and the build fails; without a compiler dyrelu uses its ATen implementation."
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing when the kernels are ready")
    return parser


def run(args: argparse.Namespace) -> int:
    from dyrelu import _native

    report = _native.build_kernels()
    if report["disabled"]:
        print("dyrelu build-kernels: the native kernels are switched off (DYRELU_NATIVE=0); nothing built")
        return 0
    if report["ok"]:
        if not args.quiet:
            print(f"dyrelu build-kernels: the native CPU kernels are ready ({report['seconds']:.0f} s)")
        return 0
    if report["compiler"] is None:
        print(
            "dyrelu build-kernels: no C++ compiler found ($CXX or c++): dyrelu uses its ATen implementation "
            "(the same values, slower); install one (g++ or clang++) and run this again for the kernels"
        )
        return 0
    print(
        f"dyrelu build-kernels: error: the native CPU kernels failed to build with {report['compiler']}:\n"
        f"{report['error']}",
        file=sys.stderr,
    )
    return 1
