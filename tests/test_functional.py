from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from conftest import dyrelu_reference, tol
from dyrelu import functional as DF


def _coefs(n: int, c: int, k: int, dtype=torch.float64, requires_grad=True):
    a = torch.randn(n, c, k, dtype=dtype).requires_grad_(requires_grad)
    b = torch.randn(n, c, k, dtype=dtype).requires_grad_(requires_grad)
    return a, b


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5), (2, 4, 3, 5), (2, 4, 2, 3, 2)])
@pytest.mark.parametrize("shared_channels", [False, True])
def test_piecewise_max_matches_reference(k, shape, shared_channels):
    x = torch.randn(shape)
    a, b = _coefs(shape[0], 1 if shared_channels else shape[1], k, torch.float32, requires_grad=False)
    torch.testing.assert_close(DF.piecewise_max(x, a, b), dyrelu_reference(x, a, b), **tol(torch.float32))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5), (2, 4, 3, 5), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("coef_channels", ["per_channel", "shared", "static"])
def test_piecewise_max_gradcheck(k, shape, coef_channels):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    n = 1 if coef_channels == "static" else shape[0]
    c = 1 if coef_channels == "shared" else shape[1]
    a, b = _coefs(n, c, k)
    assert gradcheck(DF.piecewise_max, (x, a, b))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_piecewise_max_gradcheck_with_scale(k):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    a, b = _coefs(2, 3, k)
    scale = torch.rand(2, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(DF.piecewise_max, (x, a, b, scale))
    assert gradgradcheck(DF.piecewise_max, (x, a, b, scale))


def test_piecewise_max_saves_only_input_and_coefficients():
    x = torch.randn(8, 16, 16, 16, requires_grad=True)
    a, b = _coefs(8, 16, 3, torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        DF.piecewise_max(x, a, b)
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()


def test_relu_gradient_at_zero_matches_torch():
    x = torch.tensor([[-1.0, 0.0, 2.0]], requires_grad=True)
    a = torch.tensor([[[1.0, 0.0]]])
    DF.piecewise_max(x, a, torch.zeros_like(a)).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    torch.relu(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_nan_propagates(requires_grad):
    x = torch.tensor([[float("nan"), 1.0, -1.0]], requires_grad=requires_grad)
    a = torch.tensor([[[1.0, 0.0]]], requires_grad=requires_grad)
    b = torch.zeros(1, 1, 2, requires_grad=requires_grad)
    y = DF.piecewise_max(x, a, b)
    assert torch.isnan(y[0, 0]) and y[0, 1] == 1.0 and y[0, 2] == 0.0
    if requires_grad:
        y.sum().backward()
        # The NaN reaches the coefficients' gradients instead of vanishing from training.
        assert torch.isnan(a.grad).any()
        assert x.grad[0, 1] == 1.0 and x.grad[0, 2] == 0.0


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_output_keeps_memory_format(memory_format):
    x = torch.randn(2, 4, 5, 6).to(memory_format=memory_format)
    a, b = _coefs(2, 4, 2, torch.float32, requires_grad=False)
    assert DF.piecewise_max(x, a, b).is_contiguous(memory_format=memory_format)


def test_coefficient_shape_errors():
    x = torch.randn(2, 4, 5)
    with pytest.raises(ValueError, match=r"\(2 or 1, 4 or 1, K\)"):
        DF.piecewise_max(x, torch.zeros(2, 3, 2), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="equal shape"):
        DF.piecewise_max(x, torch.zeros(2, 4, 2), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"scale of shape \(2, 1, 5\)"):
        DF.piecewise_max(x, torch.zeros(2, 4, 2), torch.zeros(2, 4, 2), torch.ones(2, 4, 5))


def test_normalize_residual_range_and_zero():
    z = torch.linspace(-50, 50, 101)
    r = DF.normalize_residual(z)
    assert r.min() >= -1 and r.max() <= 1 and r[50] == 0
    torch.testing.assert_close(r, 2 * torch.sigmoid(z) - 1)


def test_coefficients_residual_parametrisation():
    residual = torch.tensor([[0.5, -0.5, 1.0, -1.0]])
    a, b = DF.coefficients(residual, (1.0, 0.0), (0.0, 0.0), lambda_a=1.0, lambda_b=0.5)
    torch.testing.assert_close(a, torch.tensor([[1.5, -0.5]]))
    torch.testing.assert_close(b, torch.tensor([[0.5, -0.5]]))
    with pytest.raises(ValueError, match="expected 2 initial slopes"):
        DF.coefficients(residual, (1.0, 0.0, 0.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="even, positive"):
        DF.coefficients(torch.zeros(1, 3), (1.0,), (0.0,))


def test_spatial_attention():
    uniform = DF.spatial_attention(torch.zeros(2, 1, 4, 6))
    torch.testing.assert_close(uniform, torch.full((2, 1, 4, 6), 1 / 3))
    peaked = torch.zeros(1, 1, 3, 3)
    peaked[0, 0, 1, 1] = 100.0
    pi = DF.spatial_attention(peaked, tau=1.0)
    assert pi[0, 0, 1, 1] == 1.0  # clipped at 1
    assert pi.max() <= 1 and pi.min() >= 0
    # gamma scales, tau flattens; the softmax is over positions, per sample
    z = torch.randn(2, 1, 5)
    expected = torch.clamp(2.0 * torch.softmax(z / 3.0, dim=-1), max=1)
    torch.testing.assert_close(DF.spatial_attention(z, tau=3.0, gamma=2.0), expected)
    with pytest.raises(ValueError, match="positive temperature"):
        DF.spatial_attention(z, tau=0.0)
    with pytest.raises(ValueError, match="spatial dim"):
        DF.spatial_attention(torch.zeros(2, 1))


def test_spatial_attention_takes_tau_as_a_tensor():
    # DyReLUC passes its `temperature` buffer: the same map as the float, and no check that would sync a device.
    z = torch.randn(2, 1, 3, 4)
    torch.testing.assert_close(DF.spatial_attention(z, torch.tensor(3.0)), DF.spatial_attention(z, 3.0))


def test_dyrelu_reference_is_not_public():
    assert "dyrelu_reference" not in DF.__all__
    x = torch.randn(2, 3, 4)
    a, b = _coefs(2, 3, 2, torch.float32, requires_grad=False)
    with pytest.warns(DeprecationWarning, match="dyrelu_reference is deprecated"):
        old = DF.dyrelu_reference  # the old spelling works for one more release
    torch.testing.assert_close(old(x, a, b), dyrelu_reference(x, a, b))
    with pytest.raises(AttributeError, match="no_such_name"):
        DF.no_such_name  # noqa: B018
