"""``dyrelu profile``: parameters and MAdds of a model with each activation, and the overhead vs ReLU."""

from __future__ import annotations

import argparse
import dataclasses
import json

from dyrelu.cli import CLIError

__all__ = ["add_parser", "run"]

_DEFAULT_ACTS = "relu,dyrelu_a,dyrelu_b,dyrelu_c"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``profile`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "profile",
        help="params and MAdds of a model with each activation",
        description=(
            "Build MODEL with each activation and print its parameters, its multiply-adds for one image "
            "(convolutions and matrix products; elementwise work is not counted) and the overhead vs ReLU. "
            "Nothing is computed: the models run on PyTorch's meta device."
        ),
    )
    parser.add_argument("--model", required=True, help="a model name of dyrelu.models.list_models()")
    parser.add_argument("--input", type=int, default=224, metavar="SIZE", help="image side in pixels (default 224)")
    parser.add_argument(
        "--acts",
        default=_DEFAULT_ACTS,
        help=f"comma-separated activation names, one row each (default {_DEFAULT_ACTS})",
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--in-chans", type=int, default=3, help="image channels (default 3)")
    parser.add_argument("--small-input", action="store_true", help="the stem for 28×28 and 32×32 images")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the comparison table (or JSON) for ``args``; user errors raise :class:`CLIError`."""
    from dyrelu import list_acts

    try:
        from dyrelu.models import list_models
    except ImportError as err:
        raise CLIError(str(err)) from err
    from dyrelu.analysis.cost import compare_acts, format_comparison

    model = args.model.lower()
    if model not in list_models():
        raise CLIError(f"unknown model {args.model!r}, expected one of {', '.join(list_models())}")
    acts = [name.strip().lower() for name in args.acts.split(",") if name.strip()]
    if not acts:
        raise CLIError(f"expected comma-separated activation names in --acts, got {args.acts!r}")
    unknown = [name for name in acts if name not in list_acts()]
    if unknown:
        raise CLIError(f"unknown activation {unknown[0]!r} in --acts, expected names of {', '.join(list_acts())}")
    for flag, value in (("--input", args.input), ("--num-classes", args.num_classes), ("--in-chans", args.in_chans)):
        if value < 1:
            raise CLIError(f"expected a positive integer for {flag}, got {value}")

    try:
        rows = compare_acts(
            model,
            acts,
            input_size=args.input,
            num_classes=args.num_classes,
            in_chans=args.in_chans,
            small_input=args.small_input,
        )
    except ValueError as err:
        raise CLIError(str(err).splitlines()[0]) from err

    if args.json:
        payload = {
            "model": model,
            "input_size": [1, args.in_chans, args.input, args.input],
            "num_classes": args.num_classes,
            "small_input": args.small_input,
            "baseline": "relu",
            "rows": [dataclasses.asdict(row) for row in rows],
        }
        print(json.dumps(payload, indent=2))
    else:
        stem = ", small-input stem" if args.small_input else ""
        print(f"{model}: 1×{args.in_chans}×{args.input}×{args.input} input, {args.num_classes} classes{stem}")
        print(format_comparison(rows))
    return 0
