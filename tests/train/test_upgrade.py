"""Upgrading a trained network: ``TrainConfig(init_from=...)`` / ``dyrelu train --init-from``."""

from __future__ import annotations

import pytest
import torch

from dyrelu import DyReLUB
from dyrelu.train import (
    CheckpointError,
    TrainConfig,
    build_model,
    fit,
    load_checkpoint,
    model_from_checkpoint,
    upgrade_model,
)

DATA = {"num_samples": 48, "image_size": 8}


def _config(**changes) -> TrainConfig:
    values = {
        "model": "mobilenetv2_025",
        "act": "relu",
        "data": "synthetic",
        "data_kwargs": DATA,
        "epochs": 1,
        "batch_size": 16,
        "threads": 1,
        "tensorboard": False,
        "dynamics_images": 8,
    }
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("relu")
    fit(_config(), out)
    return out


def _resolved(relu_run, **changes) -> TrainConfig:
    saved = TrainConfig.from_dict(model_from_checkpoint(relu_run)[1]["config"])
    return saved.replace(init_from=str(relu_run), **changes)


def test_an_upgrade_records_the_exact_start_instead_of_the_scratch_recipe():
    assert TrainConfig(act="dyrelu_b", init_from="run").act_kwargs == {"zero_init_last": True}
    assert TrainConfig(act="dyrelu_b").act_kwargs == {"zero_init_last": False}
    assert TrainConfig(act="dyrelu_b", init_from="run", act_kwargs={"zero_init_last": False}).act_kwargs == {
        "zero_init_last": False
    }


def test_upgrade_to_dyrelu_b_computes_what_the_relu_network_computed(relu_run):
    source, _ = model_from_checkpoint(relu_run)
    config = _resolved(relu_run, act="dyrelu_b")
    upgraded = upgrade_model(config, (3, 8, 8))
    assert upgraded.training and sum(isinstance(m, DyReLUB) for m in upgraded.modules()) > 10
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(upgraded.eval()(x), source(x))
    # the same network and keys as one built with DY-ReLU-B: the run's checkpoints rebuild from the config alone
    assert list(build_model(config).state_dict()) == list(upgraded.state_dict())


def test_upgrade_rejects_another_network_or_activation(relu_run):
    with pytest.raises(CheckpointError, match=r"its model is 'mobilenetv2_025', expected 'mobilenetv2_035'"):
        upgrade_model(_resolved(relu_run, model="mobilenetv2_035"), (3, 8, 8))
    with pytest.raises(CheckpointError, match=r"cannot start a silu network .* a relu one"):
        upgrade_model(_resolved(relu_run, act="silu"), (3, 8, 8))
    with pytest.raises(CheckpointError, match=r"act_context='block'"):
        upgrade_model(_resolved(relu_run, act="dyrelu_b", act_context="block"), (3, 8, 8))


def test_an_upgrade_is_evaluated_before_its_first_step_without_changing_its_training(relu_run, tmp_path, monkeypatch):
    from dyrelu.train.engine import _Classification

    source = load_checkpoint(relu_run)["metrics"][-1]
    config = _resolved(relu_run, act="dyrelu_b", val_size=8)
    lines = []
    result = fit(config, tmp_path / "up", log=lines.append)
    # exact at conversion: the converted network scores what the ReLU network scored, with static layers
    assert result.start["test_acc"] == source["test_acc"] and result.start["test_loss"] == source["test_loss"]
    assert result.start["dyn_median"] == 0.0 and "val_acc" in result.start
    assert any(line.startswith(f"before the first step, from {relu_run}: test loss") for line in lines)
    assert load_checkpoint(tmp_path / "up")["start"] == result.start
    assert fit(_config(), tmp_path / "scratch").start is None
    # the evaluation draws nothing and changes no statistic: without it, the same training
    monkeypatch.setattr(_Classification, "evaluate_start", lambda self: {"test_loss": 0.0, "test_acc": 0.0})
    again = fit(config, tmp_path / "again")
    assert again.start["test_acc"] == 0.0
    trained, other = result.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(trained[k], other[k]) for k in trained)


@pytest.mark.slow
def test_fit_from_a_relu_run_trains_the_upgraded_network_and_resumes(relu_run, tmp_path):
    from dyrelu.cli import main

    out = tmp_path / "up"
    argv = ["train", "--data", "synthetic", "--model", "mobilenetv2_025", "--act", "dyrelu_b", "--epochs", "2"]
    argv += ["--batch-size", "16", "--threads", "1", "--no-tensorboard", "--init-from", str(relu_run)]
    argv += ["--out", str(out), "--dynamics-images", "8", "--synthetic-samples", "48", "--image-size", "8"]
    assert main(argv) == 0
    model, state = model_from_checkpoint(out)
    assert state["config"]["init_from"] == str(relu_run) and state["config"]["act_kwargs"]["zero_init_last"]
    assert sum(isinstance(m, DyReLUB) for m in model.modules()) > 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # resuming needs no source checkpoint: the run's own weights go into the same network
    (relu_run / "last.pt").rename(relu_run / "moved.pt")
    try:
        assert main([*argv, "--resume"]) == 0  # already at its last epoch: nothing to train
    finally:
        (relu_run / "moved.pt").rename(relu_run / "last.pt")
    after = model_from_checkpoint(out)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
