"""torch.compile keeps the native kernel in its graphs (``torch.ops.dyrelu.piecewise_max``, issue 16 item 4):
no graph break, the eager values and gradients; exporters get the ATen formulation."""

from __future__ import annotations

import pytest
import torch

import dyrelu._native as native
from dyrelu import DyReLUB, DyReLUC, _piecewise
from dyrelu.functional import piecewise_max

pytestmark = pytest.mark.skipif(
    not hasattr(torch.compiler, "is_exporting"), reason="torch < 2.6 compiles the ATen formulation"
)


@pytest.fixture
def kernels():
    """The kernels, or a skip where they cannot be had; a failed build with a compiler present fails."""
    if native.native_ops() is None:
        if not native.native_enabled() or native.compiler() is None:
            pytest.skip("no native kernels here (no C++ compiler, or DYRELU_NATIVE=0)")
        pytest.fail(f"the native kernels failed to build with {native.compiler()}:\n{native.build_error()}")


@pytest.fixture
def calls(monkeypatch):
    """Counts of the eager implementations' runs (what the operators run), by name."""
    counts = {"forward": 0, "backward": 0}
    for name, real in (("forward", _piecewise._forward_eager), ("backward", _piecewise._backward_eager)):

        def spy(*args, _name=name, _real=real):
            counts[_name] += 1
            return _real(*args)

        monkeypatch.setattr(_piecewise, f"_{name}_eager", spy)
    return counts


def _trained(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def _step(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.detach().clone().requires_grad_()
    y = module(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *module.parameters()])
    return y.detach(), list(grads)


@pytest.mark.parametrize(
    ("cls", "memory_format"), [(DyReLUB, torch.contiguous_format), (DyReLUC, torch.channels_last)], ids=["B", "C-nhwc"]
)
def test_compiled_step_runs_the_kernel_with_no_graph_break(kernels, calls, cls, memory_format):
    torch._dynamo.reset()
    module = _trained(cls(8))
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=memory_format)
    compiled = torch.compile(module, fullgraph=True)  # a graph break raises
    y, grads = _step(compiled, x)
    assert calls == {"forward": 1, "backward": 1}  # the kernel's operators ran inside the compiled graphs
    want, want_grads = _step(module, x)
    torch.testing.assert_close(y, want)
    assert y.stride() == want.stride()
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_compile_can_take_the_aten_formulation(kernels, calls, monkeypatch):
    torch._dynamo.reset()
    monkeypatch.setattr(_piecewise, "COMPILE_WITH_KERNEL", False)
    module = _trained(DyReLUB(8))
    x = torch.randn(2, 8, 5, 6)
    y, grads = _step(torch.compile(module, fullgraph=True), x)
    assert calls == {"forward": 0, "backward": 0}
    want, want_grads = _step(module, x)
    torch.testing.assert_close(y, want)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_export_gets_the_aten_formulation(kernels):
    program = torch.export.export(_trained(DyReLUB(8)).eval(), (torch.randn(2, 8, 5, 6),))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("dyrelu" in target for target in targets), targets


def test_kernel_in_graph_only_while_compiling(kernels):
    x, a = torch.randn(2, 3, 4), torch.randn(2, 3, 2)
    assert not _piecewise.kernel_in_graph(x, a)


@pytest.mark.parametrize("k", [2, 3])
def test_operators_pass_opcheck(kernels, k):
    # schema, fake (shapes and strides), autograd registration and AOT dispatch of the kernel's operators
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
        a = torch.randn(2, 4, k, dtype=torch.float64, requires_grad=True)
        b = torch.randn(2, 4, k, dtype=torch.float64, requires_grad=True)
        scale = torch.rand(2, 1, 3, 5, dtype=torch.float64, requires_grad=True)
        for args in ((x, a, b, None), (x, a, b, scale)):
            torch.library.opcheck(torch.ops.dyrelu.piecewise_max.default, args)


def test_operator_matches_piecewise_max(kernels):
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 1, 2, dtype=torch.float64, requires_grad=True)  # DY-ReLU-A: shared over channels
    b = torch.randn(3, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(torch.ops.dyrelu.piecewise_max, (x, a, b, None))
    torch.testing.assert_close(torch.ops.dyrelu.piecewise_max(x, a, b, None), piecewise_max(x, a, b))
