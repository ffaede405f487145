"""The keypoint grid: claim K1 (backbone activation × head activation), run resumably, and its verdicts.

The paper's second experiment (COCO single-person keypoints, SimpleBaseline with a MobileNetV2
backbone) finds that the channel-wise variants B and C help in the backbone, and that the spatial
variant C is the one that helps in the head, where A or B can fall below ReLU. Claim K1 tests this on
the synthetic keypoint task of :mod:`dyrelu.keypoints`: every pair (backbone activation, head
activation) of ReLU, DY-ReLU-A, -B and -C, each with several seeds, under one shared budget.

The grid runs as every grid of :mod:`dyrelu.experiments.grid` does: a run is identified by its configuration
and seed; finished runs are read back from the results CSV and skipped; an interrupted run continues from its
last epoch checkpoint; each finished run appends one row atomically; runs are planned seed-major, so an
interrupted grid has every configuration at the same number of seeds.

K1 asks three questions (:data:`KEYPOINT_CLAIM`'s ``questions``), each answered by a rule on the AP over seeds:
a difference counts only when it exceeds the two configurations' combined spread, and a question gets a verdict
only when each configuration it compares has :data:`~dyrelu.experiments.stats.MIN_SEEDS` seeds. Where the rows
record the DY-ReLU layers' dynamics (``dyn_median``, see :func:`dyrelu.analysis.dynamics_numbers`), a question
whose DY-ReLU configurations under test include a static one (below :data:`dyrelu.analysis.STATIC_THRESHOLD`)
and that would not hold says so: such a run tested ReLU plus an unused hyper function.
:func:`dyrelu.experiments.report.keypoint_report` renders the K1 section of REPRODUCTION.md.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dyrelu.analysis.summary import STATIC_THRESHOLD, is_static
from dyrelu.experiments.grid import (
    BEFORE_RECIPE,
    Task,
    append_row,
    dynamics_cells,
    git_commit,
    read_results,
    run_costs,
    run_pending,
    threads_per_run,
)
from dyrelu.experiments.stats import MIN_SEEDS, describe_difference, format_difference, mean_sd

Verdict = tuple[str, list[str]]

__all__ = [
    "ACT_NAMES",
    "DEFAULT_KEYPOINT_BUDGET",
    "KEYPOINT_ACTS",
    "KEYPOINT_CLAIM",
    "KEYPOINT_COLUMNS",
    "KeypointBudget",
    "KeypointClaim",
    "KeypointRunSpec",
    "KeypointStat",
    "Question",
    "append_keypoint_row",
    "pending_keypoint_runs",
    "plan_keypoint_runs",
    "read_results",
    "run_keypoint_grid",
    "summarise_keypoints",
]

#: The activations crossed in the backbone and in the head.
KEYPOINT_ACTS: tuple[str, ...] = ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")

#: The activations' names in the report and the verdicts' notes.
ACT_NAMES = {"relu": "ReLU", "dyrelu_a": "DY-ReLU-A", "dyrelu_b": "DY-ReLU-B", "dyrelu_c": "DY-ReLU-C"}

#: Columns of the keypoint results CSV, in order. AP, PCK and OKS are in [0, 1]; ``dyn_*`` are the DY-ReLU
#: layers' dynamics after the last epoch (:func:`dyrelu.analysis.dynamics_numbers`; empty without DY-ReLU
#: layers, and in rows written before they were recorded).
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
    "dyn_median",
    "dyn_max",
    "dyn_b_median",
    "params",
    "madds",
    "train_seconds",
    "seconds_per_epoch",
    "cpu_seconds",
    "threads",
    "torch",
    "commit",
)

# -- the statistics and the verdicts ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeypointStat:
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

    def diff(self, other: KeypointStat) -> tuple[float, float]:
        """``self - other`` in AP points and its spread ``sqrt(std_a² + std_b²)``."""
        return self.ap - other.ap, math.hypot(self.ap_std, other.ap_std)


#: :func:`summarise_keypoints`' result: each configuration's :class:`KeypointStat` by (backbone act, head act).
KeypointStats = dict[tuple[str, str], KeypointStat]


def summarise_keypoints(rows: Sequence[dict[str, str]], backbone: str) -> KeypointStats:
    """Group the rows of ``backbone`` by (backbone act, head act) and summarise each group over its seeds."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        if row["backbone"] == backbone:
            groups.setdefault((row["backbone_act"], row["head_act"]), []).append(row)
    stats = {}
    for key, group in groups.items():
        ap, ap_std = mean_sd([100 * float(r["test_ap"]) for r in group])
        pck, pck_std = mean_sd([100 * float(r["test_pck"]) for r in group])
        stats[key] = KeypointStat(
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


def _static(stats: KeypointStats, keys: Sequence[tuple[str, str]]) -> str:
    """How many of the DY-ReLU configurations ``keys`` are static, as a note ("" when none is)."""
    static = sum(bool(is_static({"dyn_median": s.dyn})) for key in keys if (s := _ready(stats, key)) is not None)
    if not static:
        return ""
    return (
        f"mean dynamics median below {STATIC_THRESHOLD:g} in {static} of the {len(keys)} DY-ReLU configurations "
        "under test"
    )


_NOT_YET = f"no verdict yet: the configurations need {MIN_SEEDS} seeds each"
_STATIC = "static: this run tested ReLU plus an unused hyper function"


def _ready(stats: KeypointStats, key: tuple[str, str]) -> KeypointStat | None:
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

    def compare(self, ours: KeypointStat | None, other: KeypointStat | None) -> tuple[float, float] | None:
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


def _head_verdict(stats: KeypointStats, acts: Sequence[str]) -> Verdict:
    """C in the head against ReLU, A and B in the head, for every backbone activation."""
    notes, tally = [], _Tally()
    for backbone_act in acts:
        ours = _ready(stats, (backbone_act, "dyrelu_c"))
        parts = [
            f"− {ACT_NAMES.get(head_act, head_act)} head {_compared(d)}"
            for head_act in acts
            if head_act != "dyrelu_c" and (d := tally.compare(ours, _ready(stats, (backbone_act, head_act))))
        ]
        if parts:
            notes.append(f"{ACT_NAMES.get(backbone_act, backbone_act)} backbone: C head " + "; ".join(parts))
    static = _static(stats, [(backbone_act, "dyrelu_c") for backbone_act in acts])
    return tally.verdict("C in the head is clearly best", static), notes


def _backbone_verdict(stats: KeypointStats, acts: Sequence[str]) -> Verdict:
    """B and C in the backbone against ReLU in the backbone, for every head activation."""
    notes, tally = [], _Tally()
    for head_act in acts:
        base = _ready(stats, ("relu", head_act))
        parts = [
            f"{ACT_NAMES[backbone_act]} backbone − ReLU backbone {_compared(d)}"
            for backbone_act in ("dyrelu_b", "dyrelu_c")
            if (d := tally.compare(_ready(stats, (backbone_act, head_act)), base))
        ]
        if parts:
            notes.append(f"{ACT_NAMES.get(head_act, head_act)} head: " + "; ".join(parts))
    static = _static(
        stats, [(backbone_act, head_act) for backbone_act in ("dyrelu_b", "dyrelu_c") for head_act in acts]
    )
    return tally.verdict("B/C in the backbone clearly beat ReLU", static), notes


def _head_below_relu(stats: KeypointStats, acts: Sequence[str]) -> Verdict:
    """With a ReLU backbone: A and B in the head against ReLU in the head."""
    base = _ready(stats, ("relu", "relu"))
    notes, below = [], []
    for head_act in ("dyrelu_a", "dyrelu_b"):
        s = _ready(stats, ("relu", head_act))
        if s is None or base is None:
            return _NOT_YET, []
        d = s.diff(base)
        notes.append(f"ReLU backbone: {ACT_NAMES[head_act]} head − ReLU head {_compared(d)}")
        if d[0] < -d[1]:
            below.append(ACT_NAMES[head_act])
    if below:
        return "seen: " + " and ".join(below) + " clearly below ReLU", notes
    static = _static(stats, [("relu", "dyrelu_a"), ("relu", "dyrelu_b")])
    return (f"{_STATIC} ({static}; not seen)" if static else "not seen"), notes


#: How a question of :class:`KeypointClaim` is answered: its verdict and notes from the statistics of the rows
#: and the activations the claim crosses.
KeypointRule = Callable[[KeypointStats, Sequence[str]], Verdict]


@dataclass(frozen=True)
class Question:
    """One question a keypoint claim asks (as the report asks it, a yes/no question) and the rule answering it."""

    text: str
    rule: KeypointRule


@dataclass(frozen=True)
class KeypointClaim:
    """A claim compared over every (backbone activation, head activation) pair of ``acts`` on ``backbone``.

    ``questions``: what the claim asks and how each question is judged.
    """

    name: str
    title: str
    statement: str
    backbone: str = "mobilenetv2_035"
    acts: tuple[str, ...] = KEYPOINT_ACTS
    questions: tuple[Question, ...] = field(default=(), repr=False)

    def verdicts(self, stats: KeypointStats) -> list[tuple[Question, Verdict]]:
        """Each question with its verdict and notes, from :func:`summarise_keypoints`' statistics."""
        return [(question, question.rule(stats, self.acts)) for question in self.questions]


#: The paper's keypoint claim (section 5.2, COCO single-person keypoint detection).
KEYPOINT_CLAIM = KeypointClaim(
    "K1",
    "Keypoint heatmaps: DY-ReLU in the backbone and in the head",
    "DY-ReLU-B and -C in the backbone beat ReLU; in the head, the spatial DY-ReLU-C beats ReLU, A and B "
    "(A or B in the head can fall below ReLU).",
    questions=(
        Question("Does DY-ReLU-C in the head beat ReLU, A and B in the head?", _head_verdict),
        Question("Do DY-ReLU-B and -C in the backbone beat ReLU in the backbone?", _backbone_verdict),
        Question("Do A or B in the head fall below ReLU (ReLU backbone)?", _head_below_relu),
    ),
)


# -- the grid ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeypointRunSpec:
    """One training run: the backbone, its activation, the head's activation and a seed."""

    backbone: str
    backbone_act: str
    head_act: str
    seed: int

    @property
    def run_id(self) -> str:
        """The run's name: its results row's ``run`` and its folder under the runs directory."""
        return f"{self.backbone}-{self.backbone_act}-{self.head_act}-seed{self.seed}"


@dataclass(frozen=True)
class KeypointBudget:
    """Training settings shared by every run of the grid (passed to :class:`dyrelu.keypoints.KeypointConfig`).

    ``extra``: further KeypointConfig fields; ``dyrelu_defaults``: the options of the DY-ReLU activations
    (backbone and head); ``act_options``: options of one activation by name, over the DY-ReLU defaults.
    Together they pin the budget's recipe.

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
    dyrelu_defaults: dict[str, Any] = field(default_factory=dict)
    act_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def act_kwargs(self, act: str | None) -> dict[str, Any] | None:
        """The options of the activation ``act`` under this budget (``None`` for a non-DY-ReLU: its own)."""
        if not str(act).startswith("dyrelu"):
            return None
        return {**self.dyrelu_defaults, **self.act_options.get(act, {})}


#: The K1 grid ran before the recipe study (dyrelu 0.1): its budget pins those settings (the last FC at zero,
#: weight decay on the hyper functions, DY-ReLU-C's attention logits not normalised), so that its rows reproduce.
DEFAULT_KEYPOINT_BUDGET = KeypointBudget(**BEFORE_RECIPE)


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


def append_keypoint_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append ``row`` to the keypoint results CSV atomically: the whole file to a temporary file, then rename.

    A crash leaves either the old or the new file, never a half-written row. Columns are
    :data:`KEYPOINT_COLUMNS`; missing values are written empty, others ignored.
    """
    append_row(path, row, KEYPOINT_COLUMNS)


def _keypoint_config(spec: KeypointRunSpec, budget: KeypointBudget, threads: int) -> Any:
    """The :class:`~dyrelu.keypoints.KeypointConfig` of ``spec`` under ``budget``."""
    from dyrelu.keypoints import KeypointConfig

    act_kwargs = {
        f"{part}_act_kwargs": kwargs
        for part, act in (("backbone", spec.backbone_act), ("head", spec.head_act))
        if (kwargs := budget.act_kwargs(act)) is not None
    }
    return KeypointConfig(
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
        **act_kwargs,
        **budget.extra,
    )


#: The columns of a keypoint results row that are the run's task settings, as its config has them.
_TASK_COLUMNS = KEYPOINT_COLUMNS[KEYPOINT_COLUMNS.index("epochs") : KEYPOINT_COLUMNS.index("test_ap")]


def _train_one(spec: KeypointRunSpec, claim: str, budget: KeypointBudget, runs_dir: str, threads: int) -> dict:
    """Train one run (resuming its checkpoint if any) and return its results row. Runs in a worker."""
    import torch

    from dyrelu.keypoints import fit_keypoints

    config = _keypoint_config(spec, budget, threads)
    result = fit_keypoints(config, Path(runs_dir) / spec.run_id, resume=True)
    last = result.metrics[-1]
    return {
        "experiment": claim,
        "run": spec.run_id,
        "backbone": spec.backbone,
        "backbone_act": spec.backbone_act,
        "head_act": spec.head_act,
        "seed": spec.seed,
        **{column: getattr(config, column) for column in _TASK_COLUMNS},
        **{f"test_{key}": f"{float(last[f'test_{key}']):.4f}" for key in ("ap", "ap50", "ap75", "pck", "oks")},
        "test_loss": f"{float(last['test_loss']):.6f}",
        "train_loss": f"{float(last['train_loss']):.6f}",
        **dynamics_cells(last),
        **run_costs(result, (1, 1, config.image_size, config.image_size)),
        "cpu_seconds": f"{sum(float(row.get('epoch_cpu_seconds', 0.0)) for row in result.metrics):.1f}",
        "threads": threads,
        "torch": torch.__version__.split("+")[0],
        "commit": git_commit(),
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
    planned = plan_keypoint_runs(claim, budget.seeds)
    todo = pending_keypoint_runs(results, claim, budget)
    threads = threads_per_run(jobs, budget.threads)

    def record(row: dict[str, Any]) -> str:
        append_keypoint_row(results, row)
        return f"AP {100 * float(row['test_ap']):.2f}"

    def task(spec: KeypointRunSpec) -> Task:
        return spec.run_id, _train_one, (spec, claim.name, budget, str(runs_dir), threads)

    note = f", {threads} thread(s) each"
    return run_pending(len(planned), todo, task, record, jobs=jobs, limit=limit, log=log, note=note)
