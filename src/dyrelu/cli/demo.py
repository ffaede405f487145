"""``dyrelu demo``: ReLU vs DY-ReLU-B in a small MobileNetV2 on Fashion-MNIST, side by side.

Sized for a 2-core CPU (about 5-12 minutes, depending on what else runs there): a deterministic
fraction of the training set (4.8k images), 3 epochs, evaluation on 2k test images, then a table
(test accuracy, parameters, MAdds, time per epoch), a learning-curve plot and the table as JSON and
Markdown. Each run resumes if its folder already holds a checkpoint, so an
interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dyrelu.cli import CLIError
from dyrelu.cli._common import (
    RESUME_GRID,
    add_progress_arg,
    check_model_options,
    positive,
    print_line,
    user_errors,
    want_progress,
)

__all__ = ["add_parser", "run"]

_DEFAULTS = {
    "model": "mobilenetv2_050",
    "acts": "relu,dyrelu_b",
    "epochs": 3,
    "data_fraction": 0.08,
    "eval_fraction": 0.2,
    "batch_size": 64,
    "lr": 0.05,
    "out": "runs/demo",
}
_LABELS = {"relu": "ReLU", "dyrelu_a": "DY-ReLU-A", "dyrelu_b": "DY-ReLU-B", "dyrelu_c": "DY-ReLU-C"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo",
        help="train a small MobileNetV2 with ReLU and with DY-ReLU-B on Fashion-MNIST and compare",
        description=(
            "Train MODEL (small-input stem) on a deterministic fraction of Fashion-MNIST once per activation, with "
            "the same seed and settings, then print a side-by-side table and write OUT/results.json, "
            "OUT/results.md and OUT/curves.png. The defaults take about 5-12 minutes on 2 CPU cores (on a busy "
            "machine pass --threads 1: PyTorch's threads stall when they share the cores). Runs resume "
            "from OUT/<act>/last.pt; delete OUT to start over."
        ),
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist, from `apt-get install "
        "dataset-fashion-mnist`)",
    )
    parser.add_argument("--model", default=_DEFAULTS["model"], help=f"default {_DEFAULTS['model']}")
    parser.add_argument("--acts", default=_DEFAULTS["acts"], help=f"comma-separated (default {_DEFAULTS['acts']})")
    parser.add_argument("--epochs", type=positive(), default=_DEFAULTS["epochs"], help=f"default {_DEFAULTS['epochs']}")
    parser.add_argument(
        "--data-fraction",
        type=float,
        default=_DEFAULTS["data_fraction"],
        help=f"of the 60k training images, class-stratified (default {_DEFAULTS['data_fraction']})",
    )
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=_DEFAULTS["eval_fraction"],
        help=f"of the 10k test images, class-stratified (default {_DEFAULTS['eval_fraction']})",
    )
    parser.add_argument(
        "--small-input",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the small-input stem (total stride 8; default) or the ImageNet geometry (stride 32: 28×28 ends at 1×1)",
    )
    parser.add_argument(
        "--batch-size", type=positive(), default=_DEFAULTS["batch_size"], help=f"default {_DEFAULTS['batch_size']}"
    )
    parser.add_argument("--lr", type=positive(float), default=_DEFAULTS["lr"], help=f"SGD (default {_DEFAULTS['lr']})")
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    parser.add_argument("--threads", type=positive(), default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=Path(_DEFAULTS["out"]), help=f"default {_DEFAULTS['out']}")
    add_progress_arg(parser)
    return parser


def _profile(model, input_size: tuple[int, ...]) -> tuple[int, int | None]:
    """The model's parameters and MAdds for ``input_size`` (MAdds ``None`` where they cannot be counted)."""
    try:
        from dyrelu.analysis.cost import profile_model
    except ImportError:
        return sum(p.numel() for p in model.parameters()), None
    result = profile_model(model, input_size)
    return int(result.params), int(result.madds)


def _fmt_count(value: int | None) -> str:
    """A count in thousands or millions (``n/a`` for ``None``)."""
    if value is None:
        return "n/a"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}K"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the demo's rows."""
    header = ["activation", "test acc (%)", "best acc (%)", "params", "MAdds", "s / epoch", "train img/s"]
    rule = "|" + "|".join("---:" if i else ":---" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for row in rows:
        cells = [
            row["label"],
            f"{row['test_acc']:.2f}",
            f"{row['best_test_acc']:.2f}",
            _fmt_count(row["params"]),
            _fmt_count(row["madds"]),
            f"{row['seconds_per_epoch']:.1f}",
            f"{row['train_images_per_second']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary(rows: list[dict[str, Any]]) -> str:
    """Each activation against the first one: accuracy, parameters, MAdds and time per epoch, one line each."""
    if len(rows) < 2:
        return ""
    base = rows[0]
    parts = []
    for row in rows[1:]:
        text = (
            f"{row['label']} vs {base['label']}: {row['test_acc'] - base['test_acc']:+.2f} points test accuracy, "
            f"{100 * (row['params'] / base['params'] - 1):+.1f}% params"
        )
        if row["madds"] and base["madds"]:
            text += f", {100 * (row['madds'] / base['madds'] - 1):+.1f}% MAdds"
        text += f", {row['seconds_per_epoch'] / base['seconds_per_epoch']:.2f}x time per epoch"
        parts.append(text)
    return "\n".join(parts)


def _plot(runs: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """The accuracy and loss curves of every run, train and test, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for label, metrics in runs.items():
        epochs = [row["epoch"] for row in metrics]
        (line,) = ax_acc.plot(epochs, [row["test_acc"] for row in metrics], marker="o", label=f"{label} test")
        color = line.get_color()
        ax_acc.plot(epochs, [row["train_acc"] for row in metrics], ls="--", color=color, label=f"{label} train")
        ax_loss.plot(epochs, [row["train_loss"] for row in metrics], ls="--", color=color, label=f"{label} train")
        ax_loss.plot(epochs, [row["test_loss"] for row in metrics], marker="o", color=color, label=f"{label} test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (train: with label smoothing)")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _share(fraction: float, total: int) -> str:
    """How much of a set of ``total`` images the demo uses, in words (``0.1 of the 60k``)."""
    return f"{total // 1000}k" if fraction == 1.0 else f"{fraction:g} of the {total // 1000}k"


def run(args: argparse.Namespace) -> int:
    """Run the demo; user errors raise :class:`CLIError`."""
    acts = [a.strip().lower() for a in args.acts.split(",") if a.strip()]
    if not acts:
        raise CLIError(f"expected comma-separated activation names in --acts, got {args.acts!r}")
    for act in acts:
        check_model_options(args.model, act, {})
    for flag, value in (("--data-fraction", args.data_fraction), ("--eval-fraction", args.eval_fraction)):
        if not 0.0 < value <= 1.0:
            raise CLIError(f"expected {flag} in (0, 1], got {value}")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    for act in acts:
        row, curves[_LABELS.get(act, act)] = _train(args, act)
        rows.append(row)
    _write_results(args, rows, curves, time.perf_counter() - started)
    return 0


def _train(args: argparse.Namespace, act: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train (or resume) the demo's network with ``act``: its row of the results table and its metrics."""
    from dyrelu.train import TrainConfig, fit

    label = _LABELS.get(act, act)
    config = TrainConfig(
        model=args.model,
        act=act,
        small_input=args.small_input,
        data="fashion-mnist",
        data_dir=str(args.data_dir) if args.data_dir is not None else None,
        data_fraction=args.data_fraction,
        eval_fraction=args.eval_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=min(1.0, args.epochs / 4),
        seed=args.seed,
        threads=args.threads,
        tensorboard=False,
    )
    print(
        f"== {label}: {args.model} on {args.data_fraction:g} of Fashion-MNIST's training set, "
        f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}",
        flush=True,
    )
    with user_errors(checkpoint=args.out / act, resume=RESUME_GRID):
        result = fit(config, args.out / act, resume=True, log=print_line, progress=want_progress(args))
    metrics = result.metrics
    c = result.config.in_chans
    params, madds = _profile(result.model, (1, c, 28, 28))
    row = {
        "act": act,
        "label": label,
        "test_acc": metrics[-1]["test_acc"],
        "best_test_acc": max(row["test_acc"] for row in metrics),
        "params": params,
        "madds": madds,
        "seconds_per_epoch": sum(row["epoch_seconds"] for row in metrics) / len(metrics),
        "train_images_per_second": sum(row["train_images_per_second"] for row in metrics) / len(metrics),
        "epochs": len(metrics),
    }
    return row, metrics


def _write_results(
    args: argparse.Namespace, rows: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]], wall: float
) -> None:
    """Print the results table and write it (``results.json``, ``results.md``) and the curves (``curves.png``)."""
    table = format_table(rows)
    summary = _summary(rows)
    stem = "small-input stem" if args.small_input else "ImageNet stem"
    settings = (
        f"{args.model} ({stem}), Fashion-MNIST: {_share(args.data_fraction, 60000)} training and "
        f"{_share(args.eval_fraction, 10000)} test images; {args.epochs} epochs, batch {args.batch_size}, "
        f"SGD lr {args.lr}, seed {args.seed}"
    )
    print()
    print(settings)
    print(table)
    if summary:
        print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "rows": rows, "wall_seconds": wall}, indent=2) + "\n"
    )
    (args.out / "results.md").write_text(f"# dyrelu demo\n\n{settings}\n\n{table}\n\n{summary}\n")
    try:
        _plot(curves, args.out / "curves.png", settings.split(":")[0])
        plot_note = f", {args.out / 'curves.png'}"
    except ImportError:
        plot_note = " (no plot: matplotlib is not installed)"
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'results.md'}{plot_note}; wall time {wall / 60:.1f} min")
