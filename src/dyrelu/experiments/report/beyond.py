"""The section after the converged verdicts: C1 on the cluttered canvases and the upgrade of a trained network (U1)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from dyrelu.experiments.claims import CLUTTERED_CLAIM, UPGRADE_CLAIM, Claim, claim_verdicts
from dyrelu.experiments.correct import RunCorrect
from dyrelu.experiments.grid import UPGRADE_BUDGET
from dyrelu.experiments.report._tables import paired_section, verdict_table
from dyrelu.experiments.stats import rows_of, summarise


def _claim_command(claim: Claim) -> str:
    return f"dyrelu compare --claims {claim.name} --jobs 2 --runs-dir runs/converged"


def beyond_report(
    cluttered_rows: Sequence[dict[str, str]],
    upgrade_rows: Sequence[dict[str, str]],
    correct: Mapping[str, RunCorrect] | None = None,
) -> str:
    """The section after the converged verdicts: C1 on the cluttered canvases (C1-cluttered) and the upgrade of a
    trained network (U1), each with its own budget and results file, judged like the converged claims.
    ``correct``: both grids' per-image test correctness, as for :func:`converged_report`."""
    parts = ((CLUTTERED_CLAIM, cluttered_rows), (UPGRADE_CLAIM, upgrade_rows))
    verdicts, stats = {}, {}
    for claim, rows in parts:
        stats[claim.name] = summarise(rows) if rows else {}
        verdicts.update(claim_verdicts([claim], stats[claim.name]))
    seconds = sum(float(r["train_seconds"]) for _, rows in parts for r in rows)
    runs = sum(len(rows) for _, rows in parts)
    lines = [
        "## Beyond the paper's setting",
        "",
        "Two questions the converged grid leaves open, each with a budget of its own (rows in their own files):",
        "",
        f"- **{CLUTTERED_CLAIM.name}**: the paper credits the hyper function with reading the input's global context; "
        "Fashion-MNIST items are centred and alike. `--data cluttered-fashion-mnist` puts the item to classify "
        "among smaller distractors on a textured 32×32 canvas (`dyrelu.data.cluttered`); C1's smallest two networks "
        "train there at the converged schedule (12 epochs, not shown to be converged on this task). "
        f"`{_claim_command(CLUTTERED_CLAIM)}`, rows in `{CLUTTERED_CLAIM.results}`.",
        f"- **{UPGRADE_CLAIM.name}**: each converged ReLU run of mobilenetv2_035 (C1-converged) fine-tuned for "
        f"{UPGRADE_BUDGET.epochs} more epochs (lr {UPGRADE_BUDGET.lr}, cosine), kept as ReLU or converted to "
        "DY-ReLU-B by `dyrelu.convert`, exactly (the last FC of each hyper function at zero: the network computes "
        "what it computed) or with the authors' init of that FC (as nn.Linear: the network changes at conversion), "
        f"the hyper functions at {UPGRADE_BUDGET.extra['hyper_lr_scale']:g}× the learning rate; `dyrelu train "
        "--init-from RUN --act dyrelu_b` does one (`--no-zero-init-last`: the authors' init). The exact upgrade was "
        "static in a short calibration at 10× and 100× that rate and broke the network at 1000× "
        "(`benchmarks/upgrade_hyper_lr.sh`, `docs/benchmarks/upgrade_hyper_lr.csv`), hence the second. "
        f"`{_claim_command(UPGRADE_CLAIM)}` (after C1-converged's mobilenetv2_035 ReLU runs), "
        f"rows in `{UPGRADE_CLAIM.results}`.",
        f"- training time: {seconds / 3600:.2f} process hours over the {runs} run{'' if runs == 1 else 's'} of both "
        "files",
        "",
        "## Verdicts beyond the paper's setting",
        "",
        *verdict_table([claim for claim, _ in parts], verdicts),
        "",
    ]
    for claim, _ in parts:
        lines += paired_section(claim, stats[claim.name], verdicts[claim.name], correct or {}, "###")
    lines += _upgrade_start_table(upgrade_rows)
    return "\n".join(lines).rstrip("\n") + "\n"


def _mean_cell(rows: Sequence[dict[str, str]], column: str, digits: str = ".2f") -> str:
    """The mean of ``column`` over ``rows``, with the smallest and largest value when they differ at ``digits``."""
    values = [float(r[column]) for r in rows if r.get(column, "") != ""]
    if not values:
        return ""
    mean, low, high = (format(v, digits) for v in (statistics.fmean(values), min(values), max(values)))
    return mean if low == high else f"{mean} ({low}–{high})"


def _upgrade_start_table(rows: Sequence[dict[str, str]]) -> list[str]:
    """U1's networks before the first step of their fine-tune, against the same runs after it: what the
    conversion changed (nothing, when exact) and what the fine-tune changed."""
    lines = [
        f"{UPGRADE_CLAIM.name} before the first step of each fine-tune (the ReLU network as trained, each upgrade as "
        "converted) and after it; means over the runs that recorded the start, with the lowest and highest where they "
        "differ (runs trained before it was measured have none):",
        "",
        "| start | runs | test acc. at start (%) | val. acc. at start (%) | slope range at start "
        "| test acc. after (%) |",
        "|---|---|---|---|---|---|",
    ]
    for config in UPGRADE_CLAIM.configs:
        group = rows_of(rows, config)
        started = [r for r in group if r.get("start_test_acc", "") != ""]
        if not started:
            lines.append(f"| {config.display} | 0 of {len(group)} | not recorded | | | |")
            continue
        slope = _mean_cell(started, "start_dyn_median", ".2g") if config.act.startswith("dyrelu") else ""
        lines.append(
            f"| {config.display} | {len(started)} of {len(group)} | {_mean_cell(started, 'start_test_acc')} | "
            f"{_mean_cell(started, 'start_val_acc')} | {slope} | {_mean_cell(started, 'test_acc')} |"
        )
    return [*lines, ""]
