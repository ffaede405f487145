"""The comparison grid: the paper's claims as declarative tables of runs, run resumably into one CSV.

Each claim names the configurations (model, activation, activation options) it compares; every
configuration runs with several seeds under one shared training budget. A run is identified by its
configuration and seed: configurations shared by several claims (the ReLU baseline of
``mobilenetv2_035``, say) run once. Finished runs are read back from the results CSV and skipped;
an interrupted run continues from its last epoch checkpoint. Each finished run appends one row to the
CSV atomically (the whole file is rewritten to a temporary file, then renamed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dyrelu._pool import check_jobs, run_tasks, select_todo
from dyrelu.files import write_text_atomic
from dyrelu.recipe import DYRELU_C_KWARGS, SCRATCH_DYRELU_KWARGS, SCRATCH_TRAIN_OPTIONS

__all__ = [
    "CLAIMS",
    "COLUMNS",
    "CONVERGED_BUDGET",
    "CONVERGED_CLAIMS",
    "DEFAULT_BUDGET",
    "DEFAULT_CLAIMS",
    "ESTIMATE_COLUMNS",
    "PLATEAU_CLAIM",
    "RECIPE_BUDGET",
    "RECIPE_CLAIM",
    "Budget",
    "Claim",
    "Config",
    "RunSpec",
    "append_row",
    "claims_budget",
    "pending_runs",
    "plan_runs",
    "read_results",
    "run_grid",
    "select_claims",
    "write_estimate",
]

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
        return self.label or self.act


@dataclass(frozen=True)
class RunSpec:
    """One training run: a configuration and a seed."""

    config: Config
    seed: int
    budget_name: str = ""

    @property
    def run_id(self) -> str:
        tag = f"-{self.budget_name}" if self.budget_name else ""
        return f"{self.config.name}-seed{self.seed}{tag}"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison: ``configs`` against the ReLU ``baseline`` of the same model.

    ``budget``: the claim's own training budget (``None``: the grid's shared one), with its rows in their
    own ``results`` file.
    """

    name: str
    title: str
    statement: str
    configs: tuple[Config, ...]
    budget: Budget | None = None
    results: str = "results/grid.csv"


@dataclass(frozen=True)
class Budget:
    """Training settings shared by every run of the grid (passed to :class:`dyrelu.train.TrainConfig`).

    ``extra``: further TrainConfig fields (a configuration's own ``train_kwargs`` override them);
    ``dyrelu_defaults``: options of every DY-ReLU module unless the configuration's ``act_kwargs`` give them;
    ``act_options``: options of one activation by name (``{"dyrelu_c": {"spatial_norm": False}}``), over the
    DY-ReLU defaults and under the configuration's ``act_kwargs``. Together they pin a budget's whole recipe,
    so that its rows reproduce when the library's defaults move.
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

    def act_kwargs(self, config: Config) -> dict[str, Any]:
        """The options ``config``'s activations get under this budget."""
        defaults = self.dyrelu_defaults if config.act.startswith("dyrelu") else {}
        return {**defaults, **self.act_options.get(config.act, {}), **dict(config.act_kwargs)}


#: How DY-ReLU was trained before the recipe study (dyrelu 0.1): the last FC at zero, weight decay on the
#: hyper functions' weights, no learning-rate multiplier, DY-ReLU-C's attention logits not normalised. The
#: budgets that ran with it pin it.
_BEFORE_RECIPE = {
    "extra": {"hyper_weight_decay": True, "hyper_lr_scale": 1.0},
    "dyrelu_defaults": {"zero_init_last": True},
    "act_options": {"dyrelu_c": {"spatial_norm": False}},
}

#: The small grid's budget (C1–C7): 4 epochs on a class-stratified 10 % of Fashion-MNIST.
DEFAULT_BUDGET = Budget(**_BEFORE_RECIPE)

#: The recipe study's budget: 2 epochs of the full training set minus 5,000 validation images (about 860
#: SGD steps), long enough for a hyper function to move; runs are tagged ``-recipe`` in their ids. Each
#: recipe states its departures from the settings before the study.
RECIPE_BUDGET = Budget(epochs=2, data_fraction=1.0, val_size=5000, name="recipe", **_BEFORE_RECIPE)


def _cfg(model: str, act: str, label: str = "", train: dict[str, Any] | None = None, **act_kwargs: Any) -> Config:
    return Config(model, act, tuple(sorted(act_kwargs.items())), label, tuple(sorted((train or {}).items())))


_SMALL = "mobilenetv2_035"

#: The paper's claims that can be tested at small scale. Every table compares with ReLU on the same model.
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C1",
        "DY-ReLU-B against ReLU across network sizes",
        "DY-ReLU-B beats ReLU, and the gain is larger for smaller networks.",
        tuple(
            _cfg(model, act)
            for model in ("mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_100", "resnet10")
            for act in ("relu", "dyrelu_b")
        ),
    ),
    Claim(
        "C2",
        "The variants A, B and C",
        "DY-ReLU-A is below B, B is about equal to C, and all three are above ReLU.",
        tuple(_cfg(_SMALL, act) for act in ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")),
    ),
    Claim(
        "C3",
        "The number of pieces K",
        "K = 2 is much better than K = 1 (an affine map, no rectification); K = 3 adds little over K = 2.",
        (
            _cfg(_SMALL, "relu"),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b K=1", k=1),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b K=2"),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b K=3", k=3),
        ),
    ),
    Claim(
        "C4",
        "DY-ReLU-B against other activations",
        "DY-ReLU-B beats ReLU, LeakyReLU, PReLU, RReLU, SiLU/Swish, SE+ReLU, Maxout, the static "
        "piecewise-linear function and APReLU.",
        tuple(
            _cfg(_SMALL, act)
            for act in (
                "relu",
                "lrelu",
                "prelu",
                "rrelu",
                "silu",
                "se_relu",
                "maxout",
                "static_pwl",
                "aprelu",
                "dyrelu_b",
            )
        ),
    ),
    Claim(
        "C5",
        "Hyper-function choices: reduction R and λ_b",
        "The results are not sensitive to the reduction ratio R in {4, 8, 16} or to λ_b in {0.5, 1.0}.",
        (
            _cfg(_SMALL, "relu"),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b R=4", reduction=4),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b R=8 λ_b=0.5"),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b R=16", reduction=16),
            _cfg(_SMALL, "dyrelu_b", "dyrelu_b λ_b=1.0", lambda_b=1.0),
        ),
    ),
    Claim(
        "C7",
        "The closest dynamic peer: DY-ReLU-B against APReLU",
        "DY-ReLU-B beats APReLU (Zhao et al. 2020), whose input-dependent slope applies to the negative part "
        "only: the maximum over K dynamic pieces is the stronger design.",
        tuple(_cfg(_SMALL, act) for act in ("relu", "aprelu", "dyrelu_b")),
    ),
)


#: The recipe study: how DY-ReLU-B trained from scratch develops dynamics (and what it costs in accuracy).
RECIPE_CLAIM = Claim(
    "R1",
    "A training recipe for DY-ReLU-B from scratch",
    "Some recipe lets DY-ReLU-B's layers develop dynamics (median slope range above the static threshold) "
    "while matching or beating ReLU's validation accuracy.",
    (
        _cfg(_SMALL, "relu"),
        _cfg(_SMALL, "dyrelu_b", "zero init (exact ReLU at start)"),
        _cfg(
            _SMALL,
            "dyrelu_b",
            "zero init, hyper lr ×3, no hyper decay",
            {"hyper_lr_scale": 3.0, "hyper_weight_decay": False},
        ),
        _cfg(_SMALL, "dyrelu_b", "linear init (authors')", zero_init_last=False),
        _cfg(_SMALL, "dyrelu_b", "linear init, no hyper decay", {"hyper_weight_decay": False}, zero_init_last=False),
        _cfg(_SMALL, "dyrelu_b", "linear init, block context", {"act_context": "block"}, zero_init_last=False),
    ),
    budget=RECIPE_BUDGET,
    results="results/recipe.csv",
)

#: The converged budget: the full training set minus the recipe study's 5,000 validation images, for as many
#: epochs as the plateau study (:data:`PLATEAU_CLAIM`) shows the ReLU baseline needs to stop improving, with
#: the recipe of :mod:`dyrelu.recipe` pinned. Runs are tagged ``-converged`` in their ids.
CONVERGED_BUDGET = Budget(
    epochs=12,
    data_fraction=1.0,
    val_size=5000,
    name="converged",
    extra=dict(SCRATCH_TRAIN_OPTIONS),
    dyrelu_defaults=dict(SCRATCH_DYRELU_KWARGS),
    act_options={"dyrelu_c": dict(DYRELU_C_KWARGS)},
)

#: The plateau study behind the converged budget: the ReLU baseline of the smallest network at three schedule
#: lengths, one seed (the budget is the shortest length within 0.3 pp of the longest's validation accuracy).
#: The longest run first, so that the shorter two share the second process.
PLATEAU_CLAIM = Claim(
    "P1",
    "How long the ReLU baseline needs to stop improving",
    "The converged budget's schedule is the shortest whose final validation accuracy is within 0.3 pp of the "
    "longest schedule's.",
    tuple(_cfg(_SMALL, "relu", f"{epochs} epochs", {"epochs": epochs}) for epochs in (12, 3, 6)),
    budget=replace(CONVERGED_BUDGET, seeds=(0,)),
    results="results/plateau.csv",
)


def _converged(claim: Claim, configs: tuple[Config, ...] | None = None, title: str = "") -> Claim:
    """``claim`` at the converged budget: named ``<name>-converged``, rows in results/converged.csv."""
    return Claim(
        f"{claim.name}-converged",
        title or claim.title,
        claim.statement,
        claim.configs if configs is None else configs,
        budget=CONVERGED_BUDGET,
        results="results/converged.csv",
    )


_BY_NAME = {claim.name: claim for claim in CLAIMS}

#: The paper's claims at the converged budget, in the order of their value (the order the grid runs them):
#: the size trend at the small end (where the paper expects the largest gain; ×0.25, ×0.35 and ×0.5 fit two
#: cores at this budget), the variants, the comparison activations (the strongest six), the number of pieces.
CONVERGED_CLAIMS: tuple[Claim, ...] = (
    _converged(
        _BY_NAME["C1"],
        tuple(
            _cfg(model, act)
            for model in ("mobilenetv2_025", "mobilenetv2_035", "mobilenetv2_050")
            for act in ("relu", "dyrelu_b")
        ),
    ),
    _converged(_BY_NAME["C2"]),
    _converged(
        _BY_NAME["C4"],
        tuple(_cfg(_SMALL, act) for act in ("relu", "prelu", "silu", "se_relu", "static_pwl", "aprelu", "dyrelu_b")),
        "DY-ReLU-B against other activations (six of the nine: ReLU, PReLU, SiLU, SE+ReLU, static PWL, APReLU)",
    ),
    _converged(_BY_NAME["C3"]),
)

CLAIMS = (*CLAIMS, RECIPE_CLAIM, PLATEAU_CLAIM, *CONVERGED_CLAIMS)

#: The claims ``dyrelu compare`` runs by default: every claim of the shared budget (REPRODUCTION.md gives
#: the grid's measured total time, within the plan's ~4 hours on 2 cores). Claims with a budget of their
#: own (the recipe study R1) run when named.
DEFAULT_CLAIMS: tuple[Claim, ...] = tuple(c for c in CLAIMS if c.budget is None)


def claims_budget(claims: Sequence[Claim]) -> tuple[Budget, str]:
    """The budget and results file that ``claims`` share: their own, or the grid's shared ones.

    Raises:
        ValueError: the claims have different budgets (run them separately).
    """
    budgets = [c.budget or DEFAULT_BUDGET for c in claims]
    results = {c.results for c in claims}
    if any(b != budgets[0] for b in budgets) or len(results) > 1:
        names = ", ".join(f"{c.name} ({c.results})" for c in claims)
        raise ValueError(f"expected claims of one budget, got {names}: run them separately")
    return budgets[0], results.pop()


def select_claims(names: Iterable[str] | None = None) -> tuple[Claim, ...]:
    """The claims named (:data:`DEFAULT_CLAIMS` when ``names`` is None); an unknown name raises ``ValueError``."""
    if names is None:
        return DEFAULT_CLAIMS
    known = {c.name.upper(): c for c in CLAIMS}
    wanted = [n.strip().upper() for n in names]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown claims {unknown}, expected some of {sorted(c.name for c in CLAIMS)}")
    return tuple(known[n] for n in wanted)


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
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


#: Columns of a grid's cost estimate (``dyrelu compare --estimate``).
ESTIMATE_COLUMNS = ("config", "step_seconds", "epoch_seconds", "epochs", "runs", "process_hours", "threads")


def write_estimate(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write a grid's cost estimate (one row per configuration) to ``path`` atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ESTIMATE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(path), buffer.getvalue())


def _commit() -> str:
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


# -- running ---------------------------------------------------------------------------------------------


def _train_one(spec: RunSpec, claims: list[str], budget: Budget, runs_dir: str, threads: int) -> dict[str, Any]:
    """Train one run (resuming its checkpoint if any) and return its results row. Runs in a worker."""
    import torch

    from dyrelu.analysis.summary import DYNAMICS_COLUMNS
    from dyrelu.profile import profile_model
    from dyrelu.train import TrainConfig, fit

    config = spec.config
    settings: dict[str, Any] = {
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
    train_config = TrainConfig(
        model=config.model,
        act=config.act,
        act_kwargs=budget.act_kwargs(config),
        seed=spec.seed,
        threads=threads,
        tensorboard=False,
        **settings,
    )
    result = fit(train_config, Path(runs_dir) / spec.run_id, resume=True)
    last = result.metrics[-1]
    resolved = result.config
    image = (1, resolved.in_chans, 28, 28) if resolved.small_input else (1, resolved.in_chans, 224, 224)
    device = next(result.model.parameters()).device.type
    model = result.model.cpu().to(memory_format=torch.contiguous_format)
    profile = profile_model(model, image)
    train_seconds = sum(float(row["epoch_seconds"]) for row in result.metrics)
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
        **{key: f"{float(last[key]):.4g}" for key in DYNAMICS_COLUMNS if key in last},
        "params": profile.params,
        "madds": profile.madds,
        "train_seconds": f"{train_seconds:.1f}",
        "seconds_per_epoch": f"{train_seconds / len(result.metrics):.1f}",
        "threads": threads,
        "device": device,
        "amp": train_config.amp,
        "torch": torch.__version__.split("+")[0],
        "commit": _commit(),
    }


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
    claims: Sequence[Claim] = DEFAULT_CLAIMS,
    budget: Budget = DEFAULT_BUDGET,
    jobs: int = 1,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run every missing run of ``claims`` and append its row to ``results``; returns the number run.

    Args:
        results: the results CSV; runs already in it (by run id and budget) are skipped.
        runs_dir: where each run's checkpoint and metrics go (``runs_dir/<run id>``).
        claims: the claims to run.
        budget: the shared training settings.
        jobs: runs trained at once, each in its own process with ``cores // jobs`` threads.
        limit: stop after this many runs (``None``: all).
        log: receives one line per event.
    """
    check_jobs(jobs)
    planned = plan_runs(claims, budget.seeds, budget.name)
    todo = pending_runs(results, claims, budget)
    todo = select_todo(len(planned), todo, limit, log)
    log(f"running {len(todo)}, {jobs} at once")
    from dyrelu.train.runtime import cpu_cores

    threads = max(1, cpu_cores() // jobs)

    def record(row: dict[str, Any]) -> str:
        append_row(results, row)
        return f"test acc {row['test_acc']}%"

    tasks = [(spec.run_id, _train_one, (spec, names, budget, str(runs_dir), threads)) for spec, names in todo]
    return run_tasks(tasks, jobs, record, log)[0]


def machine_summary() -> str:
    """One line describing the machine, for the report."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
