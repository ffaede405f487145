"""``dyrelu eval``: evaluate a checkpoint on its test set or another dataset's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dyrelu.cli import CLIError
from dyrelu.cli._common import add_data_args, data_kwargs, positive, user_errors

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (loss and top-1 accuracy)",
        description=(
            "Rebuild the network from CHECKPOINT alone and report its loss and top-1 accuracy on the test split of "
            "the data it was trained on, or of --data. With --against, score a second checkpoint on the same images "
            "and test whether the difference is more than the test set's luck (McNemar's exact test)."
        ),
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint file or a training run's folder")
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="a second checkpoint or run folder: compare the two on the same test images (paired)",
    )
    add_data_args(parser, for_eval=True)
    parser.add_argument("--data-fraction", type=float, default=1.0, help="evaluate on this fraction of the test set")
    parser.add_argument("--batch-size", type=positive(), default=256, help="images per step (default 256)")
    parser.add_argument("--threads", type=positive(), default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the evaluation of ``args.checkpoint``; user errors raise :class:`CLIError`."""
    from dyrelu.train import evaluate_checkpoint

    if not 0.0 < args.data_fraction <= 1.0:
        raise CLIError(f"expected --data-fraction in (0, 1], got {args.data_fraction}")
    extra = data_kwargs(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    options = {
        "data": args.data,
        "data_dir": args.data_dir,
        "data_kwargs": extra if (extra or args.data is not None) else None,
        "fraction": args.data_fraction,
        "batch_size": args.batch_size,
        "device": args.device,
        "amp": args.amp,
    }
    if args.against is not None:
        return _compare(args, options)
    with user_errors():
        result = evaluate_checkpoint(args.checkpoint, **options)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{_name(args.checkpoint, result)} on the {result['data']} test set: loss {result['loss']:.4f}, accuracy "
            f"{result['acc']:.2f}% ({result['count']} images)"
        )
    return 0


def _name(path: Path, result: dict) -> str:
    return f"{path} ({result['model']}, {result['act'] or 'own activations'}, epoch {result['epoch']})"


def _compare(args: argparse.Namespace, options: dict) -> int:
    from dyrelu.train import compare_checkpoints

    with user_errors():
        result = compare_checkpoints(args.checkpoint, args.against, **options)
    paired = result["paired"]
    if args.json:
        print(json.dumps({**result, "paired": paired.to_dict()}))
        return 0
    a, b = result["checkpoint"], result["against"]
    print(f"A: {_name(args.checkpoint, a)}: accuracy {a['acc']:.2f}%")
    print(f"B: {_name(args.against, b)}: accuracy {b['acc']:.2f}%")
    print(f"{a['data']} test set, {paired.summary()}")
    return 0
