"""``dyrelu train``: train a network on a dataset, one process or under ``torchrun`` (DDP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dyrelu.cli import CLIError
from dyrelu.cli._common import (
    RESUME_RUN,
    act_kwargs,
    add_act_args,
    add_data_args,
    add_progress_arg,
    check_model_options,
    data_kwargs,
    is_main_process,
    positive,
    print_line,
    user_errors,
    want_progress,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "train",
        help="train and evaluate a network (torchrun for several processes)",
        description=(
            "Train MODEL with activation ACT, evaluating on the test set after each epoch. OUT receives "
            "last.pt (a checkpoint per epoch, written atomically), metrics.csv, config.json and tb/ "
            "(TensorBoard, if installed). --resume continues exactly where the last checkpoint left off, with "
            "its settings unless options are given again (a larger --epochs extends a finished run; the cosine "
            "schedule then stretches to the new length). Several processes: torchrun --nproc-per-node N -m "
            "dyrelu train ... (gloo on CPU, NCCL on GPU; --batch-size is per process)."
        ),
    )
    _add_model_args(parser)
    add_act_args(parser)
    add_data_args(parser)
    _add_subset_args(parser)
    _add_optimisation_args(parser)
    _add_run_args(parser)
    add_progress_arg(parser)
    return parser


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    """The network: ``--model``, ``--act`` and the options of the architecture."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, help="a name of dyrelu.models.list_models() (default mobilenetv2_050)")
    model.add_argument(
        "--act", default=None, help="a name of dyrelu.list_acts(), or 'none' for the architecture's own (default relu)"
    )
    model.add_argument("--num-classes", type=positive(), default=None, help="classifier outputs (default: the data's)")
    model.add_argument(
        "--small-input",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the stem for 28×28/32×32 images (default: for images of at most 64 pixels)",
    )
    model.add_argument(
        "--act-context",
        choices=("input", "block"),
        default=None,
        help="what DY-ReLU's hyper function reads: its own input (paper, default) or MobileNetV2's block input",
    )


def _add_subset_args(parser: argparse.ArgumentParser) -> None:
    """Which images train and evaluate: fractions, augmentation and the validation split."""
    data = parser.add_argument_group("data subsets")
    data.add_argument("--data-fraction", type=float, default=None, help="train on this fraction (deterministic)")
    data.add_argument("--eval-fraction", type=float, default=None, help="evaluate on this fraction of the test set")
    data.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help="random crop and flip (default on)"
    )
    data.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="hold out this many training images (class-stratified, fixed) as a validation set (default 0)",
    )


def _add_optimisation_args(parser: argparse.ArgumentParser) -> None:
    """The schedule, the optimizer and its groups, mixed precision and DY-ReLU-C's temperature schedule."""
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive(), default=None, help="epochs (default 10)")
    opt.add_argument("--batch-size", type=positive(), default=None, help="images per step and process (default 128)")
    opt.add_argument("--eval-batch-size", type=positive(), default=None, help="images per evaluation step")
    opt.add_argument("--opt", choices=("sgd", "adamw"), default=None, help="SGD with Nesterov momentum or AdamW")
    opt.add_argument("--lr", type=positive(float), default=None, help="peak learning rate (SGD 0.1, AdamW 1e-3)")
    opt.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    opt.add_argument(
        "--wd", "--weight-decay", dest="weight_decay", type=float, default=None, help="SGD 5e-4, AdamW 0.05"
    )
    opt.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up epochs (default 1)")
    opt.add_argument("--min-lr", type=float, default=None, help="learning rate at the end of the cosine (default 0)")
    opt.add_argument("--label-smoothing", type=float, default=None, help="default 0.1")
    opt.add_argument("--clip-grad", type=positive(float), default=None, help="clip the gradient norm")
    opt.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None, help="mixed precision (fp16: GPU)")
    opt.add_argument(
        "--hyper-lr-scale", type=positive(float), default=None, help="learning-rate multiplier of DY-ReLU's parameters"
    )
    opt.add_argument(
        "--hyper-weight-decay",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weight decay on DY-ReLU's hyper-function weights (default on)",
    )
    opt.add_argument("--tau-start", type=positive(float), default=None, help="DY-ReLU-C temperature schedule start")
    opt.add_argument("--tau-epochs", type=float, default=None, help="epochs to anneal τ from --tau-start to --tau-end")
    opt.add_argument("--tau-end", type=positive(float), default=None, help="τ at the end of the schedule (default 1)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    """Where the run goes and how it runs: seed, output, resume, upgrade, threads, device, logging."""
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--seed", type=int, default=None, help="seed (default 0); the same seed, the same metrics")
    run_group.add_argument("--out", required=True, type=Path, help="output folder")
    run_group.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    run_group.add_argument(
        "--init-from",
        default=None,
        help="start from this run's weights (folder or checkpoint): fine-tune it, or upgrade its ReLUs to --act "
        "dyrelu_a/b/c with dyrelu.convert (exact for A and B)",
    )
    run_group.add_argument("--workers", type=int, default=None, help="batch-building processes (default 0)")
    run_group.add_argument("--threads", type=positive(), default=None, help="CPU threads per process")
    run_group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    run_group.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC (default: conv nets)"
    )
    run_group.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None, help="default on")
    run_group.add_argument(
        "--dynamics-images",
        type=int,
        default=None,
        help="test images on which each epoch measures the DY-ReLU layers' dynamics (dyn_* metrics; default 256)",
    )
    run_group.add_argument(
        "--precise-bn",
        type=int,
        default=None,
        metavar="N",
        help="before each evaluation, recompute the BatchNorm statistics over N training images with the epoch's "
        "final weights (default 0: the running averages; short runs at a high learning rate need it)",
    )
    run_group.add_argument("--json", action="store_true", help="print the final metrics as JSON")


_PLAIN = (
    "model",
    "init_from",
    "num_classes",
    "small_input",
    "act_context",
    "data",
    "data_dir",
    "data_fraction",
    "eval_fraction",
    "augment",
    "val_size",
    "epochs",
    "batch_size",
    "eval_batch_size",
    "opt",
    "lr",
    "momentum",
    "weight_decay",
    "hyper_lr_scale",
    "hyper_weight_decay",
    "warmup_epochs",
    "min_lr",
    "label_smoothing",
    "clip_grad",
    "amp",
    "tau_start",
    "tau_epochs",
    "tau_end",
    "seed",
    "workers",
    "threads",
    "device",
    "channels_last",
    "tensorboard",
    "dynamics_images",
    "precise_bn",
)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line (the others keep their defaults or the checkpoint's)."""
    values = {name: getattr(args, name) for name in _PLAIN if getattr(args, name, None) is not None}
    if args.act is not None:
        values["act"] = None if args.act.lower() == "none" else args.act.lower()
    if "data_dir" in values:
        values["data_dir"] = str(values["data_dir"])
    kwargs = act_kwargs(args)
    if kwargs is not None:
        values["act_kwargs"] = kwargs
    extra = data_kwargs(args)
    if extra:
        values["data_kwargs"] = extra
    return values


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say; user errors raise :class:`CLIError`."""
    from dyrelu.train import TrainConfig, find_checkpoint, fit, load_checkpoint

    changes = overrides(args)
    with user_errors(checkpoint=args.out, resume=RESUME_RUN):
        ckpt = find_checkpoint(args.out)
        base = TrainConfig(data="fashion-mnist")
        if args.resume and ckpt.is_file():
            base = TrainConfig.from_dict(load_checkpoint(ckpt)["config"])
        try:
            config = base.replace(**changes)
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from None
        check_model_options(config.model, config.act, config.act_kwargs)
        log = print_line if is_main_process() else None
        result = fit(config, args.out, resume=args.resume, log=log, progress=want_progress(args))
    if is_main_process() and result.metrics:
        last = result.metrics[-1]
        best = max(result.metrics, key=lambda row: row["test_acc"])
        if args.json:
            print(json.dumps({"final": last, "best": best, "out": str(args.out)}))
        else:
            print(
                f"done: {last['epoch']} epochs, test accuracy {last['test_acc']:.2f}% (best {best['test_acc']:.2f}% "
                f"after epoch {best['epoch']}); checkpoint {result.checkpoint}, metrics {args.out / 'metrics.csv'}"
            )
    return 0
