"""The keypoint grid: claim K1 (backbone activation × head activation), run resumably into one CSV.

The paper's second experiment (COCO single-person keypoints, SimpleBaseline with a MobileNetV2
backbone) finds that the channel-wise variants B and C help in the backbone, and that the spatial
variant C is the one that helps in the head, where A or B can fall below ReLU. Claim K1 tests this on
the synthetic keypoint task of :mod:`dyrelu.keypoints`: every pair (backbone activation, head
activation) of ReLU, DY-ReLU-A, -B and -C, each with several seeds, under one shared budget.

Conventions of :mod:`dyrelu.experiments`: a run is identified by its configuration and seed; finished
runs are read back from the results CSV and skipped; an interrupted run continues from its last epoch
checkpoint; each finished run appends one row atomically (the whole file is rewritten to a temporary
file, then renamed); runs are planned seed-major, so an interrupted grid has every configuration at the
same number of seeds.
:mod:`dyrelu.keypoint_report` turns the CSV into the K1 section of REPRODUCTION.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dyrelu._pool import check_jobs, run_tasks, select_todo
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
    "pending_keypoint_runs",
    "plan_keypoint_runs",
    "read_results",
    "run_keypoint_grid",
]

#: The activations crossed in the backbone and in the head.
KEYPOINT_ACTS: tuple[str, ...] = ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")

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


#: The K1 grid ran before the recipe study (dyrelu 0.1): its budget pins those settings (the last FC at zero,
#: weight decay on the hyper functions, DY-ReLU-C's attention logits not normalised), so that its rows reproduce.
DEFAULT_KEYPOINT_BUDGET = KeypointBudget(
    extra={"hyper_weight_decay": True, "hyper_lr_scale": 1.0},
    dyrelu_defaults={"zero_init_last": True},
    act_options={"dyrelu_c": {"spatial_norm": False}},
)

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

    from dyrelu.analysis.summary import DYNAMICS_COLUMNS
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
        **{
            f"{part}_act_kwargs": {**budget.dyrelu_defaults, **budget.act_options.get(act, {})}
            for part, act in (("backbone", spec.backbone_act), ("head", spec.head_act))
            if str(act).startswith("dyrelu")
        },
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
        **{key: f"{float(last[key]):.4g}" for key in DYNAMICS_COLUMNS if key in last},
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
    check_jobs(jobs)
    planned = plan_keypoint_runs(claim, budget.seeds)
    todo = pending_keypoint_runs(results, claim, budget)
    todo = select_todo(len(planned), todo, limit, log)
    from dyrelu.train.runtime import cpu_cores

    threads = budget.threads or max(1, cpu_cores() // jobs)
    log(f"running {len(todo)}, {jobs} at once, {threads} thread(s) each")

    def record(row: dict[str, Any]) -> str:
        append_keypoint_row(results, row)
        return f"AP {100 * float(row['test_ap']):.2f}"

    tasks = [(spec.run_id, _train_one, (spec, claim.name, budget, str(runs_dir), threads)) for spec in todo]
    return run_tasks(tasks, jobs, record, log)[0]
