"""The training loop every task shares: optimizer steps, epochs, evaluation, metrics, checkpoints and exact resume.

A task (image classification in :mod:`dyrelu.train.engine`, keypoint heatmaps in :mod:`dyrelu.keypoints.engine`)
brings its data, its loss and its metrics as an :class:`EpochTask`; :class:`Training` holds what the loop updates
and every checkpoint stores (the network, its optimizer, schedule and gradient scaler, the metrics so far), and
:func:`run_epochs` drives the epochs: train, evaluate, measure the DY-ReLU layers' dynamics, append the metrics
row, write ``metrics.csv`` and the checkpoint ``last.pt``, log one line.

Exact resume: everything random in an epoch is a function of ``(seed, epoch)`` (the data order and augmentation)
or of the generators' states, which each checkpoint stores with the rest. A run killed at any point and resumed
from its last checkpoint ends with the same metrics and parameters as an uninterrupted run with the same seed (on
the same machine, thread count and world size).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dyrelu.analysis.summary import dynamics_numbers
from dyrelu.train import distributed as D
from dyrelu.train.checkpoint import CheckpointError, capture_rng, restore_rng, save_checkpoint
from dyrelu.train.evaluation import load_model_state
from dyrelu.train.optim import optimizer_from_config
from dyrelu.train.runtime import check_finite_loss, start_run_files
from dyrelu.train.schedule import WarmupCosine, set_tau, tau_at

__all__ = ["EpochClock", "EpochTask", "FitResult", "Training", "preserved_runtime", "run_epochs"]

Log = Callable[[str], None]


@dataclass
class FitResult:
    """What a training run returns: the trained model (unwrapped), the resolved config and the metrics.

    ``start``: the evaluation before the first step of a run that started from a trained network (an upgrade:
    the network as converted), ``None`` for a run from scratch.
    """

    model: nn.Module
    config: Any
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_epoch: int | None = None
    start: dict[str, Any] | None = None


@contextlib.contextmanager
def preserved_runtime() -> Iterator[None]:
    """Restore the CPU thread count and the cuDNN flags that a training run sets, when it returns or raises."""
    threads = torch.get_num_threads()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


@dataclass
class Training:
    """What the loop updates and every checkpoint holds: the network, its optimizer, schedule and scaler, the metrics.

    ``config`` is the run's :class:`~dyrelu.train.TrainConfig` or :class:`~dyrelu.keypoints.KeypointConfig`: the
    loop reads its ``epochs``, ``lr``, ``clip_grad``, ``tau_*`` and ``tensorboard``. ``model`` is the network
    itself (not a DistributedDataParallel wrapper); ``start_epoch`` counts the epochs done before this process;
    ``start`` is the task's evaluation before the first step, when it made one (kept by every checkpoint).
    """

    config: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    ctx: D.DistContext = field(default_factory=D.DistContext)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    resumed: bool = False
    start: dict[str, Any] | None = None

    @classmethod
    def create(
        cls, config: Any, model: nn.Module, steps_per_epoch: int, ctx: D.DistContext, *, fp16: bool = False
    ) -> Training:
        """A fresh training of ``model``: the config's optimizer and its warm-up and cosine schedule (per step).

        ``fp16``: scale the loss for float16 mixed precision (a disabled scaler otherwise, which changes nothing).
        """
        optimizer = optimizer_from_config(model, config)
        scheduler = WarmupCosine(
            optimizer,
            total_steps=config.epochs * steps_per_epoch,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            min_lr=config.min_lr,
        )
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=fp16)
        return cls(config, model, optimizer, scheduler, scaler, steps_per_epoch, ctx)

    def restore(self, state: dict[str, Any], where: str | os.PathLike, log: Log) -> None:
        """Continue from the checkpoint ``state``: its weights, optimizer, schedule, metrics and random generators.

        Raises:
            CheckpointError: the weights or the optimizer's state do not fit this run.
        """
        load_model_state(self.model, state["model"], str(where))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:300]
            raise CheckpointError(f"the optimizer state in {where} does not fit this run: {detail}") from None
        self.metrics = list(state.get("metrics", []))
        self.start = state.get("start")
        self.start_epoch = int(state["epoch"])
        self.resumed = True
        rng = state.get("rng") or []
        if len(rng) == self.ctx.world_size:
            restore_rng(rng[self.ctx.rank])
        else:
            log(f"note: the checkpoint was written by {len(rng)} processes, this run has {self.ctx.world_size}")
        log(f"resumed from {where} after epoch {self.start_epoch}: continuing with epoch {self.start_epoch + 1}")

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.scheduler.get_last_lr()[0]

    def tau(self) -> float | None:
        """DY-ReLU-C's temperature for the next step under the config's schedule (``None``: no schedule)."""
        c = self.config
        if c.tau_start is None:
            return None
        return tau_at(self.scheduler.last_step, self.steps_per_epoch, c.tau_start, c.tau_epochs, c.tau_end)

    def set_step_tau(self) -> None:
        """Give the DY-ReLU-C layers the temperature of the next step (when the config schedules it)."""
        tau = self.tau()
        if tau is not None:
            set_tau(self.model, tau)

    def step(self, loss: Tensor) -> float:
        """One optimizer step on ``loss``: backward (scaled for fp16), clip, step, schedule; the rate it used."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        lr = self.lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return lr

    def state(self, epoch: int, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint's entries after ``epoch`` epochs; ``rng``: every process's generators, in rank order."""
        return {
            "config": self.config.to_dict(),
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng,
            "metrics": self.metrics,
            "start": self.start,
        }

    def result(self, checkpoint: Path | None, kind: type[FitResult] = FitResult) -> FitResult:
        """The run's outcome: the model in eval mode, the config, the metrics, the checkpoint (if written)."""
        return kind(
            self.model.eval(),
            self.config,
            self.metrics,
            checkpoint if checkpoint is not None and checkpoint.exists() else None,
            self.start_epoch if self.resumed else None,
            self.start,
        )


@dataclass
class EpochClock:
    """An epoch's wall and CPU clocks, started before its first step; ``train_seconds`` once the steps are done."""

    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    train_seconds: float = 0.0

    def seconds(self) -> float:
        """Wall seconds since the epoch started."""
        return time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        """CPU seconds of this process (all threads) since the epoch started."""
        return time.process_time() - self.cpu_started

    def images_per_second(self, images: float) -> float:
        """The training throughput of ``images`` over the epoch's training steps."""
        return images / max(self.train_seconds, 1e-9)


class EpochTask(Protocol):
    """What the loop needs from a task: its epoch of steps, its evaluation, its checkpoint entries, its log line."""

    #: The images the DY-ReLU layers' dynamics are measured on after each epoch (``None``: not measured).
    dynamics_images: Tensor | None

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (``epoch`` counts from 0); at least ``loss``, ``lr`` (the last step's) and ``images``."""
        ...

    def evaluate(self, epoch: int, train: dict[str, float], clock: EpochClock, tau: float | None) -> dict[str, Any]:
        """The epoch's metrics row after evaluating: ``train`` is :meth:`train_epoch`'s result, ``tau`` the
        temperature the next step would use (the task may evaluate with it)."""
        ...

    def checkpoint(self) -> dict[str, Any]:
        """The task's own entries of each checkpoint (what rebuilding its model and data needs)."""
        ...

    def summary(self, row: dict[str, Any]) -> str:
        """The epoch's log line from its metrics row."""
        ...


def run_epochs(training: Training, task: EpochTask, out: Path | None, checkpoint: Path | None, log: Log) -> None:
    """Train ``task`` from ``training.start_epoch`` to the config's epochs, one checkpoint per epoch.

    Each epoch: :meth:`EpochTask.train_epoch`, a check that the loss is finite, :meth:`EpochTask.evaluate`, the
    DY-ReLU layers' dynamics (``dyn_*``) and the scheduled temperature (``tau``) added to the row, then (rank 0,
    with ``out``) ``out/metrics.csv`` rewritten and ``checkpoint`` saved atomically, and the task's log line.
    ``config.json`` and the metrics so far are written first.

    Raises:
        FloatingPointError: the training loss diverged.
        WriteError: the metrics or the checkpoint could not be written (the previous checkpoint is intact).
    """
    config, ctx = training.config, training.ctx
    writer = start_run_files(
        out if ctx.is_main else None, config.to_dict(), training.metrics, tensorboard=config.tensorboard
    )
    if training.start_epoch >= config.epochs:
        log(f"{training.start_epoch} epochs done already (epochs={config.epochs}); nothing to train")
    try:
        for epoch in range(training.start_epoch, config.epochs):
            clock = EpochClock()
            train = task.train_epoch(epoch)
            clock.train_seconds = clock.seconds()
            check_finite_loss(train["loss"], epoch, config.lr)
            tau = training.tau()
            row = task.evaluate(epoch, train, clock, tau)
            if task.dynamics_images is not None:
                row.update(dynamics_numbers(training.model, task.dynamics_images))
            if tau is not None:
                row["tau"] = tau
            training.metrics.append(row)
            rng = D.all_gather_object(capture_rng(), ctx)
            if writer is not None:
                writer.write(training.metrics)
                save_checkpoint({**training.state(epoch + 1, rng), **task.checkpoint()}, checkpoint)
            log(task.summary(row))
        D.barrier(ctx)
    finally:
        if writer is not None:
            writer.close()
