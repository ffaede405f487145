"""The fused native CPU kernels (dyrelu._native) against the ATen implementation they replace."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

import dyrelu._native as native
from conftest import tol
from dyrelu import DyReLUB
from dyrelu.functional import piecewise_max


def _check_native() -> None:
    """Skip where the kernels cannot be had (no C++ compiler, ``DYRELU_NATIVE=0``); fail where a compiler is
    present and the build failed: CI has a compiler, and a broken build must not pass as a skip."""
    if native.native_ops() is not None:
        return
    if not native.native_enabled():
        pytest.skip("the native kernels are switched off (DYRELU_NATIVE=0)")
    if native.compiler() is None:
        pytest.skip("no C++ compiler here: the native kernels cannot be built")
    pytest.fail(
        f"the native kernels failed to build although a C++ compiler is present ({native.compiler()}):\n"
        f"{native.build_error()}"
    )


@pytest.fixture
def native_required():
    _check_native()


requires_native = pytest.mark.usefixtures("native_required")


def _grads(monkeypatch, use_native, x, a, b, scale):
    monkeypatch.setenv("DYRELU_NATIVE", "1" if use_native else "0")
    leaves = [t.detach().clone().requires_grad_() for t in (x, a, b) + ((scale,) if scale is not None else ())]
    y = piecewise_max(*leaves[:3], leaves[3] if scale is not None else None)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    return y, torch.autograd.grad(y, leaves, g)


_LAYOUTS = {
    "planes": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "tokens": lambda t: t.flatten(2).transpose(1, 2).contiguous().transpose(1, 2),  # (N, C, L) view of (N, L, C)
}


@requires_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_native_matches_aten(monkeypatch, dtype, k, layout):
    for shared_channels, shared_samples, with_scale in itertools.product([False, True], repeat=3):
        x = _LAYOUTS[layout](torch.randn(4, 6, 5, 7, dtype=dtype))
        a = torch.randn(1 if shared_samples else 4, 1 if shared_channels else 6, k, dtype=dtype)
        b = torch.randn_like(a)
        scale = torch.rand((4, 1, *x.shape[2:]), dtype=dtype) if with_scale else None
        y_native, g_native = _grads(monkeypatch, True, x, a, b, scale)
        y_aten, g_aten = _grads(monkeypatch, False, x, a, b, scale)
        assert y_native.stride() == y_aten.stride()
        torch.testing.assert_close(y_native, y_aten, **tol(dtype))
        for got, want in zip(g_native, g_aten, strict=True):
            torch.testing.assert_close(got, want, atol=10 * tol(dtype)["atol"], rtol=10 * tol(dtype)["rtol"])


@requires_native
@pytest.mark.parametrize("shape", [(5, 6), (3, 5, 1, 1), (2, 3, 4)])
def test_native_small_and_flat_inputs(monkeypatch, shape):
    x = torch.randn(shape, dtype=torch.float64)
    a, b = (
        torch.randn(shape[0], shape[1], 2, dtype=torch.float64),
        torch.randn(shape[0], shape[1], 2, dtype=torch.float64),
    )
    y_native, g_native = _grads(monkeypatch, True, x, a, b, None)
    y_aten, g_aten = _grads(monkeypatch, False, x, a, b, None)
    torch.testing.assert_close(y_native, y_aten)
    for got, want in zip(g_native, g_aten, strict=True):
        torch.testing.assert_close(got, want)


@requires_native
@pytest.mark.parametrize("k", [2, 3])
def test_native_gradcheck(monkeypatch, k):
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2, 3, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, k, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(2, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(piecewise_max, (x, a, b, scale))
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(piecewise_max, (xl, a, b, scale))


@requires_native
def test_native_ties_and_nan(monkeypatch):
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    relu_a = torch.tensor([[[1.0, 0.0]]]).expand(1, 3, 2).contiguous()
    x = torch.tensor([[[0.0, -1.0, 2.0, float("nan")]] * 3]).requires_grad_()
    y = piecewise_max(x, relu_a, torch.zeros_like(relu_a))
    (grad,) = torch.autograd.grad(y.nansum(), x)
    assert torch.equal(y[:, :, :3], torch.relu(x[:, :, :3])) and y[:, :, 3].isnan().all()
    assert grad[0, :, :3].tolist() == [[0.0, 0.0, 1.0]] * 3  # ReLU's gradient at 0 is 0


@requires_native
def test_module_uses_native_kernel_and_agrees(monkeypatch):
    act = DyReLUB(8)
    x = torch.randn(4, 8, 6, 6)
    monkeypatch.setenv("DYRELU_NATIVE", "0")
    want = act(x)
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    calls = []
    real = native._forward  # the kernel call of both native.forward and the module's one-node path
    monkeypatch.setattr(native, "_forward", lambda *args: calls.append(1) or real(*args))
    torch.testing.assert_close(act(x), want)
    assert calls


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    monkeypatch.setattr(native, "_STATE", {"tried": False, "ops": None, "error": None})

    def broken():
        raise RuntimeError("no compiler\nmore detail")

    monkeypatch.setattr(native, "_build", broken)
    x, a = torch.randn(2, 3, 4), torch.randn(2, 3, 2)
    with pytest.warns(RuntimeWarning, match=r"could not be built \(no compiler\)"):
        y = piecewise_max(x, a, torch.zeros_like(a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        piecewise_max(x, a, torch.zeros_like(a))  # no second warning, no second attempt
    torch.testing.assert_close(y, torch.maximum(x * a[..., :1], x * a[..., 1:]))


@requires_native
def test_more_pieces_than_the_kernels_take_use_aten(monkeypatch):
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    x, a = torch.randn(2, 3, 4), torch.randn(2, 3, 5)
    assert native.forward(x, a, a, None) is None
    assert native.forward(x.half(), a[..., :2].half(), a[..., :2].half(), None) is None  # float16: ATen too
    torch.testing.assert_close(piecewise_max(x, a, a), (x.unsqueeze(-1) * a.unsqueeze(2) + a.unsqueeze(2)).amax(-1))


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("DYRELU_NATIVE", "0")
    assert native.native_ops() is None
    assert native.forward(torch.randn(2, 3, 4), torch.randn(2, 3, 2), torch.randn(2, 3, 2), None) is None


def test_first_build_is_announced_and_a_cached_one_is_not(monkeypatch, tmp_path, caplog):
    import contextlib
    import logging

    loads = []

    class FakeExtension:
        @staticmethod
        def _get_build_directory(name, verbose):
            return str(tmp_path)

        @staticmethod
        def load(**kwargs):
            loads.append(kwargs)

    monkeypatch.setattr(native, "_build_environment", lambda: contextlib.nullcontext(FakeExtension))
    with caplog.at_level(logging.WARNING, logger="dyrelu"):
        native._build()
    assert "building the native CPU kernels" in caplog.text and len(loads) == 1
    assert loads[0]["is_python_module"] is False and loads[0]["sources"][0].endswith("piecewise_max.cpp")
    caplog.clear()
    (tmp_path / f"{loads[0]['name']}.so").touch()
    with caplog.at_level(logging.WARNING, logger="dyrelu"):
        native._build()
    assert caplog.text == "" and len(loads) == 2


@requires_native
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_native_bfloat16_computes_in_float(monkeypatch, layout):
    dtype = torch.bfloat16
    x = _LAYOUTS[layout](torch.randn(4, 6, 5, 7).to(dtype))
    a = torch.randn(4, 6, 3).to(dtype)
    b = torch.randn_like(a)
    scale = torch.rand(4, 1, *x.shape[2:]).to(dtype)
    y, grads = _grads(monkeypatch, True, x, a, b, scale)
    assert y.dtype == dtype and y.stride() == x.stride() and all(g.dtype == dtype for g in grads)
    # the float64 computation on the same (rounded) values; the kernels round only their outputs
    y64, grads64 = _grads(monkeypatch, False, x.double(), a.double(), b.double(), scale.double())
    torch.testing.assert_close(y.double(), y64, **tol(dtype))
    for got, want in zip(grads, grads64, strict=True):
        torch.testing.assert_close(got.double(), want, atol=0.1, rtol=2e-2)


def _edge_coefficients(n: int, c: int, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pieces, sample 0 (channels 0-4, or samples 0-4 with one function for all channels) with special
    ones: ReLU's (a zero slope only with K = 1), all slopes zero, equal slopes, one zero slope, two identical
    pieces."""
    a, b = torch.randn(n, c, k), torch.randn(n, c, k)
    special = (lambda i: (i, 0)) if c == 1 else (lambda i: (0, i))
    a[special(0)], a[special(1)], a[special(2)] = 0.0, 0.0, 0.5
    a[special(0)][0] = 1.0 if k > 1 else 0.0
    if k > 1:
        a[special(3)][1] = 0.0
        a[special(4)][1], b[special(4)][1] = a[special(4)][0], b[special(4)][0]
    return a.to(dtype), b.to(dtype)


@requires_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_native_matches_aten_at_edge_values(monkeypatch, dtype, k, layout):
    inf, nan = float("inf"), float("nan")
    for shared_channels, with_scale in itertools.product([False, True], repeat=2):
        x = torch.randn(6, 6, 5, 7)
        x[:, :, 0, :3] = torch.tensor([inf, -inf, nan])
        x[1, 2, 2, 2], x[2, 3, 4, 4] = inf, -inf
        x = _LAYOUTS[layout](x.to(dtype))
        a, b = _edge_coefficients(6, 1 if shared_channels else 6, k, dtype)
        scale = None
        if with_scale:  # DY-ReLU-C's attention, zero at some positions
            scale = torch.rand((6, 1, *x.shape[2:])).to(dtype)
            scale.view(6, -1)[:, :4] = 0.0
        y_native, g_native = _grads(monkeypatch, True, x, a, b, scale)
        close = {"atol": 10 * tol(dtype)["atol"], "rtol": 10 * tol(dtype)["rtol"], "equal_nan": True}
        if dtype == torch.bfloat16:  # the kernel computes in float: compare with ATen in float64 (as above)
            y_native, g_native = y_native.double(), [g.double() for g in g_native]
            x, a, b, scale = (None if t is None else t.double() for t in (x, a, b, scale))
            close = {"atol": 0.1, "rtol": 2e-2, "equal_nan": True}
        y_aten, g_aten = _grads(monkeypatch, False, x, a, b, scale)
        torch.testing.assert_close(y_native, y_aten, **close)
        grad_x, grad_a, grad_b, *grad_scale = g_native
        want_x, want_a, want_b, *want_scale = g_aten
        for got, want in [(grad_x, want_x), (grad_b, want_b), *zip(grad_scale, want_scale, strict=True)]:
            torch.testing.assert_close(got, want, **close)
        # d(a x)/da = x: the slopes' gradients are not finite where x is not; the others agree
        assert torch.equal(grad_a.isfinite(), want_a.isfinite())
        torch.testing.assert_close(grad_a[grad_a.isfinite()], want_a[want_a.isfinite()], **close)


@requires_native
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_native_relu_pieces_at_infinity(monkeypatch, layout):
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    relu_a = torch.tensor([[[1.0, 0.0]]]).expand(1, 3, 2).contiguous()
    x = _LAYOUTS[layout](torch.tensor([[[[float("inf"), float("-inf"), float("nan"), 2.0**100]]] * 3]))
    calls = []
    real = native.forward
    monkeypatch.setattr(native, "forward", lambda *args: calls.append(1) or real(*args))
    x.requires_grad_()
    y = piecewise_max(x, relu_a, torch.zeros_like(relu_a))
    (grad,) = torch.autograd.grad(y.sum(), x)
    y, grad = y.reshape(3, 4), grad.reshape(3, 4)  # (channels, positions) in every layout
    assert calls  # the kernel, not the ATen path
    assert y[:, [0, 1, 3]].tolist() == [[float("inf"), 0.0, 2.0**100]] * 3 and y[:, 2].isnan().all()
    assert grad.tolist() == [[1.0, 0.0, 1.0, 1.0]] * 3  # torch.relu's, NaN included


def _failed_build(monkeypatch, compiler):
    monkeypatch.setenv("DYRELU_NATIVE", "1")
    monkeypatch.setattr(native, "_STATE", {"tried": True, "ops": None, "error": "piecewise_max.cpp:1: error: oops"})
    monkeypatch.setattr(native, "compiler", lambda: compiler)


def test_a_failed_build_fails_the_kernel_tests_where_a_compiler_is_present(monkeypatch):
    _failed_build(monkeypatch, "/usr/bin/c++")
    with pytest.raises(pytest.fail.Exception, match=r"failed to build although a C\+\+ compiler is present"):
        _check_native()
    _failed_build(monkeypatch, None)
    with pytest.raises(pytest.skip.Exception, match="no C"):
        _check_native()


def test_build_kernels_command(monkeypatch, capsys):
    from dyrelu.cli import main

    _failed_build(monkeypatch, "/usr/bin/c++")
    assert main(["build-kernels"]) == 1
    assert "failed to build with /usr/bin/c++" in capsys.readouterr().err
    _failed_build(monkeypatch, None)
    assert main(["build-kernels"]) == 0
    assert "no C++ compiler found" in capsys.readouterr().out
    monkeypatch.setenv("DYRELU_NATIVE", "0")
    assert main(["build-kernels"]) == 0
    assert "switched off" in capsys.readouterr().out


@requires_native
def test_build_kernels_command_when_they_build(capsys):
    from dyrelu.cli import main

    assert main(["build-kernels"]) == 0
    assert "ready" in capsys.readouterr().out


@pytest.mark.parametrize("use_native", ["1", "0"])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_allocates_on_the_input_device_whatever_the_default_device(monkeypatch, use_native, layout):
    # the kernel's outputs used to follow torch.set_default_device (a meta tensor here: an error)
    if use_native == "1":
        _check_native()
    monkeypatch.setenv("DYRELU_NATIVE", use_native)
    leaves = [_LAYOUTS[layout](torch.randn(2, 6, 4, 5)), torch.randn(2, 6, 2), torch.randn(2, 6, 2)]
    leaves = [t.requires_grad_() for t in [*leaves, torch.rand(2, 1, *leaves[0].shape[2:])]]
    g = torch.randn(leaves[0].shape)
    want = piecewise_max(*leaves)
    want_grads = torch.autograd.grad(want, leaves, g)
    with torch.device("meta"):
        got = piecewise_max(*leaves)
        grads = torch.autograd.grad(got, leaves, g)
    assert got.device.type == "cpu" and all(t.device.type == "cpu" for t in grads)
    torch.testing.assert_close(got, want)
    for t, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(t, w)
