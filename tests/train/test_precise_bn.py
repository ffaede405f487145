"""Precise BatchNorm: the running statistics recomputed with the current weights before an evaluation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dyrelu.data import BatchLoader, make_synthetic
from dyrelu.train import TrainConfig, fit, recompute_batchnorm
from dyrelu.train.evaluation import batchnorm_subset

DATA = {"num_samples": 64, "num_test": 16, "num_classes": 4, "image_size": 8}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Dropout(0.5),  # in training mode it would change what the norm sees, and draw random numbers
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, momentum=0.3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _loader(count: int = 64, batch: int = 16) -> BatchLoader:
    return BatchLoader(make_synthetic(count, image_size=8, num_classes=4), batch, train=False)


def test_the_statistics_become_the_exact_average_over_the_batches():
    net, loader = _net(), _loader()
    net[1].running_mean.fill_(100.0)  # stale statistics, far from the data
    images = torch.cat([x for x, _ in loader])
    rng = torch.get_rng_state()
    assert recompute_batchnorm(net, loader) == 2
    assert torch.equal(rng, torch.get_rng_state())  # no dropout ran: no random number drawn
    # equal batches: the average of the batch means is the mean of all images (the input's norm sees them as they are)
    torch.testing.assert_close(net[1].running_mean, images.mean((0, 2, 3)))
    batch_vars = torch.stack([x.var((0, 2, 3), unbiased=True) for x, _ in loader])
    torch.testing.assert_close(net[1].running_var, batch_vars.mean(0))
    assert [net[1].momentum, net[3].momentum] == [0.1, 0.3]  # restored
    assert not any(m.training for m in net.modules())


def test_the_result_does_not_depend_on_the_stale_statistics():
    first, second = _net(), _net()
    for m in second.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(5.0, 9.0)
    recompute_batchnorm(first, _loader())
    recompute_batchnorm(second, _loader())
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_a_network_without_batchnorm_is_untouched():
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    state = copy.deepcopy(net.state_dict())
    assert recompute_batchnorm(net, _loader()) == 0
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_the_subset_spreads_over_the_whole_set():
    dataset = make_synthetic(100, image_size=8, num_classes=4)
    subset = batchnorm_subset(dataset, 5)
    assert torch.equal(subset.labels, dataset.labels[torch.tensor([0, 25, 50, 74, 99])])
    assert len(batchnorm_subset(dataset, 500).labels) == 100
    assert (subset.mean, subset.std, subset.name) == (dataset.mean, dataset.std, dataset.name)


def _fit(precise_bn: int):
    config = TrainConfig(
        model="mobilenetv2_035",
        act="relu",
        small_input=True,
        data="synthetic",
        data_kwargs=DATA,
        epochs=2,
        batch_size=16,
        lr=0.5,
        threads=1,
        tensorboard=False,
        precise_bn=precise_bn,
    )
    return fit(config)


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="expected precise_bn an integer >= 0, got -1"):
        TrainConfig(precise_bn=-1)


def test_training_is_the_same_and_only_the_evaluation_changes():
    plain, precise = _fit(0), _fit(48)
    for a, b in zip(plain.metrics, precise.metrics, strict=True):
        assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])
    weights = {k: v for k, v in plain.model.state_dict().items() if "running" not in k and "num_batches" not in k}
    other = precise.model.state_dict()
    assert all(torch.equal(v, other[k]) for k, v in weights.items())
    assert any(a["test_loss"] != b["test_loss"] for a, b in zip(plain.metrics, precise.metrics, strict=True))
