"""REPRODUCTION.md from the results CSV: one table per claim, a verdict per claim, nothing hand-written.

The report is a pure function of the CSV rows (no clock, no machine state), so regenerating it from
the committed CSV gives the committed file byte for byte.

Statistics: for each configuration, the mean and the sample standard deviation of the final test
accuracy over its seeds. A difference between two configurations is "clear" when it exceeds its
spread, ``sqrt(std_a² + std_b²)`` (the standard deviation of the difference of two single runs); a
claim holds only where the differences it needs are clear.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments import DEFAULT_CLAIMS, Claim, Config

__all__ = [
    "MIN_SEEDS",
    "README_MARKERS",
    "Stat",
    "claim_section",
    "claim_verdicts",
    "describe_difference",
    "format_difference",
    "make_report",
    "mean_or_none",
    "readme_summary",
    "replace_readme_summary",
    "summarise",
    "verdict_table",
]


@dataclass(frozen=True)
class Stat:
    """Final test accuracy over seeds, the cost columns and the dynamics of one configuration.

    ``dyn_median``: the mean over seeds of the median slope range of the DY-ReLU layers (``None`` when a
    row lacks it: not a DY-ReLU, or a row from before the measurement).
    """

    n: int
    mean: float
    std: float
    params: int
    madds: int
    seconds_per_epoch: float
    dyn_median: float | None = None

    def diff(self, other: Stat) -> tuple[float, float]:
        """``self - other`` and its spread."""
        return self.mean - other.mean, math.hypot(self.std, other.std)


def _key(model: str, act: str, act_kwargs: dict) -> tuple[str, str, str]:
    return model, act, json.dumps(act_kwargs, sort_keys=True)


#: Columns that make up the training budget; one report compares runs of one budget only.
BUDGET_COLUMNS = ("epochs", "data_fraction", "batch_size")


def _check_one_budget(rows: Sequence[dict[str, str]]) -> None:
    budgets = sorted({tuple(r[c] for c in BUDGET_COLUMNS) for r in rows})
    if len(budgets) > 1:
        raise ValueError(
            f"the results mix training budgets {budgets} (as {BUDGET_COLUMNS}); expected one budget per "
            "results file: move the rows of the other budgets to their own CSV"
        )


def summarise(rows: Sequence[dict[str, str]]) -> dict[tuple[str, str, str], Stat]:
    """Group the rows by configuration (model, act, act_kwargs) and compute each one's :class:`Stat`.

    Raises ``ValueError`` when the rows were trained under different budgets (epochs, data fraction,
    batch size): their accuracies are not comparable.
    """
    _check_one_budget(rows)
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(_key(row["model"], row["act"], json.loads(row["act_kwargs"] or "{}")), []).append(row)
    stats = {}
    for key, group in groups.items():
        accs = [float(r["test_acc"]) for r in group]
        stats[key] = Stat(
            n=len(accs),
            mean=statistics.fmean(accs),
            std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
            params=int(group[0]["params"]),
            madds=int(group[0]["madds"]),
            seconds_per_epoch=statistics.median(float(r["seconds_per_epoch"]) for r in group),
            dyn_median=mean_or_none([r.get("dyn_median", "") for r in group]),
        )
    return stats


def mean_or_none(values: Sequence[str]) -> float | None:
    """The mean of CSV cells as floats, or ``None`` when there are none or one is empty (not recorded)."""
    return None if not values or any(v == "" for v in values) else statistics.fmean(float(v) for v in values)


def _dyn_cell(s: Stat, act: str) -> str:
    if not act.startswith("dyrelu"):
        return ""
    return "not recorded" if s.dyn_median is None else f"{s.dyn_median:.2g}"


def _dynamics_guard(claim: Claim, stats, verdict: str, notes: list[str]) -> tuple[str, list[str]]:
    """A verdict that accounts for the DY-ReLU layers' dynamics.

    Where a DY-ReLU configuration of the claim is static (mean median slope range below
    :data:`~dyrelu.analysis.STATIC_THRESHOLD`), the runs compared ReLU plus an unused hyper function: the
    verdict says so, and the accuracy-only verdict moves to the notes. Where the rows do not record the
    dynamics, the verdict says that too.
    """
    dynamic_configs = [(c, _stat(stats, c)) for c in claim.configs if c.act.startswith("dyrelu")]
    measured = [(c, s) for c, s in dynamic_configs if s is not None and s.dyn_median is not None]
    static = [c.display for c, s in measured if s.dyn_median < STATIC_THRESHOLD]
    if static:
        notes = [*notes, f"on accuracy alone: {verdict}"]
        return f"static: this run tested ReLU plus an unused hyper function ({', '.join(static)})", notes
    if len(measured) < len(dynamic_configs):
        return f"{verdict}; DY-ReLU's dynamics not recorded in these rows", notes
    return verdict, notes


def _stat(stats, config: Config) -> Stat | None:
    return stats.get(_key(config.model, config.act, dict(config.act_kwargs)))


def _baseline(config: Config) -> Config:
    return Config(config.model, "relu")


def format_difference(d: float, spread: float) -> str:
    """``d ± spread`` with two decimals and a sign."""
    return f"{d:+.2f} ± {spread:.2f}"


def _claim_table(claim: Claim, stats) -> list[str]:
    lines = [
        "| model | activation | seeds | test acc. (%) | Δ vs ReLU (pp) | slope range | params | MAdds | Δ MAdds "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in claim.configs:
        s = _stat(stats, config)
        if s is None:
            lines.append(f"| {config.model} | {config.display} | 0 | not run | | | | | | |")
            continue
        base = _stat(stats, _baseline(config))
        if base is None or config.act == "relu":
            delta, dmadds = "", ""
        else:
            delta = format_difference(*s.diff(base))
            dmadds = f"{100 * (s.madds / base.madds - 1):+.1f}%"
        lines.append(
            f"| {config.model} | {config.display} | {s.n} | {s.mean:.2f} ± {s.std:.2f} | {delta} | "
            f"{_dyn_cell(s, config.act)} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {dmadds} | "
            f"{s.seconds_per_epoch:.1f} |"
        )
    return lines


def describe_difference(d: float, spread: float) -> str:
    """How a difference ``d`` compares with its ``spread``: clearly higher, clearly lower or within the spread."""
    if d > spread:
        return "clearly higher"
    if d < -spread:
        return "clearly lower"
    return "within the spread"


def _verdict_c1(claim: Claim, stats) -> tuple[str, list[str]]:
    gains = []
    notes = []
    for config in claim.configs:
        if config.act != "dyrelu_b":
            continue
        s, base = _stat(stats, config), _stat(stats, _baseline(config))
        if s is None or base is None:
            return "not run yet", notes
        d, spread = s.diff(base)
        gains.append((config.model, d, spread))
        notes.append(
            f"{config.model}: DY-ReLU-B − ReLU = {format_difference(d, spread)} pp ({describe_difference(d, spread)})"
        )
    beats = all(d > spread for _, d, spread in gains)
    widths = [(m, d, sp) for m, d, sp in gains if m.startswith("mobilenetv2")]
    decreasing = all(a[1] > b[1] for a, b in itertools.pairwise(widths))
    trend_clear = decreasing and (widths[0][1] - widths[-1][1]) > math.hypot(widths[0][2], widths[-1][2])
    notes.append(
        f"gain by MobileNetV2 width ({widths[0][0]} → {widths[-1][0]}): "
        + ", ".join(f"{d:+.2f}" for _, d, _ in widths)
        + (" — decreasing" if decreasing else " — not decreasing")
        + (" beyond the spread" if trend_clear else "")
    )
    if beats and trend_clear:
        return "holds", notes
    if beats:
        return "partly: DY-ReLU-B beats ReLU everywhere, but the gain does not clearly shrink with size", notes
    if any(d > spread for _, d, spread in gains):
        return "partly: DY-ReLU-B beats ReLU on some networks only", notes
    below = [model for model, d, spread in gains if d < -spread]
    if below:
        return f"does not hold at our scale: DY-ReLU-B is clearly below ReLU on {', '.join(below)}", notes
    return "does not hold at our scale: DY-ReLU-B is within the spread of ReLU on every network", notes


def _pairs(claim: Claim, stats, labels: Sequence[str]) -> dict[str, Stat] | None:
    found = {}
    for config in claim.configs:
        s = _stat(stats, config)
        if config.display in labels:
            if s is None:
                return None
            found[config.display] = s
    return found


def _verdict_c2(claim: Claim, stats) -> tuple[str, list[str]]:
    s = _pairs(claim, stats, ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c"))
    if s is None:
        return "not run yet", []
    ba, bc = s["dyrelu_b"].diff(s["dyrelu_a"]), s["dyrelu_b"].diff(s["dyrelu_c"])
    above = {v: s[v].diff(s["relu"]) for v in ("dyrelu_a", "dyrelu_b", "dyrelu_c")}
    notes = [
        f"B − A = {format_difference(*ba)} pp ({describe_difference(*ba)})",
        f"B − C = {format_difference(*bc)} pp ({describe_difference(*bc)})",
    ]
    notes += [f"{v} − ReLU = {format_difference(*d)} pp ({describe_difference(*d)})" for v, d in above.items()]
    parts = [ba[0] > ba[1], abs(bc[0]) <= bc[1], all(d > sp for d, sp in above.values())]
    if all(parts):
        return "holds", notes
    if any(parts):
        names = ["A below B", "B ≈ C", "all above ReLU"]
        held = [n for n, ok in zip(names, parts, strict=True) if ok]
        return f"partly: only {', '.join(held)}", notes
    return "does not hold at our scale", notes


def _verdict_c3(claim: Claim, stats) -> tuple[str, list[str]]:
    s = _pairs(claim, stats, ("dyrelu_b K=1", "dyrelu_b K=2", "dyrelu_b K=3"))
    if s is None:
        return "not run yet", []
    k21, k32 = s["dyrelu_b K=2"].diff(s["dyrelu_b K=1"]), s["dyrelu_b K=3"].diff(s["dyrelu_b K=2"])
    notes = [
        f"K=2 − K=1 = {format_difference(*k21)} pp ({describe_difference(*k21)})",
        f"K=3 − K=2 = {format_difference(*k32)} pp ({describe_difference(*k32)})",
    ]
    first, second = k21[0] > k21[1], k32[0] <= k32[1]
    if first and second:
        return "holds", notes
    if first or second:
        return "partly: " + (
            "K=2 beats K=1, but K=3 adds clearly more" if first else "K=2 does not clearly beat K=1"
        ), notes
    return "does not hold at our scale", notes


def _verdict_c4(claim: Claim, stats) -> tuple[str, list[str]]:
    ours = _stat(stats, Config(claim.configs[0].model, "dyrelu_b"))
    if ours is None:
        return "not run yet", []
    notes, above, below, total = [], [], [], 0
    for config in claim.configs:
        if config.act == "dyrelu_b":
            continue
        s = _stat(stats, config)
        if s is None:
            notes.append(f"{config.display}: not run")
            continue
        d = ours.diff(s)
        total += 1
        if d[0] > d[1]:
            above.append(config.display)
        elif d[0] < -d[1]:
            below.append(config.display)
        notes.append(f"DY-ReLU-B − {config.display} = {format_difference(*d)} pp ({describe_difference(*d)})")
    if total == 0:
        return "not run yet", notes
    if len(above) == total:
        return "holds", notes
    beats = f"DY-ReLU-B clearly beats {', '.join(above) if above else 'none'} ({len(above)} of {total})"
    if below:
        return f"does not hold at our scale: {beats} and is clearly below {', '.join(below)}", notes
    return f"partly: {beats}; the rest are within the spread", notes


def _verdict_c5(claim: Claim, stats) -> tuple[str, list[str]]:
    variants = [(c.display, _stat(stats, c)) for c in claim.configs if c.act == "dyrelu_b"]
    if any(s is None for _, s in variants):
        return "not run yet", []
    best = max(variants, key=lambda v: v[1].mean)
    worst = min(variants, key=lambda v: v[1].mean)
    d = best[1].diff(worst[1])
    notes = [f"best {best[0]} − worst {worst[0]} = {format_difference(*d)} pp ({describe_difference(*d)})"]
    if d[0] <= d[1]:
        return "holds: no clear difference between the settings", notes
    return "does not hold: the setting matters at our scale", notes


def _verdict_c7(claim: Claim, stats) -> tuple[str, list[str]]:
    s = _pairs(claim, stats, ("relu", "aprelu", "dyrelu_b"))
    if s is None:
        return "not run yet", []
    d = s["dyrelu_b"].diff(s["aprelu"])
    notes = [f"DY-ReLU-B − APReLU = {format_difference(*d)} pp ({describe_difference(*d)})"]
    notes += [f"{v} − ReLU = {format_difference(*s[v].diff(s['relu']))} pp" for v in ("aprelu", "dyrelu_b")]
    if d[0] > d[1]:
        return "holds", notes
    if d[0] < -d[1]:
        return "does not hold at our scale: APReLU is clearly higher", notes
    return "does not hold at our scale: no clear difference", notes


_VERDICTS = {
    "C1": _verdict_c1,
    "C2": _verdict_c2,
    "C3": _verdict_c3,
    "C4": _verdict_c4,
    "C5": _verdict_c5,
    "C7": _verdict_c7,
}


def _cost_table(stats) -> list[str]:
    lines = [
        "| model | activation | options | params | MAdds | Δ params | Δ MAdds | s/epoch | time vs ReLU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, act, kwargs), s in sorted(stats.items()):
        base = stats.get(_key(model, "relu", {}))
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
    def values(column: str) -> str:
        return ", ".join(sorted({r[column] for r in rows}))

    seconds = sum(float(r["train_seconds"]) for r in rows)
    return [
        f"Produced by `{command}`, then `dyrelu report` (both: `make reproduce`; this file is generated from "
        "`results/` and regenerates byte for byte).",
        "",
        f"- runs: {len(rows)}; seeds per configuration: {values('seed')}",
        f"- data: Fashion-MNIST (the real dataset), training fraction {values('data_fraction')} "
        "(class-stratified), full test set of 10,000 images",
        f"- epochs: {values('epochs')}; batch size {values('batch_size')}; SGD with Nesterov momentum, "
        "cosine schedule with 1 warm-up epoch, label smoothing 0.1",
        f"- threads per run: {values('threads')}; torch {values('torch')}; commits {values('commit')}",
        f"- total training time: {seconds / 3600:.2f} process hours (one thread each; two at a time on 2 cores "
        f"is about {seconds / 7200:.1f} h of wall time)",
    ]


#: Seeds every configuration of a claim needs before the claim gets a verdict.
MIN_SEEDS = 3


def _incomplete(claim: Claim, stats) -> str | None:
    """Why ``claim`` cannot have a verdict yet, or None when every configuration has MIN_SEEDS runs."""
    counts = [(s.n if (s := _stat(stats, c)) is not None else 0) for c in claim.configs]
    ready = sum(n >= MIN_SEEDS for n in counts)
    if ready == len(counts):
        return None
    return f"no verdict yet: {ready} of {len(counts)} configurations have {MIN_SEEDS} seeds ({sum(counts)} runs so far)"


def claim_verdicts(claims: Sequence[Claim], stats) -> dict[str, tuple[str, list[str]]]:
    """Each claim's verdict and notes (by claim name) from the statistics of :func:`summarise`.

    A claim gets a verdict only when every configuration it compares has :data:`MIN_SEEDS` runs. A claim
    at another budget (``C1-converged``) is judged by the rule of its base claim (``C1``).
    """
    verdicts = {}
    for claim in claims:
        verdict_fn = _VERDICTS.get(claim.name.split("-")[0])
        missing = _incomplete(claim, stats)
        if missing is not None:
            verdicts[claim.name] = (missing, [])
        else:
            verdict = verdict_fn(claim, stats) if verdict_fn else ("no verdict rule", [])
            verdicts[claim.name] = _dynamics_guard(claim, stats, *verdict)
    return verdicts


def verdict_table(claims: Sequence[Claim], verdicts: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The markdown table of ``claims`` with their verdicts (what the README shows)."""
    return [
        "| claim | paper | verdict at our scale |",
        "|---|---|---|",
        *[f"| {c.name} | {c.statement} | {verdicts[c.name][0]} |" for c in claims],
    ]


def claim_section(claim: Claim, stats, verdict: str, notes: Sequence[str], heading: str = "##") -> list[str]:
    """A claim's section: its title, the paper's statement, the table, the verdict and its notes."""
    lines = [f"{heading} {claim.name}: {claim.title}", "", f"Paper: {claim.statement}", ""]
    lines += _claim_table(claim, stats)
    lines += ["", f"**Verdict: {verdict}.**", ""]
    lines += [f"- {note}" for note in notes]
    return [*lines, ""]


def make_report(
    rows: Sequence[dict[str, str]],
    claims: Sequence[Claim] = DEFAULT_CLAIMS,
    command: str = "dyrelu compare --jobs 2",
    preface: str = "",
) -> str:
    """REPRODUCTION.md's text for the result ``rows`` (as :func:`dyrelu.experiments.read_results` returns).

    A claim gets a verdict only when every configuration it compares has :data:`MIN_SEEDS` runs. ``preface``:
    sections of other budgets that come first (the converged one); the short grid then gets its own heading.
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
