"""REPRODUCTION.md's converged section: the plateau study, the planned and measured cost, the verdicts.

The converged budget trains on the full training set (minus the validation split) for as many epochs as
the plateau study (claim P1) shows the ReLU baseline needs. Its rows (``results/converged.csv``) are
judged by the same rules as the short grid's claims (:func:`dyrelu.report.claim_verdicts`), per device and
precision: rows trained on a GPU (or in bf16) are kept apart from the CPU rows.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from dyrelu.experiments import (
    CONVERGED_BUDGET,
    CONVERGED_CLAIMS,
    PLATEAU_CLAIM,
    Budget,
    Claim,
    plan_runs,
)
from dyrelu.report import claim_section, claim_verdicts, summarise, verdict_table

__all__ = ["CONVERGED_COMMAND", "GPU_COMMAND", "PLATEAU_TOLERANCE", "converged_report", "plateau_choice"]

#: A schedule has converged when its final validation accuracy is within this many pp of the longest's.
PLATEAU_TOLERANCE = 0.3

#: The one command that runs (or continues) the converged grid, claim by claim.
CONVERGED_COMMAND = (
    f"dyrelu compare --claims {','.join(c.name for c in CONVERGED_CLAIMS)} --jobs 2 --runs-dir runs/converged"
)


#: The converged grid on a CUDA machine, writing into a folder of its own (``gpu/``), to be copied back.
GPU_COMMAND = (
    f"dyrelu compare --claims {','.join(c.name for c in CONVERGED_CLAIMS)} --device cuda --amp bf16 --jobs 4 "
    "--results gpu/converged.csv --runs-dir gpu/runs"
)


def plateau_choice(rows: Sequence[dict[str, str]]) -> tuple[int | None, list[str]]:
    """The plateau study's choice and its table: the shortest schedule within :data:`PLATEAU_TOLERANCE` pp of
    the longest schedule's validation accuracy (mean over seeds), or ``None`` before any row."""
    by_epochs: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        by_epochs.setdefault(int(row["epochs"]), []).append(row)
    lines = [
        "| schedule (epochs) | seeds | val. acc. (%) | test acc. (%) | behind the longest (pp) | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    if not by_epochs:
        return None, lines
    val = {e: statistics.fmean(float(r["val_acc"]) for r in group) for e, group in by_epochs.items()}
    longest = max(by_epochs)
    for epochs in sorted(by_epochs):
        group = by_epochs[epochs]
        test = statistics.fmean(float(r["test_acc"]) for r in group)
        seconds = statistics.median(float(r["seconds_per_epoch"]) for r in group)
        lines.append(
            f"| {epochs} | {len(group)} | {val[epochs]:.2f} | {test:.2f} | {val[longest] - val[epochs]:.2f} | "
            f"{seconds:.0f} |"
        )
    chosen = min(e for e in by_epochs if val[longest] - val[e] <= PLATEAU_TOLERANCE)
    return chosen, lines


def _plateau_lines(rows: Sequence[dict[str, str]], budget: Budget) -> list[str]:
    chosen, table = plateau_choice(rows)
    planned = sorted(int(dict(c.train_kwargs)["epochs"]) for c in PLATEAU_CLAIM.configs)
    lines = [
        f"### {PLATEAU_CLAIM.name}: {PLATEAU_CLAIM.title}",
        "",
        f"{PLATEAU_CLAIM.configs[0].model} with ReLU, seed 0, trained for {', '.join(map(str, planned))} epochs "
        "(each a whole schedule: warm-up and cosine to the end), the recipe's data and settings "
        f"(`dyrelu compare --claims {PLATEAU_CLAIM.name} --jobs 2 --runs-dir runs/converged`, rows in "
        f"`{PLATEAU_CLAIM.results}`; s/epoch as measured, two runs side by side and at times other work on "
        "the machine).",
        "",
        *table,
        "",
    ]
    if chosen is None:
        return [*lines, "Not run yet: the converged budget's length is not yet backed by a measurement.", ""]
    done = sorted({int(r["epochs"]) for r in rows})
    rule = (
        f"the shortest schedule within {PLATEAU_TOLERANCE} pp of the longest one's validation accuracy is "
        f"**{chosen} epochs**"
    )
    if done != planned:
        rule += f" (of the schedules run so far: {', '.join(map(str, done))})"
    if chosen == budget.epochs:
        return [*lines, f"Rule: {rule}; the converged budget runs {budget.epochs} epochs.", ""]
    return [*lines, f"Rule: {rule}; **the converged budget runs {budget.epochs} epochs, not that**.", ""]


def _budget_lines(rows: Sequence[dict[str, str]], estimate: Sequence[dict[str, str]], todo: int) -> list[str]:
    def values(column: str) -> str:
        return ", ".join(sorted({r[column] for r in rows})) or "–"

    measured = sum(float(r["train_seconds"]) for r in rows) / 3600
    lines = [
        f"Produced by `{CONVERGED_COMMAND}` (rows in `results/converged.csv`; the same command continues an "
        "interrupted grid: finished runs are skipped, a stopped run resumes from its last epoch), then "
        "`dyrelu report`.",
        "",
        f"- runs: {len(rows)} done, {todo} to do; seeds per configuration: {values('seed')}; devices: "
        f"{values('device')}",
        f"- data: Fashion-MNIST, the full training set minus {CONVERGED_BUDGET.val_size} validation images, the "
        "full test set of 10,000 images",
        f"- epochs: {values('epochs')}; batch size {values('batch_size')}; SGD with Nesterov momentum, lr 0.1, "
        "cosine schedule with 1 warm-up epoch, label smoothing 0.1; DY-ReLU trained by the recipe (R1: the last "
        "FC initialised as nn.Linear, no weight decay on the hyper functions), DY-ReLU-C's attention normalised",
        f"- threads per run: {values('threads')}; torch {values('torch')}; commits {values('commit')}",
        f"- training time so far: {measured:.2f} process hours",
        f"- on a CUDA machine: `{GPU_COMMAND}` (channels-last, bf16 autocast; the rows record the device and "
        "precision and are judged apart below)",
    ]
    if estimate:
        planned = sum(float(r["process_hours"]) for r in estimate)
        lines.append(
            f"- planned before the runs: {planned:.1f} process hours for the whole grid (`dyrelu compare --claims "
            f"{','.join(c.name for c in CONVERGED_CLAIMS)} --estimate results/converged_estimate.csv --calibrate "
            "results/plateau.csv`: each configuration's training step timed side by side, calibrated by the "
            "plateau runs' measured epochs)"
        )
    return lines


def converged_report(
    rows: Sequence[dict[str, str]],
    plateau_rows: Sequence[dict[str, str]],
    estimate: Sequence[dict[str, str]] = (),
    claims: Sequence[Claim] = CONVERGED_CLAIMS,
) -> str:
    """The converged section of REPRODUCTION.md: the plateau study, the cost, the verdicts per device."""
    budget = claims[0].budget or CONVERGED_BUDGET
    done = {r["run"] for r in rows}
    todo = sum(spec.run_id not in done for spec, _ in plan_runs(claims, budget.seeds, budget.name))
    lines = [
        "## The converged budget",
        "",
        "The short grid below stops each network after about 190 SGD steps on 6,000 images, far from what it",
        "can reach. This budget trains until the ReLU baseline has stopped improving (the plateau study), with",
        "the recipe of R1, so that the DY-ReLU layers develop dynamics and the claims are tested where the paper",
        "makes them.",
        "",
        *_budget_lines(rows, estimate, todo),
        "",
        *_plateau_lines(plateau_rows, budget),
    ]
    devices = sorted({_device(r) for r in rows}, key=lambda d: (d != "cpu", d))
    for device in devices or ["cpu"]:
        device_rows = [r for r in rows if _device(r) == device]
        stats = summarise(device_rows) if device_rows else {}
        verdicts = claim_verdicts(claims, stats)
        lines += [f"## Verdicts at the converged budget ({device})", "", *verdict_table(claims, verdicts), ""]
        for claim in claims:
            lines += claim_section(claim, stats, *verdicts[claim.name], heading="###")
    return "\n".join(lines).rstrip("\n") + "\n"


def _device(row: dict[str, str]) -> str:
    """Where a row was trained: ``cpu``, ``cuda``, with its mixed precision when any (``cuda, bf16``)."""
    amp = row.get("amp") or "none"
    return (row.get("device") or "cpu") + ("" if amp == "none" else f", {amp}")
