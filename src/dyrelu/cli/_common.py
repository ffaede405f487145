"""Options and error handling shared by the ``train``, ``eval``, ``export`` and ``demo`` subcommands."""

from __future__ import annotations

import argparse
import ast
import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dyrelu.cli import CLIError
from dyrelu.files import WriteError

DATASETS = ("fashion-mnist", "cluttered-fashion-mnist", "cifar10", "cifar100", "folder", "synthetic")


def add_data_args(parser: argparse.ArgumentParser, *, for_eval: bool = False) -> None:
    """Add the ``data`` options (``--data``, ``--data-dir``, ``--image-size``, ``--synthetic-samples``).

    ``for_eval``: the dataset defaults to the checkpoint's, not to Fashion-MNIST.
    """
    group = parser.add_argument_group("data")
    default = "the checkpoint's" if for_eval else "fashion-mnist"
    group.add_argument("--data", choices=DATASETS, default=None, help=f"the dataset (default {default})")
    group.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="the data folder (Fashion-MNIST: /usr/share/datasets/fashion-mnist, from `apt-get install "
        "dataset-fashion-mnist`; CIFAR: the folder holding cifar-10-batches-py/ or cifar-100-python/; folder: "
        "one sub-folder per class, or train/ and val/ with one sub-folder per class each)",
    )
    group.add_argument(
        "--image-size", type=int, default=None, metavar="PX", help="folder/synthetic/cluttered image side"
    )
    group.add_argument(
        "--synthetic-samples", type=int, default=None, metavar="N", help="synthetic training images (test: N/4)"
    )


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The data source's options given on the command line (``image_size``, ``num_samples``)."""
    kwargs: dict[str, Any] = {}
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    if args.synthetic_samples is not None:
        if args.data not in (None, "synthetic"):
            raise CLIError(f"--synthetic-samples applies to --data synthetic, got --data {args.data}")
        kwargs["num_samples"] = args.synthetic_samples
    return kwargs


def add_act_args(parser: argparse.ArgumentParser) -> None:
    """Add the activation's options (the paper's K, R, λ_a, λ_b, τ, γ, the init, and any ``--act-arg KEY=VALUE``)."""
    group = parser.add_argument_group("activation options (passed to every activation)")
    group.add_argument("--k", type=int, default=None, help="K, pieces of DY-ReLU (paper: 2)")
    group.add_argument("--reduction", type=int, default=None, help="R, the hyper function's reduction (paper: 8)")
    group.add_argument("--lambda-a", type=float, default=None, help="λ_a, range of the slopes' residual")
    group.add_argument("--lambda-b", type=float, default=None, help="λ_b, range of the intercepts' residual")
    group.add_argument("--tau", type=float, default=None, help="DY-ReLU-C's softmax temperature τ (paper: 10)")
    group.add_argument("--gamma", type=float, default=None, help="DY-ReLU-C's γ (default HW/3)")
    group.add_argument(
        "--zero-init-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="DY-ReLU's last FC at zero, a fresh module is ReLU (default); --no-zero-init-last: as nn.Linear",
    )
    group.add_argument(
        "--act-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other keyword of the activation, VALUE a Python literal (repeatable)",
    )


def act_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """The activation keywords given on the command line, or None if none were."""
    kwargs: dict[str, Any] = {}
    for name in ("k", "reduction", "lambda_a", "lambda_b", "tau", "gamma", "zero_init_last"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    kwargs.update(key_values(args.act_arg, "--act-arg"))
    return kwargs or None


def key_values(items: list[str], flag: str) -> dict[str, Any]:
    """The repeated option ``flag KEY=VALUE`` as keywords, each VALUE a Python literal (else the text itself).

    Raises:
        CLIError: an item is not ``KEY=VALUE`` with an identifier as the key.
    """
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise CLIError(f"expected {flag} KEY=VALUE, got {item!r}")
        try:
            values[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key] = text
    return values


def check_model_options(model: str, act: str | None, kwargs: dict[str, Any]) -> None:
    """Fail early, in one line, on an unknown model or activation or an option the activation lacks."""
    try:
        from dyrelu.models import list_models
    except ImportError as err:
        raise CLIError(f"{err}") from None
    if model.lower() not in list_models():
        raise CLIError(f"unknown model {model!r}, expected one of {', '.join(list_models())}")
    if act is None:
        if kwargs:
            raise CLIError(f"--act none keeps the architecture's activations, which take no options; got {kwargs}")
        return
    check_act(act.lower(), kwargs, or_none=True)


def check_act(act: str, kwargs: dict[str, Any], *, where: str = "", or_none: bool = False) -> None:
    """Fail early, in one line, on an unknown activation or an option it lacks.

    Args:
        act: a registry name (lower case).
        kwargs: its options.
        where: the network part it is for (``"head"``: the option is ``--head-act``); ``""``: ``--act``.
        or_none: ``none`` is a valid choice too (the architecture's own activations), which the message says.
    """
    from dyrelu import create_act, list_acts

    if act not in list_acts():
        what = f"{where} activation" if where else "activation"
        raise CLIError(f"unknown {what} {act!r}, expected one of {', '.join(list_acts())}" + (" or none" * or_none))
    try:
        create_act(act, 8, **kwargs)
    except (TypeError, ValueError) as err:
        flag = f"--{where}-act" if where else "--act"
        raise CLIError(f"bad options {kwargs} for {flag} {act}: {err}") from None


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-progress``."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (off anyway when not a tty)")


def want_progress(args: argparse.Namespace) -> bool:
    """Whether to show progress bars: unless ``--no-progress``, and only on a terminal."""
    return not args.no_progress and sys.stderr.isatty()


def is_main_process() -> bool:
    """Whether this process prints: rank 0 of a ``torchrun`` launch, or the only process."""
    return int(os.environ.get("RANK", "0") or 0) == 0


#: How to continue a run after a failed write, for :func:`write_error_message`.
RESUME_RUN = "rerun with --resume"
#: The same for the grids, whose runs resume by themselves.
RESUME_GRID = "rerun the same command: finished runs are skipped and the others resume from their checkpoints"


def write_error_message(err: WriteError, *, checkpoint: Path | None = None, resume: str | None = None) -> str:
    """One line for a failed write: what and why (``err``), the state of the last checkpoint, how to go on.

    Args:
        err: the error.
        checkpoint: the run's checkpoint file or output folder; the checkpoint is loaded to check that it is
            intact, and its epoch named.
        resume: how to continue (:data:`RESUME_RUN`, :data:`RESUME_GRID`); ``None``: nothing is said.
    """
    parts = [str(err)]
    if checkpoint is not None:
        from dyrelu.train import CheckpointError, find_checkpoint, load_checkpoint

        checkpoint = find_checkpoint(checkpoint)
        if not checkpoint.is_file():
            parts.append("no checkpoint had been written yet")
        else:
            try:
                epoch = load_checkpoint(checkpoint)["epoch"]
            except CheckpointError as bad:
                parts.append(f"the last checkpoint cannot be read either: {bad}")
                resume = None
            else:
                # Written to a temporary file and renamed, so a failed write leaves the previous one as it was.
                parts.append(f"the last good checkpoint {checkpoint} (epoch {epoch}) is intact")
    if resume:
        room = err.errno in (errno.ENOSPC, errno.EDQUOT)
        parts.append(f"free some space, then {resume}" if room else f"fix that, then {resume}")
    return "; ".join(parts)


@contextlib.contextmanager
def user_errors(*, checkpoint: Path | None = None, resume: str | None = None) -> Iterator[None]:
    """Turn the library's data, checkpoint, configuration and write errors into one-line CLI errors.

    Args:
        checkpoint: the run's checkpoint file or output folder, which the message of a failed write describes.
        resume: how to continue after a failed write (:data:`RESUME_RUN`, :data:`RESUME_GRID`).
    """
    from dyrelu.data import DataError
    from dyrelu.train import CheckpointError

    try:
        yield
    except WriteError as err:  # a full disk, a read-only folder: no traceback, say what to do
        raise CLIError(write_error_message(err, checkpoint=checkpoint, resume=resume)) from None
    except (DataError, CheckpointError, FloatingPointError) as err:
        raise CLIError(str(err)) from None
    except ValueError as err:  # the library's bad-value errors name the value and what was expected
        raise CLIError(str(err).splitlines()[0]) from None
    except ImportError as err:
        raise CLIError(f"{err} (install the extras: pip install 'dyrelu[train,vision]')") from None


def print_line(line: str) -> None:
    """Print one log line of a run at once (flushed, for logs read while the run goes on)."""
    print(line, flush=True)


def positive(kind: type = int):
    """An argparse ``type`` accepting ``kind`` (int or float) values above 0, with a message naming the text."""

    def parse(text: str):
        """``text`` as a positive ``kind``; argparse reports the error."""
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse
