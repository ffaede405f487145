"""The recipe study's section (R1): each recipe's validation accuracy and dynamics, and the recipe chosen."""

from __future__ import annotations

from collections.abc import Sequence

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments.claims import RECIPE_CLAIM, Claim
from dyrelu.experiments.report._tables import values_of
from dyrelu.experiments.stats import RecipeStat, format_difference, format_mean, recipe_key, summarise_recipes


def _recipe_dynamics_cell(s: RecipeStat) -> tuple[str, str]:
    if s.dyn_median is None:
        return "–", "–"
    return f"{s.dyn_median:.2g} / {s.dyn_max:.2g}", "static" if s.static else "dynamic"


def _recipe_table(claim: Claim, stats: dict[tuple[str, str, str, str], RecipeStat]) -> list[str]:
    lines = [
        "| recipe | seeds | val. acc. (%) | Δ val. vs ReLU (pp) | test acc. (%) | slope range median / max | layers "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = stats.get(recipe_key(claim.configs[0]))
    for config in claim.configs:
        s = stats.get(recipe_key(config))
        if s is None:
            lines.append(f"| {config.display} | 0 | not run | | | | | |")
            continue
        delta = "" if base is None or config.act == "relu" else format_difference(*s.val_diff(base))
        dyn, kind = _recipe_dynamics_cell(s)
        lines.append(
            f"| {config.display} | {s.n} | {format_mean(*s.val)} | {delta} | {format_mean(*s.test)} | "
            f"{dyn} | {kind} | {s.seconds_per_epoch:.1f} |"
        )
    return lines


def _recipe_budget_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    seconds = sum(float(r["train_seconds"]) for r in rows)
    return [
        "Produced by `dyrelu compare --claims R1 --jobs 2` (rows in `results/recipe.csv`), then `dyrelu report`.",
        "",
        f"- runs: {len(rows)}; seeds per recipe: {values_of(rows, 'seed')}; model: {values_of(rows, 'model')}",
        f"- data: Fashion-MNIST, the full training set minus {values_of(rows, 'val_size')} validation images (class-"
        "stratified, fixed; the recipe is chosen on them), evaluated on the full test set of 10,000 images",
        f"- epochs: {values_of(rows, 'epochs')}; batch size {values_of(rows, 'batch_size')}; SGD with Nesterov "
        "momentum, lr 0.1, weight decay 5e-4, cosine schedule with 1 warm-up epoch, label smoothing 0.1",
        f"- dynamics: on the first 256 test images; a recipe is *static* when its mean median slope range is "
        f"below {STATIC_THRESHOLD} (the input-dependent part moves the output by less than 1 % of its scale)",
        f"- threads per run: {values_of(rows, 'threads')}; torch {values_of(rows, 'torch')}; commits "
        f"{values_of(rows, 'commit')}; total training time {seconds / 3600:.2f} process hours",
    ]


def recipe_report(rows: Sequence[dict[str, str]], claim: Claim = RECIPE_CLAIM) -> str:
    """The R1 section of REPRODUCTION.md for the recipe study's ``rows`` (``results/recipe.csv``).

    Each recipe is summarised over its seeds: validation accuracy (the only number the choice looks at,
    :func:`~dyrelu.experiments.claims.choose_recipe`), test accuracy (reported, never used to choose) and the
    DY-ReLU layers' dynamics (the median and maximum over layers of the slopes' dynamic range, mean over seeds;
    a recipe below :data:`~dyrelu.analysis.STATIC_THRESHOLD` is *static*).
    """
    stats = summarise_recipes(rows)
    verdict, notes = claim.verdict(stats)
    lines = [
        f"## {claim.name}: {claim.title}",
        "",
        *_recipe_budget_lines(rows),
        "",
        f"Tested: {claim.statement}",
        "",
        *_recipe_table(claim, stats),
        "",
        f"**Verdict ({claim.name}): {verdict}.**",
        "",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
