"""The modules' one-node path on the native kernels (issue 18): the coefficients from the last FC's output and
the piecewise maximum in one autograd node, against the operations it replaces; the kernels on two threads;
the recycled memory of their outputs."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import dyrelu._native as native
import dyrelu._piecewise as piecewise
import dyrelu.modules as modules
from conftest import tol
from dyrelu import DyReLUA, DyReLUB, DyReLUC
from test_native import native_required, requires_native  # noqa: F401 (the fixture, used by name)


def _step(module, x, fused: bool, monkeypatch):
    """Output and gradients (input, parameters) of ``module`` on ``x``, by the one-node path or without it."""
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(modules, "residual_max", lambda *args: None)
        leaf = x.detach().clone().requires_grad_()
        module.zero_grad(set_to_none=True)
        y = module(leaf)
        if fused:
            assert type(y.grad_fn).__name__ == "_ResidualMaxBackward"
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype))
        return [y.detach(), leaf.grad, *(p.grad for p in module.parameters())]


@requires_native
@pytest.mark.parametrize("cls", [DyReLUA, DyReLUB, DyReLUC])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["planes", "channels_last"])
def test_one_node_path_equals_the_generic_path(monkeypatch, cls, dtype, layout):
    for shape, k in itertools.product([(4, 16, 7, 7), (3, 24, 3, 3), (2, 8, 14, 14)], [1, 2, 3]):
        module = cls(shape[1], k=k, zero_init_last=False, dtype=dtype)
        x = torch.randn(shape, dtype=dtype)
        x[0, 1, 0, 0] = float("nan")  # a NaN input: NaN logits for its sample, the static pieces
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        fused = _step(module, x, True, monkeypatch)
        generic = _step(module, x, False, monkeypatch)
        assert fused[0].stride() == x.stride()
        for got, want in zip(fused, generic, strict=True):
            torch.testing.assert_close(got, want, equal_nan=True, **tol(dtype))


@requires_native
def test_one_node_path_fresh_module_is_relu():
    x = torch.randn(4, 16, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = DyReLUB(16)(x)
    assert type(y.grad_fn).__name__ == "_ResidualMaxBackward"
    assert torch.equal(y, torch.relu(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, (x > 0).to(x.dtype))


def _residual_max(x, z, scale, k):
    init = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, -0.5][: 2 * k], dtype=x.dtype)
    ranges = torch.tensor([1.0] * k + [0.5] * k, dtype=x.dtype)
    y = piecewise.residual_max(x, z, init, ranges, k, scale)
    assert y is not None
    return y


@requires_native
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_float64(k, with_scale, channels_last):
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    z = torch.randn(3, 4 * 2 * k, dtype=torch.float64)
    scale = torch.rand(3, 1, 3, 3, dtype=torch.float64) + 0.1 if with_scale else None
    inputs = (x.requires_grad_(), z.requires_grad_(), *((scale.requires_grad_(),) if with_scale else ()))

    def fn(x, z, *scale):
        return _residual_max(x, z, scale[0] if scale else None, k)

    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)  # a backward that builds a graph differentiates the ATen formulation


@requires_native
@pytest.mark.parametrize("layout", ["planes", "channels_last"])
def test_two_threads_give_the_one_thread_results(layout):
    """The kernels split their work over the intra-op threads (built with OpenMP); each sum stays in one thread,
    so the results do not depend on the thread count."""
    module = DyReLUB(32, zero_init_last=False)
    x = torch.randn(16, 32, 14, 14)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            leaf = x.clone().requires_grad_()
            module.zero_grad(set_to_none=True)
            y = module(leaf)
            y.backward(torch.ones_like(y))
            results.append([y, leaf.grad, *(p.grad for p in module.parameters())])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


@requires_native
def test_large_outputs_reuse_memory_nobody_holds(monkeypatch):
    monkeypatch.setenv("DYRELU_RECYCLE", "1")
    native.clear_recycled()
    module = DyReLUB(64, zero_init_last=False)
    x = torch.randn(32, 64, 14, 14).contiguous(memory_format=torch.channels_last)  # 1.6 MB
    with torch.no_grad():
        want = module(x)
        held = module(x)  # still held: the next output must not share its memory
        again = module(x)
        assert again.data_ptr() != held.data_ptr() and torch.equal(held, want) and torch.equal(again, want)
        pointer = again.data_ptr()
        del again
        assert module(x).data_ptr() == pointer  # free again: reused, and rewritten
        assert torch.equal(module(x), want)
        monkeypatch.setenv("DYRELU_RECYCLE", "0")
        fresh = [module(x) for _ in range(2)]
        assert all(t.data_ptr() != pointer for t in fresh)
    native.clear_recycled()
    assert native._recycled_bytes() == 0


@requires_native
def test_recycled_training_steps_match_fresh_memory(monkeypatch):
    def steps(recycle: str):
        monkeypatch.setenv("DYRELU_RECYCLE", recycle)
        torch.manual_seed(0)
        module = DyReLUB(64, zero_init_last=False)
        x = torch.randn(32, 64, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
        out = []
        for _ in range(3):
            x.grad = None
            module.zero_grad(set_to_none=True)
            y = module(x)
            (y * y).sum().backward()
            out += [y.detach().clone(), x.grad.clone(), module.fc2_weight.grad.clone()]
        return out

    for got, want in zip(steps("1"), steps("0"), strict=True):
        assert torch.equal(got, want)
    native.clear_recycled()


@pytest.mark.parametrize("layout", ["planes", "channels_last", "tokens"])
def test_attention_logits_gradcheck_float64(layout):
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "tokens":
        x = x.flatten(2).transpose(1, 2).contiguous().transpose(1, 2)
    weight = torch.randn(5, dtype=torch.float64)
    assert modules._AttentionLogits.applies(x)
    inputs = (x.requires_grad_(), weight.requires_grad_())
    assert gradcheck(modules._AttentionLogits.apply, inputs)
    assert gradgradcheck(modules._AttentionLogits.apply, inputs)


@pytest.mark.parametrize("layout", ["planes", "channels_last"])
def test_attention_logits_match_autograd(layout):
    x = torch.randn(8, 64, 16, 16)  # 2 MiB: the input gradient goes to recycled memory
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64)
    grad = torch.randn(8, 1, 256)
    grads = []
    for fn in (modules._AttentionLogits.apply, modules._attention_logits):
        leaves = (x.clone().requires_grad_(), weight.clone().requires_grad_())
        y = fn(*leaves)
        grads.append((y, *torch.autograd.grad(y, leaves, grad)))
    for got, want in zip(*grads, strict=True):
        assert torch.equal(got, want) and got.stride() == want.stride()
