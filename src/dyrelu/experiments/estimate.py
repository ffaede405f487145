"""What a grid will cost before it runs: each configuration's training step, timed side by side.

:func:`estimate_costs` builds every configuration's network as the grid trains it (the budget's DY-ReLU
options, channels-last, SGD over the recipe's parameter groups), times training steps on random batches
of the budget's size, interleaved over the configurations (one round times each once; the median over
rounds counts), and extrapolates to an epoch: its SGD steps plus the evaluation of the validation and test
images (forward passes, timed the same way). Data loading and augmentation are not counted, so the
estimate is a floor; measured epochs of some configurations calibrate it (:func:`calibrated`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dyrelu.experiments.grid import Budget, Config

__all__ = ["CostEstimate", "calibrated", "estimate_costs"]

_TRAIN_IMAGES = 60_000
_TEST_IMAGES = 10_000


@dataclass(frozen=True)
class CostEstimate:
    """The estimated cost of one configuration under a budget, in seconds of one process."""

    config: Config
    step_seconds: float
    eval_seconds_per_image: float
    steps_per_epoch: int
    eval_images: int
    epochs: int

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step_seconds + self.eval_images * self.eval_seconds_per_image

    @property
    def run_seconds(self) -> float:
        return self.epochs * self.epoch_seconds


def _network(config: Config, budget: Budget) -> nn.Module:
    from dyrelu.models import create_model

    train = {**budget.extra, **dict(config.train_kwargs)}
    model = create_model(
        config.model,
        act=config.act,
        num_classes=10,
        in_chans=1,
        small_input=True,
        act_context=train.get("act_context", "input"),
        **budget.act_kwargs(config),
    )
    return model.to(memory_format=torch.channels_last)


def estimate_costs(
    configs: Sequence[Config], budget: Budget, *, threads: int = 1, rounds: int = 3, steps: int = 5
) -> list[CostEstimate]:
    """Estimate the cost of training each of ``configs`` under ``budget`` with ``threads`` threads.

    Args:
        configs: the configurations (their ``train_kwargs`` may set ``epochs`` and the recipe's options).
        budget: the grid's budget (batch size, epochs, training fraction, validation size, recipe).
        threads: intra-op threads while timing (as each run of the grid gets).
        rounds: interleaved rounds; each configuration's median over rounds counts.
        steps: training steps (and evaluation batches) timed per configuration and round, after one untimed.
    """
    if rounds < 1 or steps < 1:
        raise ValueError(f"expected rounds >= 1 and steps >= 1, got rounds={rounds}, steps={steps}")
    # configurations that differ only in their schedule or optimiser share a network: time it once
    networks = list(dict.fromkeys(_network_key(config, budget) for config in configs))
    setups = [next(c for c in configs if _network_key(c, budget) == key) for key in networks]
    step_times, eval_times = _time(setups, budget, threads, rounds, steps)
    train_images = budget.data_fraction * (_TRAIN_IMAGES - budget.val_size)
    estimates = []
    for config in configs:
        index = networks.index(_network_key(config, budget))
        step, per_image = step_times[index], eval_times[index]
        estimates.append(
            CostEstimate(
                config=config,
                step_seconds=statistics.median(step),
                eval_seconds_per_image=statistics.median(per_image),
                steps_per_epoch=math.ceil(train_images / budget.batch_size),
                eval_images=budget.val_size + _TEST_IMAGES,
                epochs=int(dict(config.train_kwargs).get("epochs", budget.epochs)),
            )
        )
    return estimates


def _time(
    configs: Sequence[Config], budget: Budget, threads: int, rounds: int, steps: int
) -> tuple[list[list[float]], list[list[float]]]:
    """Each configuration's median seconds per training step and per evaluated image, in each of ``rounds``."""
    from dyrelu.analysis.timing import time_side_by_side
    from dyrelu.train import create_optimizer

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(budget.batch_size, 1, 28, 28, generator=generator).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (budget.batch_size,), generator=generator)
    eval_images = torch.randn(2 * budget.batch_size, 1, 28, 28, generator=generator)
    eval_images = eval_images.to(memory_format=torch.channels_last)
    models, optimizers = {}, {}
    for i, config in enumerate(configs):
        models[i] = model = _network(config, budget)
        train = {**budget.extra, **dict(config.train_kwargs)}
        optimizers[i] = create_optimizer(
            model,
            "sgd",
            budget.lr,
            5e-4,
            hyper_lr_scale=train.get("hyper_lr_scale", 1.0),
            hyper_weight_decay=train.get("hyper_weight_decay", True),
        )
    times = time_side_by_side(
        models,
        images,
        labels,
        optimizers=optimizers,
        eval_images=eval_images,
        rounds=rounds,
        steps=steps,
        threads=threads,
    )
    step_times = [list(times[i].train) for i in models]
    eval_times = [[t / eval_images.shape[0] for t in times[i].eval] for i in models]
    return step_times, eval_times


def _network_key(config: Config, budget: Budget) -> tuple:
    train = {**budget.extra, **dict(config.train_kwargs)}
    return config.model, config.act, _options(budget.act_kwargs(config)), train.get("act_context", "input")


def _options(kwargs: dict) -> str:
    return json.dumps(kwargs, sort_keys=True)


def calibrated(estimates: Sequence[CostEstimate], measured: Mapping[tuple[str, str, str], float]) -> dict:
    """Each configuration's seconds per epoch, calibrated by the epochs a grid measured.

    ``measured`` maps a network, ``(model, act, act_kwargs as sorted JSON)`` as in a results CSV, to its
    measured seconds per epoch. A measured configuration gets its measurement; the others their estimate
    scaled by the median ratio of measurement to estimate (the timed steps leave out data loading and run
    on a machine shared with other work: their ratios carry over, their absolute values less so).
    Returns ``{config: seconds per epoch}``.

    Raises:
        ValueError: ``measured`` names none of the estimated configurations.
    """
    ratios = [measured[k] / e.epoch_seconds for e in estimates if (k := _row_key(e.config)) in measured]
    if not ratios:
        raise ValueError(f"expected measurements of some of the estimated configurations, got {sorted(measured)}")
    scale = statistics.median(ratios)
    return {e.config: measured.get(_row_key(e.config), e.epoch_seconds * scale) for e in estimates}


def _row_key(config: Config) -> tuple[str, str, str]:
    return config.model, config.act, _options(dict(config.act_kwargs))
