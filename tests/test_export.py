"""torch.compile, torch.export and ONNX reproduce the eager DY-ReLU."""

from __future__ import annotations

import pytest
import torch

from dyrelu import DyReLUA, DyReLUB, DyReLUC

VARIANTS = [DyReLUA, DyReLUB, DyReLUC]


def _trained(cls, channels: int = 8, **kwargs):
    module = cls(channels, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.slow
@pytest.mark.parametrize("cls", VARIANTS)
def test_compile_fullgraph_forward_and_backward(cls):
    torch._dynamo.reset()
    module = _trained(cls)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    compiled = torch.compile(module, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    grad_compiled = x.grad.clone()
    param_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    x.grad = None
    expected = module(x)
    expected.square().sum().backward()
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(grad_compiled, x.grad)
    for got, p in zip(param_grads, module.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_export(cls, channels_last):
    module = _trained(cls, channels_last=channels_last).eval()
    x = torch.randn(2, 6, 5, 8) if channels_last else torch.randn(2, 8, 6, 5)
    program = torch.export.export(module, (x,))
    torch.testing.assert_close(program.module()(x), module(x))
    other = torch.randn(2, 6, 5, 8) if channels_last else torch.randn(2, 8, 6, 5)
    torch.testing.assert_close(program.module()(other), module(other))


@pytest.mark.slow
@pytest.mark.parametrize("cls", VARIANTS)
def test_onnx_matches_onnxruntime(cls, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = _trained(cls).eval()
    x = torch.randn(3, 8, 7, 7)
    with torch.no_grad():
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=18)
        expected = module(x).numpy()
    path = tmp_path / "dyrelu.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(got - expected).max() < 1e-5
