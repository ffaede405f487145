"""Optimizers with the field's weight-decay rule: no decay on norms, biases and activation coefficients."""

from __future__ import annotations

import torch
from torch import nn

from dyrelu.activations import StaticPWL

__all__ = ["create_optimizer", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: weights with ``weight_decay``, the rest without.

    Without decay: every parameter with at most one dimension (norm scales and shifts, biases, PReLU
    slopes, DY-ReLU's hyper-function biases, which set the coefficients' offsets), the coefficients
    of :class:`dyrelu.StaticPWL`, and the names a model lists in ``no_weight_decay()`` (timm's
    convention). Shared parameters are counted once.

    Example:
        >>> groups = param_groups(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), 1e-4)
        >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
        ([1, 3], [0.0001, 0.0])
    """
    skip_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    coefficient_ids = {id(p) for m in model.modules() if isinstance(m, StaticPWL) for p in m.parameters(recurse=False)}
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim <= 1 or id(p) in coefficient_ids or name in skip_names:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW over :func:`param_groups`.

    Args:
        model: the parameters' owner.
        name: ``"sgd"`` or ``"adamw"``.
        lr: the learning rate (the schedule's peak).
        weight_decay: for the weights; norms, biases and coefficients get none.
        momentum: SGD's momentum.
    """
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}, expected 'sgd' or 'adamw'")
