"""Optimizers with the field's weight-decay rule: no decay on norms, biases and activation coefficients."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dyrelu.activations import StaticPWL
from dyrelu.modules import DyReLU

__all__ = ["create_optimizer", "hyper_parameters", "optimizer_from_config", "param_groups"]


def hyper_parameters(model: nn.Module) -> set[int]:
    """``id`` of every parameter of a DY-ReLU module in ``model``: its hyper function (and DY-ReLU-C's attention).

    Example:
        >>> from dyrelu import DyReLUB
        >>> len(hyper_parameters(nn.Sequential(nn.Conv2d(3, 8, 3), DyReLUB(8))))
        4
    """
    return {id(p) for m in model.modules() if isinstance(m, DyReLU) for p in m.parameters(recurse=False)}


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    hyper_lr_scale: float = 1.0,
    hyper_weight_decay: bool = True,
) -> list[dict]:
    """Parameter groups: weights with ``weight_decay``, the rest without; DY-ReLU hyper functions apart on request.

    Without decay: every parameter with at most one dimension (norm scales and shifts, biases, PReLU
    slopes, DY-ReLU's hyper-function biases, which set the coefficients' offsets), the coefficients
    of :class:`dyrelu.StaticPWL`, and the names a model lists in ``no_weight_decay()`` (timm's
    convention). Shared parameters are counted once.

    The hyper functions' own optimisation (the DY-ReLU recipe's knobs): with the defaults their
    parameters join the two groups above. With ``hyper_lr_scale != 1`` or ``hyper_weight_decay=False``
    they get two groups of their own, ``{"params": weights, "weight_decay": weight_decay or 0,
    "lr_scale": hyper_lr_scale}`` and the same for their biases without decay, appended after the two
    above; :func:`create_optimizer` multiplies a group's learning rate by its ``lr_scale``. Empty
    groups are left out, except the first two.

    Args:
        model: the parameters' owner.
        weight_decay: for the weights.
        hyper_lr_scale: learning-rate multiplier of the DY-ReLU modules' parameters.
        hyper_weight_decay: whether the hyper functions' weights get ``weight_decay``.

    Example:
        >>> groups = param_groups(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), 1e-4)
        >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
        ([1, 3], [0.0001, 0.0])
    """
    if not hyper_lr_scale > 0:
        raise ValueError(f"expected a positive hyper_lr_scale, got {hyper_lr_scale!r}")
    skip_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    coefficient_ids = {id(p) for m in model.modules() if isinstance(m, StaticPWL) for p in m.parameters(recurse=False)}
    separate = hyper_lr_scale != 1.0 or not hyper_weight_decay
    hyper_ids = hyper_parameters(model) if separate else set()
    decay, no_decay, hyper_decay, hyper_no_decay, seen = [], [], [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        static = p.ndim <= 1 or id(p) in coefficient_ids or name in skip_names
        if id(p) in hyper_ids:
            (hyper_no_decay if static else hyper_decay).append(p)
        else:
            (no_decay if static else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    hyper_decay_value = weight_decay if hyper_weight_decay else 0.0
    for params, value in ((hyper_decay, hyper_decay_value), (hyper_no_decay, 0.0)):
        if params:
            groups.append({"params": params, "weight_decay": value, "lr_scale": hyper_lr_scale})
    return groups


def create_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    *,
    hyper_lr_scale: float = 1.0,
    hyper_weight_decay: bool = True,
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW over :func:`param_groups`.

    Args:
        model: the parameters' owner.
        name: ``"sgd"`` or ``"adamw"``.
        lr: the learning rate (the schedule's peak); a group's ``lr_scale`` multiplies it.
        weight_decay: for the weights; norms, biases and coefficients get none.
        momentum: SGD's momentum.
        hyper_lr_scale, hyper_weight_decay: the DY-ReLU hyper functions' groups (see :func:`param_groups`).
    """
    groups = param_groups(model, weight_decay, hyper_lr_scale=hyper_lr_scale, hyper_weight_decay=hyper_weight_decay)
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}, expected 'sgd' or 'adamw'")


def optimizer_from_config(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """:func:`create_optimizer` with a training config's fields (``opt``, ``lr``, ``weight_decay``, ``momentum``,
    ``hyper_lr_scale``, ``hyper_weight_decay``): what :class:`dyrelu.train.TrainConfig` and
    :class:`dyrelu.keypoints.KeypointConfig` share."""
    return create_optimizer(
        model,
        config.opt,
        config.lr,
        config.weight_decay,
        config.momentum,
        hyper_lr_scale=config.hyper_lr_scale,
        hyper_weight_decay=config.hyper_weight_decay,
    )
