"""The DY-ReLU recipe's knobs: zero_init_last, context from another tensor, the hyper functions' optimiser groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from dyrelu import DyReLUA, DyReLUB, DyReLUC, convert, create_act
from dyrelu import functional as DF
from dyrelu.analysis import STATIC_THRESHOLD, dynamics_numbers, is_static
from dyrelu.models import create_model
from dyrelu.train import create_optimizer, param_groups

VARIANTS = [DyReLUA, DyReLUB, DyReLUC]


# -- zero_init_last --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
def test_zero_init_last_false_is_not_static(cls):
    torch.manual_seed(0)
    module = cls(64, zero_init_last=False)  # 8 hidden units: with 2 (C=16), all may start dead
    assert torch.count_nonzero(module.fc2_weight) > 0 and torch.count_nonzero(module.fc2_bias) > 0
    bound = 1 / module.fc2_weight.shape[1] ** 0.5  # nn.Linear's bound for the bias
    assert module.fc2_bias.abs().max() <= bound
    x = torch.randn(4, 64, 5, 5)
    assert not torch.allclose(module(x), torch.relu(x) if cls is not DyReLUC else torch.relu(x) / 3)
    # The coefficients depend on the input's context: the same position in two inputs gives two outputs.
    a, _ = module.hyper(x)
    assert (a.std(dim=0) > 0).all()
    if cls is DyReLUC:
        assert torch.count_nonzero(module.spatial_weight) > 0


@pytest.mark.parametrize("cls", VARIANTS)
def test_zero_init_last_is_the_default_and_shows_in_repr(cls):
    assert cls(8).last_init == "zero" and "zero_init_last" not in repr(cls(8))
    module = cls(8, zero_init_last=False)
    assert module.last_init == "linear" and "zero_init_last=False" in repr(module)
    name = cls.__name__.lower().replace("dyrelu", "dyrelu_")
    assert create_act(name, 8, zero_init_last=False).last_init == "linear"
    module.zero_init_last()  # timm's method: back to the static start
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(module(x), torch.relu(x) if cls is not DyReLUC else torch.relu(x) / 3)


def test_zero_init_last_through_convert():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU())
    x = torch.randn(2, 3, 9, 9)
    exact = convert(nn.Sequential(*[m for m in net]), example_input=x)
    torch.testing.assert_close(exact(x), net(x), rtol=0, atol=0)  # the default keeps the network's function
    dynamic = convert(net, example_input=x, zero_init_last=False)
    assert all(m.last_init == "linear" for m in dynamic.modules() if isinstance(m, DyReLUB))


def test_zero_init_last_model_output_depends_on_context():
    """A network's output at one position changes with the rest of the image only through the hyper functions."""
    torch.manual_seed(0)
    images = torch.randn(16, 1, 28, 28)
    zero = create_model(
        "mobilenetv2_035", "dyrelu_b", num_classes=10, in_chans=1, small_input=True, zero_init_last=True
    )
    linear = create_model(
        "mobilenetv2_035", "dyrelu_b", num_classes=10, in_chans=1, small_input=True, zero_init_last=False
    )
    assert dynamics_numbers(zero, images)["dyn_median"] == 0.0
    numbers = dynamics_numbers(linear, images)
    assert numbers["dyn_median"] > 0 and numbers["dyn_max"] >= numbers["dyn_median"]


# -- context from another tensor --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_context_equals_coefficients_by_hand(cls, channels_last):
    torch.manual_seed(0)
    module = cls(12, context_channels=5, zero_init_last=False, channels_last=channels_last)
    x, context = torch.randn(3, 12, 4, 4), torch.randn(3, 5, 7, 7)
    pooled = context.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ module.fc1_weight.T + module.fc1_bias)
    residual = 2 * torch.sigmoid(hidden @ module.fc2_weight.T + module.fc2_bias) - 1
    residual = residual.view(3, 12 if cls is not DyReLUA else 1, 4)
    a = torch.tensor([1.0, 0.0]) + module.lambda_a * residual[..., :2]
    b = module.lambda_b * residual[..., 2:]
    expected = torch.maximum(
        a[..., 0, None, None] * x + b[..., 0, None, None], a[..., 1, None, None] * x + b[..., 1, None, None]
    )
    if cls is DyReLUC:
        expected = expected * module._scale(x)
    if channels_last:
        got = module(x.movedim(1, -1), context=context.movedim(1, -1)).movedim(-1, 1)
    else:
        got = module(x, context=context)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.hyper(x, context)[0], a, rtol=1e-6, atol=1e-6)


def test_context_gradcheck():
    module = DyReLUB(6, context_channels=3, zero_init_last=False, reduction=2, dtype=torch.float64)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    context = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, c: module(x, context=c), (x, context), atol=1e-6)


def test_context_lazy_channels_and_state_dict():
    lazy = DyReLUB()
    x, context = torch.randn(2, 12, 4, 4), torch.randn(2, 5, 2, 2)
    lazy(x, context=context)
    assert (lazy.channels, lazy.context_channels) == (12, 5)
    assert lazy.fc1_weight.shape == (max(5 // 8, 1), 5) and "context_channels=5" in repr(lazy)
    with torch.no_grad():
        lazy.fc2_weight.normal_()
    fresh = DyReLUB()
    fresh.load_state_dict(lazy.state_dict())
    assert (fresh.channels, fresh.context_channels) == (12, 5)
    torch.testing.assert_close(fresh(x, context=context), lazy(x, context=context))


def test_context_errors_name_the_expected_shape():
    module = DyReLUB(8, context_channels=4)
    with pytest.raises(ValueError, match="4 channels"):
        module(torch.randn(2, 8, 3, 3), context=torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="2 samples"):
        module(torch.randn(2, 8, 3, 3), context=torch.randn(3, 4, 3, 3))
    with pytest.raises(ValueError, match="context_channels"):
        DyReLUB(8, context_channels=0)


def test_block_context_mobilenetv2():
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_chans": 1, "small_input": True, "zero_init_last": False}
    own = create_model("mobilenetv2_035", "dyrelu_b", **kwargs)
    block = create_model("mobilenetv2_035", "dyrelu_b", act_context="block", **kwargs)
    params = sum(p.numel() for m in own.features[1:-1].modules() if isinstance(m, DyReLUB) for p in m.parameters())
    block_params = sum(
        p.numel() for m in block.features[1:-1].modules() if isinstance(m, DyReLUB) for p in m.parameters()
    )
    assert block_params < params / 3  # the blocks' hyper functions are about 4x smaller
    assert set(own.state_dict()) == set(block.state_dict())  # same modules and keys
    images = torch.randn(8, 1, 28, 28)
    assert block(images).shape == (8, 10)
    # The expansion DY-ReLU of a block reads the block's input: its coefficients are those of its context.
    seen = {}
    inner = block.features[3].conv[0]
    hook = inner[2].register_forward_hook(lambda m, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    block(images)
    hook.remove()
    assert seen["context"].shape[1] == inner[0].in_channels
    assert dynamics_numbers(block, images)["dyn_median"] > 0


def test_block_context_needs_dyrelu_and_mobilenetv2():
    with pytest.raises(ValueError, match="DY-ReLU"):
        create_model("mobilenetv2_035", "relu", act_context="block")
    with pytest.raises(ValueError, match="act_context"):
        create_model("resnet10", "dyrelu_b", act_context="block")
    with pytest.raises(ValueError, match="expected one of"):
        create_model("mobilenetv2_035", "dyrelu_b", act_context="neighbours")


# -- the hyper functions' optimiser groups -----------------------------------------------------------------


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), DyReLUB(8), nn.Conv2d(8, 4, 1), DyReLUC(4))


def test_param_groups_default_keeps_two_groups():
    net = _net()
    decay, no_decay = param_groups(net, 1e-4)
    ids = {id(p) for p in decay["params"]}
    assert id(net[2].fc1_weight) in ids and id(net[2].fc2_weight) in ids  # hyper weights decay by default
    assert id(net[2].fc2_bias) in {id(p) for p in no_decay["params"]}


@pytest.mark.parametrize("hyper_weight_decay", [True, False])
def test_param_groups_put_the_hyper_function_where_the_options_say(hyper_weight_decay):
    net = _net()
    groups = param_groups(net, 1e-4, hyper_lr_scale=10.0, hyper_weight_decay=hyper_weight_decay)
    assert len(groups) == 4
    decay, no_decay, hyper_decay, hyper_no_decay = ({id(p) for p in g["params"]} for g in groups)
    hyper = {id(p) for m in (net[2], net[4]) for p in m.parameters()}
    assert hyper_decay | hyper_no_decay == hyper and not hyper & (decay | no_decay)
    assert hyper_decay == {id(net[2].fc1_weight), id(net[2].fc2_weight), id(net[4].fc1_weight), id(net[4].fc2_weight)}
    assert id(net[0].weight) in decay and id(net[1].weight) in no_decay
    assert groups[2]["weight_decay"] == (1e-4 if hyper_weight_decay else 0.0) and groups[3]["weight_decay"] == 0.0
    assert groups[2]["lr_scale"] == groups[3]["lr_scale"] == 10.0
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in net.parameters())


def test_create_optimizer_scales_the_hyper_learning_rate():
    net = _net()
    opt = create_optimizer(net, "sgd", 0.1, 1e-4, hyper_lr_scale=0.5, hyper_weight_decay=False)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1, 0.05, 0.05]
    with pytest.raises(ValueError, match="hyper_lr_scale"):
        param_groups(net, 1e-4, hyper_lr_scale=0.0)


# -- the dynamics numbers ----------------------------------------------------------------------------------


def test_dynamics_numbers_fresh_and_hand_set():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), DyReLUB(8), nn.Conv2d(8, 8, 1), DyReLUB(8))
    images = torch.randn(32, 3, 6, 6)
    assert dynamics_numbers(net, images) == {"dyn_median": 0.0, "dyn_max": 0.0, "dyn_b_median": 0.0}
    assert is_static(dynamics_numbers(net, images))
    with torch.no_grad():  # a hand-set hyper function: the slope residual of layer 1 follows the context
        net[1].fc1_weight.fill_(1.0)
        net[1].fc1_bias.fill_(0.0)
        net[1].fc2_weight[:16].fill_(1.0)
    numbers = dynamics_numbers(net, images)
    assert numbers["dyn_max"] > STATIC_THRESHOLD and numbers["dyn_median"] == pytest.approx(numbers["dyn_max"] / 2)
    assert numbers == dynamics_numbers(net, images)  # deterministic
    assert dynamics_numbers(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), images) is None


def test_dynamics_range_by_hand():
    module = DyReLUA(4, zero_init_last=False)
    images = torch.randn(10, 4, 3, 3)
    a, _ = module.hyper(images)
    expected = a.double().std(dim=0, correction=0).mean().item()
    assert dynamics_numbers(nn.Sequential(module), images)["dyn_median"] == pytest.approx(expected)
    assert DF is not None


@pytest.mark.parametrize("cls", VARIANTS)
def test_min_hidden_floors_the_hidden_width(cls):
    assert cls(16).fc1_weight.shape == (2, 16) and "min_hidden" not in repr(cls(16))
    module = cls(16, min_hidden=4)
    assert module.fc1_weight.shape == (4, 16) and module.fc2_weight.shape[1] == 4 and "min_hidden=4" in repr(module)
    assert cls(64, min_hidden=4).fc1_weight.shape == (8, 64)  # C // R wins when larger
    x = torch.randn(2, 16, 3, 3)
    torch.testing.assert_close(module(x), torch.relu(x) if cls is not DyReLUC else torch.relu(x) / 3)
    with pytest.raises(ValueError, match="min_hidden"):
        cls(16, min_hidden=0)
