"""The short grid's report (:func:`make_report`): its budget, the verdicts, one section per claim and the cost table."""

from __future__ import annotations

from collections.abc import Sequence

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments.claims import DEFAULT_CLAIMS, Claim, claim_verdicts
from dyrelu.experiments.grid import Config
from dyrelu.experiments.report._tables import claim_section, values_of, verdict_table
from dyrelu.experiments.stats import Stats, stat_of, summarise


def _cost_table(stats: Stats) -> list[str]:
    lines = [
        "| model | activation | options | params | MAdds | Δ params | Δ MAdds | s/epoch | time vs ReLU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, act, kwargs), s in sorted(stats.items()):
        base = stat_of(stats, Config(model, "relu"))
        if base is None or act == "relu":
            dp = dm = dt = ""
        else:
            dp = f"{100 * (s.params / base.params - 1):+.1f}%"
            dm = f"{100 * (s.madds / base.madds - 1):+.1f}%"
            dt = f"{s.seconds_per_epoch / base.seconds_per_epoch:.2f}×"
        options = "" if kwargs == "{}" else kwargs.replace("|", "/")
        lines.append(
            f"| {model} | {act} | {options} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {dp} | {dm} | "
            f"{s.seconds_per_epoch:.1f} | {dt} |"
        )
    return lines


def _budget_lines(rows: Sequence[dict[str, str]], command: str) -> list[str]:
    seconds = sum(float(r["train_seconds"]) for r in rows)
    return [
        f"Produced by `{command}`, then `dyrelu report` (both: `make reproduce`; this file is generated from "
        "`results/` and regenerates byte for byte).",
        "",
        f"- runs: {len(rows)}; seeds per configuration: {values_of(rows, 'seed')}",
        f"- data: Fashion-MNIST (the real dataset), training fraction {values_of(rows, 'data_fraction')} "
        "(class-stratified), full test set of 10,000 images",
        f"- epochs: {values_of(rows, 'epochs')}; batch size {values_of(rows, 'batch_size')}; SGD with Nesterov "
        "momentum, cosine schedule with 1 warm-up epoch, label smoothing 0.1",
        f"- threads per run: {values_of(rows, 'threads')}; torch {values_of(rows, 'torch')}; commits "
        f"{values_of(rows, 'commit')}",
        f"- total training time: {seconds / 3600:.2f} process hours (one thread each; two at a time on 2 cores "
        f"is about {seconds / 7200:.1f} h of wall time)",
    ]


def make_report(
    rows: Sequence[dict[str, str]],
    claims: Sequence[Claim] = DEFAULT_CLAIMS,
    command: str = "dyrelu compare --jobs 2",
    preface: str = "",
) -> str:
    """REPRODUCTION.md's text for the result ``rows`` (as :func:`dyrelu.experiments.read_results` returns).

    A claim gets a verdict only when every configuration it compares has
    :data:`~dyrelu.experiments.stats.MIN_SEEDS` runs. ``preface``: sections of other budgets that come first (the
    converged one); the short grid then gets its own heading.
    """
    stats = summarise(rows)
    verdicts = claim_verdicts(claims, stats)
    lines = [
        "# Reproducing DY-ReLU's claims at small scale",
        "",
        "The paper's experiments (ImageNet, COCO) cannot run on 2 CPU cores; its claims can be tested on",
        "Fashion-MNIST with the paper's own networks at small width. Each configuration is trained with",
        "several seeds; a difference counts only when it exceeds its spread, `sqrt(std_a² + std_b²)` of",
        "the two configurations' test accuracies over seeds. Δ is in percentage points (pp). The slope",
        "range is the DY-ReLU layers' median dynamic range of the slopes (mean over seeds); below",
        f"{STATIC_THRESHOLD} a configuration is static, a ReLU plus an unused hyper function, and its claim",
        "tests nothing about DY-ReLU's dynamics.",
        "",
        *([preface.rstrip("\n"), "", "## The short budget", ""] if preface else []),
        *_budget_lines(rows, command),
        "",
        "## Verdicts",
        "",
        *verdict_table(claims, verdicts),
        "",
    ]
    for claim in claims:
        lines += claim_section(claim, stats, *verdicts[claim.name])
    lines += [
        "## C6: cost",
        "",
        "Parameters and multiply-adds of one 28×28 image (convolutions and linear layers, counted with",
        "`torch.utils.flop_counter`), and the measured training time per epoch (median over seeds; runs",
        "shared the machine two at a time and at times with other jobs, so the times are indicative: the",
        "speed of the activation itself is measured side by side on a quiet machine in docs/benchmarks.md).",
        "",
        *_cost_table(stats),
        "",
    ]
    return "\n".join(lines)
