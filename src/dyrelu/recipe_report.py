"""The recipe study's section of REPRODUCTION.md (claim R1), from ``results/recipe.csv``, nothing hand-written.

Each recipe of :data:`dyrelu.experiments.RECIPE_CLAIM` is summarised over its seeds: validation accuracy
(the only number the choice looks at), test accuracy (reported, never used to choose) and the DY-ReLU
layers' dynamics (``dyn_median``, ``dyn_max``: the median and maximum over layers of the slopes'
dynamic range, mean over seeds). A recipe whose mean ``dyn_median`` is below
:data:`~dyrelu.analysis.STATIC_THRESHOLD` is *static*: it trained ReLU plus an unused hyper function.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments import RECIPE_CLAIM, Claim, Config
from dyrelu.report import MIN_SEEDS, describe_difference, format_difference, mean_or_none

__all__ = ["RecipeStat", "choose_recipe", "recipe_report", "summarise_recipes"]


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


def _key(config: Config) -> tuple[str, str, str, str]:
    act_kwargs = json.dumps(dict(config.act_kwargs), sort_keys=True)
    train_kwargs = json.dumps(dict(config.train_kwargs), sort_keys=True) if config.train_kwargs else ""
    return config.model, config.act, act_kwargs, train_kwargs


def _row_key(row: dict[str, str]) -> tuple[str, str, str, str]:
    act_kwargs = json.dumps(json.loads(row["act_kwargs"] or "{}"), sort_keys=True)
    return row["model"], row["act"], act_kwargs, row.get("train_kwargs", "")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise_recipes(rows: Sequence[dict[str, str]]) -> dict[tuple[str, str, str, str], RecipeStat]:
    """Group the rows by recipe (model, act, act_kwargs, train_kwargs) and summarise each one."""
    groups: dict[tuple[str, str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(_row_key(row), []).append(row)
    return {
        key: RecipeStat(
            n=len(group),
            val=_mean_sd([float(r["val_acc"]) for r in group]),
            test=_mean_sd([float(r["test_acc"]) for r in group]),
            dyn_median=mean_or_none([r.get("dyn_median", "") for r in group]),
            dyn_max=mean_or_none([r.get("dyn_max", "") for r in group]),
            seconds_per_epoch=statistics.median(float(r["seconds_per_epoch"]) for r in group),
        )
        for key, group in groups.items()
    }


def choose_recipe(claim: Claim, stats) -> tuple[Config | None, Config | None]:
    """The DY-ReLU recipe with the highest mean validation accuracy, and the best one that is not static."""
    candidates = [(c, stats[_key(c)]) for c in claim.configs if c.act != "relu" and _key(c) in stats]
    best = max(candidates, key=lambda item: item[1].val[0], default=(None, None))[0]
    dynamic = [(c, s) for c, s in candidates if s.static is False]
    best_dynamic = max(dynamic, key=lambda item: item[1].val[0], default=(None, None))[0]
    return best, best_dynamic


def _dynamics_cell(s: RecipeStat) -> tuple[str, str]:
    if s.dyn_median is None:
        return "–", "–"
    return f"{s.dyn_median:.2g} / {s.dyn_max:.2g}", "static" if s.static else "dynamic"


def _table(claim: Claim, stats) -> list[str]:
    lines = [
        "| recipe | seeds | val. acc. (%) | Δ val. vs ReLU (pp) | test acc. (%) | slope range median / max | layers "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = stats.get(_key(claim.configs[0]))
    for config in claim.configs:
        s = stats.get(_key(config))
        if s is None:
            lines.append(f"| {config.display} | 0 | not run | | | | | |")
            continue
        delta = "" if base is None or config.act == "relu" else format_difference(*s.val_diff(base))
        dyn, kind = _dynamics_cell(s)
        lines.append(
            f"| {config.display} | {s.n} | {s.val[0]:.2f} ± {s.val[1]:.2f} | {delta} | {s.test[0]:.2f} ± "
            f"{s.test[1]:.2f} | {dyn} | {kind} | {s.seconds_per_epoch:.1f} |"
        )
    return lines


def _verdict(claim: Claim, stats) -> tuple[str, list[str]]:
    counts = [stats[_key(c)].n if _key(c) in stats else 0 for c in claim.configs]
    if any(n < MIN_SEEDS for n in counts):
        ready = sum(n >= MIN_SEEDS for n in counts)
        return (
            f"no verdict yet: {ready} of {len(counts)} recipes have {MIN_SEEDS} seeds ({sum(counts)} runs so far)",
            [],
        )
    base = stats[_key(claim.configs[0])]
    best, best_dynamic = choose_recipe(claim, stats)
    d = stats[_key(best)].val_diff(base)
    notes = [
        f"chosen by validation accuracy: **{best.display}** ({'static' if stats[_key(best)].static else 'dynamic'}; "
        f"validation Δ vs ReLU {format_difference(*d)} pp, {describe_difference(*d)})"
    ]
    if best_dynamic is None:
        return "does not hold at this budget: no recipe developed dynamics", notes
    dd = stats[_key(best_dynamic)].val_diff(base)
    notes.append(
        f"best recipe whose layers are not static: **{best_dynamic.display}** (validation Δ vs ReLU "
        f"{format_difference(*dd)} pp, {describe_difference(*dd)}; slope range median "
        f"{stats[_key(best_dynamic)].dyn_median:.2g})"
    )
    if dd[0] < -dd[1]:
        return (
            f"does not hold at this budget: every dynamic recipe is clearly below ReLU (best: {best_dynamic.display})",
            notes,
        )
    where = "above" if dd[0] > dd[1] else "level with"
    return f"holds: {best_dynamic.display} develops dynamics and is {where} ReLU on validation accuracy", notes


def _budget_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    def values(column: str) -> str:
        return ", ".join(sorted({r[column] for r in rows}))

    seconds = sum(float(r["train_seconds"]) for r in rows)
    return [
        "Produced by `dyrelu compare --claims R1 --jobs 2` (rows in `results/recipe.csv`), then `dyrelu report`.",
        "",
        f"- runs: {len(rows)}; seeds per recipe: {values('seed')}; model: {values('model')}",
        f"- data: Fashion-MNIST, the full training set minus {values('val_size')} validation images (class-"
        "stratified, fixed; the recipe is chosen on them), evaluated on the full test set of 10,000 images",
        f"- epochs: {values('epochs')}; batch size {values('batch_size')}; SGD with Nesterov momentum, lr 0.1, "
        "weight decay 5e-4, cosine schedule with 1 warm-up epoch, label smoothing 0.1",
        f"- dynamics: on the first 256 test images; a recipe is *static* when its mean median slope range is "
        f"below {STATIC_THRESHOLD} (the input-dependent part moves the output by less than 1 % of its scale)",
        f"- threads per run: {values('threads')}; torch {values('torch')}; commits {values('commit')}; "
        f"total training time {seconds / 3600:.2f} process hours",
    ]


def recipe_report(rows: Sequence[dict[str, str]], claim: Claim = RECIPE_CLAIM) -> str:
    """The R1 section of REPRODUCTION.md for the recipe study's ``rows`` (``results/recipe.csv``)."""
    stats = summarise_recipes(rows)
    verdict, notes = _verdict(claim, stats)
    lines = [
        f"## {claim.name}: {claim.title}",
        "",
        *_budget_lines(rows),
        "",
        f"Tested: {claim.statement}",
        "",
        *_table(claim, stats),
        "",
        f"**Verdict ({claim.name}): {verdict}.**",
        "",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
