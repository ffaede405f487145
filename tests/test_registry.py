from __future__ import annotations

import pytest
import torch
from torch import nn

import dyrelu
from dyrelu import create_act, list_acts, register_act

EXPECTED = {
    "aprelu",
    "dyrelu_a",
    "dyrelu_b",
    "dyrelu_c",
    "elu",
    "gelu",
    "hardswish",
    "lrelu",
    "maxout",
    "prelu",
    "relu",
    "relu6",
    "rrelu",
    "se_relu",
    "silu",
    "static_pwl",
    "swish",
}


def test_list_acts():
    assert set(list_acts()) >= EXPECTED
    assert list_acts() == sorted(list_acts())


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("channels", [None, 8])
@pytest.mark.parametrize("shape", [(3, 8), (3, 8, 7), (2, 8, 5, 5)])
def test_every_act_forward_backward(name, channels, shape):
    if name == "dyrelu_c" and len(shape) == 2:
        pytest.skip("DY-ReLU-C needs spatial positions")
    act = create_act(name, channels, inplace=False) if name != "prelu" else create_act(name, channels)
    x = torch.randn(shape, requires_grad=True)
    y = act(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_case_insensitive_and_inplace_accepted(name):
    act = create_act(name.upper(), 4, inplace=True)
    assert isinstance(act, nn.Module)


def test_stateless_acts_match_torch():
    x = torch.randn(4, 6, 3)
    torch.testing.assert_close(create_act("relu")(x), torch.relu(x))
    torch.testing.assert_close(create_act("swish")(x), nn.functional.silu(x))
    torch.testing.assert_close(create_act("lrelu", negative_slope=0.1)(x), nn.functional.leaky_relu(x, 0.1))
    assert create_act("prelu", 6).weight.shape == (6,)


@pytest.mark.parametrize(("name", "cls"), [("dyrelu_a", dyrelu.DyReLUA), ("dyrelu_b", dyrelu.DyReLUB)])
def test_dyrelu_kwargs_pass_through(name, cls):
    act = create_act(name, 16, k=3, reduction=4)
    assert isinstance(act, cls) and act.k == 3 and act.reduction == 4 and act.channels == 16


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown activation 'dyrelu_x', expected one of .*dyrelu_b.*relu"):
        create_act("dyrelu_x")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_act("relu", nn.ReLU)


def test_static_pwl_is_input_independent_and_learns():
    act = create_act("static_pwl", 4, k=3)
    x = torch.randn(5, 4, 6)
    torch.testing.assert_close(act(x), torch.relu(x))
    with torch.no_grad():
        act.a.add_(torch.randn_like(act.a))
    single = torch.stack([act(x[i : i + 1])[0] for i in range(5)])
    torch.testing.assert_close(act(x), single)
    act(x).sum().backward()
    assert act.a.grad.abs().sum() > 0


def test_maxout_matches_hand_computation():
    act = create_act("maxout", 3, k=2)
    x = torch.randn(2, 3, 4)
    maps = torch.einsum("oc,ncl->nol", act.weight, x) + act.bias[None, :, None]
    expected = torch.maximum(maps[:, :3], maps[:, 3:])
    torch.testing.assert_close(act(x), expected)


def test_se_relu_matches_hand_computation():
    act = create_act("se_relu", 8, reduction=4)
    x = torch.randn(2, 8, 3, 3)
    r = torch.relu(x)
    hidden = torch.relu(nn.functional.linear(r.mean((2, 3)), act.fc1_weight, act.fc1_bias))
    gate = torch.sigmoid(nn.functional.linear(hidden, act.fc2_weight, act.fc2_bias))
    torch.testing.assert_close(act(x), r * gate[:, :, None, None])


@pytest.mark.parametrize("name", ["se_relu", "maxout", "static_pwl"])
def test_channel_dependent_acts_check_channels_and_load_lazily(name):
    act = create_act(name, 8)
    with pytest.raises(ValueError, match="expected 8 channels at dim 1, got 4"):
        act(torch.randn(2, 4, 3))
    lazy = create_act(name)
    lazy.load_state_dict(act.state_dict())
    x = torch.randn(2, 8, 3)
    torch.testing.assert_close(lazy(x), act(x))
