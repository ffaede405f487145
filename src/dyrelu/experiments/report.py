"""REPRODUCTION.md from the results CSVs: tables, the claims' verdicts and their notes, nothing hand-written.

The report renders what the claims judge (:mod:`dyrelu.experiments.claims`, the K1 questions of
:mod:`dyrelu.experiments.keypoints`) from the statistics of their rows (:mod:`dyrelu.experiments.stats`). Every
function here is a pure function of the CSV rows (no clock, no machine state), so regenerating the report from
the committed CSVs gives the committed file byte for byte. Its sections, in order: the converged budget
(:func:`converged_report`, passed to :func:`make_report` as its ``preface``), the short grid
(:func:`make_report`), the recipe study R1 (:func:`recipe_report`) and the keypoint claim K1
(:func:`keypoint_report`); :func:`readme_summary` collects every verdict into the README's table.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments.claims import (
    CLUTTERED_CLAIM,
    CONVERGED_CLAIMS,
    DEFAULT_CLAIMS,
    PLATEAU_CLAIM,
    PLATEAU_TOLERANCE,
    RECIPE_CLAIM,
    UPGRADE_CLAIM,
    Claim,
    claim_verdicts,
    plateau_choice,
    schedule_means,
)
from dyrelu.experiments.correct import RunCorrect, paired_notes
from dyrelu.experiments.grid import CONVERGED_BUDGET, UPGRADE_BUDGET, Budget, Config, plan_runs
from dyrelu.experiments.keypoints import (
    ACT_NAMES,
    KEYPOINT_CLAIM,
    KeypointClaim,
    KeypointStats,
    summarise_keypoints,
)
from dyrelu.experiments.stats import (
    RecipeStat,
    Stat,
    Stats,
    format_difference,
    recipe_key,
    rows_of,
    stat_of,
    summarise,
    summarise_recipes,
)

__all__ = [
    "CONVERGED_COMMAND",
    "GPU_COMMAND",
    "README_MARKERS",
    "beyond_report",
    "claim_section",
    "converged_report",
    "converged_summary",
    "first_device_stats",
    "keypoint_report",
    "make_report",
    "plateau_summary",
    "readme_summary",
    "recipe_report",
    "replace_readme_summary",
    "verdict_table",
]


def _values(rows: Sequence[dict[str, str]], column: str, empty: str = "") -> str:
    """The distinct values of ``column`` in ``rows``, sorted, comma-separated (``empty`` when there are none)."""
    return ", ".join(sorted({r[column] for r in rows})) or empty


# -- the paper's claims --------------------------------------------------------------------------------------


def _dyn_cell(s: Stat, act: str) -> str:
    if not act.startswith("dyrelu"):
        return ""
    return "not recorded" if s.dyn_median is None else f"{s.dyn_median:.2g}"


def _claim_table(claim: Claim, stats: Stats) -> list[str]:
    """The claim's configurations, one line each; the validation columns when any of them has a validation split."""
    measured = [s for s in (stat_of(stats, c) for c in claim.configs) if s is not None]
    with_val = any(s.val is not None for s in measured)
    val_head = " val. acc. (%) | Δ val. vs ReLU (pp) |" if with_val else ""
    lines = [
        f"| model | activation | seeds | test acc. (%) | Δ vs ReLU (pp) |{val_head} slope range | params | MAdds "
        "| Δ MAdds | s/epoch |",
        "|---|---|---|---|---|" + "---|---|" * with_val + "---|---|---|---|---|",
    ]
    for config in claim.configs:
        s = stat_of(stats, config)
        if s is None:
            lines.append(f"| {config.model} | {config.display} | 0 | not run |" + " |" * (6 + 2 * with_val))
            continue
        base = stat_of(stats, Config(config.model, "relu"))
        if base is None or config.act == "relu":
            delta, dmadds, dval = "", "", None
        else:
            delta = format_difference(*s.diff(base))
            dmadds = f"{100 * (s.madds / base.madds - 1):+.1f}%"
            dval = s.val_diff(base)
        val_cells = ""
        if with_val:
            val = "–" if s.val is None else f"{s.val[0]:.2f} ± {s.val[1]:.2f}"
            val_cells = f" {val} | {'' if dval is None else format_difference(*dval)} |"
        lines.append(
            f"| {config.model} | {config.display} | {s.n} | {s.mean:.2f} ± {s.std:.2f} | {delta} |{val_cells} "
            f"{_dyn_cell(s, config.act)} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {dmadds} | "
            f"{s.seconds_per_epoch:.1f} |"
        )
    return lines


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
        f"- runs: {len(rows)}; seeds per configuration: {_values(rows, 'seed')}",
        f"- data: Fashion-MNIST (the real dataset), training fraction {_values(rows, 'data_fraction')} "
        "(class-stratified), full test set of 10,000 images",
        f"- epochs: {_values(rows, 'epochs')}; batch size {_values(rows, 'batch_size')}; SGD with Nesterov momentum, "
        "cosine schedule with 1 warm-up epoch, label smoothing 0.1",
        f"- threads per run: {_values(rows, 'threads')}; torch {_values(rows, 'torch')}; commits "
        f"{_values(rows, 'commit')}",
        f"- total training time: {seconds / 3600:.2f} process hours (one thread each; two at a time on 2 cores "
        f"is about {seconds / 7200:.1f} h of wall time)",
    ]


def verdict_table(claims: Sequence[Claim], verdicts: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The markdown table of ``claims`` with their verdicts (what the README shows)."""
    return [
        "| claim | paper | verdict at our scale |",
        "|---|---|---|",
        *[f"| {c.name} | {c.statement} | {verdicts[c.name][0]} |" for c in claims],
    ]


def claim_section(claim: Claim, stats: Stats, verdict: str, notes: Sequence[str], heading: str = "##") -> list[str]:
    """A claim's section: its title, the paper's statement, the table, the verdict and its notes."""
    lines = [f"{heading} {claim.name}: {claim.title}", "", f"Paper: {claim.statement}", ""]
    lines += _claim_table(claim, stats)
    lines += ["", f"**Verdict: {verdict}.**", ""]
    lines += [f"- {note}" for note in notes]
    return [*lines, ""]


def _paired_section(
    claim: Claim, stats: Stats, verdict: tuple[str, list[str]], correct: Mapping[str, RunCorrect], heading: str
) -> list[str]:
    """:func:`claim_section` with the paired test of each DY-ReLU run against ReLU of its seed among the notes."""
    text, notes = verdict
    return claim_section(claim, stats, text, [*notes, *paired_notes(claim, correct)], heading=heading)


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


# -- the converged budget ------------------------------------------------------------------------------------

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
        for dyb in source:
            if dyb.get("model") != model or dyb.get("act") != "dyrelu_b" or dyb.get("device", "cpu") not in ("", "cpu"):
                continue
            relu = [r for r in source if r.get("model") == model and _is_relu(r) and r["seed"] == dyb["seed"]]
            relu = [r for r in relu if r["epochs"] == dyb["epochs"] and r.get("device", "cpu") in ("", "cpu")]
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
    cpu = [r for r in rows if r.get("device", "cpu") in ("", "cpu")]
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
    lines = [
        f"Produced by `{CONVERGED_COMMAND}` (rows in `results/converged.csv`; the same command continues an "
        "interrupted grid: finished runs are skipped, a stopped run resumes from its last epoch), then "
        "`dyrelu report`.",
        "",
        f"- runs: {len(rows)} done, {todo} to do; seeds so far: {_values(rows, 'seed', '–')} (of "
        f"{', '.join(map(str, CONVERGED_BUDGET.seeds))}); devices: "
        f"{_values(rows, 'device', '–')}",
        f"- data: Fashion-MNIST, the full training set minus {CONVERGED_BUDGET.val_size} validation images, the "
        "full test set of 10,000 images; the verdicts are on the test set, the tables show the validation accuracy "
        f"beside it (a second held-out set, {CONVERGED_BUDGET.val_size} images: a gain that both show is more than "
        "one set's sampling luck)",
        f"- epochs: {_values(rows, 'epochs', '–')}; batch size {_values(rows, 'batch_size', '–')}; SGD with "
        "Nesterov momentum, lr 0.1, cosine schedule with 1 warm-up epoch, label smoothing 0.1; DY-ReLU trained by "
        "the recipe (R1: the last FC initialised as nn.Linear, no weight decay on the hyper functions), DY-ReLU-C's "
        "attention normalised",
        f"- threads per run: {_values(rows, 'threads', '–')}; torch {_values(rows, 'torch', '–')}; commits "
        f"{_values(rows, 'commit', '–')}",
        f"- training time so far: {measured:.2f} process hours (each run's wall time, s/epoch too: they include the "
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
            lines += _paired_section(claim, stats, verdicts[claim.name], device_correct, "###")
    return "\n".join(lines).rstrip("\n") + "\n"


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
        f"- training time so far: {seconds / 3600:.2f} process hours",
        "",
        "## Verdicts beyond the paper's setting",
        "",
        *verdict_table([claim for claim, _ in parts], verdicts),
        "",
    ]
    for claim, _ in parts:
        lines += _paired_section(claim, stats[claim.name], verdicts[claim.name], correct or {}, "###")
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
            lines += _paired_section(claim, stats, verdicts[claim.name], device_correct, "##")
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


# -- the recipe study (R1) -----------------------------------------------------------------------------------


def _recipe_dynamics_cell(s: RecipeStat) -> tuple[str, str]:
    if s.dyn_median is None:
        return "–", "–"
    return f"{s.dyn_median:.2g} / {s.dyn_max:.2g}", "static" if s.static else "dynamic"


def _recipe_table(claim: Claim, stats: dict[tuple[str, str, str, str], RecipeStat]) -> list[str]:
    lines = [
        "| recipe | seeds | val. acc. (%) | Δ val. vs ReLU (pp) | test acc. (%) | slope range median / max | layers "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = stats.get(recipe_key(claim.configs[0]))
    for config in claim.configs:
        s = stats.get(recipe_key(config))
        if s is None:
            lines.append(f"| {config.display} | 0 | not run | | | | | |")
            continue
        delta = "" if base is None or config.act == "relu" else format_difference(*s.val_diff(base))
        dyn, kind = _recipe_dynamics_cell(s)
        lines.append(
            f"| {config.display} | {s.n} | {s.val[0]:.2f} ± {s.val[1]:.2f} | {delta} | {s.test[0]:.2f} ± "
            f"{s.test[1]:.2f} | {dyn} | {kind} | {s.seconds_per_epoch:.1f} |"
        )
    return lines


def _recipe_budget_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    seconds = sum(float(r["train_seconds"]) for r in rows)
    return [
        "Produced by `dyrelu compare --claims R1 --jobs 2` (rows in `results/recipe.csv`), then `dyrelu report`.",
        "",
        f"- runs: {len(rows)}; seeds per recipe: {_values(rows, 'seed')}; model: {_values(rows, 'model')}",
        f"- data: Fashion-MNIST, the full training set minus {_values(rows, 'val_size')} validation images (class-"
        "stratified, fixed; the recipe is chosen on them), evaluated on the full test set of 10,000 images",
        f"- epochs: {_values(rows, 'epochs')}; batch size {_values(rows, 'batch_size')}; SGD with Nesterov momentum, "
        "lr 0.1, weight decay 5e-4, cosine schedule with 1 warm-up epoch, label smoothing 0.1",
        f"- dynamics: on the first 256 test images; a recipe is *static* when its mean median slope range is "
        f"below {STATIC_THRESHOLD} (the input-dependent part moves the output by less than 1 % of its scale)",
        f"- threads per run: {_values(rows, 'threads')}; torch {_values(rows, 'torch')}; commits "
        f"{_values(rows, 'commit')}; total training time {seconds / 3600:.2f} process hours",
    ]


def recipe_report(rows: Sequence[dict[str, str]], claim: Claim = RECIPE_CLAIM) -> str:
    """The R1 section of REPRODUCTION.md for the recipe study's ``rows`` (``results/recipe.csv``).

    Each recipe is summarised over its seeds: validation accuracy (the only number the choice looks at,
    :func:`~dyrelu.experiments.claims.choose_recipe`), test accuracy (reported, never used to choose) and the
    DY-ReLU layers' dynamics (the median and maximum over layers of the slopes' dynamic range, mean over seeds;
    a recipe below :data:`~dyrelu.analysis.STATIC_THRESHOLD` is *static*).
    """
    stats = summarise_recipes(rows)
    verdict, notes = claim.verdict(stats)
    lines = [
        f"## {claim.name}: {claim.title}",
        "",
        *_recipe_budget_lines(rows),
        "",
        f"Tested: {claim.statement}",
        "",
        *_recipe_table(claim, stats),
        "",
        f"**Verdict ({claim.name}): {verdict}.**",
        "",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# -- the keypoint claim (K1) ---------------------------------------------------------------------------------


def _keypoint_values(rows: Sequence[dict[str, str]], column: str) -> str:
    found = sorted({str(r.get(column, "")) for r in rows}, key=lambda v: (len(v), v))
    return ", ".join(v for v in found if v) or "?"


def _keypoint_budget_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    def values(column: str) -> str:
        return _keypoint_values(rows, column)

    seconds = [float(r["train_seconds"]) for r in rows]
    cpu = [float(r["cpu_seconds"]) for r in rows if r.get("cpu_seconds") not in (None, "")]
    cpu_text = f"median {statistics.median(cpu):.0f} s, max {max(cpu):.0f} s" if cpu else "not recorded"
    return [
        "Produced by `dyrelu keypoints grid --jobs 2`, then `dyrelu report` (both: `make reproduce`; this section is "
        "generated from `results/keypoints.csv`, also alone by `dyrelu keypoints report`).",
        "",
        f"- runs: {len(rows)}; seeds per configuration: {values('seed')}; backbone {values('backbone')} cut at "
        f"output stride {values('output_stride')}, two deconvolution layers doubling the resolution each "
        "(SimpleBaseline's head)",
        f"- task: {values('image_size')}-pixel canvases with one target item ({values('items')}) scaled, rotated by "
        f"up to ±{values('max_rotation')}° and pasted among 0 to {values('max_distractors')} smaller distractors; "
        "5 keypoints (the corners of the item's own bounding box and its centroid); "
        f"{values('num_train')} training and {values('num_test')} test images (test items unseen)",
        f"- training: {values('epochs')} epochs, batch {values('batch_size')}, AdamW at peak learning rate "
        f"{values('lr')} with a cosine schedule, heatmap MSE (Gaussian targets, σ = {values('sigma')} heatmap "
        "pixels)",
        "- metrics on the final epoch, ×100, mean ± sample std over seeds: COCO's OKS AP (thresholds 0.50:0.05:0.95, "
        f"one object per image, κ = {values('oks_kappa')}, area = the item's box; see `dyrelu.keypoints.metrics`) "
        f"and PCK@{values('pck_alpha')} of the item's size",
        f"- threads per run: {values('threads')}; torch {values('torch')}; commits {values('commit')}",
        f"- time per run (training and evaluation): wall median {statistics.median(seconds):.0f} s, max "
        f"{max(seconds):.0f} s, total {sum(seconds) / 3600:.2f} process hours; CPU time {cpu_text} (what a run "
        "costs on a dedicated core; runs shared the machine, so wall times vary with its load)",
    ]


def _name(act: str) -> str:
    return ACT_NAMES.get(act, act)


def _keypoint_table(stats: KeypointStats, acts: Sequence[str]) -> list[str]:
    """The table of every configuration; with a dynamics column when some configuration recorded it."""
    dyn = any(s.dyn is not None for s in stats.values())
    base = stats.get(("relu", "relu"))
    lines = [
        "| backbone act | head act | seeds | AP | "
        + ("dyn. median | " if dyn else "")
        + "AP50 | PCK | Δ AP vs ReLU/ReLU | params | MAdds | CPU s/run |",
        "|---|---|---|---|" + ("---|" if dyn else "") + "---|---|---|---|---|---|",
    ]
    for backbone_act, head_act in itertools.product(acts, acts):
        s = stats.get((backbone_act, head_act))
        label = f"| {_name(backbone_act)} | {_name(head_act)} "
        if s is None:
            lines.append(label + "| 0 | not run | | | | | | |" + (" |" if dyn else ""))
            continue
        delta = "" if base is None or (backbone_act, head_act) == ("relu", "relu") else format_difference(*s.diff(base))
        dyn_cell = (("–" if s.dyn is None else f"{s.dyn:.3g}") + " | ") if dyn else ""
        cpu = "" if math.isnan(s.cpu_seconds) else f"{s.cpu_seconds:.0f}"  # nan: not recorded
        lines.append(
            label + f"| {s.n} | {s.ap:.2f} ± {s.ap_std:.2f} | {dyn_cell}{s.ap50:.2f} | {s.pck:.2f} ± {s.pck_std:.2f} | "
            f"{delta} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {cpu} |"
        )
    return lines


def _ap_matrix(stats: KeypointStats, acts: Sequence[str]) -> list[str]:
    """AP by backbone activation (rows) and head activation (columns)."""
    lines = [
        "AP (mean ± std) by backbone activation (rows) and head activation (columns):",
        "",
        "| backbone \\ head | " + " | ".join(_name(a) for a in acts) + " |",
        "|---|" + "---|" * len(acts),
    ]
    for backbone_act in acts:
        cells = []
        for head_act in acts:
            s = stats.get((backbone_act, head_act))
            cells.append("–" if s is None else f"{s.ap:.2f} ± {s.ap_std:.2f}")
        lines.append(f"| {_name(backbone_act)} | " + " | ".join(cells) + " |")
    return lines


def keypoint_report(rows: Sequence[dict[str, str]], claim: KeypointClaim = KEYPOINT_CLAIM) -> str:
    """The K1 section of REPRODUCTION.md (markdown) for the keypoint result ``rows``.

    Rows as :func:`~dyrelu.experiments.read_results` returns them (strings); only rows of ``claim.backbone``
    count. Configurations without rows show as "not run"; each of the claim's questions is answered by its rule.
    Rows that record the DY-ReLU layers' dynamics add a column of its mean over seeds beside the AP.

    Example:
        >>> keypoint_report([]).splitlines()[0]
        '## K1: Keypoint heatmaps: DY-ReLU in the backbone and in the head'
    """
    rows = [r for r in rows if r.get("backbone") == claim.backbone]
    stats = summarise_keypoints(rows, claim.backbone)
    lines = [
        f"## {claim.name}: {claim.title}",
        "",
        f"Paper (COCO keypoints, section 5.2): {claim.statement} COCO cannot be reached here; the synthetic task of "
        "`dyrelu.keypoints` puts the same question to a SimpleBaseline-style network whose keypoints need context.",
        "",
        *(_keypoint_budget_lines(rows) if rows else ["- no runs yet: `dyrelu keypoints grid`"]),
        "",
        *_keypoint_table(stats, claim.acts),
        "",
        *_ap_matrix(stats, claim.acts),
    ]
    for question, (verdict, notes) in claim.verdicts(stats):
        lines += ["", f"**{question.text} {verdict}.**", "", *[f"- {note}" for note in notes]]
    lines.append("")
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))


# -- the README's table --------------------------------------------------------------------------------------

#: The README block that :func:`replace_readme_summary` fills.
README_MARKERS = ("<!-- reproduction-summary -->", "<!-- /reproduction-summary -->")


def readme_summary(report: str) -> str:
    """The verdicts of a generated report (:func:`make_report`, optionally with the converged, recipe and
    keypoint sections) as one markdown table for the README: the rows of every verdict table in the order of
    the report (the converged budget's first), then one row per section with a verdict of its own."""
    lines = report.splitlines()
    table = []
    for start, line in enumerate(lines):
        if not line.startswith("## Verdicts"):
            continue
        rows = itertools.takewhile(lambda row: row.startswith("|"), lines[start + 2 :])
        table += list(rows) if not table else list(rows)[2:]  # one header
    question = ""
    for line in lines:
        if line.startswith("Tested: "):
            question = line.removeprefix("Tested: ")
        if line.startswith("**Verdict (") and "): " in line:  # a section with its own budget (R1)
            name, verdict = line.strip("*").removeprefix("Verdict (").rstrip(".").split("): ", 1)
            table.append(f"| {name} | {question} | {verdict} |")
        if line.startswith(("**Does ", "**Do ")) and "? " in line:
            question, verdict = line.strip("*").rstrip(".").split("? ", 1)
            table.append(f"| K1 | {question}? | {verdict} |")
    return "\n".join(table)


def replace_readme_summary(readme: str, summary: str) -> str:
    """``readme`` with the text between :data:`README_MARKERS` replaced by ``summary``.

    Raises ``ValueError`` when the markers are missing.
    """
    begin, end = README_MARKERS
    if begin not in readme or end not in readme:
        raise ValueError(f"expected the markers {begin} and {end} in the README")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{summary.strip()}\n{end}{tail}"
