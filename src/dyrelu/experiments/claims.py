"""The paper's claims as comparisons: each claim names the configurations it runs and carries its verdict rule.

Each claim compares configurations (model, activation, activation options) trained with several seeds under
one budget (:mod:`dyrelu.experiments.grid`); every table compares with ReLU on the same model. Its rule turns
the statistics of its rows (:mod:`dyrelu.experiments.stats`) into a verdict and notes; the report
(:mod:`dyrelu.experiments.report`) only renders them. Adding a claim is adding one :class:`Claim` here: its
configurations and its rule together.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dyrelu.analysis.summary import STATIC_THRESHOLD
from dyrelu.experiments.grid import (
    CLUTTERED_BUDGET,
    CONVERGED_BUDGET,
    DEFAULT_BUDGET,
    RECIPE_BUDGET,
    UPGRADE_BUDGET,
    Budget,
    Config,
)
from dyrelu.experiments.stats import (
    MIN_SEEDS,
    RecipeStat,
    Stat,
    Stats,
    describe_difference,
    format_difference,
    recipe_key,
    stat_of,
)

__all__ = [
    "CLAIMS",
    "CLUTTERED_CLAIM",
    "CONVERGED_CLAIMS",
    "DEFAULT_CLAIMS",
    "PLATEAU_CLAIM",
    "PLATEAU_TOLERANCE",
    "RECIPE_CLAIM",
    "UPGRADE_CLAIM",
    "Claim",
    "Rule",
    "Verdict",
    "choose_recipe",
    "claim_verdicts",
    "claims_budget",
    "plateau_choice",
    "schedule_means",
    "select_claims",
]

#: A verdict (one line) and its notes (one line each).
Verdict = tuple[str, list[str]]

#: How a claim is judged: its verdict from the statistics of its rows (their kind is the rule's: test accuracy
#: over seeds for the paper's claims, :func:`~dyrelu.experiments.stats.summarise`; validation accuracy per
#: recipe for R1, :func:`~dyrelu.experiments.stats.summarise_recipes`).
Rule = Callable[["Claim", Any], Verdict]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison: ``configs`` against the ReLU ``baseline`` of the same model.

    ``budget``: the claim's own training budget (``None``: the grid's shared one), with its rows in their
    own ``results`` file. ``rule``: how it is judged (``None``: a measurement without a verdict, P1).
    """

    name: str
    title: str
    statement: str
    configs: tuple[Config, ...]
    budget: Budget | None = None
    results: str = "results/grid.csv"
    rule: Rule | None = field(default=None, repr=False)

    def verdict(self, stats: Any) -> Verdict:
        """The claim's verdict and notes from the statistics of its rows (see :data:`Rule`)."""
        return ("no verdict rule", []) if self.rule is None else self.rule(self, stats)


def claim_verdicts(claims: Sequence[Claim], stats: Stats) -> dict[str, Verdict]:
    """Each claim's verdict and notes (by claim name) from :func:`~dyrelu.experiments.stats.summarise`'s statistics.

    A claim gets a verdict only when every configuration it compares has
    :data:`~dyrelu.experiments.stats.MIN_SEEDS` runs. A claim at another budget (``C1-converged``) carries the
    rule of its base claim (``C1``).
    """
    return {claim.name: claim.verdict(stats) for claim in claims}


# -- the rules of the paper's claims: test accuracy over seeds ---------------------------------------------


def _incomplete(claim: Claim, stats: Stats) -> str | None:
    """Why ``claim`` cannot have a verdict yet, or None when every configuration has MIN_SEEDS runs."""
    counts = [(s.n if (s := stat_of(stats, c)) is not None else 0) for c in claim.configs]
    ready = sum(n >= MIN_SEEDS for n in counts)
    if ready == len(counts):
        return None
    runs = sum(counts)
    return (
        f"no verdict yet: {ready} of {len(counts)} configurations have {MIN_SEEDS} seeds "
        f"({runs} run{'' if runs == 1 else 's'} so far)"
    )


def _dynamics_guard(claim: Claim, stats: Stats, verdict: str, notes: list[str]) -> Verdict:
    """A verdict that accounts for the DY-ReLU layers' dynamics.

    Where a DY-ReLU configuration of the claim is static (mean median slope range below
    :data:`~dyrelu.analysis.STATIC_THRESHOLD`), the runs compared ReLU plus an unused hyper function: the
    verdict says so, and the accuracy-only verdict moves to the notes. Where the rows do not record the
    dynamics, the verdict says that too.
    """
    dynamic_configs = [(c, stat_of(stats, c)) for c in claim.configs if c.act.startswith("dyrelu")]
    measured = [(c, s) for c, s in dynamic_configs if s is not None and s.dyn_median is not None]
    static = [c.display for c, s in measured if s.dyn_median < STATIC_THRESHOLD]
    if static:
        notes = [*notes, f"on accuracy alone: {verdict}"]
        return f"static: this run tested ReLU plus an unused hyper function ({', '.join(static)})", notes
    if len(measured) < len(dynamic_configs):
        return f"{verdict}; DY-ReLU's dynamics not recorded in these rows", notes
    return verdict, notes


def _judged_on_accuracy(rule: Rule, claim: Claim, stats: Stats) -> Verdict:
    missing = _incomplete(claim, stats)
    if missing is not None:
        return missing, []
    verdict, notes = _dynamics_guard(claim, stats, *rule(claim, stats))
    return verdict, [*notes, *_validation_notes(claim, stats)]


def _validation_notes(claim: Claim, stats: Stats) -> list[str]:
    """Each configuration against ReLU on the validation split, where the rows have one: a second held-out set,
    which a gain that is more than the test set's luck should show as well (the verdict stays on the test set)."""
    notes = []
    for config in claim.configs:
        s, base = stat_of(stats, config), stat_of(stats, _baseline(config))
        if config.act == "relu" or s is None or base is None or (diff := s.val_diff(base)) is None:
            continue
        test = describe_difference(*s.diff(base))
        notes.append(
            f"validation: {config.model} {config.display} − ReLU = {format_difference(*diff)} pp "
            f"({describe_difference(*diff)}; on the test set {test})"
        )
    return notes


def on_accuracy(rule: Rule) -> Rule:
    """``rule`` (on test accuracy over seeds), applied once every configuration has MIN_SEEDS seeds and
    qualified by the DY-ReLU layers' dynamics (a static configuration makes the verdict "static")."""
    return functools.partial(_judged_on_accuracy, rule)


def _baseline(config: Config) -> Config:
    return Config(config.model, "relu")


def _c1_size_trend(claim: Claim, stats: Stats) -> Verdict:
    gains = []
    notes = []
    for config in claim.configs:
        if config.act != "dyrelu_b":
            continue
        s, base = stat_of(stats, config), stat_of(stats, _baseline(config))
        if s is None or base is None:
            return "not run yet", notes
        d, spread = s.diff(base)
        gains.append((config.model, d, spread))
        notes.append(
            f"{config.model}: DY-ReLU-B − ReLU = {format_difference(d, spread)} pp ({describe_difference(d, spread)})"
        )
    beats = all(d > spread for _, d, spread in gains)
    widths = [(m, d, sp) for m, d, sp in gains if m.startswith("mobilenetv2")]
    decreasing = all(a[1] > b[1] for a, b in itertools.pairwise(widths))
    trend_clear = decreasing and (widths[0][1] - widths[-1][1]) > math.hypot(widths[0][2], widths[-1][2])
    notes.append(
        f"gain by MobileNetV2 width ({widths[0][0]} → {widths[-1][0]}): "
        + ", ".join(f"{d:+.2f}" for _, d, _ in widths)
        + (" — decreasing" if decreasing else " — not decreasing")
        + (" beyond the spread" if trend_clear else "")
    )
    if beats and trend_clear:
        return "holds", notes
    if beats:
        return "partly: DY-ReLU-B beats ReLU everywhere, but the gain does not clearly shrink with size", notes
    if any(d > spread for _, d, spread in gains):
        return "partly: DY-ReLU-B beats ReLU on some networks only", notes
    below = [model for model, d, spread in gains if d < -spread]
    if below:
        return f"does not hold at our scale: DY-ReLU-B is clearly below ReLU on {', '.join(below)}", notes
    return "does not hold at our scale: DY-ReLU-B is within the spread of ReLU on every network", notes


def _by_label(claim: Claim, stats: Stats, labels: Sequence[str]) -> dict[str, Stat] | None:
    """The statistics of the configurations displayed as ``labels`` (None when one has not run)."""
    found = {}
    for config in claim.configs:
        s = stat_of(stats, config)
        if config.display in labels:
            if s is None:
                return None
            found[config.display] = s
    return found


def _c2_variants(claim: Claim, stats: Stats) -> Verdict:
    s = _by_label(claim, stats, ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c"))
    if s is None:
        return "not run yet", []
    ba, bc = s["dyrelu_b"].diff(s["dyrelu_a"]), s["dyrelu_b"].diff(s["dyrelu_c"])
    above = {v: s[v].diff(s["relu"]) for v in ("dyrelu_a", "dyrelu_b", "dyrelu_c")}
    notes = [
        f"B − A = {format_difference(*ba)} pp ({describe_difference(*ba)})",
        f"B − C = {format_difference(*bc)} pp ({describe_difference(*bc)})",
    ]
    notes += [f"{v} − ReLU = {format_difference(*d)} pp ({describe_difference(*d)})" for v, d in above.items()]
    parts = [ba[0] > ba[1], abs(bc[0]) <= bc[1], all(d > sp for d, sp in above.values())]
    if all(parts):
        return "holds", notes
    seen = _c2_seen(ba, bc, above)
    if any(parts):
        names = ["A below B", "B ≈ C", "all above ReLU"]
        held = [n for n, ok in zip(names, parts, strict=True) if ok]
        return f"partly: only {', '.join(held)} ({seen})", notes
    return f"does not hold at our scale: {seen}", notes


#: How one variant stands against another, in the words of :func:`describe_difference`'s three answers.
_RELATION = {
    "clearly higher": "above",
    "clearly lower": "below",
    "within the spread": "≈",
    "spread unknown (one seed)": "?",
}


def _c2_seen(ba: tuple[float, float], bc: tuple[float, float], above: dict[str, tuple[float, float]]) -> str:
    """The comparisons of C2 that differ from the claim, for example ``A ≈ B, C below B, C below ReLU``."""
    compared = [("A", "B", (-ba[0], ba[1]), "below"), ("C", "B", (-bc[0], bc[1]), "≈")]
    compared += [(act[-1].upper(), "ReLU", d, "above") for act, d in above.items()]
    seen = [(name, _RELATION[describe_difference(*d)], other, want) for name, other, d, want in compared]
    return ", ".join(f"{name} {relation} {other}" for name, relation, other, want in seen if relation != want)


def _c3_pieces(claim: Claim, stats: Stats) -> Verdict:
    s = _by_label(claim, stats, ("dyrelu_b K=1", "dyrelu_b K=2", "dyrelu_b K=3"))
    if s is None:
        return "not run yet", []
    k21, k32 = s["dyrelu_b K=2"].diff(s["dyrelu_b K=1"]), s["dyrelu_b K=3"].diff(s["dyrelu_b K=2"])
    notes = [
        f"K=2 − K=1 = {format_difference(*k21)} pp ({describe_difference(*k21)})",
        f"K=3 − K=2 = {format_difference(*k32)} pp ({describe_difference(*k32)})",
    ]
    first, second = k21[0] > k21[1], k32[0] <= k32[1]
    if first and second:
        return "holds", notes
    if first or second:
        return "partly: " + (
            "K=2 beats K=1, but K=3 adds clearly more" if first else "K=2 does not clearly beat K=1"
        ), notes
    return "does not hold at our scale", notes


def _c4_activations(claim: Claim, stats: Stats) -> Verdict:
    ours = stat_of(stats, Config(claim.configs[0].model, "dyrelu_b"))
    if ours is None:
        return "not run yet", []
    notes, above, below, total = [], [], [], 0
    for config in claim.configs:
        if config.act == "dyrelu_b":
            continue
        s = stat_of(stats, config)
        if s is None:
            notes.append(f"{config.display}: not run")
            continue
        d = ours.diff(s)
        total += 1
        if d[0] > d[1]:
            above.append(config.display)
        elif d[0] < -d[1]:
            below.append(config.display)
        notes.append(f"DY-ReLU-B − {config.display} = {format_difference(*d)} pp ({describe_difference(*d)})")
    if total == 0:
        return "not run yet", notes
    if len(above) == total:
        return "holds", notes
    beats = f"DY-ReLU-B clearly beats {', '.join(above) if above else 'none'} ({len(above)} of {total})"
    if below:
        return f"does not hold at our scale: {beats} and is clearly below {', '.join(below)}", notes
    return f"partly: {beats}; the rest are within the spread", notes


def _c5_insensitive(claim: Claim, stats: Stats) -> Verdict:
    variants = [(c.display, stat_of(stats, c)) for c in claim.configs if c.act == "dyrelu_b"]
    if any(s is None for _, s in variants):
        return "not run yet", []
    best = max(variants, key=lambda v: v[1].mean)
    worst = min(variants, key=lambda v: v[1].mean)
    d = best[1].diff(worst[1])
    notes = [f"best {best[0]} − worst {worst[0]} = {format_difference(*d)} pp ({describe_difference(*d)})"]
    if d[0] <= d[1]:
        return "holds: no clear difference between the settings", notes
    return "does not hold: the setting matters at our scale", notes


def _c7_peer(claim: Claim, stats: Stats) -> Verdict:
    s = _by_label(claim, stats, ("relu", "aprelu", "dyrelu_b"))
    if s is None:
        return "not run yet", []
    d = s["dyrelu_b"].diff(s["aprelu"])
    notes = [f"DY-ReLU-B − APReLU = {format_difference(*d)} pp ({describe_difference(*d)})"]
    notes += [f"{v} − ReLU = {format_difference(*s[v].diff(s['relu']))} pp" for v in ("aprelu", "dyrelu_b")]
    if d[0] > d[1]:
        return "holds", notes
    if d[0] < -d[1]:
        return "does not hold at our scale: APReLU is clearly higher", notes
    return "does not hold at our scale: no clear difference", notes


def _u1_upgrade(claim: Claim, stats: Stats) -> Verdict:
    """U1: each upgrade (``claim.configs[1:]``) against the ReLU fine-tune (``claim.configs[0]``).

    Only a dynamic upgrade can hold: a static one is the ReLU network plus an unused hyper function. The verdict
    names the static upgrades; each one's difference and slope range is in the notes.
    """
    missing = _incomplete(claim, stats)
    if missing is not None:
        return missing, []
    relu = stat_of(stats, claim.configs[0])
    notes, above, below, static = [], [], [], []
    for config in claim.configs[1:]:
        s = stat_of(stats, config)
        d, spread = s.diff(relu)
        is_static = s.dyn_median is not None and s.dyn_median < STATIC_THRESHOLD
        dynamics = "dynamics not recorded" if s.dyn_median is None else f"median slope range {s.dyn_median:.3g}"
        notes.append(
            f"{config.display} − fine-tuned as ReLU: {format_difference(d, spread)} pp "
            f"({describe_difference(d, spread)}); {dynamics}{' (static)' if is_static else ''}"
        )
        if is_static:
            static.append(config.display)
        elif d > spread:
            above.append(config.display)
        elif d < -spread:
            below.append(config.display)
    notes += _validation_notes(claim, stats)
    if len(static) == len(claim.configs) - 1:
        return f"static: every upgrade kept its layers static ({'; '.join(static)})", notes
    also = f"; static, ReLU plus an unused hyper function: {'; '.join(static)}" if static else ""
    if above:
        return f"holds: {'; '.join(above)} clearly beats the ReLU fine-tune{also}", notes
    if below:
        return f"does not hold at our scale: {'; '.join(below)} clearly below the ReLU fine-tune{also}", notes
    return f"does not hold at our scale: no clear difference{also}", notes


# -- the rule of the recipe study: validation accuracy and dynamics per recipe -----------------------------


def choose_recipe(claim: Claim, stats: dict[Any, RecipeStat]) -> tuple[Config | None, Config | None]:
    """The DY-ReLU recipe with the highest mean validation accuracy, and the best one that is not static."""
    candidates = [(c, stats[recipe_key(c)]) for c in claim.configs if c.act != "relu" and recipe_key(c) in stats]
    best = max(candidates, key=lambda item: item[1].val[0], default=(None, None))[0]
    dynamic = [(c, s) for c, s in candidates if s.static is False]
    best_dynamic = max(dynamic, key=lambda item: item[1].val[0], default=(None, None))[0]
    return best, best_dynamic


def _r1_recipe(claim: Claim, stats: dict[Any, RecipeStat]) -> Verdict:
    counts = [stats[recipe_key(c)].n if recipe_key(c) in stats else 0 for c in claim.configs]
    if any(n < MIN_SEEDS for n in counts):
        ready = sum(n >= MIN_SEEDS for n in counts)
        return (
            f"no verdict yet: {ready} of {len(counts)} recipes have {MIN_SEEDS} seeds ({sum(counts)} runs so far)",
            [],
        )
    base = stats[recipe_key(claim.configs[0])]
    best, best_dynamic = choose_recipe(claim, stats)
    d = stats[recipe_key(best)].val_diff(base)
    notes = [
        f"chosen by validation accuracy: **{best.display}** "
        f"({'static' if stats[recipe_key(best)].static else 'dynamic'}; "
        f"validation Δ vs ReLU {format_difference(*d)} pp, {describe_difference(*d)})"
    ]
    if best_dynamic is None:
        return "does not hold at this budget: no recipe developed dynamics", notes
    dd = stats[recipe_key(best_dynamic)].val_diff(base)
    notes.append(
        f"best recipe whose layers are not static: **{best_dynamic.display}** (validation Δ vs ReLU "
        f"{format_difference(*dd)} pp, {describe_difference(*dd)}; slope range median "
        f"{stats[recipe_key(best_dynamic)].dyn_median:.2g})"
    )
    if dd[0] < -dd[1]:
        return (
            f"does not hold at this budget: every dynamic recipe is clearly below ReLU (best: {best_dynamic.display})",
            notes,
        )
    where = "above" if dd[0] > dd[1] else "level with"
    return f"holds: {best_dynamic.display} develops dynamics and is {where} ReLU on validation accuracy", notes


# -- the plateau study: not a claim of the paper, the measurement behind the converged budget ---------------

#: A schedule has converged when its final validation accuracy is within this many pp of the longest's.
PLATEAU_TOLERANCE = 0.3


def schedule_means(rows: Sequence[dict[str, str]]) -> dict[int, float]:
    """The plateau study's mean validation accuracy (over seeds) of the ReLU baseline by schedule length in epochs
    (rows of other activations are left out)."""
    by_epochs: dict[int, list[float]] = {}
    for row in rows:
        if row.get("act", "relu") == "relu":
            by_epochs.setdefault(int(row["epochs"]), []).append(float(row["val_acc"]))
    return {epochs: statistics.fmean(values) for epochs, values in by_epochs.items()}


def plateau_choice(rows: Sequence[dict[str, str]]) -> int | None:
    """The plateau study's outcome: the shortest schedule whose validation accuracy (mean over seeds) is within
    :data:`PLATEAU_TOLERANCE` pp of the longest schedule's; ``None`` before any run.

    Example:
        >>> plateau_choice([{"epochs": "3", "val_acc": "90.1"}, {"epochs": "6", "val_acc": "90.8"},
        ...                 {"epochs": "12", "val_acc": "91.0"}])
        6
    """
    val = schedule_means(rows)
    if not val:
        return None
    longest = val[max(val)]
    return min(e for e in val if longest - val[e] <= PLATEAU_TOLERANCE)


# -- the claims ----------------------------------------------------------------------------------------------

_SMALL = "mobilenetv2_035"
_cfg = Config.of

#: The paper's claims that can be tested at small scale, at the small grid's budget.
_PAPER: tuple[Claim, ...] = (
    Claim(
        "C1",
        "DY-ReLU-B against ReLU across network sizes",
        "DY-ReLU-B beats ReLU, and the gain is larger for smaller networks.",
        tuple(
            _cfg(model, act)
            for model in ("mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_100", "resnet10")
            for act in ("relu", "dyrelu_b")
        ),
        rule=on_accuracy(_c1_size_trend),
    ),
    Claim(
        "C2",
        "The variants A, B and C",
        "DY-ReLU-A is below B, B is about equal to C, and all three are above ReLU.",
        tuple(_cfg(_SMALL, act) for act in ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")),
        rule=on_accuracy(_c2_variants),
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
        rule=on_accuracy(_c3_pieces),
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
        rule=on_accuracy(_c4_activations),
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
        rule=on_accuracy(_c5_insensitive),
    ),
    Claim(
        "C7",
        "The closest dynamic peer: DY-ReLU-B against APReLU",
        "DY-ReLU-B beats APReLU (Zhao et al. 2020), whose input-dependent slope applies to the negative part "
        "only: the maximum over K dynamic pieces is the stronger design.",
        tuple(_cfg(_SMALL, act) for act in ("relu", "aprelu", "dyrelu_b")),
        rule=on_accuracy(_c7_peer),
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
    rule=_r1_recipe,
)

#: The plateau study behind the converged budget: the ReLU baseline of the smallest network at four schedule
#: lengths, one seed (the budget is the shortest length within :data:`PLATEAU_TOLERANCE` pp of the longest's
#: validation accuracy, :func:`plateau_choice`). 24 epochs, twice the grid's budget, was added after 12 gained
#: 1.26 pp over 6: only a longer schedule can show whether 12 has stopped improving. It had not (24 gained 0.74 pp
#: of validation accuracy), hence DY-ReLU-B at 24 epochs too: whether its gain over ReLU at the grid's 12 epochs
#: holds at twice the schedule, or was faster learning that ReLU catches up with. The two longest runs first, so
#: that the shorter ones share a process.
PLATEAU_CLAIM = Claim(
    "P1",
    "How long the ReLU baseline needs to stop improving",
    "The converged budget's schedule is the shortest whose final validation accuracy is within 0.3 pp of the "
    "longest schedule's.",
    (
        _cfg(_SMALL, "relu", "24 epochs", {"epochs": 24}),
        _cfg(_SMALL, "dyrelu_b", "24 epochs", {"epochs": 24}),
        *(_cfg(_SMALL, "relu", f"{epochs} epochs", {"epochs": epochs}) for epochs in (12, 3, 6)),
    ),
    budget=replace(CONVERGED_BUDGET, seeds=(0,)),
    results="results/plateau.csv",
)


def _converged(claim: Claim, configs: tuple[Config, ...] | None = None, title: str = "") -> Claim:
    """``claim`` at the converged budget, judged by its rule: named ``<name>-converged``, rows in
    results/converged.csv."""
    return replace(
        claim,
        name=f"{claim.name}-converged",
        title=title or claim.title,
        configs=claim.configs if configs is None else configs,
        budget=CONVERGED_BUDGET,
        results="results/converged.csv",
    )


_BY_NAME = {claim.name: claim for claim in _PAPER}

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

#: C1 where the input has a global context to read (the paper's argument for the hyper function): the smallest two
#: networks on the cluttered canvases of :mod:`dyrelu.data.cluttered`, at the converged schedule.
CLUTTERED_CLAIM = replace(
    _converged(
        _BY_NAME["C1"],
        tuple(_cfg(model, act) for model in ("mobilenetv2_025", "mobilenetv2_035") for act in ("relu", "dyrelu_b")),
        "DY-ReLU-B against ReLU on cluttered canvases (an item among distractors: global context)",
    ),
    name="C1-cluttered",
    budget=CLUTTERED_BUDGET,
    results="results/cluttered.csv",
)

#: Upgrading a trained network: the converged ReLU runs of mobilenetv2_035 fine-tuned for a few epochs, as ReLU or
#: converted to DY-ReLU-B by :func:`dyrelu.convert`, exactly (the last FC of each hyper function at zero: the
#: network computes what it computed) or with the authors' init of that FC (as nn.Linear: the network changes at
#: conversion). The second upgrade was added when the exact one stayed static: from a converged network, the
#: zero-initialised hyper functions settle at a slope range that grows with their learning rate (0.00015 at 10×,
#: 0.0007 at 100×, far below the static threshold) until the rate breaks the network (1000×: 23 % test accuracy);
#: the authors' init gave 0.024 at 1× and 10× (benchmarks/upgrade_hyper_lr.sh, docs/benchmarks/upgrade_hyper_lr.csv).
UPGRADE_CLAIM = Claim(
    "U1",
    "Upgrading a trained ReLU network to DY-ReLU-B",
    "(Not the paper's: what a conversion allows.) A trained ReLU network converted to DY-ReLU-B and "
    "fine-tuned beats the same network fine-tuned as ReLU for the same epochs.",
    (
        _cfg(_SMALL, "relu", "fine-tuned as ReLU"),
        _cfg(_SMALL, "dyrelu_b", "converted exactly (last FC at zero)"),
        _cfg(_SMALL, "dyrelu_b", "converted with the authors' init (not exact)", zero_init_last=False),
    ),
    budget=UPGRADE_BUDGET,
    results="results/upgrade.csv",
    rule=_u1_upgrade,
)

#: Every claim ``dyrelu compare --claims`` knows: the paper's, the recipe study, the plateau study, the converged
#: claims, the cluttered task and the upgrade.
CLAIMS: tuple[Claim, ...] = (
    *_PAPER,
    RECIPE_CLAIM,
    PLATEAU_CLAIM,
    *CONVERGED_CLAIMS,
    CLUTTERED_CLAIM,
    UPGRADE_CLAIM,
)

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
