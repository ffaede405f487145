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
        extra={"data_kwargs": {"num_samples": 64, "image_size": 8}, "eval_fraction": 0.5, "amp": "bf16"},
    )
    results = tmp_path / "t.csv"
    assert run_grid(results, tmp_path / "runs", claims=[claim], budget=budget, log=lambda _: None) == 1
    (row,) = read_results(results)
    assert row["epochs"] == "2" and row["run"] == "mobilenetv2_035-relu-epochs=2-seed0"
    assert (row["device"], row["amp"]) == ("cpu", "bf16")
    assert pending_runs(results, [claim], budget) == []


def test_budgets_pin_dyrelu_c_attention_normalisation():
    from dyrelu.experiments import DEFAULT_BUDGET, Config
    from dyrelu.keypoint_experiments import DEFAULT_KEYPOINT_BUDGET

    c, b = Config("mobilenetv2_035", "dyrelu_c"), Config("mobilenetv2_035", "dyrelu_b")
    # the grids of dyrelu 0.1 ran DY-ReLU-C without the normalisation: their budgets say so
    assert DEFAULT_BUDGET.act_kwargs(c) == {"zero_init_last": True, "spatial_norm": False}
    assert DEFAULT_KEYPOINT_BUDGET.act_options == {"dyrelu_c": {"spatial_norm": False}}
    assert CONVERGED_BUDGET.act_kwargs(c) == {"zero_init_last": False, "spatial_norm": True}
    assert CONVERGED_BUDGET.act_kwargs(b) == {"zero_init_last": False}  # B has no attention
    assert CONVERGED_BUDGET.act_kwargs(Config("m", "relu")) == {}
    own = Config("m", "dyrelu_c", (("spatial_norm", False),))
    assert CONVERGED_BUDGET.act_kwargs(own)["spatial_norm"] is False  # the configuration's own options win


def test_estimate_costs_times_each_configuration_and_extrapolates_an_epoch():
    from dyrelu.estimate import calibrated, estimate_costs
    from dyrelu.experiments import _cfg

    relu, dyrelu_b = _cfg("mobilenetv2_025", "relu"), _cfg("mobilenetv2_025", "dyrelu_b", train={"epochs": 2})
    budget = Budget(epochs=5, data_fraction=0.5, batch_size=8, val_size=1000)
    estimates = estimate_costs([relu, dyrelu_b], budget, rounds=1, steps=1)
    assert [e.config for e in estimates] == [relu, dyrelu_b]
    first, second = estimates
    assert first.steps_per_epoch == 29_500 // 8 + 1 and first.eval_images == 11_000
    assert (first.epochs, second.epochs) == (5, 2)
    assert first.step_seconds > 0 and first.eval_seconds_per_image > 0
    assert first.run_seconds == pytest.approx(5 * first.epoch_seconds)
    scaled = calibrated(estimates, {("mobilenetv2_025", "relu", "{}"): 100.0, ("resnet10", "relu", "{}"): 7.0})
    assert scaled[relu] == 100.0  # measured
    assert scaled[dyrelu_b] == pytest.approx(100.0 * second.epoch_seconds / first.epoch_seconds)
    with pytest.raises(ValueError, match="expected measurements"):
        calibrated(estimates, {("resnet10", "relu", "{}"): 1.0})
    with pytest.raises(ValueError, match="rounds >= 1"):
        estimate_costs([relu], budget, rounds=0)


@pytest.mark.slow
def test_compare_estimate_writes_the_grids_process_hours(tmp_path, capsys):
    from dyrelu.cli import main

    measured = tmp_path / "plateau.csv"
    append_row(measured, {"model": "mobilenetv2_035", "act": "relu", "act_kwargs": "{}", "seconds_per_epoch": 300})
    out = tmp_path / "estimate.csv"
    argv = ["compare", "--claims", "P1", "--estimate", str(out), "--calibrate", str(measured), "--jobs", "2"]
    assert main(argv) == 0
    rows = read_results(out)
    assert [r["config"] for r in rows] == [c.name for c in PLATEAU_CLAIM.configs]
    # the three share one measured network: each epoch costs what it measured
    assert [r["epoch_seconds"] for r in rows] == ["300"] * 3
    assert sum(float(r["process_hours"]) for r in rows) == pytest.approx(21 * 300 / 3600, abs=0.02)
    assert "total: 1.8 process hours" in capsys.readouterr().out


def test_compare_passes_device_and_precision_to_every_run(tmp_path, monkeypatch):
    import dyrelu.experiments
    from dyrelu.cli import main

    seen = {}

    def fake_grid(results, runs_dir, *, claims, budget, jobs, limit, log):
        seen.update(budget.extra, results=str(results), runs_dir=str(runs_dir))
        return 0

    monkeypatch.setattr(dyrelu.experiments, "run_grid", fake_grid)
    out = tmp_path / "gpu"
    argv = ["compare", "--claims", "C1-converged", "--device", "cuda", "--amp", "bf16"]
    assert main([*argv, "--results", str(out / "converged.csv"), "--runs-dir", str(out / "runs")]) == 0
    assert seen["device"] == "cuda" and seen["amp"] == "bf16" and seen["hyper_weight_decay"] is False
    assert seen["results"] == str(out / "converged.csv") and seen["runs_dir"] == str(out / "runs")
