"""A grid whose runs start from finished runs (Budget.init_from): the upgrade claim U1's machinery."""

from __future__ import annotations

import json

import pytest

from dyrelu.experiments import UPGRADE_BUDGET, UPGRADE_CLAIM, Budget, Claim, Config, read_results, run_grid
from dyrelu.experiments.grid import RunSpec, source_run

_DATA = {"data_kwargs": {"num_samples": 64, "image_size": 8}, "eval_fraction": 0.5}
_SOURCE = Budget(data="synthetic", epochs=1, batch_size=32, seeds=(0,), name="base", extra=_DATA)
_UPGRADE = Budget(
    data="synthetic",
    epochs=1,
    batch_size=32,
    lr=0.01,
    seeds=(0,),
    name="up",
    extra=_DATA,
    dyrelu_defaults={"zero_init_last": True},
    init_from="{model}-relu-seed{seed}-base",
)


def test_the_upgrade_claim_starts_each_seed_from_its_converged_relu_run():
    spec = RunSpec(UPGRADE_CLAIM.configs[1], 2, UPGRADE_BUDGET.name)
    assert spec.run_id == "mobilenetv2_035-dyrelu_b-seed2-upgrade"
    path = source_run(spec, UPGRADE_BUDGET, "runs/converged", resuming=True)
    assert str(path) == "runs/converged/mobilenetv2_035-relu-seed2-converged"
    assert UPGRADE_BUDGET.act_kwargs(UPGRADE_CLAIM.configs[1]) == {"zero_init_last": True}  # exact at conversion
    authors = RunSpec(UPGRADE_CLAIM.configs[2], 2, UPGRADE_BUDGET.name)
    assert authors.run_id == "mobilenetv2_035-dyrelu_b-zero_init_last=False-seed2-upgrade"
    assert UPGRADE_BUDGET.act_kwargs(authors.config) == {"zero_init_last": False}  # the last FC as nn.Linear
    assert str(source_run(authors, UPGRADE_BUDGET, "runs/converged", resuming=True)).endswith("relu-seed2-converged")


def test_a_missing_source_is_named(tmp_path):
    spec = RunSpec(Config.of("mobilenetv2_035", "dyrelu_b"), 0, "up")
    with pytest.raises(ValueError, match="mobilenetv2_035-relu-seed0-base, which holds no checkpoint"):
        source_run(spec, _UPGRADE, tmp_path)


@pytest.mark.slow
def test_upgrade_runs_start_from_the_finished_source_and_say_so(tmp_path):
    runs, log = tmp_path / "runs", lambda _: None
    source = Claim("S", "s", "s", (Config.of("mobilenetv2_035", "relu"),))
    upgrade = Claim("U", "u", "u", (Config.of("mobilenetv2_035", "relu"), Config.of("mobilenetv2_035", "dyrelu_b")))
    # before its source has run, an upgrade run fails with the reason and the grid goes on
    assert run_grid(tmp_path / "u.csv", runs, claims=[upgrade], budget=_UPGRADE, log=log) == 0
    assert run_grid(tmp_path / "s.csv", runs, claims=[source], budget=_SOURCE, log=log) == 1
    assert run_grid(tmp_path / "u.csv", runs, claims=[upgrade], budget=_UPGRADE, log=log) == 2
    rows = read_results(tmp_path / "u.csv")
    assert [r["run"] for r in rows] == ["mobilenetv2_035-relu-seed0-up", "mobilenetv2_035-dyrelu_b-seed0-up"]
    config = json.loads((runs / "mobilenetv2_035-dyrelu_b-seed0-up" / "config.json").read_text())
    assert config["init_from"] == str(runs / "mobilenetv2_035-relu-seed0-base")
    assert config["act_kwargs"]["zero_init_last"] is True
    assert rows[1]["dyn_median"] != ""  # the upgraded network's dynamics are measured
    # each fine-tune's start: the source's accuracy (exact conversion), static layers; none for a run from scratch
    (source_row,) = read_results(tmp_path / "s.csv")
    assert rows[0]["start_test_acc"] == rows[1]["start_test_acc"] == source_row["test_acc"]
    assert rows[1]["start_dyn_median"] == "0" and rows[0]["start_dyn_median"] == source_row["start_test_acc"] == ""


def test_an_unfinished_source_is_named(tmp_path):
    from dyrelu.train import TrainConfig, fit, load_checkpoint, save_checkpoint

    out = tmp_path / "mobilenetv2_035-relu-seed0-base"
    config = TrainConfig(model="mobilenetv2_035", data="synthetic", epochs=1, batch_size=32, tensorboard=False, **_DATA)
    fit(config, out)
    state = load_checkpoint(out)
    state["config"]["epochs"] = 3  # as if stopped after 1 of 3 epochs
    save_checkpoint(state, out / "last.pt")
    spec = RunSpec(Config.of("mobilenetv2_035", "dyrelu_b"), 0, "up")
    with pytest.raises(ValueError, match="which has finished 1 of its 3 epochs: let that run finish first"):
        source_run(spec, _UPGRADE, tmp_path)
