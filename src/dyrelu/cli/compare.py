"""``dyrelu compare``: run the comparison grid of the paper's claims, resumably, into a results CSV."""

from __future__ import annotations

import argparse
import sys

from dyrelu.cli import CLIError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to ``subparsers``."""
    from dyrelu.experiments import DEFAULT_BUDGET

    b = DEFAULT_BUDGET
    parser = subparsers.add_parser(
        "compare",
        help="run the grid of the paper's claims (resumable)",
        description=(
            "Train every configuration of the selected claims with each seed and append one row per finished run "
            "to the results CSV. Finished runs are skipped and interrupted ones resume from their last epoch, so "
            "the command can be stopped and restarted at any time."
        ),
    )
    parser.add_argument("--claims", default=None, help="comma-separated claims, for example C1,C4 (default: all)")
    parser.add_argument(
        "--results",
        default=None,
        help="the results CSV (default: the claims' own, results/grid.csv; results/recipe.csv for R1)",
    )
    parser.add_argument("--runs-dir", default="runs/grid", help="checkpoints and logs per run (default runs/grid)")
    parser.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder (default: the system's)")
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs per run (default: the claims' budget; grid {b.epochs})"
    )
    parser.add_argument(
        "--data-fraction",
        type=float,
        default=None,
        help=f"training fraction (default: the claims' budget; grid {b.data_fraction})",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the claims' budget; grid 0,1,2)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one process each (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N for every run (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--amp",
        choices=("none", "bf16"),
        default=None,
        help="mixed precision of every run (default none; bf16 autocast on a GPU: the rows record it)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs still to do and exit")
    parser.add_argument(
        "--backfill-correct",
        action="store_true",
        help="do not train: record which test images each finished run gets right (beside the results CSV: "
        "results/X.csv has results/X_correct.csv) from its checkpoint in --runs-dir, for the runs that lack it, "
        "and exit",
    )
    parser.add_argument(
        "--estimate",
        metavar="CSV",
        default=None,
        help="do not train: time each configuration's training step side by side, write the estimated seconds "
        "per epoch and the grid's process hours to CSV and print them",
    )
    parser.add_argument(
        "--calibrate",
        metavar="RESULTS",
        default=None,
        help="with --estimate: scale the estimates so that a configuration measured in this results CSV (its "
        "median seconds per epoch) matches",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run (or list, or estimate) the selected claims' missing runs; user errors raise :class:`CLIError`."""
    from dataclasses import replace

    from dyrelu.experiments import claims_budget, pending_runs, run_grid, select_claims

    try:
        claims = select_claims(args.claims.split(",") if args.claims else None)
        base, results = claims_budget(claims)
        seeds = base.seeds if args.seeds is None else tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError as err:
        raise CLIError(str(err)) from err
    if args.jobs < 1:
        raise CLIError(f"expected --jobs >= 1, got {args.jobs}")
    args.results = args.results or results
    budget = replace(
        base,
        epochs=base.epochs if args.epochs is None else args.epochs,
        data_fraction=base.data_fraction if args.data_fraction is None else args.data_fraction,
        seeds=seeds,
        data_dir=args.data_dir,
        extra={
            **base.extra,
            **({"device": args.device} if args.device else {}),
            **({"amp": args.amp} if args.amp else {}),
        },
    )
    if args.dry_run:
        for spec, names in pending_runs(args.results, claims, budget):
            print(f"{spec.run_id}  ({' '.join(names)})")
        return 0
    if args.estimate:
        return _estimate(args, claims, budget)
    if args.backfill_correct:
        return _backfill(args)
    from dyrelu.cli._common import RESUME_GRID, write_error_message
    from dyrelu.files import WriteError

    try:
        run_grid(
            args.results,
            args.runs_dir,
            claims=claims,
            budget=budget,
            jobs=args.jobs,
            limit=args.limit,
            log=lambda line: print(line, flush=True),
        )
    except WriteError as err:  # the results CSV: the runs' checkpoints are intact
        raise CLIError(write_error_message(err, resume=RESUME_GRID)) from None
    except (ValueError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    print(f"results in {args.results}; write the report with: dyrelu report --results {args.results}", file=sys.stderr)
    return 0


def _backfill(args: argparse.Namespace) -> int:
    """``--backfill-correct``: the per-image test correctness of finished runs, from their checkpoints."""
    from dyrelu.experiments.correct import backfill_correct, correct_path
    from dyrelu.files import WriteError

    try:
        count = backfill_correct(args.results, args.runs_dir, device=args.device, log=lambda s: print(s, flush=True))
    except (WriteError, ValueError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    print(f"recorded {count} run{'' if count == 1 else 's'} in {correct_path(args.results)}")
    return 0


def _estimate(args: argparse.Namespace, claims, budget) -> int:
    """``--estimate``: each configuration's estimated cost, and the whole grid's, in process hours."""
    import statistics

    from dyrelu.experiments import plan_runs, read_results, write_estimate
    from dyrelu.experiments.estimate import calibrated, estimate_costs
    from dyrelu.experiments.grid import threads_per_run

    runs = plan_runs(claims, budget.seeds, budget.name)
    configs = list(dict.fromkeys(spec.config for spec, _ in runs))
    threads = threads_per_run(args.jobs)
    estimates = estimate_costs(configs, budget, threads=threads)
    epoch = {e.config: e.epoch_seconds for e in estimates}
    if args.calibrate:
        measured: dict[tuple[str, str, str], list[float]] = {}
        for row in read_results(args.calibrate):
            key = (row["model"], row["act"], row["act_kwargs"])
            measured.setdefault(key, []).append(float(row["seconds_per_epoch"]))
        try:
            epoch = calibrated(estimates, {key: statistics.median(v) for key, v in measured.items()})
        except ValueError as err:
            raise CLIError(f"cannot calibrate with {args.calibrate}: {err}") from err
        print(f"calibrated with the seconds per epoch measured in {args.calibrate}")
    counts = {config: sum(spec.config == config for spec, _ in runs) for config in configs}
    rows = [
        {
            "config": e.config.name,
            "step_seconds": f"{e.step_seconds:.4f}",
            "epoch_seconds": f"{epoch[e.config]:.0f}",
            "epochs": e.epochs,
            "runs": counts[e.config],
            "process_hours": f"{counts[e.config] * e.epochs * epoch[e.config] / 3600:.2f}",
            "threads": threads,
        }
        for e in estimates
    ]
    write_estimate(args.estimate, rows)
    for row in rows:
        print(
            f"{row['config']:<60} {row['step_seconds']} s/step  {row['epoch_seconds']:>5} s/epoch  "
            f"{row['runs']} runs x {row['epochs']} epochs = {row['process_hours']} h"
        )
    total = sum(float(r["process_hours"]) for r in rows)
    print(f"total: {total:.1f} process hours ({total / args.jobs:.1f} h of wall time at {args.jobs} at once)")
    return 0
