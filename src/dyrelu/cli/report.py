"""``dyrelu report``: generate REPRODUCTION.md from the results CSV (byte for byte reproducible)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dyrelu.cli import CLIError
from dyrelu.files import write_text_atomic

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "report",
        help="write REPRODUCTION.md from the results CSV",
        description="Generate the reproduction report (tables, verdicts) from the results of `dyrelu compare`.",
    )
    parser.add_argument("--results", default="results/grid.csv", help="the results CSV (default results/grid.csv)")
    parser.add_argument(
        "--recipe-results",
        default="results/recipe.csv",
        help="the recipe study's CSV, appended as section R1 when it exists (default results/recipe.csv)",
    )
    parser.add_argument(
        "--converged-results",
        default="results/converged.csv",
        help="the converged grid's CSV; its section comes first when it or --plateau-results exists (default "
        "results/converged.csv)",
    )
    parser.add_argument(
        "--plateau-results", default="results/plateau.csv", help="the plateau study's CSV (default results/plateau.csv)"
    )
    parser.add_argument(
        "--cluttered-results",
        default="results/cluttered.csv",
        help="claim C1-cluttered's CSV, in the section after the converged one (default results/cluttered.csv)",
    )
    parser.add_argument(
        "--upgrade-results",
        default="results/upgrade.csv",
        help="claim U1's CSV, in the section after the converged one (default results/upgrade.csv)",
    )
    parser.add_argument(
        "--estimate",
        default="results/converged_estimate.csv",
        help="the converged grid's cost estimate (default results/converged_estimate.csv)",
    )
    parser.add_argument(
        "--keypoint-results",
        default="results/keypoints.csv",
        help="the keypoint grid's CSV, appended as section K1 when it exists (default results/keypoints.csv)",
    )
    parser.add_argument("--out", default="REPRODUCTION.md", help="the report to write (default REPRODUCTION.md)")
    parser.add_argument(
        "--readme",
        default=None,
        help="also put the verdict table between this README's reproduction-summary markers (make report passes "
        "README.md)",
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if --out (or the README's table) is out of date"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Write (or ``--check``) REPRODUCTION.md and the README's table from the results CSVs."""
    from dyrelu.experiments import read_results
    from dyrelu.experiments.report import make_report

    rows = read_results(args.results)
    if not rows:
        raise CLIError(f"no results in {args.results}; run `dyrelu compare` first")
    converged, plateau = read_results(args.converged_results), read_results(args.plateau_results)
    cluttered, upgrade = [], []
    preface = ""
    if converged or plateau:
        from dyrelu.experiments.correct import correct_path, read_correct
        from dyrelu.experiments.report import beyond_report, converged_report

        cluttered, upgrade = read_results(args.cluttered_results), read_results(args.upgrade_results)
        try:
            correct = read_correct(correct_path(args.converged_results))
            preface = converged_report(converged, plateau, read_results(args.estimate), correct=correct)
            beyond = {
                **read_correct(correct_path(args.cluttered_results)),
                **read_correct(correct_path(args.upgrade_results)),
            }
            preface += "\n" + beyond_report(cluttered, upgrade, correct=beyond)
        except (KeyError, ValueError) as err:
            raise CLIError(
                f"{args.converged_results}, {args.plateau_results}, {args.cluttered_results} or {args.upgrade_results} "
                f"is not a results file of dyrelu compare: {err}"
            ) from err
    try:
        text = make_report(rows, preface=preface)
    except (KeyError, ValueError) as err:
        raise CLIError(f"{args.results} is not a results file of dyrelu compare: {err}") from err
    recipe_rows = read_results(args.recipe_results)
    if recipe_rows:
        from dyrelu.experiments.report import recipe_report

        try:
            text = text.rstrip("\n") + "\n\n" + recipe_report(recipe_rows)
        except (KeyError, ValueError) as err:
            raise CLIError(f"{args.recipe_results} is not a results file of the recipe study (R1): {err}") from err
    keypoint_rows = read_results(args.keypoint_results)
    if keypoint_rows:
        from dyrelu.experiments.report import keypoint_report

        try:
            text = text.rstrip("\n") + "\n\n" + keypoint_report(keypoint_rows).rstrip("\n") + "\n"
        except (KeyError, ValueError) as err:
            raise CLIError(f"{args.keypoint_results} is not a results file of dyrelu keypoints grid: {err}") from err
    runs = {
        args.results: rows,
        args.converged_results: converged,
        args.plateau_results: plateau,
        args.cluttered_results: cluttered,
        args.upgrade_results: upgrade,
        args.recipe_results: recipe_rows,
        args.keypoint_results: keypoint_rows,
    }
    sources = ", ".join(f"{len(found)} in {path}" for path, found in runs.items() if found)
    targets = {Path(args.out): text}
    readme = Path(args.readme) if args.readme else None
    if readme is not None:
        from dyrelu.experiments.report import readme_summary, replace_readme_summary

        try:
            targets[readme] = replace_readme_summary(readme.read_text(), readme_summary(text))
        except (OSError, ValueError) as err:
            raise CLIError(f"cannot update {readme}: {err}") from err
    if args.check:
        stale = [str(path) for path, want in targets.items() if not path.exists() or path.read_text() != want]
        for path in targets:
            print(f"{path} is {'out of date: run dyrelu report' if str(path) in stale else 'up to date'}")
        return 1 if stale else 0
    for path, want in targets.items():
        write_text_atomic(path, want)
        print(f"wrote {path} from {sum(map(len, runs.values()))} runs ({sources})")
    return 0
