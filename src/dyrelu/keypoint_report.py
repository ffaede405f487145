"""The K1 section of REPRODUCTION.md: the keypoint grid's table and verdicts, from its results CSV.

:func:`keypoint_report` is a pure function of the rows (no clock, no machine state), so the report
regenerates byte for byte from the committed CSV. Differences and seeds are judged as in
:mod:`dyrelu.report`: a difference counts only when it exceeds the two configurations' combined spread,
and a question gets a verdict only when each configuration it compares has :data:`MIN_SEEDS` seeds.

Rows that record the DY-ReLU layers' dynamics (``dyn_median``, see :func:`dyrelu.analysis.dynamics_numbers`) add a
column of its mean over seeds beside the AP; a question whose DY-ReLU configurations under test include a static one
(below :data:`dyrelu.analysis.STATIC_THRESHOLD`) and that would not hold says so: such a run tested ReLU plus an
unused hyper function. Without such rows the section is what it was before the dynamics were recorded.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from dyrelu.analysis.summary import STATIC_THRESHOLD, is_static
from dyrelu.keypoint_experiments import KEYPOINT_CLAIM, KeypointClaim
from dyrelu.report import MIN_SEEDS, describe_difference, format_difference

__all__ = ["MIN_SEEDS", "keypoint_report"]

_NAMES = {"relu": "ReLU", "dyrelu_a": "DY-ReLU-A", "dyrelu_b": "DY-ReLU-B", "dyrelu_c": "DY-ReLU-C"}


@dataclass(frozen=True)
class _Stat:
    """AP and PCK (points, ×100) over seeds, and the cost columns of one (backbone act, head act) pair."""

    n: int
    ap: float
    ap_std: float
    ap50: float
    pck: float
    pck_std: float
    params: int
    madds: int
    seconds_per_epoch: float
    cpu_seconds: float  # per run, median over seeds; nan when not recorded
    dyn: float | None = None  # dyn_median, mean over the seeds that recorded it; None when none did

    def diff(self, other: _Stat) -> tuple[float, float]:
        """``self - other`` in AP points and its spread ``sqrt(std_a² + std_b²)``."""
        return self.ap - other.ap, math.hypot(self.ap_std, other.ap_std)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summarise(rows: Sequence[dict[str, str]], backbone: str) -> dict[tuple[str, str], _Stat]:
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        if row["backbone"] == backbone:
            groups.setdefault((row["backbone_act"], row["head_act"]), []).append(row)
    stats = {}
    for key, group in groups.items():
        ap, ap_std = _mean_std([100 * float(r["test_ap"]) for r in group])
        pck, pck_std = _mean_std([100 * float(r["test_pck"]) for r in group])
        stats[key] = _Stat(
            n=len(group),
            ap=ap,
            ap_std=ap_std,
            ap50=statistics.fmean(100 * float(r["test_ap50"]) for r in group),
            pck=pck,
            pck_std=pck_std,
            params=int(group[0]["params"]),
            madds=int(group[0]["madds"]),
            seconds_per_epoch=statistics.median(float(r["seconds_per_epoch"]) for r in group),
            cpu_seconds=statistics.median(float(r.get("cpu_seconds") or "nan") for r in group),
            dyn=_mean_dyn(group),
        )
    return stats


def _mean_dyn(group: Sequence[dict[str, str]]) -> float | None:
    """The mean ``dyn_median`` of the rows that recorded it (None: none did)."""
    values = [float(r["dyn_median"]) for r in group if r.get("dyn_median") not in (None, "")]
    return statistics.fmean(values) if values else None


def _static(stats, keys: Sequence[tuple[str, str]]) -> str:
    """How many of the DY-ReLU configurations ``keys`` are static, as a note ("" when none is)."""
    static = sum(bool(is_static({"dyn_median": s.dyn})) for key in keys if (s := _ready(stats, key)) is not None)
    if not static:
        return ""
    return (
        f"mean dynamics median below {STATIC_THRESHOLD:g} in {static} of the {len(keys)} DY-ReLU configurations "
        "under test"
    )


def _seconds(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.0f}"


_NOT_YET = f"no verdict yet: the configurations need {MIN_SEEDS} seeds each"
_STATIC = "static: this run tested ReLU plus an unused hyper function"


def _ready(stats, key: tuple[str, str]) -> _Stat | None:
    """The statistics of configuration ``key`` when it has :data:`MIN_SEEDS` runs, else None."""
    s = stats.get(key)
    return s if s is not None and s.n >= MIN_SEEDS else None


@dataclass
class _Tally:
    """Comparisons of one question: how many are clearly higher, clearly lower, and whether any is missing."""

    wins: int = 0
    losses: int = 0
    total: int = 0
    missing: bool = False

    def compare(self, ours: _Stat | None, other: _Stat | None) -> tuple[float, float] | None:
        """Count ``ours − other`` (None, and the question waits, when either lacks seeds)."""
        if ours is None or other is None:
            self.missing = True
            return None
        d = ours.diff(other)
        self.total += 1
        self.wins += d[0] > d[1]
        self.losses += d[0] < -d[1]
        return d

    def verdict(self, what: str, static: str = "") -> str:
        """The question's answer; ``static`` (a :func:`_static` note) turns "does not hold" into "static"."""
        if self.missing:
            return _NOT_YET
        wins, losses, total = self.wins, self.losses, self.total
        if wins == total:
            return "holds"
        if losses == 0:
            detail = f"all {total} within the spread" if wins == 0 else ""
        elif losses == total:
            detail = f"clearly lower in all {total}"
        else:
            detail = f"clearly lower in {losses} of {total}" + (", the rest within the spread" if wins == 0 else "")
        if wins == 0:
            return f"{_STATIC} ({static}; {detail})" if static else f"does not hold at our scale ({detail})"
        return f"partly: {what} in {wins} of {total} comparisons" + (f", {detail}" if detail else "")


def _compared(d: tuple[float, float]) -> str:
    return f"{format_difference(*d)} ({describe_difference(*d)})"


def _head_verdict(stats, acts: Sequence[str]) -> tuple[str, list[str]]:
    """C in the head against ReLU, A and B in the head, for every backbone activation."""
    notes, tally = [], _Tally()
    for backbone_act in acts:
        ours = _ready(stats, (backbone_act, "dyrelu_c"))
        parts = [
            f"− {_NAMES.get(head_act, head_act)} head {_compared(d)}"
            for head_act in acts
            if head_act != "dyrelu_c" and (d := tally.compare(ours, _ready(stats, (backbone_act, head_act))))
        ]
        if parts:
            notes.append(f"{_NAMES.get(backbone_act, backbone_act)} backbone: C head " + "; ".join(parts))
    static = _static(stats, [(backbone_act, "dyrelu_c") for backbone_act in acts])
    return tally.verdict("C in the head is clearly best", static), notes


def _backbone_verdict(stats, acts: Sequence[str]) -> tuple[str, list[str]]:
    """B and C in the backbone against ReLU in the backbone, for every head activation."""
    notes, tally = [], _Tally()
    for head_act in acts:
        base = _ready(stats, ("relu", head_act))
        parts = [
            f"{_NAMES[backbone_act]} backbone − ReLU backbone {_compared(d)}"
            for backbone_act in ("dyrelu_b", "dyrelu_c")
            if (d := tally.compare(_ready(stats, (backbone_act, head_act)), base))
        ]
        if parts:
            notes.append(f"{_NAMES.get(head_act, head_act)} head: " + "; ".join(parts))
    static = _static(
        stats, [(backbone_act, head_act) for backbone_act in ("dyrelu_b", "dyrelu_c") for head_act in acts]
    )
    return tally.verdict("B/C in the backbone clearly beat ReLU", static), notes


def _head_below_relu(stats) -> tuple[str, list[str]]:
    """With a ReLU backbone: A and B in the head against ReLU in the head."""
    base = _ready(stats, ("relu", "relu"))
    notes, below = [], []
    for head_act in ("dyrelu_a", "dyrelu_b"):
        s = _ready(stats, ("relu", head_act))
        if s is None or base is None:
            return _NOT_YET, []
        d = s.diff(base)
        notes.append(f"ReLU backbone: {_NAMES[head_act]} head − ReLU head {_compared(d)}")
        if d[0] < -d[1]:
            below.append(_NAMES[head_act])
    if below:
        return "seen: " + " and ".join(below) + " clearly below ReLU", notes
    static = _static(stats, [("relu", "dyrelu_a"), ("relu", "dyrelu_b")])
    return (f"{_STATIC} ({static}; not seen)" if static else "not seen"), notes


def _budget_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    def values(column: str) -> str:
        found = sorted({str(r.get(column, "")) for r in rows}, key=lambda v: (len(v), v))
        return ", ".join(v for v in found if v) or "?"

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


def _table(stats, acts: Sequence[str]) -> list[str]:
    """The table of every configuration; with a dynamics column when some configuration recorded it."""
    dyn = any(s.dyn is not None for s in stats.values())
    base = stats.get(("relu", "relu"))
    lines = [
        "| backbone act | head act | seeds | AP | "
        + ("dyn. median | " if dyn else "")
        + "AP50 | PCK | Δ AP vs ReLU/ReLU | params | MAdds | CPU s/run |",
        "|---|---|---|---|" + ("---|" if dyn else "") + "---|---|---|---|---|---|",
    ]
    for backbone_act in acts:
        for head_act in acts:
            s = stats.get((backbone_act, head_act))
            label = f"| {_NAMES.get(backbone_act, backbone_act)} | {_NAMES.get(head_act, head_act)} "
            if s is None:
                lines.append(label + "| 0 | not run | | | | | | |" + (" |" if dyn else ""))
                continue
            delta = (
                "" if base is None or (backbone_act, head_act) == ("relu", "relu") else format_difference(*s.diff(base))
            )
            dyn_cell = (("–" if s.dyn is None else f"{s.dyn:.3g}") + " | ") if dyn else ""
            lines.append(
                label
                + f"| {s.n} | {s.ap:.2f} ± {s.ap_std:.2f} | {dyn_cell}{s.ap50:.2f} | {s.pck:.2f} ± {s.pck_std:.2f} | "
                f"{delta} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {_seconds(s.cpu_seconds)} |"
            )
    return lines


def keypoint_report(rows: Sequence[dict[str, str]], claim: KeypointClaim = KEYPOINT_CLAIM) -> str:
    """The K1 section of REPRODUCTION.md (markdown) for the keypoint result ``rows``.

    Rows as :func:`read_results` returns them (strings); only rows of ``claim.backbone`` count. A
    difference counts only when it exceeds ``sqrt(std_a² + std_b²)`` of the two configurations' AP over
    seeds. Configurations without rows show as "not run"; a question gets a verdict only when every
    configuration it compares has :data:`MIN_SEEDS` seeds.

    Example:
        >>> keypoint_report([]).splitlines()[0]
        '## K1: Keypoint heatmaps: DY-ReLU in the backbone and in the head'
    """
    rows = [r for r in rows if r.get("backbone") == claim.backbone]
    stats = _summarise(rows, claim.backbone)
    acts = claim.acts
    head, head_notes = _head_verdict(stats, acts)
    backbone, backbone_notes = _backbone_verdict(stats, acts)
    below, below_notes = _head_below_relu(stats)
    lines = [
        f"## {claim.name}: {claim.title}",
        "",
        f"Paper (COCO keypoints, section 5.2): {claim.statement} COCO cannot be reached here; the synthetic task of "
        "`dyrelu.keypoints` puts the same question to a SimpleBaseline-style network whose keypoints need context.",
        "",
        *(_budget_lines(rows) if rows else ["- no runs yet: `dyrelu keypoints grid`"]),
        "",
        *_table(stats, acts),
        "",
        "AP (mean ± std) by backbone activation (rows) and head activation (columns):",
        "",
        "| backbone \\ head | " + " | ".join(_NAMES.get(a, a) for a in acts) + " |",
        "|---|" + "---|" * len(acts),
    ]
    for backbone_act in acts:
        cells = []
        for head_act in acts:
            s = stats.get((backbone_act, head_act))
            cells.append("–" if s is None else f"{s.ap:.2f} ± {s.ap_std:.2f}")
        lines.append(f"| {_NAMES.get(backbone_act, backbone_act)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Does DY-ReLU-C in the head beat ReLU, A and B in the head? {head}.**",
        "",
        *[f"- {note}" for note in head_notes],
        "",
        f"**Do DY-ReLU-B and -C in the backbone beat ReLU in the backbone? {backbone}.**",
        "",
        *[f"- {note}" for note in backbone_notes],
        "",
        f"**Do A or B in the head fall below ReLU (ReLU backbone)? {below}.**",
        "",
        *[f"- {note}" for note in below_notes],
        "",
    ]
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))
