from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from dyrelu import APReLU, create_act


def _hand_alpha(act: APReLU, x: torch.Tensor) -> torch.Tensor:
    """The paper's sub-network written out, eval mode: (N, C)."""
    pos, neg = torch.relu(x).mean((2, 3)), torch.clamp(x, max=0).mean((2, 3))
    h = nn.functional.linear(torch.cat([pos, neg], 1), act.fc1_weight, act.fc1_bias)
    h = (h - act.norm1_running_mean) / torch.sqrt(act.norm1_running_var + act.eps) * act.norm1_weight + act.norm1_bias
    z = nn.functional.linear(torch.relu(h), act.fc2_weight, act.fc2_bias)
    z = (z - act.norm2_running_mean) / torch.sqrt(act.norm2_running_var + act.eps) * act.norm2_weight + act.norm2_bias
    return torch.sigmoid(z)


def test_matches_formula_on_hand_made_case():
    act = APReLU(4).eval()
    with torch.no_grad():
        act.norm1_running_mean.uniform_(-0.5, 0.5)
        act.norm2_running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 5, 5)
    alpha = _hand_alpha(act, x)[:, :, None, None]
    torch.testing.assert_close(act(x), torch.where(x > 0, x, alpha * x))


def test_fixed_alpha_by_last_layer():
    act = APReLU(3).eval()
    slopes = torch.tensor([0.1, 0.25, 0.6])
    with torch.no_grad():
        act.fc2_weight.zero_()
        act.fc2_bias.zero_()
        act.norm2_weight.zero_()
        act.norm2_bias.copy_(torch.logit(slopes))
    x = torch.tensor([[[-2.0, 3.0]] * 3])  # (1, 3, 2)
    expected = torch.stack([torch.tensor([-2.0 * s, 3.0]) for s in slopes])[None]
    torch.testing.assert_close(act(x), expected)


def test_equals_prelu_when_alpha_is_input_independent():
    act = APReLU(6).eval()
    prelu = nn.PReLU(6)
    with torch.no_grad():
        prelu.weight.uniform_(0.05, 0.9)
        act.fc2_weight.zero_()
        act.norm2_weight.zero_()
        act.norm2_bias.copy_(torch.logit(prelu.weight))
    x = torch.randn(4, 6, 7, 7)
    x[:, :, ::2, ::3] = 0.0  # the kink: the gradient there is the negative slope, as nn.PReLU's
    x_act, x_prelu = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_act, y_prelu = act(x_act), prelu(x_prelu)
    torch.testing.assert_close(y_act, y_prelu)
    g = torch.randn_like(x)
    y_act.backward(g)
    y_prelu.backward(g)
    torch.testing.assert_close(x_act.grad, x_prelu.grad)


def _plain(act: APReLU, x: torch.Tensor) -> torch.Tensor:
    """APReLU as the paper writes it (clamp for the negative part, means for the context), training mode."""
    pos, neg = torch.relu(x), torch.clamp(x, max=0)
    context = torch.cat([pos.mean((2, 3)), neg.mean((2, 3))], 1)
    bn = nn.functional.batch_norm
    h = bn(
        nn.functional.linear(context, act.fc1_weight, act.fc1_bias), None, None, act.norm1_weight, act.norm1_bias, True
    )
    z = nn.functional.linear(torch.relu(h), act.fc2_weight, act.fc2_bias)
    alpha = torch.sigmoid(bn(z, None, None, act.norm2_weight, act.norm2_bias, True))
    return pos + alpha[:, :, None, None] * neg


def test_values_and_gradients_match_the_plain_formula_in_training():
    """The module computes min(x, 0) as x - max(x, 0) and the context as sums over the spatial size (faster
    backward passes): the same values and gradients as the plain formula (at exactly x = 0 the slope is the
    negative piece's, as nn.PReLU's: test_equals_prelu_when_alpha_is_input_independent)."""
    torch.manual_seed(0)
    act = APReLU(5, dtype=torch.float64).train()
    x = torch.randn(4, 5, 6, 6, dtype=torch.float64)
    g = torch.randn_like(x)
    grads = []
    for fn in (act, lambda t: _plain(act, t)):
        xi = x.clone().requires_grad_()
        y = fn(xi)
        y.backward(g)
        grads.append((y.detach(), xi.grad, *(p.grad.clone() for p in act.parameters())))
        act.zero_grad()
    for ours, plain in zip(*grads, strict=True):
        torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5), (2, 4, 3, 3), (2, 4, 2, 2, 2)])
def test_gradcheck(norm, shape):
    act = APReLU(4, norm=norm, dtype=torch.float64)
    names = [n for n, _ in act.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in act.parameters())

    def fn(x, *ps):
        return functional_call(act, dict(zip(names, ps, strict=True)), (x,))

    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert gradcheck(fn, (x, *params), fast_mode=True)


def test_layouts_lazy_and_export():
    act = APReLU(8).eval()
    x = torch.randn(2, 8, 4, 4)
    out_cl = act(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, act(x))
    tokens = APReLU(channels_last=True).eval()
    tokens(torch.randn(2, 5, 8))
    tokens.load_state_dict(act.state_dict())
    seq = torch.randn(2, 5, 8)
    torch.testing.assert_close(tokens(seq), act(seq.transpose(1, 2)).transpose(1, 2))
    lazy = create_act("aprelu")
    lazy.load_state_dict(act.state_dict())
    assert lazy.channels == 8
    program = torch.export.export(act, (x,))
    torch.testing.assert_close(program.module()(x), act(x))


def test_bad_input():
    with pytest.raises(ValueError, match="expected 8 channels at dim 1, got 4"):
        APReLU(8)(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="positive integer, got 0"):
        APReLU(8, reduction=0)
