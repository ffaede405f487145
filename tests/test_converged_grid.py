"""The converged grid's machinery: the plateau study, claims run claim by claim, own schedule lengths."""

from __future__ import annotations

import pytest

from dyrelu.experiments import (
    CLAIMS,
    CONVERGED_BUDGET,
    CONVERGED_CLAIMS,
    PLATEAU_CLAIM,
    Budget,
    Claim,
    append_row,
    claims_budget,
    pending_runs,
    plan_runs,
    read_results,
    run_grid,
    select_claims,
)
from dyrelu.models import list_models
from dyrelu.recipe import SCRATCH_DYRELU_KWARGS, SCRATCH_TRAIN_OPTIONS


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


def test_plan_runs_goes_claim_by_claim_and_seed_major_within_a_claim():
    runs = plan_runs(CONVERGED_CLAIMS[:2], seeds=(0, 1, 2), budget_name="converged")
    owners = [names[0] for _, names in runs]
    # every C1 run (the first claim naming it) before any run that only C2 has
    assert owners == sorted(owners, key=["C1-converged", "C2-converged"].index)
    c1 = [spec.seed for spec, names in runs if names[0] == "C1-converged"]
    assert c1 == sorted(c1) and len(c1) == 18
    shared = [names for spec, names in runs if spec.run_id == "mobilenetv2_035-relu-seed0-converged"]
    assert shared == [["C1-converged", "C2-converged"]]


def test_plateau_configurations_set_their_own_schedule_length(tmp_path):
    lengths = [dict(c.train_kwargs)["epochs"] for c in PLATEAU_CLAIM.configs]
    assert sorted(lengths) == [3, 6, 12] and lengths[0] == 12  # the longest starts first
    budget = PLATEAU_CLAIM.budget
    results = tmp_path / "plateau.csv"
    first = plan_runs([PLATEAU_CLAIM], budget.seeds, budget.name)[0][0]
    assert first.run_id == "mobilenetv2_035-relu-epochs=12-seed0-converged"
    # a row is done only at the configuration's own length, not at the budget's
    append_row(results, {"run": first.run_id, "epochs": 6, "data_fraction": budget.data_fraction})
    assert first.run_id in {spec.run_id for spec, _ in pending_runs(results, [PLATEAU_CLAIM], budget)}
    append_row(results, {"run": first.run_id, "epochs": 12, "data_fraction": budget.data_fraction})
    assert first.run_id not in {spec.run_id for spec, _ in pending_runs(results, [PLATEAU_CLAIM], budget)}


@pytest.mark.slow
def test_a_configurations_epochs_override_the_budget_and_reach_the_row(tmp_path):
    from dyrelu.experiments import _cfg

    claim = Claim("T", "t", "t", (_cfg("mobilenetv2_035", "relu", train={"epochs": 2}),))
    budget = Budget(
        data="synthetic",
        epochs=1,
        batch_size=32,
        seeds=(0,),
        extra={"data_kwargs": {"num_samples": 64, "image_size": 8}, "eval_fraction": 0.5},
    )
    results = tmp_path / "t.csv"
    assert run_grid(results, tmp_path / "runs", claims=[claim], budget=budget, log=lambda _: None) == 1
    (row,) = read_results(results)
    assert row["epochs"] == "2" and row["device"] == "cpu" and row["run"] == "mobilenetv2_035-relu-epochs=2-seed0"
    assert pending_runs(results, [claim], budget) == []
