"""dyrelu.train.loop: the loop both tasks share, driven here by a toy task (least squares on fixed data)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dyrelu.train import DistContext, TrainConfig, load_checkpoint, read_metrics
from dyrelu.train.loop import EpochClock, Training, run_epochs

CONFIG = TrainConfig(model="toy", epochs=2, lr=0.1, warmup_epochs=0.5, tensorboard=False)


class _Toy:
    """Fits a linear map to fixed random data, four steps an epoch; the metrics row holds the mean loss."""

    dynamics_images = None

    def __init__(self, training: Training) -> None:
        self.training = training
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, 4, generator=generator), torch.randn(32, 1, generator=generator)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        losses = []
        for batch in torch.randperm(32).split(8):  # the global generator: its state travels in the checkpoint
            loss = nn.functional.mse_loss(self.training.model(self.x[batch]), self.y[batch])
            lr = self.training.step(loss)
            losses.append(loss.item())
        return {"loss": sum(losses) / len(losses), "lr": lr, "images": 32}

    def evaluate(self, epoch: int, train: dict[str, float], clock: EpochClock, tau: float | None) -> dict:
        return {"epoch": epoch + 1, "train_loss": train["loss"], "lr": train["lr"]}

    def checkpoint(self) -> dict:
        return {"task": "toy"}

    def summary(self, row: dict) -> str:
        return f"epoch {row['epoch']} loss {row['train_loss']:.4f}"


class _Stop(Exception):
    pass


def _stop(line: str) -> None:
    raise _Stop


def _run(out, log, *, resume: bool = False) -> Training:
    torch.manual_seed(0)
    training = Training.create(CONFIG, nn.Linear(4, 1), 4, DistContext())
    if resume:
        training.restore(load_checkpoint(out), out / "last.pt", log)
    run_epochs(training, _Toy(training), out, out / "last.pt", log)
    return training


def test_an_interrupted_and_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    lines: list[str] = []
    full = _run(tmp_path / "full", lines.append)
    assert lines == [f"epoch {row['epoch']} loss {row['train_loss']:.4f}" for row in full.metrics]
    assert read_metrics(tmp_path / "full") == full.metrics
    state = load_checkpoint(tmp_path / "full")
    assert state["epoch"] == 2 and state["task"] == "toy" and state["scaler"] == {} and len(state["rng"]) == 1
    with pytest.raises(_Stop):  # killed right after the first epoch's checkpoint
        _run(tmp_path / "split", _stop)
    lines = []
    resumed = _run(tmp_path / "split", lines.append, resume=True)
    assert lines[0] == f"resumed from {tmp_path / 'split' / 'last.pt'} after epoch 1: continuing with epoch 2"
    assert resumed.metrics == full.metrics and resumed.result(None).resumed_epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True))
    lines = []
    again = _run(tmp_path / "split", lines.append, resume=True)
    assert lines[-1] == "2 epochs done already (epochs=2); nothing to train" and again.metrics == full.metrics


def test_a_diverged_loss_stops_the_run(tmp_path):
    class _Diverging(_Toy):
        def train_epoch(self, epoch: int) -> dict[str, float]:
            return {"loss": float("nan"), "lr": 0.1, "images": 32}

    training = Training.create(CONFIG, nn.Linear(4, 1), 4, DistContext())
    with pytest.raises(FloatingPointError, match="the training loss is nan in epoch 1"):
        run_epochs(training, _Diverging(training), tmp_path, tmp_path / "last.pt", print)
    assert not (tmp_path / "last.pt").exists()
