"""The converged budget's section: the plateau study (P1), the grid's cost and the verdicts per device, and what
the demo prints of it."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from dyrelu.experiments.claims import (
    CONVERGED_CLAIMS,
    PLATEAU_CLAIM,
    PLATEAU_TOLERANCE,
    Claim,
    claim_verdicts,
    plateau_choice,
    schedule_means,
)
from dyrelu.experiments.correct import RunCorrect
from dyrelu.experiments.grid import CONVERGED_BUDGET, Budget, Config, plan_runs
from dyrelu.experiments.report._tables import paired_section, values_of, verdict_table
from dyrelu.experiments.stats import Stats, rows_of, stat_of, summarise

#: The one command that runs (or continues) the converged grid, claim by claim.
CONVERGED_COMMAND = (
    f"dyrelu compare --claims {','.join(c.name for c in CONVERGED_CLAIMS)} --jobs 2 --runs-dir runs/converged"
)

#: The converged grid on a CUDA machine, writing into a folder of its own (``gpu/``), to be copied back; ``timeout``
#: ends it (and the runs in flight: the whole process group) within a 10-minute machine lease.
GPU_COMMAND = (
    f"timeout 540 dyrelu compare --claims {','.join(c.name for c in CONVERGED_CLAIMS)} --device cuda --amp bf16 "
    "--jobs 4 --results gpu/converged.csv --runs-dir gpu/runs"
)


def _plateau_table(rows: Sequence[dict[str, str]]) -> list[str]:
    by_epochs: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        by_epochs.setdefault(int(row["epochs"]), []).append(row)
    lines = [
        "| schedule (epochs) | seeds | val. acc. (%) | test acc. (%) | behind the longest (pp) | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    val = schedule_means(rows)
    for epochs in sorted(by_epochs):
        group = by_epochs[epochs]
        test = statistics.fmean(float(r["test_acc"]) for r in group)
        seconds = statistics.median(float(r["seconds_per_epoch"]) for r in group)
        lines.append(
            f"| {epochs} | {len(group)} | {val[epochs]:.2f} | {test:.2f} | {val[max(val)] - val[epochs]:.2f} | "
            f"{seconds:.0f} |"
        )
    return lines


def _is_relu(row: dict[str, str]) -> bool:
    return row.get("act", "relu") == "relu"


def _plateau_lines(
    all_rows: Sequence[dict[str, str]], budget: Budget, converged: Sequence[dict[str, str]] = ()
) -> list[str]:
    rows = [r for r in all_rows if _is_relu(r)]
    chosen = plateau_choice(rows)
    planned = sorted(int(dict(c.train_kwargs)["epochs"]) for c in PLATEAU_CLAIM.configs if c.act == "relu")
    lines = [
        f"### {PLATEAU_CLAIM.name}: {PLATEAU_CLAIM.title}",
        "",
        f"{PLATEAU_CLAIM.configs[0].model} with ReLU, seed 0, trained for {', '.join(map(str, planned))} epochs "
        "(each a whole schedule: warm-up and cosine to the end), the recipe's data and settings "
        f"(`dyrelu compare --claims {PLATEAU_CLAIM.name} --jobs 2 --runs-dir runs/converged`, rows in "
        f"`{PLATEAU_CLAIM.results}`; s/epoch as measured, two runs side by side and at times other work on "
        "the machine).",
        "",
        *_plateau_table(rows),
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
    follows = (
        f"the converged budget runs {budget.epochs} epochs."
        if chosen == budget.epochs
        else f"**the converged budget runs {budget.epochs} epochs, not that**."
    )
    lines.append(f"Rule: {rule}; {follows}")
    if budget.epochs in done and budget.epochs < max(done):
        behind = _mean_val(rows, max(done)) - _mean_val(rows, budget.epochs)
        lines += [
            "",
            f"The grid's {budget.epochs} epochs end {behind:.2f} pp of validation accuracy below {max(done)} epochs "
            f"(tolerance {PLATEAU_TOLERANCE} pp)"
            + (
                "."
                if behind <= PLATEAU_TOLERANCE
                else f": the ReLU baseline is still improving at {budget.epochs} epochs, and the verdicts below are "
                f"at that budget, not at convergence (a longer schedule multiplies the grid's process hours "
                "by as much)."
            ),
        ]
    if chosen == max(done) == budget.epochs and len(done) > 1:
        below = sorted(done)[-2]
        gain = _mean_val(rows, chosen) - _mean_val(rows, below)
        lines += [
            "",
            f"{chosen} epochs is the longest schedule measured, and it gained {gain:.2f} pp of validation accuracy "
            f"over {below}: the study does not show that the ReLU baseline stops improving after {chosen} epochs "
            "(only a longer schedule could); it is the longest budget this machine can afford for the grid.",
        ]
    return [*lines, "", *_longer_schedule_lines(all_rows, budget, converged)]


def _longer_schedule_lines(
    plateau: Sequence[dict[str, str]], budget: Budget, converged: Sequence[dict[str, str]]
) -> list[str]:
    """DY-ReLU-B against ReLU, same network and seed, at the grid's schedule (C1-converged's rows) and at the plateau
    study's longer ones: whether the gain holds when the ReLU baseline has more time to learn."""
    pairs = []  # (epochs, seed, relu row, DY-ReLU-B row, where)
    model = PLATEAU_CLAIM.configs[0].model
    for source, where in ((converged, "C1-converged"), (plateau, PLATEAU_CLAIM.name)):
        # DY-ReLU-B with its default options (not C3's other K) and ReLU, as C1 runs them, on the CPU
        cpu = [r for r in source if r.get("model") == model and _on_cpu(r)]
        relus = rows_of(cpu, Config(model, "relu"))
        for dyb in rows_of(cpu, Config(model, "dyrelu_b")):
            relu = [r for r in relus if (r["seed"], r["epochs"]) == (dyb["seed"], dyb["epochs"])]
            if relu and (where == PLATEAU_CLAIM.name or int(dyb["epochs"]) == budget.epochs):
                pairs.append((int(dyb["epochs"]), int(dyb["seed"]), relu[0], dyb, where))
    if not any(where == PLATEAU_CLAIM.name for *_, where in pairs):
        return []
    lines = [
        f"DY-ReLU-B against ReLU on {model}, the same seed and settings, at the grid's {budget.epochs} epochs and at "
        "the longer schedule: does the gain hold when the baseline has twice the time to learn, or was it faster "
        "learning?",
        "",
        "| schedule (epochs) | seed | ReLU val. / test (%) | DY-ReLU-B val. / test (%) | Δ val. (pp) | Δ test (pp) "
        "| slope range | runs of |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for epochs, seed, relu, dyb, where in sorted(pairs, key=lambda p: (p[0], p[1])):
        dval = float(dyb["val_acc"]) - float(relu["val_acc"])
        dtest = float(dyb["test_acc"]) - float(relu["test_acc"])
        dyn = f"{float(dyb['dyn_median']):.2g}" if dyb.get("dyn_median") else ""
        lines.append(
            f"| {epochs} | {seed} | {float(relu['val_acc']):.2f} / {float(relu['test_acc']):.2f} | "
            f"{float(dyb['val_acc']):.2f} / {float(dyb['test_acc']):.2f} | {dval:+.2f} | {dtest:+.2f} | {dyn} | "
            f"{where} |"
        )
    spread = _seed_spread(converged)
    if spread:
        lines += [
            "",
            f"One seed per schedule: for scale, the test accuracy of one configuration of the converged grid varies by "
            f"{spread} pp (sample standard deviation over its seeds).",
        ]
    return [*lines, ""]


def _seed_spread(rows: Sequence[dict[str, str]]) -> str:
    """The range of the per-configuration standard deviations of test accuracy over seeds (CPU rows, configurations
    with two seeds or more), as text; empty when there are none."""
    cpu = [r for r in rows if _on_cpu(r)]
    stds = [s.std for s in summarise(cpu).values() if s.n > 1] if cpu else []
    if not stds:
        return ""
    low, high = min(stds), max(stds)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"


def _mean_val(rows: Sequence[dict[str, str]], epochs: int) -> float:
    return statistics.fmean(float(r["val_acc"]) for r in rows if int(r["epochs"]) == epochs)


def _converged_budget_lines(
    rows: Sequence[dict[str, str]], estimate: Sequence[dict[str, str]], todo: int, paired: int
) -> list[str]:
    measured = sum(float(r["train_seconds"]) for r in rows) / 3600
    seeds, hours = ("seeds so far", "training time so far") if todo else ("seeds", "training time in all")
    lines = [
        f"Produced by `{CONVERGED_COMMAND}` (rows in `results/converged.csv`; the same command continues an "
        "interrupted grid: finished runs are skipped, a stopped run resumes from its last epoch), then "
        "`dyrelu report`.",
        "",
        f"- runs: {len(rows)} done, {todo or 'none'} to do; {seeds}: {values_of(rows, 'seed', '–')} (of "
        f"{', '.join(map(str, CONVERGED_BUDGET.seeds))}); devices: "
        f"{values_of(rows, 'device', '–')}",
        f"- data: Fashion-MNIST, the full training set minus {CONVERGED_BUDGET.val_size} validation images, the "
        "full test set of 10,000 images; the verdicts are on the test set, the tables show the validation accuracy "
        f"beside it (a second held-out set, {CONVERGED_BUDGET.val_size} images: a gain that both show is more than "
        "one set's sampling luck)",
        f"- epochs: {values_of(rows, 'epochs', '–')}; batch size {values_of(rows, 'batch_size', '–')}; SGD with "
        "Nesterov momentum, lr 0.1, cosine schedule with 1 warm-up epoch, label smoothing 0.1; DY-ReLU trained by "
        "the recipe (R1: the last FC initialised as nn.Linear, no weight decay on the hyper functions), DY-ReLU-C's "
        "attention normalised",
        f"- threads per run: {values_of(rows, 'threads', '–')}; torch {values_of(rows, 'torch', '–')}; commits "
        f"{values_of(rows, 'commit', '–')}",
        f"- {hours}: {measured:.2f} process hours (each run's wall time, s/epoch too: they include the "
        "minutes the grid was stopped so that benchmarks had a quiet machine, and the slowdown when other work "
        "shared the cores)",
        f"- on a CUDA machine: `{GPU_COMMAND}` (channels-last, bf16 autocast; the rows record the device and "
        "precision and are judged apart below; `timeout` ends it within 10 minutes, stopping the runs in flight, "
        "and the same command continues them from their last epoch)",
        f"- per-image results: `results/converged_correct.csv` records which test images each run got right ({paired} "
        f"of {len(rows)} runs: the grid records it as each run finishes, and `{CONVERGED_COMMAND} --backfill-correct` "
        "adds a finished run from its checkpoint); under each claim, a DY-ReLU run is tested against the ReLU run of "
        "the same seed on the same images with McNemar's exact test (the spread over seeds measures training "
        "randomness on one test set; the paired test, whether a difference is more than that test set's luck)",
    ]
    if estimate:
        planned = sum(float(r["process_hours"]) for r in estimate)
        lines.append(
            f"- planned before the runs: {planned:.1f} process hours for the whole grid (`dyrelu compare --claims "
            f"{','.join(c.name for c in CONVERGED_CLAIMS)} --estimate results/converged_estimate.csv --calibrate "
            "results/recipe.csv`: each configuration's training step timed side by side on a machine busy with "
            "other work, calibrated by the epochs the recipe study measured for ReLU and DY-ReLU-B; per configuration "
            "in `results/converged_estimate.csv`)"
        )
    return lines


def _on_cpu(row: dict[str, str]) -> bool:
    """Whether a row was trained on the CPU (rows from before the device column count as CPU rows)."""
    return row.get("device", "cpu") in ("", "cpu")


def _device(row: dict[str, str]) -> str:
    """Where a row was trained: ``cpu``, ``cuda``, with its mixed precision when any (``cuda, bf16``)."""
    amp = row.get("amp") or "none"
    return (row.get("device") or "cpu") + ("" if amp == "none" else f", {amp}")


def converged_report(
    rows: Sequence[dict[str, str]],
    plateau_rows: Sequence[dict[str, str]],
    estimate: Sequence[dict[str, str]] = (),
    claims: Sequence[Claim] = CONVERGED_CLAIMS,
    correct: Mapping[str, RunCorrect] | None = None,
) -> str:
    """The converged section of REPRODUCTION.md: the plateau study, the cost, the verdicts per device.

    The converged budget trains on the full training set (minus the validation split) for as many epochs as the
    plateau study (claim P1) shows the ReLU baseline needs. Its rows (``results/converged.csv``) are judged by the
    claims' rules per device and precision: rows trained on a GPU (or in bf16) are kept apart from the CPU rows.
    ``correct``: the runs' per-image test correctness (:func:`~dyrelu.experiments.correct.read_correct`), for the
    paired test of each DY-ReLU run against ReLU of the same seed under each claim.
    """
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
        *_converged_budget_lines(rows, estimate, todo, sum(r["run"] in (correct or {}) for r in rows)),
        "",
        *_plateau_lines(plateau_rows, budget, rows),
    ]
    devices = sorted({_device(r) for r in rows}, key=lambda d: (d != "cpu", d))
    for device in devices or ["cpu"]:
        device_rows = [r for r in rows if _device(r) == device]
        stats = summarise(device_rows) if device_rows else {}
        verdicts = claim_verdicts(claims, stats)
        lines += [f"## Verdicts at the converged budget ({device})", "", *verdict_table(claims, verdicts), ""]
        device_correct = {run: c for run, c in (correct or {}).items() if run in {r["run"] for r in device_rows}}
        for claim in claims:
            lines += paired_section(claim, stats, verdicts[claim.name], device_correct, "###")
    return "\n".join(lines).rstrip("\n") + "\n"


def first_device_stats(rows: Sequence[dict[str, str]]) -> tuple[str, list[dict[str, str]], Stats]:
    """The rows of one device (the CPU's, or the first device's when there are none) and their statistics."""
    devices = sorted({_device(r) for r in rows}, key=lambda d: (d != "cpu", d))
    device = devices[0] if devices else "cpu"
    device_rows = [r for r in rows if _device(r) == device]
    return device, device_rows, (summarise(device_rows) if device_rows else {})


def converged_summary(
    rows: Sequence[dict[str, str]],
    claims: Sequence[Claim] = CONVERGED_CLAIMS,
    correct: Mapping[str, RunCorrect] | None = None,
) -> str:
    """What the converged grid has measured so far, for a terminal: each claim's verdict, and the table of every
    claim with rows of its own, a configuration no earlier claim's table shows (one device:
    :func:`first_device_stats`), with the paired tests that ``correct`` allows (as in :func:`converged_report`).

    Example:
        >>> print(converged_summary([]).splitlines()[2])
        | claim | paper | verdict at our scale |
    """
    device, device_rows, stats = first_device_stats(rows)
    verdicts = claim_verdicts(claims, stats)
    runs = {r["run"] for r in device_rows}
    lines = [f"{len(runs)} run{'' if len(runs) == 1 else 's'} on {device}", "", *verdict_table(claims, verdicts), ""]
    shown: set[Config] = set()
    device_correct = {run: c for run, c in (correct or {}).items() if run in runs}
    for claim in claims:
        measured = {config for config in claim.configs if stat_of(stats, config) is not None}
        if measured - shown:
            lines += paired_section(claim, stats, verdicts[claim.name], device_correct, "##")
            shown |= measured
    return "\n".join(lines).rstrip("\n") + "\n"


def plateau_summary(rows: Sequence[dict[str, str]], budget: Budget = CONVERGED_BUDGET) -> str:
    """One sentence: how far the grid's schedule ends below the plateau study's longest ReLU schedule, and whether
    that is within the tolerance; empty before the study has both.

    Example:
        >>> plateau_summary([{"epochs": "12", "val_acc": "93.5"}, {"epochs": "24", "val_acc": "94.24"}])[:56]
        'Not at convergence: mobilenetv2_035 with ReLU gains 0.74'
    """
    relu = [r for r in rows if _is_relu(r)]
    done = {int(r["epochs"]) for r in relu}
    if budget.epochs not in done or max(done) <= budget.epochs:
        return ""
    longest = max(done)
    gain = _mean_val(relu, longest) - _mean_val(relu, budget.epochs)
    head = "Not at convergence" if gain > PLATEAU_TOLERANCE else "At the plateau"
    return (
        f"{head}: {PLATEAU_CLAIM.configs[0].model} with ReLU gains {gain:.2f} pp of validation accuracy from "
        f"{budget.epochs} to {longest} epochs (tolerance {PLATEAU_TOLERANCE} pp; {PLATEAU_CLAIM.name} in "
        f"REPRODUCTION.md): these verdicts are at {budget.epochs} epochs."
    )
