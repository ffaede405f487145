"""The pieces every section of the report shares: a claim's table and section, the table of verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dyrelu.experiments.claims import Claim
from dyrelu.experiments.correct import RunCorrect, paired_notes
from dyrelu.experiments.grid import Config
from dyrelu.experiments.stats import Stat, Stats, format_difference, format_mean, stat_of


def values_of(rows: Sequence[dict[str, str]], column: str, empty: str = "") -> str:
    """The distinct values of ``column`` in ``rows``, sorted, comma-separated (``empty`` when there are none)."""
    return ", ".join(sorted({r[column] for r in rows})) or empty


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
            val = "–" if s.val is None else format_mean(*s.val)
            val_cells = f" {val} | {'' if dval is None else format_difference(*dval)} |"
        lines.append(
            f"| {config.model} | {config.display} | {s.n} | {format_mean(s.mean, s.std)} | {delta} |{val_cells} "
            f"{_dyn_cell(s, config.act)} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {dmadds} | "
            f"{s.seconds_per_epoch:.1f} |"
        )
    return lines


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


def paired_section(
    claim: Claim, stats: Stats, verdict: tuple[str, list[str]], correct: Mapping[str, RunCorrect], heading: str
) -> list[str]:
    """:func:`claim_section` with the paired test of each DY-ReLU run against ReLU of its seed among the notes."""
    text, notes = verdict
    return claim_section(claim, stats, text, [*notes, *paired_notes(claim, correct)], heading=heading)
