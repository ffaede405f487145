"""The recipe for training DY-ReLU from scratch, chosen by the recipe study (claim R1 of REPRODUCTION.md).

A fresh DY-ReLU module is exactly ReLU (its hyper function's last layer starts at zero): right for
:func:`dyrelu.convert` on a trained network, and the modules' own default. Trained from scratch with that
start, the layers stay static (ReLU plus an unused hyper function). The study compared recipes on a
validation split carved from the training set and chose by validation accuracy alone; what won is what
:func:`dyrelu.models.create_model`, ``dyrelu train`` and the grids use for DY-ReLU trained from scratch.

In plain PyTorch: ``DyReLUB(channels, zero_init_last=False)`` for every activation, and no weight decay on
the DY-ReLU modules' parameters (``dyrelu.train.param_groups(model, wd, hyper_weight_decay=False)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BEFORE_RECIPE_TRAIN_OPTIONS",
    "DYRELU_C_KWARGS",
    "SCRATCH_DYRELU_KWARGS",
    "SCRATCH_TRAIN_OPTIONS",
    "read_before_recipe",
    "scratch_act_kwargs",
]

#: Options of every DY-ReLU module of a network built to be trained from scratch (unless the caller sets them).
SCRATCH_DYRELU_KWARGS: dict[str, Any] = {"zero_init_last": False}

#: :class:`dyrelu.train.TrainConfig` fields of the recipe (the defaults of those fields).
SCRATCH_TRAIN_OPTIONS: dict[str, Any] = {"hyper_weight_decay": False, "hyper_lr_scale": 1.0}

#: DY-ReLU-C's options that a training config records when not given (the module's defaults), so that a saved
#: config says which attention it trained: ``spatial_norm`` (dyrelu 0.1 had no normalisation, see
#: :class:`dyrelu.DyReLUC`).
DYRELU_C_KWARGS: dict[str, Any] = {"spatial_norm": True}

#: How dyrelu 0.1 trained DY-ReLU, before the recipe study: what a saved config without these fields meant.
BEFORE_RECIPE_TRAIN_OPTIONS: dict[str, Any] = {"hyper_weight_decay": True, "hyper_lr_scale": 1.0}


def scratch_act_kwargs(act: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options of activation ``act`` in a network trained from scratch: ``kwargs`` over the recipe's
    (:data:`SCRATCH_DYRELU_KWARGS`, for a DY-ReLU) and, for DY-ReLU-C, over :data:`DYRELU_C_KWARGS`.

    Example:
        >>> scratch_act_kwargs("dyrelu_c", {"reduction": 4})
        {'spatial_norm': True, 'zero_init_last': False, 'reduction': 4}
        >>> scratch_act_kwargs("relu", {})
        {}
    """
    name = str(act).lower()
    if name.startswith("dyrelu"):
        kwargs = {**SCRATCH_DYRELU_KWARGS, **kwargs}
    if name == "dyrelu_c":
        kwargs = {**DYRELU_C_KWARGS, **kwargs}
    return kwargs


def read_before_recipe(values: dict[str, Any], act_fields: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A saved training config read as what it ran with: one of dyrelu 0.1 (without ``hyper_weight_decay``) gets
    :data:`BEFORE_RECIPE_TRAIN_OPTIONS`, and its DY-ReLU activations ``zero_init_last=True`` (DY-ReLU-C also
    ``spatial_norm=False``) unless they set them. ``act_fields``: the config's (activation, options) field pairs.
    """
    if "hyper_weight_decay" in values:
        return values
    values = {**values, **BEFORE_RECIPE_TRAIN_OPTIONS}
    for act, kwargs in act_fields:
        name = str(values.get(act)).lower()
        if name.startswith("dyrelu"):
            values[kwargs] = {"zero_init_last": True, **values.get(kwargs, {})}
        if name == "dyrelu_c":  # 0.1's DY-ReLU-C had raw attention logits
            values[kwargs] = {"spatial_norm": False, **values[kwargs]}
    return values
