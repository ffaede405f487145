"""The keypoint grid: claim K1 (backbone activation × head activation), run resumably into one CSV, and its report.

The paper's second experiment (COCO single-person keypoints, SimpleBaseline with a MobileNetV2
backbone) finds that the channel-wise variants B and C help in the backbone, and that the spatial
variant C is the one that helps in the head, where A or B can fall below ReLU. Claim K1 tests this on
the synthetic keypoint task of :mod:`dyrelu.keypoints`: every pair (backbone activation, head
activation) of ReLU, DY-ReLU-A, -B and -C, each with several seeds, under one shared budget.

Conventions of :mod:`dyrelu.experiments`: a run is identified by its configuration and seed; finished
runs are read back from the results CSV and skipped; an interrupted run continues from its last epoch
checkpoint; each finished run appends one row atomically (the whole file is rewritten to a temporary
file, then renamed); runs are planned seed-major, so an interrupted grid has every configuration at the
same number of seeds. :func:`keypoint_report` is a pure function of the rows (no clock, no machine
state), so the report regenerates byte for byte from the committed CSV.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from dyrelu.experiments import _commit, append_row, read_results

__all__ = [
    "DEFAULT_KEYPOINT_BUDGET",
    "KEYPOINT_ACTS",
    "KEYPOINT_CLAIM",
    "KEYPOINT_COLUMNS",
    "KeypointBudget",
    "KeypointClaim",
    "KeypointRunSpec",
    "append_keypoint_row",
    "keypoint_report",
    "pending_keypoint_runs",
    "plan_keypoint_runs",
    "read_results",
    "run_keypoint_grid",
]

#: The activations crossed in the backbone and in the head.
KEYPOINT_ACTS: tuple[str, ...] = ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")

#: Columns of the keypoint results CSV, in order. AP, PCK and OKS are in [0, 1].
KEYPOINT_COLUMNS = (
    "experiment",
    "run",
    "backbone",
    "backbone_act",
    "head_act",
    "seed",
    "epochs",
    "num_train",
    "num_test",
    "image_size",
    "items",
    "max_distractors",
    "max_rotation",
    "output_stride",
    "sigma",
    "oks_kappa",
    "pck_alpha",
    "batch_size",
    "lr",
    "test_ap",
    "test_ap50",
    "test_ap75",
    "test_pck",
    "test_oks",
    "test_loss",
    "train_loss",
    "params",
    "madds",
    "train_seconds",
    "seconds_per_epoch",
    "cpu_seconds",
    "threads",
    "torch",
    "commit",
)

_NAMES = {"relu": "ReLU", "dyrelu_a": "DY-ReLU-A", "dyrelu_b": "DY-ReLU-B", "dyrelu_c": "DY-ReLU-C"}


@dataclass(frozen=True)
class KeypointClaim:
    """A claim compared over every (backbone activation, head activation) pair of ``acts`` on ``backbone``."""

    name: str
    title: str
    statement: str
    backbone: str = "mobilenetv2_035"
    acts: tuple[str, ...] = KEYPOINT_ACTS


@dataclass(frozen=True)
class KeypointRunSpec:
    """One training run: the backbone, its activation, the head's activation and a seed."""

    backbone: str
    backbone_act: str
    head_act: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.backbone}-{self.backbone_act}-{self.head_act}-seed{self.seed}"


@dataclass(frozen=True)
class KeypointBudget:
    """Training settings shared by every run of the grid (passed to :class:`dyrelu.keypoints.KeypointConfig`).

    The defaults are sized so that one run takes about 2–3 minutes on one CPU thread (see the
    keypoint section of the report for the measured times).
    """

    items: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 4
    num_train: int = 8192
    num_test: int = 1024
    batch_size: int = 32
    lr: float = 1e-2
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


DEFAULT_KEYPOINT_BUDGET = KeypointBudget()

#: The paper's keypoint claim (section 5.2, COCO single-person keypoint detection).
KEYPOINT_CLAIM = KeypointClaim(
    "K1",
    "Keypoint heatmaps: DY-ReLU in the backbone and in the head",
    "DY-ReLU-B and -C in the backbone beat ReLU; in the head, the spatial DY-ReLU-C beats ReLU, A and B "
    "(A or B in the head can fall below ReLU).",
)


def plan_keypoint_runs(
    claim: KeypointClaim = KEYPOINT_CLAIM, seeds: Sequence[int] = (0, 1, 2)
) -> list[KeypointRunSpec]:
    """Every run of ``claim``, seed-major (all configurations' seed 0 first), backbone act, then head act.

    Example:
        >>> runs = plan_keypoint_runs(seeds=(0, 1, 2))
        >>> len(runs), runs[0].run_id, runs[-1].run_id
        (48, 'mobilenetv2_035-relu-relu-seed0', 'mobilenetv2_035-dyrelu_c-dyrelu_c-seed2')
    """
    return [
        KeypointRunSpec(claim.backbone, backbone_act, head_act, seed)
        for seed in seeds
        for backbone_act in claim.acts
        for head_act in claim.acts
    ]


# -- the results file ------------------------------------------------------------------------------------


def append_keypoint_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append ``row`` to the keypoint results CSV atomically: the whole file to a temporary file, then rename.

    A crash leaves either the old or the new file, never a half-written row. Columns are
    :data:`KEYPOINT_COLUMNS`; missing values are written empty, others ignored.
    """
    append_row(path, row, KEYPOINT_COLUMNS)


# -- running ---------------------------------------------------------------------------------------------


def _train_one(spec: KeypointRunSpec, claim: str, budget: KeypointBudget, runs_dir: str, threads: int) -> dict:
    """Train one run (resuming its checkpoint if any) and return its results row. Runs in a worker."""
    import torch

    from dyrelu.keypoints import KeypointConfig, fit_keypoints
    from dyrelu.profile import profile_model

    config = KeypointConfig(
        backbone=spec.backbone,
        backbone_act=spec.backbone_act,
        head_act=spec.head_act,
        items=budget.items,
        data_dir=budget.data_dir,
        epochs=budget.epochs,
        num_train=budget.num_train,
        num_test=budget.num_test,
        batch_size=budget.batch_size,
        lr=budget.lr,
        seed=spec.seed,
        threads=threads,
        **budget.extra,
    )
    result = fit_keypoints(config, Path(runs_dir) / spec.run_id, resume=True)
    last = result.metrics[-1]
    model = result.model.to(memory_format=torch.contiguous_format)
    profile = profile_model(model, (1, 1, config.image_size, config.image_size))
    train_seconds = sum(float(row["epoch_seconds"]) for row in result.metrics)
    return {
        "experiment": claim,
        "run": spec.run_id,
        "backbone": spec.backbone,
        "backbone_act": spec.backbone_act,
        "head_act": spec.head_act,
        "seed": spec.seed,
        "epochs": config.epochs,
        "num_train": config.num_train,
        "num_test": config.num_test,
        "image_size": config.image_size,
        "items": config.items,
        "max_distractors": config.max_distractors,
        "max_rotation": config.max_rotation,
        "output_stride": config.output_stride,
        "sigma": config.sigma,
        "oks_kappa": config.oks_kappa,
        "pck_alpha": config.pck_alpha,
        "batch_size": config.batch_size,
        "lr": config.lr,
        **{f"test_{key}": f"{float(last[f'test_{key}']):.4f}" for key in ("ap", "ap50", "ap75", "pck", "oks")},
        "test_loss": f"{float(last['test_loss']):.6f}",
        "train_loss": f"{float(last['train_loss']):.6f}",
        "params": profile.params,
        "madds": profile.madds,
        "train_seconds": f"{train_seconds:.1f}",
        "seconds_per_epoch": f"{train_seconds / len(result.metrics):.1f}",
        "cpu_seconds": f"{sum(float(row.get('epoch_cpu_seconds', 0.0)) for row in result.metrics):.1f}",
        "threads": threads,
        "torch": torch.__version__.split("+")[0],
        "commit": _commit(),
    }


def pending_keypoint_runs(
    results: str | os.PathLike, claim: KeypointClaim = KEYPOINT_CLAIM, budget: KeypointBudget = DEFAULT_KEYPOINT_BUDGET
) -> list[KeypointRunSpec]:
    """The runs of ``claim`` not yet in ``results`` with ``budget``'s epochs and training-set size, in plan order."""
    done = {
        row["run"]
        for row in read_results(results)
        if row.get("epochs") == str(budget.epochs) and row.get("num_train") == str(budget.num_train)
    }
    return [spec for spec in plan_keypoint_runs(claim, budget.seeds) if spec.run_id not in done]


def run_keypoint_grid(
    results: str | os.PathLike,
    runs_dir: str | os.PathLike,
    *,
    claim: KeypointClaim = KEYPOINT_CLAIM,
    budget: KeypointBudget = DEFAULT_KEYPOINT_BUDGET,
    jobs: int = 1,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run every missing run of ``claim`` and append its row to ``results``; returns the number run.

    Args:
        results: the results CSV; runs already in it with the same epochs and training-set size are skipped.
        runs_dir: where each run's checkpoint and metrics go (``runs_dir/<run id>``).
        claim: the claim to run.
        budget: the shared training settings.
        jobs: runs trained at once, each in its own process with ``budget.threads`` threads (default:
            the available cores divided by ``jobs``).
        limit: stop after this many runs (``None``: all).
        log: receives one line per event.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"expected jobs to be an integer >= 1, got {jobs!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"expected limit >= 0 or None, got {limit}")
    planned = plan_keypoint_runs(claim, budget.seeds)
    todo = pending_keypoint_runs(results, claim, budget)
    log(f"{len(planned) - len(todo)} of {len(planned)} runs done")
    if limit is not None:
        todo = todo[:limit]
    from dyrelu.train.runtime import cpu_cores

    threads = budget.threads or max(1, cpu_cores() // jobs)
    log(f"running {len(todo)}, {jobs} at once, {threads} thread(s) each")
    finished = 0
    if jobs == 1:
        for spec in todo:
            log(f"start {spec.run_id}")
            row = _train_one(spec, claim.name, budget, str(runs_dir), threads)
            append_keypoint_row(results, row)
            finished += 1
            log(f"done {spec.run_id}: AP {100 * float(row['test_ap']):.2f} ({finished}/{len(todo)})")
        return finished
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, spec, claim.name, budget, str(runs_dir), threads): spec for spec in todo}
        for future in as_completed(futures):
            row = future.result()
            append_keypoint_row(results, row)  # only this process writes the CSV
            finished += 1
            log(f"done {futures[future].run_id}: AP {100 * float(row['test_ap']):.2f} ({finished}/{len(todo)})")
    return finished


# -- the report ------------------------------------------------------------------------------------------


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
        )
    return stats


def _clear(d: float, spread: float) -> str:
    if d > spread:
        return "clearly higher"
    if d < -spread:
        return "clearly lower"
    return "within the spread"


def _seconds(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.0f}"


def _fmt_diff(d: float, spread: float) -> str:
    return f"{d:+.2f} ± {spread:.2f}"


#: Seeds each configuration needs before a question gets a verdict (as in the classification report).
MIN_SEEDS = 3
_NOT_YET = f"no verdict yet: the configurations need {MIN_SEEDS} seeds each"


def _ready(stats, key: tuple[str, str]) -> _Stat | None:
    """The statistics of configuration ``key`` when it has :data:`MIN_SEEDS` runs, else None."""
    s = stats.get(key)
    return s if s is not None and s.n >= MIN_SEEDS else None


def _verdict(wins: int, total: int, missing: bool, what: str) -> str:
    if missing:
        return _NOT_YET
    if wins == total:
        return "holds"
    if wins == 0:
        return "does not hold at our scale"
    return f"partly: {what} in {wins} of {total} comparisons"


def _head_verdict(stats, acts: Sequence[str]) -> tuple[str, list[str]]:
    """C in the head against ReLU, A and B in the head, for every backbone activation."""
    notes, wins, total, missing = [], 0, 0, False
    for backbone_act in acts:
        ours = _ready(stats, (backbone_act, "dyrelu_c"))
        parts = []
        for head_act in (a for a in acts if a != "dyrelu_c"):
            other = _ready(stats, (backbone_act, head_act))
            if ours is None or other is None:
                missing = True
                continue
            d = ours.diff(other)
            total += 1
            wins += d[0] > d[1]
            parts.append(f"− {_NAMES.get(head_act, head_act)} head {_fmt_diff(*d)} ({_clear(*d)})")
        if parts:
            notes.append(f"{_NAMES.get(backbone_act, backbone_act)} backbone: C head " + "; ".join(parts))
    return _verdict(wins, total, missing, "C in the head is clearly best"), notes


def _backbone_verdict(stats, acts: Sequence[str]) -> tuple[str, list[str]]:
    """B and C in the backbone against ReLU in the backbone, for every head activation."""
    notes, wins, total, missing = [], 0, 0, False
    for head_act in acts:
        base = _ready(stats, ("relu", head_act))
        parts = []
        for backbone_act in ("dyrelu_b", "dyrelu_c"):
            ours = _ready(stats, (backbone_act, head_act))
            if ours is None or base is None:
                missing = True
                continue
            d = ours.diff(base)
            total += 1
            wins += d[0] > d[1]
            parts.append(f"{_NAMES[backbone_act]} backbone − ReLU backbone {_fmt_diff(*d)} ({_clear(*d)})")
        if parts:
            notes.append(f"{_NAMES.get(head_act, head_act)} head: " + "; ".join(parts))
    return _verdict(wins, total, missing, "B/C in the backbone clearly beat ReLU"), notes


def _head_below_relu(stats) -> tuple[str, list[str]]:
    """With a ReLU backbone: A and B in the head against ReLU in the head."""
    base = _ready(stats, ("relu", "relu"))
    notes, below = [], []
    for head_act in ("dyrelu_a", "dyrelu_b"):
        s = _ready(stats, ("relu", head_act))
        if s is None or base is None:
            return _NOT_YET, []
        d = s.diff(base)
        notes.append(f"ReLU backbone: {_NAMES[head_act]} head − ReLU head {_fmt_diff(*d)} ({_clear(*d)})")
        if d[0] < -d[1]:
            below.append(_NAMES[head_act])
    return ("seen: " + " and ".join(below) + " clearly below ReLU" if below else "not seen"), notes


def _budget_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    def values(column: str) -> str:
        found = sorted({str(r.get(column, "")) for r in rows}, key=lambda v: (len(v), v))
        return ", ".join(v for v in found if v) or "?"

    seconds = [float(r["train_seconds"]) for r in rows]
    cpu = [float(r["cpu_seconds"]) for r in rows if r.get("cpu_seconds") not in (None, "")]
    cpu_text = f"median {statistics.median(cpu):.0f} s, max {max(cpu):.0f} s" if cpu else "not recorded"
    return [
        "Produced by `dyrelu keypoints grid`, then `dyrelu keypoints report` (generated from the results CSV).",
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
    base = stats.get(("relu", "relu"))
    lines = [
        f"## {claim.name}: {claim.title}",
        "",
        f"Paper (COCO keypoints, section 5.2): {claim.statement} COCO cannot be reached here; the synthetic task of "
        "`dyrelu.keypoints` puts the same question to a SimpleBaseline-style network whose keypoints need context.",
        "",
        *(_budget_lines(rows) if rows else ["- no runs yet: `dyrelu keypoints grid`"]),
        "",
        "| backbone act | head act | seeds | AP | AP50 | PCK | Δ AP vs ReLU/ReLU | params | MAdds | CPU s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backbone_act in acts:
        for head_act in acts:
            s = stats.get((backbone_act, head_act))
            label = f"| {_NAMES.get(backbone_act, backbone_act)} | {_NAMES.get(head_act, head_act)} "
            if s is None:
                lines.append(label + "| 0 | not run | | | | | | |")
                continue
            delta = "" if base is None or (backbone_act, head_act) == ("relu", "relu") else _fmt_diff(*s.diff(base))
            lines.append(
                label + f"| {s.n} | {s.ap:.2f} ± {s.ap_std:.2f} | {s.ap50:.2f} | {s.pck:.2f} ± {s.pck_std:.2f} | "
                f"{delta} | {s.params / 1e6:.3f}M | {s.madds / 1e6:.2f}M | {_seconds(s.cpu_seconds)} |"
            )
    lines += [
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
