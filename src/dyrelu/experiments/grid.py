"""Runs, budgets, the resumable pool and the results CSV: what every grid of the reproduction tool shares.

A run is identified by its configuration and seed: configurations shared by several claims (the ReLU
baseline of ``mobilenetv2_035``, say) run once. Finished runs are read back from the results CSV and
skipped; an interrupted run continues from its last epoch checkpoint. Each finished run appends one row to
the CSV atomically (the whole file is rewritten to a temporary file, then renamed). Runs train one after
another or in a pool of processes; a failed run is logged and skipped, and the next invocation retries it.

The claims (what is compared, and how it is judged) are in :mod:`dyrelu.experiments.claims`; the keypoint
grid (claim K1) uses the same machinery in :mod:`dyrelu.experiments.keypoints`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dyrelu.files import write_text_atomic
from dyrelu.recipe import DYRELU_C_KWARGS, SCRATCH_DYRELU_KWARGS, SCRATCH_TRAIN_OPTIONS

if TYPE_CHECKING:
    from dyrelu.experiments.claims import Claim

__all__ = [
    "CLUTTERED_BUDGET",
    "COLUMNS",
    "CONVERGED_BUDGET",
    "DEFAULT_BUDGET",
    "ESTIMATE_COLUMNS",
    "RECIPE_BUDGET",
    "UPGRADE_BUDGET",
    "Budget",
    "Config",
    "RunSpec",
    "Task",
    "append_row",
    "check_jobs",
    "git_commit",
    "pending_runs",
    "plan_runs",
    "read_results",
    "run_grid",
    "run_pending",
    "run_tasks",
    "select_todo",
    "source_run",
    "threads_per_run",
    "write_estimate",
]

#: The key of a finished run's per-image test correctness in the row a worker returns (written to the correctness
#: file beside the results CSV, :mod:`dyrelu.experiments.correct`, not to the CSV).
CORRECT_KEY = "correct_cells"

#: Columns of the results CSV, in order.
COLUMNS = (
    "experiment",
    "run",
    "model",
    "act",
    "k",
    "act_kwargs",
    "seed",
    "epochs",
    "data_fraction",
    "batch_size",
    "test_acc",
    "test_loss",
    "train_acc",
    "val_acc",
    "val_size",
    "train_kwargs",
    "dyn_median",
    "dyn_max",
    "dyn_b_median",
    "start_test_acc",
    "start_val_acc",
    "start_dyn_median",
    "params",
    "madds",
    "train_seconds",
    "seconds_per_epoch",
    "threads",
    "device",
    "amp",
    "torch",
    "commit",
)


@dataclass(frozen=True)
class Config:
    """A network with an activation: what a claim compares. ``act_kwargs`` as sorted (key, value) pairs.

    ``train_kwargs`` (sorted pairs too) are :class:`~dyrelu.train.TrainConfig` fields that belong to the
    configuration rather than to the budget: the DY-ReLU recipe's ``hyper_lr_scale``,
    ``hyper_weight_decay`` and ``act_context``, or ``epochs`` (a schedule length of its own, as in the
    plateau study); they override the budget's.
    """

    model: str
    act: str
    act_kwargs: tuple[tuple[str, Any], ...] = ()
    label: str = ""
    train_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def k(self) -> int | None:
        """The number of pieces of a piecewise activation (None for the others)."""
        kwargs = dict(self.act_kwargs)
        if "k" in kwargs:
            return int(kwargs["k"])
        return 2 if self.act in ("dyrelu_a", "dyrelu_b", "dyrelu_c", "static_pwl", "maxout") else None

    @property
    def name(self) -> str:
        """A stable, readable identifier: ``model-act[-key=value...]``."""
        pairs = (*self.act_kwargs, *self.train_kwargs)
        parts = [self.model, self.act] + [f"{key}={value}" for key, value in pairs]
        return "-".join(parts)

    @property
    def display(self) -> str:
        """The configuration's name in the report's tables: its label, else its activation."""
        return self.label or self.act

    @classmethod
    def of(
        cls, model: str, act: str, label: str = "", train: dict[str, Any] | None = None, **act_kwargs: Any
    ) -> Config:
        """A configuration from keywords: ``act_kwargs`` and ``train`` (its ``train_kwargs``) sorted into pairs.

        Example:
            >>> Config.of("mobilenetv2_035", "dyrelu_b", "dyrelu_b R=4", reduction=4).name
            'mobilenetv2_035-dyrelu_b-reduction=4'
        """
        return cls(model, act, tuple(sorted(act_kwargs.items())), label, tuple(sorted((train or {}).items())))


@dataclass(frozen=True)
class RunSpec:
    """One training run: a configuration and a seed."""

    config: Config
    seed: int
    budget_name: str = ""

    @property
    def run_id(self) -> str:
        """The run's name: its results row's ``run`` and its folder under the runs directory."""
        tag = f"-{self.budget_name}" if self.budget_name else ""
        return f"{self.config.name}-seed{self.seed}{tag}"


@dataclass(frozen=True)
class Budget:
    """Training settings shared by every run of the grid (passed to :class:`dyrelu.train.TrainConfig`).

    ``extra``: further TrainConfig fields (a configuration's own ``train_kwargs`` override them);
    ``dyrelu_defaults``: options of every DY-ReLU module unless the configuration's ``act_kwargs`` give them;
    ``act_options``: options of one activation by name (``{"dyrelu_c": {"spatial_norm": False}}``), over the
    DY-ReLU defaults and under the configuration's ``act_kwargs``. Together they pin a budget's whole recipe,
    so that its rows reproduce when the library's defaults move. ``init_from``: every run starts from the
    weights of a finished run in the same runs folder, named by this template of ``{model}`` and ``{seed}``
    (``TrainConfig.init_from``: the upgrade of a trained network); empty: from scratch.
    """

    data: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 4
    data_fraction: float = 0.1
    batch_size: int = 128
    lr: float = 0.1
    warmup_epochs: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2)
    val_size: int = 0
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    dyrelu_defaults: dict[str, Any] = field(default_factory=dict)
    act_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    init_from: str = ""

    def act_kwargs(self, config: Config) -> dict[str, Any]:
        """The options ``config``'s activations get under this budget."""
        defaults = self.dyrelu_defaults if config.act.startswith("dyrelu") else {}
        return {**defaults, **self.act_options.get(config.act, {}), **dict(config.act_kwargs)}


#: How DY-ReLU was trained before the recipe study (dyrelu 0.1): the last FC at zero, weight decay on the
#: hyper functions' weights, no learning-rate multiplier, DY-ReLU-C's attention logits not normalised. The
#: budgets that ran with it pin it (the keypoint grid's too).
BEFORE_RECIPE: dict[str, Any] = {
    "extra": {"hyper_weight_decay": True, "hyper_lr_scale": 1.0},
    "dyrelu_defaults": {"zero_init_last": True},
    "act_options": {"dyrelu_c": {"spatial_norm": False}},
}

#: The small grid's budget (C1–C7): 4 epochs on a class-stratified 10 % of Fashion-MNIST.
DEFAULT_BUDGET = Budget(**BEFORE_RECIPE)

#: The recipe study's budget: 2 epochs of the full training set minus 5,000 validation images (about 860
#: SGD steps), long enough for a hyper function to move; runs are tagged ``-recipe`` in their ids. Each
#: recipe states its departures from the settings before the study.
RECIPE_BUDGET = Budget(epochs=2, data_fraction=1.0, val_size=5000, name="recipe", **BEFORE_RECIPE)

#: The converged budget: the full training set minus the recipe study's 5,000 validation images, for as many
#: epochs as the plateau study (:data:`~dyrelu.experiments.PLATEAU_CLAIM`) shows the ReLU baseline needs to stop
#: improving, with the recipe of :mod:`dyrelu.recipe` pinned. Runs are tagged ``-converged`` in their ids.
CONVERGED_BUDGET = Budget(
    epochs=12,
    data_fraction=1.0,
    val_size=5000,
    name="converged",
    extra=dict(SCRATCH_TRAIN_OPTIONS),
    dyrelu_defaults=dict(SCRATCH_DYRELU_KWARGS),
    act_options={"dyrelu_c": dict(DYRELU_C_KWARGS)},
)


#: The converged budget on the cluttered canvases (``cluttered-fashion-mnist``, 32×32): the same schedule and recipe;
#: runs tagged ``-cluttered``. Whether 12 epochs are enough there is not measured.
CLUTTERED_BUDGET = replace(CONVERGED_BUDGET, data="cluttered-fashion-mnist", name="cluttered")

#: Fine-tuning a converged network for 3 more epochs (lr 0.01, a quarter-epoch warm-up, cosine) from the converged
#: ReLU run of the same model and seed: as ReLU, or converted to DY-ReLU (by default exact at conversion: the last
#: FC of each hyper function at zero; a configuration may ask for ``zero_init_last=False``) with the hyper functions
#: at 10× the learning rate (0.1 at the peak, the from-scratch rate). Runs tagged ``-upgrade``, in the converged
#: runs' folder.
UPGRADE_BUDGET = replace(
    CONVERGED_BUDGET,
    epochs=3,
    lr=0.01,
    warmup_epochs=0.25,
    name="upgrade",
    extra={**SCRATCH_TRAIN_OPTIONS, "hyper_lr_scale": 10.0},
    dyrelu_defaults={"zero_init_last": True},
    init_from="{model}-relu-seed{seed}-converged",
)


def plan_runs(claims: Sequence[Claim], seeds: Sequence[int], budget_name: str = "") -> list[tuple[RunSpec, list[str]]]:
    """Unique runs of ``claims`` with the claims each serves, in a stable order: claim by claim, seed-major.

    A run belongs to the first claim that names it. Claim by claim means an interrupted grid stops at a claim
    boundary with the earlier claims complete; seed-major within a claim means its configurations have the
    same number of seeds.
    """
    owners: dict[Config, list[str]] = {}
    first: dict[Config, int] = {}
    for index, claim in enumerate(claims):
        for config in claim.configs:
            key = Config(config.model, config.act, config.act_kwargs, train_kwargs=config.train_kwargs)
            owners.setdefault(key, [])
            first.setdefault(key, index)
            if claim.name not in owners[key]:
                owners[key].append(claim.name)
    return [
        (RunSpec(config, seed, budget_name), owners[config])
        for index in range(len(claims))
        for seed in seeds
        for config in owners
        if first[config] == index
    ]


# -- the results file ------------------------------------------------------------------------------------


def read_results(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a results CSV (an empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: str | os.PathLike, row: dict[str, Any], columns: Sequence[str] = COLUMNS) -> None:
    """Append ``row`` to a results CSV atomically: write the whole file to a temporary file, then rename.

    A crash leaves either the old or the new file, never a half-written row. Missing values are written
    empty; keys not in ``columns`` are ignored.
    """
    path = Path(path)
    rows = read_results(path)
    rows.append({key: row.get(key, "") for key in columns})
    _write_csv(path, columns, rows, extrasaction="ignore")


#: Columns of a grid's cost estimate (``dyrelu compare --estimate``).
ESTIMATE_COLUMNS = ("config", "step_seconds", "epoch_seconds", "epochs", "runs", "process_hours", "threads")


def write_estimate(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write a grid's cost estimate (one row per configuration) to ``path`` atomically."""
    _write_csv(Path(path), ESTIMATE_COLUMNS, rows)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]], **options: Any) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", **options)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def git_commit() -> str:
    """The short commit of the code that trains, for the results rows (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -- the pool --------------------------------------------------------------------------------------------

#: One run: its id, a picklable function and the function's arguments.
Task = tuple[str, Callable[..., Any], tuple[Any, ...]]


def check_jobs(jobs: int) -> None:
    """Raise ``ValueError`` unless ``jobs`` is an integer >= 1."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"expected jobs to be an integer >= 1, got {jobs!r}")


def select_todo(planned: int, todo: list[Any], limit: int | None, log: Callable[[str], None]) -> list[Any]:
    """Log how many of the ``planned`` runs are done; the first ``limit`` of ``todo`` (``None``: all)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"expected limit to be an integer >= 0 or None, got {limit!r}")
    log(f"{planned - len(todo)} of {planned} runs done")
    return todo if limit is None else todo[:limit]


def run_tasks(
    tasks: Sequence[Task], jobs: int, on_done: Callable[[Any], str], log: Callable[[str], None]
) -> tuple[int, int]:
    """Run ``tasks``, ``jobs`` at once (``jobs > 1``: in spawned processes); returns (finished, failed).

    ``on_done`` receives each result in the calling process (so only this process writes the results
    file) and returns the summary logged after ``done <id>:``. A task that raises is logged as
    ``FAILED <id>`` and the others go on: the grid retries it on its next invocation. ``on_done``'s own
    errors are not caught.
    """
    check_jobs(jobs)
    finished = failed = 0

    def finish(run_id: str, result: Any) -> None:
        nonlocal finished
        summary = on_done(result)
        finished += 1
        log(f"done {run_id}: {summary} ({finished}/{len(tasks)})")

    def fail(run_id: str, err: BaseException) -> None:
        nonlocal failed
        failed += 1
        log(f"FAILED {run_id}: {type(err).__name__}: {err}")

    if jobs == 1:
        for run_id, fn, args in tasks:
            log(f"start {run_id}")
            try:
                result = fn(*args)
            except Exception as err:  # one failed run must not stop the grid
                fail(run_id, err)
                continue
            finish(run_id, result)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(fn, *args): run_id for run_id, fn, args in tasks}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as err:  # as above
                    fail(futures[future], err)
                    continue
                finish(futures[future], result)
    if failed:
        log(f"{failed} runs failed; run the command again to retry them")
    return finished, failed


def threads_per_run(jobs: int, threads: int | None = None) -> int:
    """The intra-op threads of each of ``jobs`` runs at once: ``threads``, else the cores shared among them."""
    from dyrelu.train.runtime import cpu_cores

    return threads or max(1, cpu_cores() // jobs)


def run_pending(
    planned: int,
    todo: Sequence[Any],
    task: Callable[[Any], Task],
    record: Callable[[dict[str, Any]], str],
    *,
    jobs: int,
    limit: int | None,
    log: Callable[[str], None],
    note: str = "",
) -> int:
    """Run the first ``limit`` of a grid's ``todo`` runs (of ``planned`` in all); returns the number run.

    Args:
        planned: how many runs the grid has (for the log's "N of M runs done").
        todo: the runs still to do, in order.
        task: a run of ``todo`` as a :data:`Task` (its id, function and arguments).
        record: receives each finished run's results row in this process; returns the log's summary.
        jobs: runs at once, each in its own process.
        limit: stop after this many runs (``None``: all).
        log: receives one line per event.
        note: added to the log's "running N, J at once" line.
    """
    check_jobs(jobs)
    todo = select_todo(planned, list(todo), limit, log)
    log(f"running {len(todo)}, {jobs} at once{note}")
    return run_tasks([task(run) for run in todo], jobs, record, log)[0]


# -- the classification grid -----------------------------------------------------------------------------


def _train_settings(spec: RunSpec, budget: Budget, threads: int) -> dict[str, Any]:
    """The :class:`~dyrelu.train.TrainConfig` fields of ``spec`` under ``budget``."""
    config = spec.config
    return {
        "model": config.model,
        "act": config.act,
        "act_kwargs": budget.act_kwargs(config),
        "seed": spec.seed,
        "threads": threads,
        "tensorboard": False,
        "data": budget.data,
        "data_dir": budget.data_dir,
        "data_fraction": budget.data_fraction,
        "epochs": budget.epochs,
        "batch_size": budget.batch_size,
        "lr": budget.lr,
        "warmup_epochs": budget.warmup_epochs,
        "val_size": budget.val_size,
        **budget.extra,
        **dict(config.train_kwargs),
    }


def run_costs(result: Any, image: tuple[int, ...]) -> dict[str, Any]:
    """The cost columns of a results row: parameters and MAdds of ``result.model`` for ``image``, and the time.

    ``result`` is a :class:`~dyrelu.train.FitResult` or :class:`~dyrelu.keypoints.KeypointFitResult`; its
    model moves to the CPU, contiguous, for counting.
    """
    import torch

    from dyrelu.analysis.cost import profile_model

    model = result.model.cpu().to(memory_format=torch.contiguous_format)
    profile = profile_model(model, image)
    train_seconds = sum(float(row["epoch_seconds"]) for row in result.metrics)
    return {
        "params": profile.params,
        "madds": profile.madds,
        "train_seconds": f"{train_seconds:.1f}",
        "seconds_per_epoch": f"{train_seconds / len(result.metrics):.1f}",
    }


def dynamics_cells(metrics_row: dict[str, Any]) -> dict[str, str]:
    """The DY-ReLU dynamics columns of a run's last metrics row, for its results row (none without DY-ReLU)."""
    from dyrelu.analysis.summary import DYNAMICS_COLUMNS

    return {key: f"{float(metrics_row[key]):.4g}" for key in DYNAMICS_COLUMNS if key in metrics_row}


def start_cells(start: dict[str, Any] | None) -> dict[str, str]:
    """The ``start_*`` columns of a results row: the test and validation accuracy and the median slope range before
    the first step of a run that started from a trained network (:attr:`dyrelu.train.FitResult.start`); none for a
    run from scratch."""
    if not start:
        return {}
    cells = {"start_test_acc": f"{float(start['test_acc']):.2f}"}
    if "val_acc" in start:
        cells["start_val_acc"] = f"{float(start['val_acc']):.2f}"
    if "dyn_median" in start:
        cells["start_dyn_median"] = f"{float(start['dyn_median']):.4g}"
    return cells


def _train_one(spec: RunSpec, claims: list[str], budget: Budget, runs_dir: str, threads: int) -> dict[str, Any]:
    """Train one run (resuming its checkpoint if any) and return its results row. Runs in a worker."""
    import torch

    from dyrelu.experiments.correct import correct_cells
    from dyrelu.train import CHECKPOINT_NAME, TrainConfig, correct_on_test_set, fit, load_checkpoint

    config = spec.config
    out = Path(runs_dir) / spec.run_id
    settings = _train_settings(spec, budget, threads)
    if budget.init_from:
        settings["init_from"] = str(source_run(spec, budget, runs_dir, resuming=(out / CHECKPOINT_NAME).is_file()))
    train_config = TrainConfig(**settings)
    result = fit(train_config, out, resume=True)
    last = result.metrics[-1]
    device = next(result.model.parameters()).device
    correct = correct_on_test_set(out, fraction=train_config.eval_fraction, device=str(device), amp=train_config.amp)
    resolved = result.config
    side = load_checkpoint(out)["input_shape"][-1] if resolved.small_input else 224
    image = (1, resolved.in_chans, side, side)
    return {
        "experiment": " ".join(claims),
        "run": spec.run_id,
        "model": config.model,
        "act": config.act,
        "k": "" if config.k is None else config.k,
        "act_kwargs": json.dumps(dict(config.act_kwargs), sort_keys=True),
        "seed": spec.seed,
        "epochs": train_config.epochs,
        "data_fraction": budget.data_fraction,
        "batch_size": budget.batch_size,
        "test_acc": f"{float(last['test_acc']):.2f}",
        "test_loss": f"{float(last['test_loss']):.4f}",
        "train_acc": f"{float(last['train_acc']):.2f}",
        "val_acc": f"{float(last['val_acc']):.2f}" if "val_acc" in last else "",
        "val_size": budget.val_size or "",
        "train_kwargs": json.dumps(dict(config.train_kwargs), sort_keys=True) if config.train_kwargs else "",
        **dynamics_cells(last),
        **start_cells(result.start),
        **run_costs(result, image),
        "threads": threads,
        "device": device.type,
        "amp": train_config.amp,
        "torch": torch.__version__.split("+")[0],
        "commit": git_commit(),
        CORRECT_KEY: correct_cells(correct),
    }


def source_run(spec: RunSpec, budget: Budget, runs_dir: str | os.PathLike, *, resuming: bool = False) -> Path:
    """The finished run that ``spec`` starts from under a budget with ``init_from`` (an upgrade).

    Raises:
        ValueError: the source run is missing or has not finished its schedule (checked unless ``resuming``: a
            run that has started keeps its own weights and needs its source no more).
    """
    from dyrelu.train import CHECKPOINT_NAME, load_checkpoint

    path = Path(runs_dir) / budget.init_from.format(model=spec.config.model, seed=spec.seed)
    if resuming:
        return path
    if not (path / CHECKPOINT_NAME).is_file():
        raise ValueError(f"{spec.run_id} starts from {path}, which holds no checkpoint: run that grid first")
    state = load_checkpoint(path)
    done, planned = int(state["epoch"]), int(state["config"]["epochs"])
    if done < planned:
        raise ValueError(
            f"{spec.run_id} starts from {path}, which has finished {done} of its {planned} epochs: "
            "let that run finish first"
        )
    return path


def pending_runs(
    results: str | os.PathLike, claims: Sequence[Claim], budget: Budget
) -> list[tuple[RunSpec, list[str]]]:
    """The runs of ``claims`` that ``results`` does not hold yet under ``budget`` (epochs and data fraction).

    A configuration with ``epochs`` among its ``train_kwargs`` is done at that many epochs.
    """
    fraction = str(budget.data_fraction)
    done = {(row["run"], row["epochs"]) for row in read_results(results) if row["data_fraction"] == fraction}
    planned = plan_runs(claims, budget.seeds, budget.name)
    return [
        (spec, names)
        for spec, names in planned
        if (spec.run_id, str(dict(spec.config.train_kwargs).get("epochs", budget.epochs))) not in done
    ]


def run_grid(
    results: str | os.PathLike,
    runs_dir: str | os.PathLike,
    *,
    claims: Sequence[Claim] | None = None,
    budget: Budget = DEFAULT_BUDGET,
    jobs: int = 1,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run every missing run of ``claims`` and append its row to ``results``; returns the number run.

    Args:
        results: the results CSV; runs already in it (by run id and budget) are skipped.
        runs_dir: where each run's checkpoint and metrics go (``runs_dir/<run id>``).
        claims: the claims to run (``None``: :data:`~dyrelu.experiments.DEFAULT_CLAIMS`).
        budget: the shared training settings.
        jobs: runs trained at once, each in its own process with ``cores // jobs`` threads.
        limit: stop after this many runs (``None``: all).
        log: receives one line per event.
    """
    if claims is None:
        from dyrelu.experiments.claims import DEFAULT_CLAIMS as claims
    check_jobs(jobs)
    planned = plan_runs(claims, budget.seeds, budget.name)
    todo = pending_runs(results, claims, budget)
    threads = threads_per_run(jobs)

    def record(row: dict[str, Any]) -> str:
        from dyrelu.experiments.correct import correct_path, record_correct

        cells = row.pop(CORRECT_KEY, None)
        if cells is not None:  # first: a row in the results means its run is done
            record_correct(correct_path(results), row["run"], cells)
        append_row(results, row)
        return f"test acc {row['test_acc']}%"

    def task(run: tuple[RunSpec, list[str]]) -> Task:
        spec, names = run
        return spec.run_id, _train_one, (spec, names, budget, str(runs_dir), threads)

    return run_pending(len(planned), todo, task, record, jobs=jobs, limit=limit, log=log)
