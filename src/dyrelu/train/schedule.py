"""Per-step schedules: the learning rate (linear warm-up, then cosine) and DY-ReLU-C's temperature."""

from __future__ import annotations

import math
from typing import Any

from torch import nn
from torch.optim import Optimizer

from dyrelu.modules import DyReLUC

__all__ = ["WarmupCosine", "set_tau", "tau_at"]


class WarmupCosine:
    """Learning rate per step: linear warm-up to the peak, then cosine annealing to ``min_lr``.

    Step ``s`` (counted from 0) uses ``peak * (s + 1) / warmup_steps`` during the warm-up, then
    ``min_lr + (peak - min_lr) * (1 + cos(pi * p)) / 2`` with ``p`` going from 0 to 1 over the remaining
    steps. The state is the step counter alone, so it survives ``torch.load(weights_only=True)``.

    Args:
        optimizer: its param groups' current ``lr`` is the peak (kept as ``initial_lr``).
        total_steps: steps of the whole run.
        warmup_steps: steps of the warm-up.
        min_lr: the final learning rate.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = WarmupCosine(opt, total_steps=4, warmup_steps=2)
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
        ...     sched.step()
        >>> lrs
        [0.5, 1.0, 1.0, 0.5]
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> None:
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(f"expected total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr = min_lr
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The fraction of the way from ``min_lr`` (0) to the peak (1) at ``step``; warm-up scales the peak."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def lr_at(self, step: int, peak: float) -> float:
        f = self.factor(step)
        if step < self.warmup_steps:
            return peak * f
        return self.min_lr + (peak - self.min_lr) * f

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.last_step, group["initial_lr"])

    def step(self) -> None:
        """Advance by one optimizer step."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


def tau_at(step: int, steps_per_epoch: int, start: float, epochs: float, end: float = 1.0) -> float:
    """DY-ReLU-C's temperature at ``step``: linear from ``start`` to ``end`` over ``epochs``, then ``end``.

    Example:
        >>> [tau_at(s, 10, start=10.0, epochs=1.0) for s in (0, 5, 10, 50)]
        [10.0, 5.5, 1.0, 1.0]
    """
    span = epochs * steps_per_epoch
    if span <= 0:
        return end
    progress = min(step / span, 1.0)
    return start + (end - start) * progress


def set_tau(model: nn.Module, tau: float) -> int:
    """Set ``tau`` on every :class:`dyrelu.DyReLUC` in ``model``; returns how many there are."""
    count = 0
    for module in model.modules():
        if isinstance(module, DyReLUC):
            module.tau = float(tau)
            count += 1
    return count
