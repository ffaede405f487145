"""``dyrelu demo``: what DY-ReLU does, in three parts that fit about 10 minutes on a 2-core CPU.

1. **The converged results**, read from the committed ``results/converged.csv`` (12-epoch runs on the full
   training set, 3 seeds each, the paper's claims judged by ``dyrelu report``): labelled as such, not re-run,
   with what the plateau study (``results/plateau.csv`` beside it) says of that length.
2. **A live run**: a small MobileNetV2 with ReLU and with DY-ReLU-B, trained by the recipe of the recipe study
   on a deterministic fraction of Fashion-MNIST (4.8k images, 3 epochs, 2k test images), then each run's
   accuracy, the DY-ReLU layers' dynamics numbers (static or dynamic) and the dynamics figures
   (``OUT/dyrelu_b-dynamics/``). The BatchNorm statistics are recomputed before each evaluation (precise BN):
   at this learning rate the running averages lag the weights.
3. **The speed**, side by side: training steps and evaluation batches of the two networks timed interleaved in
   this one process (not two runs one after the other on a shared machine), medians over rounds.

Each run resumes if its folder already holds a checkpoint, so an interrupted demo continues where it stopped.
Files: ``OUT/results.json`` and ``OUT/results.md`` (written atomically), ``OUT/curves.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from dyrelu.cli import CLIError
from dyrelu.cli._common import add_progress_arg, check_model_options, positive
from dyrelu.cli.demo import live, output

__all__ = ["add_parser", "run"]

_DEFAULTS = {
    "model": "mobilenetv2_035",
    "acts": "relu,dyrelu_b",
    "epochs": 3,
    "data_fraction": 0.08,
    "eval_fraction": 0.2,
    "batch_size": 64,
    "lr": 0.05,
    "out": "runs/demo",
    "results": "results/converged.csv",
}

#: Interleaved rounds of the speed measurement, and timed steps per network and round.
SPEED_ROUNDS, SPEED_STEPS = 7, 3


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo",
        help="the converged results, a short live run of ReLU vs DY-ReLU-B with its dynamics, and their speed",
        description=(
            "Three parts: (1) print the converged grid's results from the committed RESULTS CSV (not re-run); "
            "(2) train MODEL (small-input stem) on a deterministic fraction of Fashion-MNIST once per activation, "
            "same seed and settings, DY-ReLU by the recipe, and print accuracy and the DY-ReLU layers' dynamics, "
            "drawing them in OUT/<act>-dynamics/; (3) time training steps of the networks side by side, "
            "interleaved in this process. Writes OUT/results.json, OUT/results.md and OUT/curves.png. The "
            "defaults take about 10 minutes on 2 CPU cores (on a busy machine pass --threads 1: PyTorch's threads "
            "stall when they share the cores). Runs resume from OUT/<act>/last.pt; delete OUT to start over."
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
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(_DEFAULTS["results"]),
        help=f"the converged grid's results CSV shown in part 1 (default {_DEFAULTS['results']})",
    )
    add_progress_arg(parser)
    return parser


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
    results: dict[str, Any] = {"converged": _converged(args.results)}
    print("\n== 2. A live run\n", flush=True)
    rows, curves, figures = [], {}, {}
    for act in acts:
        row, result = live.train(args, act)
        rows.append(row)
        curves[row["label"]] = result.metrics
        if act.startswith("dyrelu"):
            summary = live.draw_dynamics(args, act, result.model)
            figures[act] = [str(args.out / f"{act}-dynamics" / name) for name in summary["files"].values()]
    settings = _settings(args)
    print(f"\n{settings}\n{output.accuracy_table(rows)}\n{_dynamics_lines(rows)}", flush=True)
    print(f"\n== 3. The speed, side by side in this process ({SPEED_ROUNDS} interleaved rounds)\n", flush=True)
    speed = live.time_steps(args, acts, SPEED_ROUNDS, SPEED_STEPS)
    for row in rows:
        row["train_step_seconds"], row["eval_batch_seconds"] = speed[row["act"]]["train"], speed[row["act"]]["eval"]
    speed_note = (
        f"fresh networks, batch {args.batch_size} of 28×28, channels-last, {_threads(args)}; median over "
        f"{SPEED_ROUNDS} rounds of {SPEED_STEPS} timed steps each, the networks taking turns within each round"
    )
    print(f"{output.speed_table(rows)}\n{speed_note}", flush=True)
    wall = time.perf_counter() - started
    results.update(settings=settings, rows=rows, speed=speed_note, figures=figures, wall_seconds=wall)
    _write(args, results, curves, figures)
    return 0


def _converged(path: Path) -> dict[str, Any]:
    """Print what the committed converged grid measured (part 1); its verdicts for results.json."""
    from dyrelu.experiments import CONVERGED_CLAIMS, read_results
    from dyrelu.experiments.claims import claim_verdicts
    from dyrelu.experiments.correct import correct_path, read_correct
    from dyrelu.experiments.report import converged_summary, first_device_stats, plateau_summary

    print(f"== 1. The converged results: {live.relative(path)}, committed with the repository (not re-run here)\n")
    if not path.is_file():
        print(f"no converged results at {path}: run the demo from the repository's folder, or pass --results")
        return {"source": str(path), "runs": 0}
    rows = read_results(path)
    print(
        "12 epochs of the full training set (minus 5,000 validation images) per run, 3 seeds per configuration, "
        "the recipe of REPRODUCTION.md's R1; the grid is still running where runs are missing:\n"
    )
    plateau = path.parent / "plateau.csv"  # the plateau study's rows, beside the grid's
    note = plateau_summary(read_results(plateau)) if plateau.is_file() else ""
    if note:
        print(f"{note}\n")
    correct = read_correct(correct_path(path))  # which test images each run got right: the paired tests
    print(converged_summary(rows, CONVERGED_CLAIMS, correct=correct), flush=True)
    verdicts = claim_verdicts(CONVERGED_CLAIMS, first_device_stats(rows)[2])
    return {"source": str(path), "runs": len(rows), "verdicts": {name: v[0] for name, v in verdicts.items()}}


def _settings(args: argparse.Namespace) -> str:
    stem = "small-input stem" if args.small_input else "ImageNet stem"
    return (
        f"{args.model} ({stem}), Fashion-MNIST: {_share(args.data_fraction, 60000)} training and "
        f"{_share(args.eval_fraction, 10000)} test images; {args.epochs} epochs, batch {args.batch_size}, "
        f"SGD lr {args.lr}, seed {args.seed}; DY-ReLU by the recipe (R1), BatchNorm statistics recomputed "
        f"before each evaluation ({live.PRECISE_BN_IMAGES} training images)"
    )


def _threads(args: argparse.Namespace) -> str:
    import torch

    count = args.threads or torch.get_num_threads()
    return f"{count} thread{'' if count == 1 else 's'}"


def _dynamics_lines(rows: list[dict[str, Any]]) -> str:
    """One line per DY-ReLU run: what its dynamics numbers mean."""
    from dyrelu.analysis import STATIC_THRESHOLD

    lines = []
    for row in rows:
        if row.get("dyn_median") is None:
            continue
        state = "static: a ReLU plus an unused hyper function" if row["static"] else "dynamic"
        lines.append(
            f"{row['label']}: median slope range over layers {row['dyn_median']:.3g} (max {row['dyn_max']:.3g}, "
            f"intercepts {row['dyn_b_median']:.3g}); threshold {STATIC_THRESHOLD}: {state}"
        )
    return "\n".join(lines)


def _write(
    args: argparse.Namespace, results: dict[str, Any], curves: dict[str, list[dict[str, Any]]], figures: dict
) -> None:
    """Write results.json, results.md and curves.png, and print what was written."""
    rows = results["rows"]
    markdown = (
        f"# dyrelu demo\n\n{results['settings']}\n\n{output.accuracy_table(rows)}\n\n{_dynamics_lines(rows)}\n\n"
        f"## Speed\n\n{output.speed_table(rows)}\n\n{results['speed']}\n"
    )
    written = output.write_results(args.out, results, markdown)
    try:
        output.plot_curves(curves, args.out / "curves.png", results["settings"].split(":")[0])
        written.append(args.out / "curves.png")
    except ImportError:
        print("no learning curves: matplotlib is not installed")
    names = [live.relative(path) for path in written] + [live.relative(Path(f)) for fs in figures.values() for f in fs]
    print(f"\nwrote {', '.join(names)}; wall time {results['wall_seconds'] / 60:.1f} min")
