"""dyrelu.experiments.estimate: a grid's cost, timed side by side before it runs."""

from __future__ import annotations

import pytest

from dyrelu.experiments import Budget, Config
from dyrelu.experiments.estimate import calibrated, estimate_costs


def test_estimate_costs_times_each_configuration_and_extrapolates_an_epoch():
    relu, dyrelu_b = Config.of("mobilenetv2_025", "relu"), Config.of("mobilenetv2_025", "dyrelu_b", train={"epochs": 2})
    budget = Budget(epochs=5, data_fraction=0.5, batch_size=8, val_size=1000)
    estimates = estimate_costs([relu, dyrelu_b], budget, rounds=1, steps=1)
    assert [e.config for e in estimates] == [relu, dyrelu_b]
    first, second = estimates
    assert first.steps_per_epoch == 29_500 // 8 + 1 and first.eval_images == 11_000
    assert (first.epochs, second.epochs) == (5, 2)
    assert first.step_seconds > 0 and first.eval_seconds_per_image > 0
    assert first.run_seconds == pytest.approx(5 * first.epoch_seconds)
    scaled = calibrated(estimates, {("mobilenetv2_025", "relu", "{}"): 100.0, ("resnet10", "relu", "{}"): 7.0})
    assert scaled[relu] == 100.0  # measured
    assert scaled[dyrelu_b] == pytest.approx(100.0 * second.epoch_seconds / first.epoch_seconds)
    with pytest.raises(ValueError, match="expected measurements"):
        calibrated(estimates, {("resnet10", "relu", "{}"): 1.0})
    with pytest.raises(ValueError, match="rounds >= 1"):
        estimate_costs([relu], budget, rounds=0)
