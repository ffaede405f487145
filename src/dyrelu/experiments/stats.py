"""Result rows summarised over seeds, and how a difference compares with its spread.

Statistics: for each configuration, the mean and the sample standard deviation of a final accuracy over its
seeds. A difference between two configurations is "clear" when it exceeds its spread,
``sqrt(std_a² + std_b²)`` (the standard deviation of the difference of two single runs); a claim holds only
where the differences it needs are clear, and gets a verdict only when every configuration it compares has
:data:`MIN_SEEDS` seeds. One seed measures no spread: its standard deviation is NaN (shown as "± –"), and so is the
spread of any difference with it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments.grid import Config

__all__ = [
    "BUDGET_COLUMNS",
    "MIN_SEEDS",
    "RecipeStat",
    "Stat",
    "Stats",
    "describe_difference",
    "format_difference",
    "format_mean",
    "format_spread",
    "mean_or_none",
    "mean_sd",
    "recipe_key",
    "rows_of",
    "stat_of",
    "summarise",
    "summarise_recipes",
]

#: Seeds every configuration of a claim needs before the claim gets a verdict.
MIN_SEEDS = 3

#: Columns that make up the training budget; one summary compares runs of one budget only.
BUDGET_COLUMNS = ("epochs", "data_fraction", "batch_size")


@dataclass(frozen=True)
class Stat:
    """Final test accuracy over seeds, the cost columns and the dynamics of one configuration.

    ``dyn_median``: the mean over seeds of the median slope range of the DY-ReLU layers (``None`` when a
    row lacks it: not a DY-ReLU, or a row from before the measurement). ``val``: the validation accuracy's mean
    and sample standard deviation over seeds (``None`` when a row has none: a budget without a validation split).
    """

    n: int
    mean: float
    std: float
    params: int
    madds: int
    seconds_per_epoch: float
    dyn_median: float | None = None
    val: tuple[float, float] | None = None

    def diff(self, other: Stat) -> tuple[float, float]:
        """``self - other`` and its spread."""
        return self.mean - other.mean, math.hypot(self.std, other.std)

    def val_diff(self, other: Stat) -> tuple[float, float] | None:
        """``self - other`` in validation accuracy and its spread (``None`` when either lacks it)."""
        if self.val is None or other.val is None:
            return None
        return self.val[0] - other.val[0], math.hypot(self.val[1], other.val[1])


#: :func:`summarise`'s result: each configuration's :class:`Stat` by (model, act, act_kwargs as sorted JSON).
Stats = Mapping[tuple[str, str, str], Stat]


def _key(model: str, act: str, act_kwargs: dict) -> tuple[str, str, str]:
    return model, act, json.dumps(act_kwargs, sort_keys=True)


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
        mean, std = mean_sd([float(r["test_acc"]) for r in group])
        stats[key] = Stat(
            n=len(group),
            mean=mean,
            std=std,
            params=int(group[0]["params"]),
            madds=int(group[0]["madds"]),
            seconds_per_epoch=statistics.median(float(r["seconds_per_epoch"]) for r in group),
            dyn_median=mean_or_none([r.get("dyn_median", "") for r in group]),
            val=_val_of(group),
        )
    return stats


def _val_of(group: Sequence[dict[str, str]]) -> tuple[float, float] | None:
    cells = [r.get("val_acc", "") for r in group]
    return None if any(c == "" for c in cells) else mean_sd([float(c) for c in cells])


def stat_of(stats: Stats, config: Config) -> Stat | None:
    """The :class:`Stat` of ``config`` (``None``: not run)."""
    return stats.get(_key(config.model, config.act, dict(config.act_kwargs)))


def rows_of(rows: Sequence[dict[str, str]], config: Config) -> list[dict[str, str]]:
    """The rows of ``config`` (its model, activation and activation options) among ``rows``."""
    key = _key(config.model, config.act, dict(config.act_kwargs))
    return [r for r in rows if _key(r["model"], r["act"], json.loads(r["act_kwargs"] or "{}")) == key]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (NaN for a single value: one run measures no spread)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def mean_or_none(values: Sequence[str]) -> float | None:
    """The mean of CSV cells as floats, or ``None`` when there are none or one is empty (not recorded)."""
    return None if not values or any(v == "" for v in values) else statistics.fmean(float(v) for v in values)


def format_spread(spread: float) -> str:
    """A standard deviation or spread with two decimals; ``–`` when it is unknown (NaN: one seed)."""
    return "–" if math.isnan(spread) else f"{spread:.2f}"


def format_mean(mean: float, std: float) -> str:
    """``mean ± std`` with two decimals (``mean ± –`` for one seed)."""
    return f"{mean:.2f} ± {format_spread(std)}"


def format_difference(d: float, spread: float) -> str:
    """``d ± spread`` with two decimals and a sign (``d ± –`` when the spread is unknown)."""
    return f"{d:+.2f} ± {format_spread(spread)}"


def describe_difference(d: float, spread: float) -> str:
    """How a difference ``d`` compares with its ``spread``: clearly higher, clearly lower or within the spread; or
    that the spread is unknown (NaN: a side with one seed), when nothing can be called clear."""
    if math.isnan(spread):
        return "spread unknown (one seed)"
    if d > spread:
        return "clearly higher"
    if d < -spread:
        return "clearly lower"
    return "within the spread"


# -- the recipe study: configurations that differ in their training options too -------------------------


@dataclass(frozen=True)
class RecipeStat:
    """One recipe over its seeds: accuracies (mean, sample std), dynamics (mean over seeds) and time."""

    n: int
    val: tuple[float, float]
    test: tuple[float, float]
    dyn_median: float | None
    dyn_max: float | None
    seconds_per_epoch: float

    @property
    def static(self) -> bool | None:
        """Whether the layers stayed static (``None``: not measured, e.g. ReLU)."""
        return None if self.dyn_median is None else self.dyn_median < STATIC_THRESHOLD

    def val_diff(self, other: RecipeStat) -> tuple[float, float]:
        """Validation accuracy ``self - other`` and its spread."""
        return self.val[0] - other.val[0], math.hypot(self.val[1], other.val[1])


def recipe_key(config: Config) -> tuple[str, str, str, str]:
    """The key of ``config`` in :func:`summarise_recipes`' result: model, act, act_kwargs and train_kwargs."""
    act_kwargs = json.dumps(dict(config.act_kwargs), sort_keys=True)
    train_kwargs = json.dumps(dict(config.train_kwargs), sort_keys=True) if config.train_kwargs else ""
    return config.model, config.act, act_kwargs, train_kwargs


def _recipe_row_key(row: dict[str, str]) -> tuple[str, str, str, str]:
    act_kwargs = json.dumps(json.loads(row["act_kwargs"] or "{}"), sort_keys=True)
    return row["model"], row["act"], act_kwargs, row.get("train_kwargs", "")


def summarise_recipes(rows: Sequence[dict[str, str]]) -> dict[tuple[str, str, str, str], RecipeStat]:
    """Group the rows by recipe (model, act, act_kwargs, train_kwargs) and summarise each one."""
    groups: dict[tuple[str, str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(_recipe_row_key(row), []).append(row)
    return {
        key: RecipeStat(
            n=len(group),
            val=mean_sd([float(r["val_acc"]) for r in group]),
            test=mean_sd([float(r["test_acc"]) for r in group]),
            dyn_median=mean_or_none([r.get("dyn_median", "") for r in group]),
            dyn_max=mean_or_none([r.get("dyn_max", "") for r in group]),
            seconds_per_epoch=statistics.median(float(r["seconds_per_epoch"]) for r in group),
        )
        for key, group in groups.items()
    }
