"""dyrelu.analysis.timing: training and evaluation steps of several networks timed side by side."""

import pytest
import torch
from torch import nn

from dyrelu.analysis.timing import StepTimes, time_side_by_side


def _nets():
    torch.manual_seed(0)
    return {
        name: nn.Sequential(nn.Flatten(), nn.Linear(12, 4), act) for name, act in (("a", nn.ReLU()), ("b", nn.SiLU()))
    }


def _batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 4, generator=generator), torch.randint(0, 4, (8,), generator=generator)


def test_every_network_is_timed_once_per_round_and_trains():
    nets = _nets()
    before = nets["a"][1].weight.detach().clone()
    images, labels = _batch()
    times = time_side_by_side(nets, images, labels, rounds=4, steps=2, eval_images=torch.randn(5, 3, 4))
    assert list(times) == ["a", "b"]
    for t in times.values():
        assert isinstance(t, StepTimes) and len(t.train) == 4 and len(t.eval) == 4
        assert t.train_seconds > 0 and t.eval_seconds > 0
    assert not torch.equal(before, nets["a"][1].weight)  # the default SGD stepped
    assert not any(net.training for net in nets.values())


def test_given_optimizers_are_used_and_threads_restored():
    nets = _nets()
    frozen = torch.optim.SGD(nets["b"].parameters(), lr=0.0)
    before = nets["b"][1].weight.detach().clone()
    threads = torch.get_num_threads()
    time_side_by_side(nets, *_batch(), optimizers={"b": frozen}, rounds=1, steps=1, threads=1)
    assert torch.equal(before, nets["b"][1].weight)
    assert torch.get_num_threads() == threads


def test_the_median_over_rounds_counts():
    t = StepTimes(train=(1.0, 9.0, 2.0), eval=(0.5, 0.1, 0.2))
    assert (t.train_seconds, t.eval_seconds) == (2.0, 0.2)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rounds": 0}, "expected rounds >= 1 and steps >= 1, got rounds=0"),
        ({"steps": 0}, "got rounds=5, steps=0"),
        ({"optimizers": {"c": None}}, "optimizers ['c'] name no model"),
    ],
)
def test_bad_arguments_are_named(kwargs, expected):
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        time_side_by_side(_nets(), *_batch(), **kwargs)


def test_no_model_is_an_error():
    with pytest.raises(ValueError, match="at least one model"):
        time_side_by_side({}, *_batch())
