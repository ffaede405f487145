"""The time of a training step (and of an evaluation pass) of several networks, measured side by side.

On a shared machine, two networks timed one after the other measure the machine as much as the networks:
another job that starts or stops between the two runs moves the ratio. :func:`time_side_by_side` interleaves
them in one process instead: each round times every network's steps once, in turn, so that whatever load
the machine has falls on all of them alike, and the median over rounds discards the rounds that a burst of
load hit. Ratios of these medians are what to compare; the absolute times belong to the machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["StepTimes", "time_side_by_side"]


@dataclass(frozen=True)
class StepTimes:
    """One network's times: per round, the median seconds of a training step and of an evaluation batch."""

    train: tuple[float, ...]
    eval: tuple[float, ...]

    @property
    def train_seconds(self) -> float:
        """The median over rounds of the seconds per training step."""
        return statistics.median(self.train)

    @property
    def eval_seconds(self) -> float:
        """The median over rounds of the seconds per evaluation batch."""
        return statistics.median(self.eval)


def time_side_by_side(
    models: Mapping[str, nn.Module],
    images: Tensor,
    labels: Tensor,
    *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    eval_images: Tensor | None = None,
    rounds: int = 5,
    steps: int = 5,
    threads: int | None = None,
) -> dict[str, StepTimes]:
    """Time training steps (forward, cross-entropy, backward, optimizer step) of ``models``, interleaved.

    Each round runs, for every model in turn, one untimed step (it allocates and warms caches) and then
    ``steps`` timed ones, and keeps their median; the same for forward passes over ``eval_images`` in eval
    mode under ``torch.no_grad()``. The models train on the same batch every step: their weights change.

    Args:
        models: the networks by name, in the order each round times them.
        images: one training batch, in the memory format the networks train with.
        labels: its class indices.
        optimizers: each network's optimizer (by the same names; ``None``: plain SGD, lr 0.01).
        eval_images: the evaluation batch (``None``: ``images``).
        rounds: interleaved rounds (each network's median over rounds counts).
        steps: timed steps per network and round.
        threads: intra-op CPU threads while timing (``None``: as set); restored afterwards.

    Returns:
        :class:`StepTimes` by name; each model is left in eval mode.

    Example:
        >>> nets = {"relu": nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU()),
        ...         "silu": nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.SiLU())}
        >>> times = time_side_by_side(nets, torch.randn(8, 3, 4), torch.randint(0, 4, (8,)), rounds=3, steps=2)
        >>> sorted(times), len(times["relu"].train), times["silu"].train_seconds > 0
        (['relu', 'silu'], 3, True)
    """
    if rounds < 1 or steps < 1:
        raise ValueError(f"expected rounds >= 1 and steps >= 1, got rounds={rounds}, steps={steps}")
    if not models:
        raise ValueError("expected at least one model to time, got none")
    optimizers = dict(optimizers or {})
    unknown = sorted(set(optimizers) - set(models))
    if unknown:
        raise ValueError(f"optimizers {unknown} name no model; expected some of {sorted(models)}")
    for name, model in models.items():
        if name not in optimizers:
            optimizers[name] = torch.optim.SGD(model.parameters(), lr=0.01)
    eval_images = images if eval_images is None else eval_images
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    train: dict[str, list[float]] = {name: [] for name in models}
    evals: dict[str, list[float]] = {name: [] for name in models}
    try:
        for _ in range(rounds):
            for name, model in models.items():
                train[name].append(_time_train(model, optimizers[name], images, labels, steps))
                evals[name].append(_time_eval(model, eval_images, steps))
    finally:
        torch.set_num_threads(previous)
    return {name: StepTimes(tuple(train[name]), tuple(evals[name])) for name in models}


def _time_train(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor, steps: int
) -> float:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    elapsed = []
    for i in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
        if i:  # the first step allocates and warms caches
            elapsed.append(time.perf_counter() - start)
    return statistics.median(elapsed)


@torch.no_grad()
def _time_eval(model: nn.Module, images: Tensor, steps: int) -> float:
    model.eval()
    elapsed = []
    for i in range(steps + 1):
        start = time.perf_counter()
        model(images)
        if i:
            elapsed.append(time.perf_counter() - start)
    return statistics.median(elapsed)
