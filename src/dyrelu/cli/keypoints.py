"""``dyrelu keypoints``: train, evaluate and compare keypoint networks on the synthetic keypoint task.

Subcommands: ``train`` (one run, resumable), ``eval`` (a checkpoint on its test split), ``grid`` (claim
K1, backbone × head activation, resumable, into a results CSV) and ``report`` (the K1 section from that CSV).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dyrelu.cli import CLIError
from dyrelu.cli._common import (
    RESUME_GRID,
    RESUME_RUN,
    add_progress_arg,
    check_act,
    key_values,
    positive,
    print_line,
    user_errors,
    want_progress,
)
from dyrelu.files import WriteError, write_text_atomic

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``keypoints`` subcommand (with ``train``, ``eval``, ``grid`` and ``report``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "keypoints",
        help="keypoint heatmaps: the paper's second task, at small scale (train, eval, grid, report)",
        description=(
            "The paper's keypoint experiment on a synthetic task: items (Fashion-MNIST or drawn shapes) scaled, "
            "rotated and pasted among distractors on a noisy canvas, five keypoints per target item that need "
            "context to place, and a SimpleBaseline-style network (a registry backbone cut at stride 16, a "
            "deconvolution head) whose backbone and head activations are chosen separately."
        ),
    )
    sub = parser.add_subparsers(dest="keypoints_command", metavar="ACTION")
    sub.required = True
    _add_train(sub)
    _add_eval(sub)
    _add_grid(sub)
    _add_report(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    """Add ``keypoints train`` (one run, resumable)."""
    p = sub.add_parser(
        "train",
        help="train and evaluate one keypoint network (resumable)",
        description=(
            "Train a keypoint network, evaluating AP, PCK and OKS on the test split after each epoch. OUT receives "
            "last.pt (a checkpoint per epoch, written atomically, loadable with torch.load(weights_only=True)), "
            "metrics.csv (one row per epoch) and config.json. --resume continues exactly where the last checkpoint "
            "left off, with its settings unless options are given again (the model and task options may not "
            "change; --epochs may grow)."
        ),
    )
    _add_train_model_args(p)
    _add_train_task_args(p)
    _add_train_optimisation_args(p)
    _add_train_run_args(p)
    add_progress_arg(p)


def _add_train_model_args(p: argparse.ArgumentParser) -> None:
    """The network: the backbone, where it is cut, the head, and each part's activation and options."""
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default=None, help="a name of dyrelu.models.list_models() (mobilenetv2_035)")
    model.add_argument("--backbone-act", default=None, help="the backbone's activation, or 'none' (default relu)")
    model.add_argument("--head-act", default=None, help="the head's activation (default relu)")
    for where in ("backbone", "head"):
        model.add_argument(
            f"--{where}-act-arg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"a keyword of every {where} activation, VALUE a Python literal (repeatable; e.g. reduction=4)",
        )
    model.add_argument("--output-stride", type=positive(), default=None, help="cut the backbone here (default 16)")
    model.add_argument("--head-layers", type=positive(), default=None, help="deconvolution layers (default 2)")
    model.add_argument("--head-channels", type=positive(), default=None, help="channels per head layer (default 64)")
    model.add_argument(
        "--small-input", action=argparse.BooleanOptionalAction, default=None, help="the backbone's small-image stem"
    )


def _add_train_task_args(p: argparse.ArgumentParser) -> None:
    """The synthetic task: the items, the canvas, the data sizes and the target heatmaps."""
    data = p.add_argument_group("task")
    data.add_argument("--items", choices=("fashion-mnist", "shapes"), default=None, help="item source (fashion-mnist)")
    data.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder (default: the system's)")
    data.add_argument("--image-size", type=positive(), default=None, help="canvas side in pixels (default 64)")
    data.add_argument("--num-train", type=positive(), default=None, help="training images (default 8192)")
    data.add_argument("--num-test", type=positive(), default=None, help="test images (default 1024)")
    data.add_argument("--data-seed", type=int, default=None, help="the data's seed (default 0)")
    data.add_argument("--max-distractors", type=int, default=None, help="distractors per image, 0 to N (default 2)")
    data.add_argument("--max-rotation", type=float, default=None, help="the target's rotation range, degrees (60)")
    data.add_argument("--sigma", type=positive(float), default=None, help="target Gaussian σ, heatmap pixels (1.5)")


def _add_train_optimisation_args(p: argparse.ArgumentParser) -> None:
    """The schedule, the optimizer and DY-ReLU-C's temperature schedule."""
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive(), default=None, help="epochs (default 4)")
    opt.add_argument("--batch-size", type=positive(), default=None, help="images per step (default 32)")
    opt.add_argument("--eval-batch-size", type=positive(), default=None, help="images per evaluation step")
    opt.add_argument("--opt", choices=("adamw", "sgd"), default=None, help="AdamW (default) or SGD with Nesterov")
    opt.add_argument("--lr", type=positive(float), default=None, help="peak learning rate (default 1e-2)")
    opt.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    opt.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=None, help="default 1e-4")
    opt.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up epochs (default 0.25)")
    opt.add_argument("--min-lr", type=float, default=None, help="learning rate at the end (default 0)")
    opt.add_argument("--clip-grad", type=positive(float), default=None, help="clip the gradient norm")
    opt.add_argument("--tau-start", type=positive(float), default=None, help="DY-ReLU-C temperature schedule start")
    opt.add_argument("--tau-epochs", type=float, default=None, help="epochs to anneal τ to --tau-end")
    opt.add_argument("--tau-end", type=positive(float), default=None, help="τ at the end of the schedule (default 1)")


def _add_train_run_args(p: argparse.ArgumentParser) -> None:
    """The metrics' settings, and where and how the run goes."""
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--pck-alpha", type=positive(float), default=None, help="PCK tolerance / item size (0.1)")
    ev.add_argument("--oks-kappa", type=positive(float), default=None, help="OKS per-keypoint constant κ (0.1)")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, type=Path, help="output folder")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    run.add_argument("--seed", type=int, default=None, help="seed (default 0); the same seed, the same metrics")
    run.add_argument("--threads", type=positive(), default=None, help="CPU threads (default: the available cores)")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    run.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC (default on)")
    run.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None, help="default off")
    run.add_argument("--json", action="store_true", help="print the final metrics as JSON")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """Add ``keypoints eval`` (a checkpoint on its task's test split)."""
    p = sub.add_parser(
        "eval",
        help="evaluate a keypoint checkpoint (AP, PCK, OKS)",
        description="Rebuild the keypoint network from CHECKPOINT alone and evaluate it on its task's test split.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint file or a run's folder")
    p.add_argument("--num-test", type=positive(), default=None, help="test images (default: the run's)")
    p.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder (default: the run's)")
    p.add_argument("--batch-size", type=positive(), default=128, help="images per step (default 128)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--threads", type=positive(), default=None, help="CPU threads")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_grid(sub: argparse._SubParsersAction) -> None:
    """Add ``keypoints grid`` (claim K1's runs, resumable; the defaults are the committed grid's budget)."""
    from dyrelu.experiments.keypoints import DEFAULT_KEYPOINT_BUDGET as b

    p = sub.add_parser(
        "grid",
        help="run claim K1: backbone × head activation over relu, dyrelu_a/b/c, several seeds (resumable)",
        description=(
            "Train every (backbone activation, head activation) pair of relu, dyrelu_a, dyrelu_b and dyrelu_c with "
            "each seed and append one row per finished run to the results CSV. Finished runs are skipped and "
            "interrupted ones resume from their last epoch, so the command can be stopped and restarted at any time."
        ),
    )
    p.add_argument("--results", default="results/keypoints.csv", help="the results CSV (results/keypoints.csv)")
    p.add_argument("--runs-dir", default="runs/keypoints", help="checkpoints and logs per run (runs/keypoints)")
    p.add_argument("--items", choices=("fashion-mnist", "shapes"), default=b.items, help=f"default {b.items}")
    p.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder (default: the system's)")
    p.add_argument("--epochs", type=positive(), default=b.epochs, help=f"epochs per run (default {b.epochs})")
    p.add_argument("--num-train", type=positive(), default=b.num_train, help=f"default {b.num_train}")
    p.add_argument("--num-test", type=positive(), default=b.num_test, help=f"default {b.num_test}")
    p.add_argument("--seeds", default=",".join(map(str, b.seeds)), help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--jobs", type=positive(), default=2, help="runs at once, one process each (default 2)")
    p.add_argument("--threads", type=positive(), default=None, help="threads per run (default: cores / jobs)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    p.add_argument("--dry-run", action="store_true", help="list the runs still to do and exit")


def _add_report(sub: argparse._SubParsersAction) -> None:
    """Add ``keypoints report`` (the K1 section from the grid's CSV)."""
    p = sub.add_parser(
        "report",
        help="print the K1 report section (markdown) from the results CSV",
        description="Write claim K1's tables and verdicts from the keypoint results CSV (byte for byte reproducible).",
    )
    p.add_argument("--results", default="results/keypoints.csv", help="the results CSV (results/keypoints.csv)")
    p.add_argument("--out", default=None, help="write the section here instead of printing it")


# -- running ---------------------------------------------------------------------------------------------------

_PLAIN = (
    "backbone",
    "output_stride",
    "head_layers",
    "head_channels",
    "small_input",
    "items",
    "data_dir",
    "image_size",
    "num_train",
    "num_test",
    "data_seed",
    "max_distractors",
    "max_rotation",
    "sigma",
    "epochs",
    "batch_size",
    "eval_batch_size",
    "opt",
    "lr",
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "min_lr",
    "clip_grad",
    "tau_start",
    "tau_epochs",
    "tau_end",
    "pck_alpha",
    "oks_kappa",
    "seed",
    "threads",
    "device",
    "channels_last",
    "tensorboard",
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The keypoint training options given on the command line (the others keep their defaults or the checkpoint's)."""
    values = {name: getattr(args, name) for name in _PLAIN if getattr(args, name, None) is not None}
    if args.backbone_act is not None:
        values["backbone_act"] = None if args.backbone_act.lower() == "none" else args.backbone_act.lower()
    if args.head_act is not None:
        values["head_act"] = args.head_act.lower()
    if args.backbone_act_arg:
        values["backbone_act_kwargs"] = key_values(args.backbone_act_arg, "--backbone-act-arg")
    if args.head_act_arg:
        values["head_act_kwargs"] = key_values(args.head_act_arg, "--head-act-arg")
    return values


def _check_model(config: Any) -> None:
    """Fail early, in one line, on an unknown backbone or activation or an option the activation lacks."""
    try:
        from dyrelu.models import list_models
    except ImportError as err:
        raise CLIError(str(err)) from None
    if config.backbone.lower() not in list_models():
        raise CLIError(f"unknown backbone {config.backbone!r}, expected one of {', '.join(list_models())}")
    for where, act, kwargs in (
        ("backbone", config.backbone_act, config.backbone_act_kwargs),
        ("head", config.head_act, config.head_act_kwargs),
    ):
        if act is None:
            if kwargs:
                raise CLIError(f"--{where}-act none takes no options, got {kwargs}")
            continue
        check_act(act, kwargs, where=where, or_none=where == "backbone")


def _train(args: argparse.Namespace) -> int:
    """``keypoints train``: one run (or its resumption), the final metrics printed."""
    from dyrelu.keypoints import KeypointConfig, fit_keypoints
    from dyrelu.train import find_checkpoint, load_checkpoint

    changes = _overrides(args)
    with user_errors(checkpoint=args.out, resume=RESUME_RUN):
        ckpt = find_checkpoint(args.out)
        base = KeypointConfig()
        if args.resume and ckpt.is_file():
            saved = load_checkpoint(ckpt)
            if saved.get("task") != "keypoints":
                raise CLIError(f"{ckpt} is not a keypoint checkpoint (resume classification runs with `dyrelu train`)")
            try:
                base = KeypointConfig.from_dict(saved["config"])
            except (TypeError, ValueError) as err:
                raise CLIError(f"the config in {ckpt} is invalid: {err}") from None
        try:
            config = base.replace(**changes)
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from None
        _check_model(config)
        try:
            result = fit_keypoints(
                config,
                args.out,
                resume=args.resume,
                log=print_line,
                progress=want_progress(args),
            )
        except ValueError as err:
            if type(err) is not ValueError:
                raise
            raise CLIError(str(err)) from None
    if result.metrics:
        last = result.metrics[-1]
        if args.json:
            print(json.dumps({"final": last, "out": str(args.out)}))
        else:
            print(
                f"done: {last['epoch']} epochs, test AP {100 * last['test_ap']:.2f}, PCK@{config.pck_alpha:g} "
                f"{100 * last['test_pck']:.2f}; checkpoint {result.checkpoint}, metrics {args.out / 'metrics.csv'}"
            )
    return 0


def _eval(args: argparse.Namespace) -> int:
    """``keypoints eval``: the checkpoint's AP, PCK and OKS on its task's test split."""
    from dyrelu.keypoints import evaluate_keypoint_checkpoint

    with user_errors():
        result = evaluate_keypoint_checkpoint(
            args.checkpoint,
            num_test=args.num_test,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            device=args.device,
            threads=args.threads,
        )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.checkpoint} ({result['backbone']}, backbone {result['backbone_act']}, head {result['head_act']}, "
            f"epoch {result['epoch']}): AP {100 * result['ap']:.2f}, AP50 {100 * result['ap50']:.2f}, "
            f"AP75 {100 * result['ap75']:.2f}, PCK {100 * result['pck']:.2f}, mean OKS {result['oks']:.4f}, "
            f"loss {result['loss']:.3e} ({result['count']} images)"
        )
    return 0


def _grid(args: argparse.Namespace) -> int:
    """``keypoints grid``: the K1 runs not yet in the results CSV (or, with ``--dry-run``, their list)."""
    from dyrelu.experiments.keypoints import (
        DEFAULT_KEYPOINT_BUDGET,
        KeypointBudget,
        pending_keypoint_runs,
        run_keypoint_grid,
    )

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise CLIError(f"expected comma-separated integer seeds, got {args.seeds!r}") from None
    if not seeds:
        raise CLIError(f"expected at least one seed, got {args.seeds!r}")
    budget = KeypointBudget(
        items=args.items,
        data_dir=args.data_dir,
        epochs=args.epochs,
        num_train=args.num_train,
        num_test=args.num_test,
        batch_size=DEFAULT_KEYPOINT_BUDGET.batch_size,
        lr=DEFAULT_KEYPOINT_BUDGET.lr,
        seeds=seeds,
        threads=args.threads,
    )
    if args.dry_run:
        for spec in pending_keypoint_runs(args.results, budget=budget):
            print(spec.run_id)
        return 0
    with user_errors(resume=RESUME_GRID):
        try:
            run_keypoint_grid(
                args.results,
                args.runs_dir,
                budget=budget,
                jobs=args.jobs,
                limit=args.limit,
                log=print_line,
            )
        except WriteError:
            raise  # user_errors says how to go on
        except (ValueError, OSError) as err:
            raise CLIError(str(err).splitlines()[0]) from err
    print(f"results in {args.results}; the section: dyrelu keypoints report --results {args.results}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    """``keypoints report``: the K1 section, printed or written to ``--out``."""
    from dyrelu.experiments import read_results
    from dyrelu.experiments.report import keypoint_report

    rows = read_results(args.results)
    if not rows:
        raise CLIError(f"no results in {args.results}; run `dyrelu keypoints grid` first")
    try:
        text = keypoint_report(rows)
    except (KeyError, ValueError) as err:
        raise CLIError(f"{args.results} is not a results file of dyrelu keypoints grid: {err}") from err
    if args.out is None:
        print(text, end="")
        return 0
    out = write_text_atomic(args.out, text)
    print(f"wrote {out} from {len(rows)} runs")
    return 0


_ACTIONS = {"train": _train, "eval": _eval, "grid": _grid, "report": _report}


def run(args: argparse.Namespace) -> int:
    """Run the ``keypoints`` action of ``args``; user errors raise :class:`CLIError`."""
    return _ACTIONS[args.keypoints_command](args)
