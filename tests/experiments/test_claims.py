"""dyrelu.experiments.claims: the claims, their budgets, and the verdict each claim carries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dyrelu.experiments import (
    CLAIMS,
    CONVERGED_BUDGET,
    CONVERGED_CLAIMS,
    DEFAULT_BUDGET,
    DEFAULT_CLAIMS,
    Claim,
    Config,
    claims_budget,
    select_claims,
)
from dyrelu.experiments.claims import claim_verdicts
from dyrelu.experiments.keypoints import DEFAULT_KEYPOINT_BUDGET
from dyrelu.experiments.report import make_report
from dyrelu.experiments.stats import summarise
from dyrelu.models import list_models
from dyrelu.recipe import SCRATCH_DYRELU_KWARGS, SCRATCH_TRAIN_OPTIONS
from tests.experiments.rows import c2_rows, row, write_rows


def test_converged_budget_pins_the_recipe_and_the_full_training_set():
    b = CONVERGED_BUDGET
    assert b.data_fraction == 1.0 and b.val_size == 5000 and b.name == "converged"
    assert b.extra == SCRATCH_TRAIN_OPTIONS and b.dyrelu_defaults == SCRATCH_DYRELU_KWARGS
    assert all(c.budget == b and c.results == "results/converged.csv" for c in CONVERGED_CLAIMS)
    assert claims_budget(CONVERGED_CLAIMS) == (b, "results/converged.csv")
    models = {config.model for claim in CONVERGED_CLAIMS for config in claim.configs}
    assert models <= set(list_models())


def test_converged_claims_are_selected_by_name_in_any_case():
    assert select_claims(["c1-converged"]) == (CONVERGED_CLAIMS[0],)
    assert [c.name for c in CONVERGED_CLAIMS] == ["C1-converged", "C2-converged", "C4-converged", "C3-converged"]
    with pytest.raises(ValueError, match=r"unknown claims \['C9-CONVERGED'\]"):
        select_claims(["C9-converged"])
    # their own budget: not run by a plain `dyrelu compare`
    names = [c.name for c in CONVERGED_CLAIMS]
    assert not set(names) & {c.name for c in select_claims(None)} and set(names) <= {c.name for c in CLAIMS}


def test_budgets_pin_dyrelu_c_attention_normalisation():
    c, b = Config("mobilenetv2_035", "dyrelu_c"), Config("mobilenetv2_035", "dyrelu_b")
    # the grids of dyrelu 0.1 ran DY-ReLU-C without the normalisation: their budgets say so
    assert DEFAULT_BUDGET.act_kwargs(c) == {"zero_init_last": True, "spatial_norm": False}
    assert DEFAULT_KEYPOINT_BUDGET.act_options == {"dyrelu_c": {"spatial_norm": False}}
    assert CONVERGED_BUDGET.act_kwargs(c) == {"zero_init_last": False, "spatial_norm": True}
    assert CONVERGED_BUDGET.act_kwargs(b) == {"zero_init_last": False}  # B has no attention
    assert CONVERGED_BUDGET.act_kwargs(Config("m", "relu")) == {}
    own = Config("m", "dyrelu_c", (("spatial_norm", False),))
    assert CONVERGED_BUDGET.act_kwargs(own)["spatial_norm"] is False  # the configuration's own options win


def test_default_grid_is_every_claim_and_claims_without_runs_have_no_verdict(tmp_path):
    assert select_claims(None) == DEFAULT_CLAIMS and [c.name for c in select_claims(["C5", "C1"])] == ["C5", "C1"]
    assert tuple(c for c in CLAIMS if c.budget is None) == DEFAULT_CLAIMS  # R1, P1: own budgets, run when named
    assert {c.name for c in CLAIMS if c.budget is not None} >= {"R1", "P1"}
    text = make_report(write_rows(tmp_path / "r.csv", c2_rows(91, 92, 92)))
    (c5_line,) = [line for line in text.splitlines() if line.startswith("| C5 |")]
    assert "no verdict yet: 2 of 5 configurations have 3 seeds (6 runs so far)" in c5_line  # ReLU and the default B


def test_report_verdicts_follow_the_spread(tmp_path):
    holds = make_report(write_rows(tmp_path / "a.csv", c2_rows(a=91.0, b=92.0, c=92.05)), select_claims(["C2"]))
    assert "| C2 |" in holds and "| holds |" in holds
    fails = make_report(write_rows(tmp_path / "b.csv", c2_rows(a=89.0, b=89.5, c=91.0)), select_claims(["C2"]))
    assert "holds |" not in fails.split("## C2")[0]
    assert "B − A = +0.50 ± 0.14 pp (clearly higher)" in fails
    assert "| partly: only A below B (C above B, A below ReLU, B below ReLU) |" in fails
    # the verdict names what failed: here A and B tie above ReLU and C falls below both
    seen = make_report(write_rows(tmp_path / "e.csv", c2_rows(93.37, 93.31, 92.81, relu=92.98)), select_claims(["C2"]))
    assert "| does not hold at our scale: A ≈ B, C below B, C below ReLU |" in seen
    missing = make_report(write_rows(tmp_path / "c.csv", c2_rows(91, 92, 92)), select_claims(["C1", "C2"]))
    assert (
        "| C1 | DY-ReLU-B beats ReLU, and the gain is larger for smaller networks. | no verdict yet: 2 of 8" in missing
    )
    two_seeds = make_report(write_rows(tmp_path / "d.csv", c2_rows(91, 92, 92)[:8]), select_claims(["C2"]))
    assert "no verdict yet: 0 of 4 configurations have 3 seeds (8 runs so far)" in two_seeds


@pytest.mark.parametrize(
    ("gains", "expected"),
    [
        ((3.0, 2.0, 1.0, 1.0), "holds"),
        ((1.0, 1.0, 1.0, 1.0), "partly: DY-ReLU-B beats ReLU everywhere, but the gain does not clearly shrink"),
        ((1.0, 0.0, 0.0, 0.0), "partly: DY-ReLU-B beats ReLU on some networks only"),
        ((0.0, 0.1, -0.1, 0.0), "does not hold at our scale: DY-ReLU-B is within the spread of ReLU on every network"),
        ((0.0, 0.0, 0.0, -1.0), "does not hold at our scale: DY-ReLU-B is clearly below ReLU on resnet10"),
    ],
)
def test_c1_verdict(tmp_path, gains, expected):
    models = ("mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_100", "resnet10")
    rows = []
    for seed, jitter in enumerate((-0.2, 0.0, 0.2)):
        for model, gain in zip(models, gains, strict=True):
            rows.append(row(model, "relu", seed, 90.0 + jitter))
            rows.append(row(model, "dyrelu_b", seed, 90.0 + gain + jitter))
    text = make_report(write_rows(tmp_path / "r.csv", rows), select_claims(["C1"]))
    (line,) = [line for line in text.splitlines() if line.startswith("| C1 |")]
    assert expected in line


@pytest.mark.parametrize(
    ("aprelu", "expected"),
    [(90.5, "holds"), (92.0, "does not hold at our scale: no clear difference"), (94.0, "APReLU is clearly higher")],
)
def test_aprelu_verdict(tmp_path, aprelu, expected):
    rows = []
    for seed, jitter in enumerate((-0.1, 0.0, 0.1)):
        for act, acc in (("relu", 90.0), ("aprelu", aprelu), ("dyrelu_b", 92.0)):
            rows.append(row("mobilenetv2_035", act, seed, acc + jitter))
    text = make_report(write_rows(tmp_path / "r.csv", rows), select_claims(["C7"]))
    (line,) = [line for line in text.splitlines() if line.startswith("| C7 |")]
    assert expected in line
    assert "DY-ReLU-B − APReLU" in text


def test_c4_verdict_names_what_dyrelu_b_beats_and_trails(tmp_path):
    accs = {"relu": 90.0, "lrelu": 92.0, "prelu": 95.0, "dyrelu_b": 92.0}
    rows = [
        row("mobilenetv2_035", act, seed, acc + jitter)
        for seed, jitter in enumerate((-0.1, 0.0, 0.1))
        for act, acc in accs.items()
    ]
    claim = select_claims(["C4"])[0]
    small = replace(claim, configs=tuple(c for c in claim.configs if c.act in accs))
    text = make_report(write_rows(tmp_path / "r.csv", rows), [small])
    (line,) = [line for line in text.splitlines() if line.startswith("| C4 |")]
    assert "does not hold at our scale: DY-ReLU-B clearly beats relu (1 of 3) and is clearly below prelu" in line


def test_a_claim_carries_its_verdict_rule(tmp_path):
    c2 = select_claims(["C2"])[0]
    stats = summarise(write_rows(tmp_path / "r.csv", c2_rows(a=91.0, b=92.0, c=92.05)))
    assert c2.verdict(stats)[0] == "holds" and claim_verdicts([c2], stats) == {"C2": c2.verdict(stats)}
    # a claim at another budget is judged by the rule of the claim it repeats
    for claim in CONVERGED_CLAIMS:
        assert claim.rule is select_claims([claim.name.removesuffix("-converged")])[0].rule

    # a new claim is one object: its configurations and its rule; the report renders what the rule says
    def rule(claim, stats):
        return f"judged {len(claim.configs)} configurations", ["a note"]

    new = Claim("X1", "A new claim", "Something holds.", c2.configs[:2], rule=rule)
    text = make_report(write_rows(tmp_path / "x.csv", c2_rows(a=91.0, b=92.0, c=92.05)), [new])
    assert "| X1 | Something holds. | judged 2 configurations |" in text and "- a note" in text
    assert Claim("P9", "t", "s", ()).verdict(stats) == ("no verdict rule", [])
