"""The keypoint claim's section (K1): the grid of backbone and head activations on the synthetic keypoint task."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

from dyrelu.experiments.keypoints import ACT_NAMES, KEYPOINT_CLAIM, KeypointClaim, KeypointStats, summarise_keypoints
from dyrelu.experiments.stats import format_difference, format_mean


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
            label
            + f"| {s.n} | {format_mean(s.ap, s.ap_std)} | {dyn_cell}{s.ap50:.2f} | {format_mean(s.pck, s.pck_std)} | "
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
            cells.append("–" if s is None else format_mean(s.ap, s.ap_std))
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
