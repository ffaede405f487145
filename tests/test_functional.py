from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from conftest import dyrelu_reference, tol
from dyrelu import DyReLUA, DyReLUB, _piecewise
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


# -- edge values: infinite inputs take the limit, NaN stays NaN (the kernel and the ATen path) ---------------

INF, NAN = float("inf"), float("nan")
EDGE_VALUES = [INF, -INF, NAN, 1e30, -1e30, 3e4, -3e4, 0.0, 2.0, -0.5]


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal values and dtype, NaN where the other has NaN (infinities compared as values)."""
    return (
        got.dtype == want.dtype
        and torch.equal(got.isnan(), want.isnan())
        and torch.equal(got.nan_to_num(0.0, INF, -INF), want.nan_to_num(0.0, INF, -INF))
    )


def _edge_input(dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    x = torch.randn(3, 4, 5, len(EDGE_VALUES))
    x[0, :, 0] = torch.tensor(EDGE_VALUES)  # every edge value in every channel of sample 0
    x[1, 2, 3, 4], x[2, 1, 0, 0] = INF, -INF  # one infinity in an otherwise ordinary sample
    x = x.to(dtype)  # float16: 1e30 overflows to inf, as under autocast
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _piecewise_grads(x, a, b, scale=None, create_graph=False):
    leaves = [t.detach().clone().requires_grad_() for t in (x, a, b) + ((scale,) if scale is not None else ())]
    y = DF.piecewise_max(*leaves[:3], leaves[3] if scale is not None else None)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.dtype)
    return y, g, torch.autograd.grad(y, leaves, g, create_graph=create_graph)


def _relu_and_grad(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    y = torch.relu(x)
    return y.detach(), torch.autograd.grad(y, x, g)[0]


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shared_channels", [False, True])
def test_relu_pieces_equal_torch_relu_at_edge_values(monkeypatch, native, dtype, channels_last, shared_channels):
    monkeypatch.setenv("DYRELU_NATIVE", native)  # "0": the ATen path; "1": the kernel where it applies
    x = _edge_input(dtype, channels_last)
    a = torch.tensor([1.0, 0.0], dtype=dtype).expand(3, 1 if shared_channels else 4, 2).contiguous()
    b = torch.zeros_like(a)
    y, g, (grad_x, grad_a, grad_b) = _piecewise_grads(x, a, b)
    want, want_grad = _relu_and_grad(x, g)
    assert _same(y, want) and y.stride() == x.stride()
    assert _same(grad_x, want_grad)  # g at +inf and at NaN (torch.relu's), 0 at -inf
    assert grad_b.isfinite().all()
    assert not grad_a[1:].isfinite().all()  # d(a x)/da = x: not finite where x is not
    # double backward runs the out-of-place formulation (also what torch.compile and torch.export capture)
    _, _, (grad_x2, _, grad_b2) = _piecewise_grads(x, a, b, create_graph=True)
    assert _same(grad_x2, want_grad)
    torch.testing.assert_close(grad_b2, grad_b, **tol(dtype))
    assert _same(_piecewise.forward_max(x, a, b, functional=True), want)


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("create_graph", [False, True])
def test_infinite_input_takes_the_limit(monkeypatch, native, create_graph):
    monkeypatch.setenv("DYRELU_NATIVE", native)
    x = torch.tensor([[INF, -INF, NAN, 1.0]] * 5, dtype=torch.float64).unsqueeze(0)  # (1, 5 channels, 4)
    a = torch.tensor([[[1.0, 0.1], [0.1, 1.0], [0.5, 0.5], [0.0, 0.0], [-1.0, 0.0]]], dtype=torch.float64)
    b = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [1.0, 2.0], [3.0, -1.0], [0.0, 4.0]]], dtype=torch.float64)
    y, g, (grad_x, _, grad_b) = _piecewise_grads(x, a, b, create_graph=create_graph)
    want = torch.tensor(
        [
            [INF, -INF, NAN, 1.0],  # LeakyReLU(0.1)-like
            [INF, -INF, NAN, 1.0],  # the pieces swapped
            [INF, -INF, NAN, 2.5],  # equal slopes: an affine map
            [3.0, 3.0, NAN, 3.0],  # all slopes zero: the constant max_k b_k (NaN stays NaN)
            [4.0, INF, NAN, 4.0],  # -x and the constant 4
        ],
        dtype=torch.float64,
    )
    assert _same(y[0].detach(), want)
    # the gradient follows the piece that is active in the limit; NaN keeps the first piece
    slopes = torch.tensor(
        [[1.0, 0.1, 1.0, 1.0], [1.0, 0.1, 0.1, 1.0], [0.5] * 4, [0.0] * 4, [0.0, -1.0, -1.0, 0.0]], dtype=torch.float64
    )
    torch.testing.assert_close(grad_x[0], g[0] * slopes)
    # equal slopes: the larger intercept's piece is the active one at both infinities (and at x = 1)
    torch.testing.assert_close(grad_b[0, 2], torch.stack([g[0, 2, 2], g[0, 2, [0, 1, 3]].sum()]))


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("k", [3, 4])
def test_more_pieces_take_the_limit(monkeypatch, native, k):
    monkeypatch.setenv("DYRELU_NATIVE", native)
    x = torch.tensor([[[INF, -INF, NAN, 2.0, -3.0]]], dtype=torch.float64)
    # pieces 0.5 x, x, 0 (and 0.5 x + 1): at +inf the steepest (x), at -inf the flattest (0)
    a = torch.tensor([0.5, 1.0, 0.0, 0.5][:k], dtype=torch.float64).view(1, 1, k)
    b = torch.tensor([0.0, 0.0, 0.0, 1.0][:k], dtype=torch.float64).view(1, 1, k)
    for create_graph in (False, True):
        y, g, (grad_x, _, grad_b) = _piecewise_grads(x, a, b, create_graph=create_graph)
        assert _same(y.detach(), torch.tensor([[[INF, 0.0, NAN, 2.0, 0.0]]], dtype=torch.float64))
        slope_top = 0.5 if k == 4 else 1.0  # at x = 2, 0.5 x + 1 ties with x: the later piece
        torch.testing.assert_close(grad_x, g * torch.tensor([1.0, 0.0, 0.5, slope_top, 0.0], dtype=torch.float64))
        active = [1, 2, 0, 3 if k == 4 else 1, 2]
        want_b = torch.zeros(k, dtype=torch.float64).index_add_(0, torch.tensor(active), g[0, 0])
        torch.testing.assert_close(grad_b[0, 0], want_b)


@pytest.mark.parametrize("native", ["1", "0"])
def test_zero_scale_flattens_infinite_values(monkeypatch, native):
    # DY-ReLU-C: scale * max_k(...) with scale = pi >= 0; pi = 0 scales every piece to 0, so 0 * inf is 0
    monkeypatch.setenv("DYRELU_NATIVE", native)
    x = torch.tensor([[[INF, -INF, NAN, -2.0, INF, -INF]]])
    a = torch.tensor([[[1.0, 0.1]]])
    scale = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.5]).view(1, 1, 6)
    y, g, (grad_x, _, grad_b, grad_scale) = _piecewise_grads(x, a, torch.zeros_like(a), scale)
    assert _same(y.detach(), torch.tensor([[[0.0, 0.0, NAN, 0.0, INF, -INF]]]))
    torch.testing.assert_close(grad_x, g * torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.05]))
    assert grad_b.isfinite().all()
    torch.testing.assert_close(grad_scale, g * torch.tensor([INF, -INF, NAN, -0.2, INF, -INF]), equal_nan=True)


def test_aten_blocks_with_non_finite_values_take_the_exact_path(monkeypatch):
    monkeypatch.setenv("DYRELU_NATIVE", "0")
    x = _edge_input(torch.float32, channels_last=False)
    for k in (2, 3):
        a, b = _coefs(3, 4, k, torch.float32, requires_grad=False)
        whole = _piecewise_grads(x, a, b)
        with monkeypatch.context() as m:
            m.setattr(_piecewise, "_BLOCK_ELEMENTS", 1)  # one sample per block: only the first has edge values
            blocked = _piecewise_grads(x, a, b)
        # a block is computed again exactly only where it needs to be: the same values up to rounding
        torch.testing.assert_close(blocked[0], whole[0], equal_nan=True)
        for got, want in zip(blocked[2], whole[2], strict=True):
            assert torch.equal(got.isfinite(), want.isfinite())
            torch.testing.assert_close(got, want, equal_nan=True)


def test_normalize_residual_nan_is_zero_without_gradient():
    z = torch.tensor([NAN, INF, -INF, 0.5], requires_grad=True)
    r = DF.normalize_residual(z)
    assert r.tolist()[:3] == [0.0, 1.0, -1.0]
    (grad,) = torch.autograd.grad(r, z, torch.tensor([INF, 1.0, 1.0, 1.0]))
    assert grad[0] == 0.0 and grad[1:3].eq(0).all() and grad[3] > 0


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("cls", [DyReLUA, DyReLUB])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fresh_module_is_relu_at_edge_values(monkeypatch, native, cls, channels_last):
    monkeypatch.setenv("DYRELU_NATIVE", native)
    x = torch.randn(6, 16, 5, 5)
    x[0, 3, 1, 1] = INF  # one infinity: the context of that channel is infinite
    x[1, 3, 1, 1] = -INF
    x[2, 3, 1, 1] = NAN
    x[3, 3, 1, :4] = torch.tensor([INF, -INF, NAN, 1e30])  # all of them
    x[4] *= 1e30  # large, finite
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    act = cls(16)
    g = torch.randn(x.shape)
    want, want_grad = _relu_and_grad(x, g)
    xm = x.clone().requires_grad_()
    y = act(xm)
    (grad,) = torch.autograd.grad(y, xm, g)
    assert _same(y.detach(), want) and _same(grad, want_grad)


@pytest.mark.parametrize("cls", [DyReLUA, DyReLUB])
def test_fresh_module_is_relu_after_fp16_overflow_under_autocast(cls):
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(1e5)  # outputs beyond float16's 65504: inf
    act = cls(16)
    with torch.autocast("cpu", dtype=torch.float16):
        h = conv(torch.randn(4, 3, 8, 8))
        y = act(h)
    assert h.dtype == torch.float16 and h.isposinf().any() and h.isneginf().any()
    g = torch.randn(y.shape).half()
    want, want_grad = _relu_and_grad(h, g)
    (grad,) = torch.autograd.grad(y, h, g)
    assert y.dtype == torch.float16 and _same(y.detach(), want) and _same(grad, want_grad)
