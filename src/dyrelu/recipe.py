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

from typing import Any

__all__ = ["DYRELU_C_KWARGS", "SCRATCH_DYRELU_KWARGS", "SCRATCH_TRAIN_OPTIONS"]

#: Options of every DY-ReLU module of a network built to be trained from scratch (unless the caller sets them).
SCRATCH_DYRELU_KWARGS: dict[str, Any] = {"zero_init_last": False}

#: :class:`dyrelu.train.TrainConfig` fields of the recipe (the defaults of those fields).
SCRATCH_TRAIN_OPTIONS: dict[str, Any] = {"hyper_weight_decay": False, "hyper_lr_scale": 1.0}

#: DY-ReLU-C's options that a training config records when not given (the module's defaults), so that a saved
#: config says which attention it trained: ``spatial_norm`` (dyrelu 0.1 had no normalisation, see
#: :class:`dyrelu.DyReLUC`).
DYRELU_C_KWARGS: dict[str, Any] = {"spatial_norm": True}
