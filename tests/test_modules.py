from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

import dyrelu
from conftest import tol
from dyrelu import DyReLU, DyReLUA, DyReLUB, DyReLUC

VARIANTS = [DyReLUA, DyReLUB, DyReLUC]
SPATIAL_SHAPES = {0: (), 1: (5,), 2: (3, 4), 3: (2, 3, 2)}


def _perturb(module: nn.Module, scale: float = 0.5) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def _input(cls, spatial: int, channels: int = 6, batch: int = 2, channels_last: bool = False, dtype=torch.float32):
    shape = (batch, channels, *SPATIAL_SHAPES[spatial])
    x = torch.randn(shape, dtype=dtype)
    return x.movedim(1, -1).contiguous() if channels_last else x


def _params_gradcheck(module: nn.Module, x: torch.Tensor) -> bool:
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())

    def fn(x, *ps):
        return functional_call(module, dict(zip(names, ps, strict=True)), (x,))

    return gradcheck(fn, (x.requires_grad_(), *params), atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("spatial", [0, 1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(cls, k, spatial, channels_last):
    if cls is DyReLUC and spatial == 0:
        pytest.skip("DY-ReLU-C needs spatial positions")
    module = _perturb(cls(6, k=k, reduction=2, channels_last=channels_last, dtype=torch.float64))
    if cls is DyReLUC:
        module.tau = 1.0
    x = _input(cls, spatial, channels_last=channels_last, dtype=torch.float64)
    assert _params_gradcheck(module, x)


@pytest.mark.parametrize("cls", [DyReLUA, DyReLUB])
@pytest.mark.parametrize("spatial", [0, 1, 2, 3])
def test_fresh_module_is_exactly_relu(cls, spatial):
    x = _input(cls, spatial, channels=16, batch=4)
    assert torch.equal(cls(16)(x), torch.relu(x))
    assert torch.equal(cls()(x), torch.relu(x))  # lazy


def test_fresh_c_starts_at_relu_over_three():
    x = torch.randn(3, 8, 5, 7)
    torch.testing.assert_close(DyReLUC(8)(x), torch.relu(x) / 3)
    # gamma moves the starting point: gamma = HW gives pi = 1, i.e. ReLU
    torch.testing.assert_close(DyReLUC(8, gamma=35.0)(x), torch.relu(x))


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("train", [True, False])
def test_per_sample_independence(cls, train):
    # In training mode DY-ReLU-C's attention BatchNorm uses the batch's statistics: samples interact, as in
    # any BatchNorm; without it (or in eval mode) they do not.
    kwargs = {"spatial_norm": False} if cls is DyReLUC and train else {}
    module = _perturb(cls(8, **kwargs)).train(train)
    x = torch.randn(5, 8, 6, 6)
    full = module(x)
    for i in range(5):
        torch.testing.assert_close(module(x[i : i + 1]), full[i : i + 1])
    other = torch.cat([x[:1], 10 * torch.randn(4, 8, 6, 6)])
    torch.testing.assert_close(module(other)[:1], full[:1])


# -- the paper's Table 1: fixed coefficients give the static activations -----------------------------


def _fix_coefficients(module: nn.Module, a: torch.Tensor, b: torch.Tensor) -> nn.Module:
    """Make the hyper function output constant coefficients a, b of shape (C', K) (through its bias)."""
    residual_a = (a - torch.tensor(module.init_a)) / module.lambda_a
    residual_b = (b.expand_as(a) - torch.tensor(module.init_b)) / module.lambda_b
    residual = torch.cat([residual_a, residual_b], dim=-1)  # (C', 2K), in (-1, 1)
    with torch.no_grad():
        module.fc2_weight.zero_()
        module.fc2_bias.copy_(torch.logit((residual.flatten() + 1) / 2))  # inverse of 2σ-1
    return module


@pytest.mark.parametrize("cls", VARIANTS)
def test_table1_fixed_coefficients_relu(cls):
    module = _fix_coefficients(
        cls(4), torch.tensor([[1.0, 0.0]]).expand(4 if cls is not DyReLUA else 1, 2), torch.zeros(1, 2)
    )
    x = torch.randn(2, 4, 3, 3)
    expected = torch.relu(x) / 3 if cls is DyReLUC else torch.relu(x)
    torch.testing.assert_close(module(x), expected)


def test_table1_leaky_relu():
    a = torch.tensor([[1.0, 0.1]]).expand(4, 2)
    module = _fix_coefficients(DyReLUB(4, lambda_a=1.0), a, torch.zeros(4, 2))
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(module(x), nn.functional.leaky_relu(x, 0.1))
    # the same with a fixed slope in the initial coefficients: no hyper function needed
    torch.testing.assert_close(DyReLUA(4, init_a=(1.0, 0.1))(x), nn.functional.leaky_relu(x, 0.1))


def test_table1_prelu_per_channel():
    slopes = torch.tensor([0.1, 0.2, 0.3, 0.25])
    a = torch.stack([torch.ones(4), slopes], dim=-1)
    module = _fix_coefficients(DyReLUB(4), a, torch.zeros(4, 2))
    prelu = nn.PReLU(4)
    with torch.no_grad():
        prelu.weight.copy_(slopes)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(module(x), prelu(x))
    static = dyrelu.StaticPWL(4, init_a=(1.0, 0.0))
    with torch.no_grad():
        static.a.copy_(a)
    torch.testing.assert_close(static(x), prelu(x))


def test_table1_k1_without_intercept_is_se_channel_scale():
    module = _perturb(DyReLUB(8, k=1, init_a=(1.0,), lambda_a=1.0, lambda_b=0.0))
    x = torch.randn(2, 8, 4, 4)
    z = nn.functional.linear(
        torch.relu(nn.functional.linear(x.mean((2, 3)), module.fc1_weight, module.fc1_bias)),
        module.fc2_weight[0::2],  # per channel: K slopes then K intercepts
        module.fc2_bias[0::2],
    )
    se = x * (2 * torch.sigmoid(z))[:, :, None, None]  # a = 1 + (2σ(z) - 1)
    torch.testing.assert_close(module(x), se)


# -- dtypes, layouts, batches --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(cls, dtype):
    module = _perturb(cls(8))
    x = torch.randn(2, 8, 5, 5)
    expected = module(x)
    # float32 parameters with reduced-precision input, and a module cast to the dtype
    torch.testing.assert_close(module(x.to(dtype)).float(), expected, **tol(dtype))
    out = module.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, **tol(dtype))


@pytest.mark.parametrize("cls", VARIANTS)
def test_layouts_and_memory_format(cls):
    module = _perturb(cls(8))
    x = torch.randn(2, 8, 5, 6)
    expected = module(x)
    x_cl = x.to(memory_format=torch.channels_last)
    out = module(x_cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
    # non-contiguous input (a strided slice)
    wide = torch.randn(2, 8, 5, 12)
    out = module(wide[..., ::2])
    torch.testing.assert_close(out, module(wide[..., ::2].contiguous()))
    # channels-last tokens (N, L, C) equal channels-first (N, C, L)
    tokens = _perturb(cls(8, channels_last=True))
    tokens.load_state_dict(module.state_dict())
    seq = torch.randn(2, 7, 8)
    out = tokens(seq)
    assert out.shape == seq.shape and out.is_contiguous()
    torch.testing.assert_close(out, module(seq.transpose(1, 2)).transpose(1, 2))


@pytest.mark.parametrize("cls", VARIANTS)
@pytest.mark.parametrize("batch", [0, 1])
def test_small_batches(cls, batch):
    module = _perturb(cls(8))
    x = torch.randn(batch, 8, 4, 4, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_saved_bytes_at_most_1_1x_input():
    module = DyReLUB(64)
    x = torch.randn(32, 64, 32, 32, requires_grad=True)
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    saved = sum(storages.values())
    assert saved <= 1.1 * x.numel() * x.element_size(), f"saved {saved} bytes for an input of {x.nbytes}"


# -- construction, lazy channels, state ----------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
def test_lazy_channels_and_state_dict(cls):
    lazy = cls()
    assert lazy.channels is None and lazy.has_uninitialized_params()
    x = torch.randn(2, 12, 4, 4)
    lazy(x)
    assert lazy.channels == 12 and not lazy.has_uninitialized_params()
    trained = _perturb(cls(12))
    fresh = cls()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.channels == 12
    torch.testing.assert_close(fresh(x), trained(x))


@pytest.mark.parametrize("cls", VARIANTS)
def test_lazy_channels_last_tokens(cls):
    lazy = cls(channels_last=True)
    assert lazy(torch.randn(2, 9, 5)).shape == (2, 9, 5)
    assert lazy.channels == 5


def test_parameter_shapes_follow_the_paper():
    c, k, r = 64, 2, 8
    a, b, cc = DyReLUA(c, k=k, reduction=r), DyReLUB(c, k=k, reduction=r), DyReLUC(c, k=k, reduction=r)
    assert a.fc1_weight.shape == (c // r, c) and a.fc2_weight.shape == (2 * k, c // r)
    assert b.fc2_weight.shape == (2 * k * c, c // r)
    assert cc.fc2_weight.shape == (2 * k * c, c // r) and cc.spatial_weight.shape == (c,)
    assert torch.count_nonzero(b.fc2_weight) == 0 and torch.count_nonzero(b.fc2_bias) == 0


def test_extra_repr_and_front():
    text = repr(DyReLUC(16, k=3, reduction=4, tau=5.0))
    for part in ("16", "k=3", "reduction=4", "lambda_a=1.0", "lambda_b=0.5", "tau=5.0", "gamma=None"):
        assert part in text
    assert isinstance(DyReLU(4, variant="c"), DyReLUC)
    assert isinstance(DyReLU(4), DyReLUB)
    assert DyReLUB(4, inplace=True)(torch.ones(1, 4)).shape == (1, 4)


def test_tau_is_a_schedulable_attribute():
    module = _perturb(DyReLUC(4))
    x = torch.randn(1, 4, 6, 6)
    module.tau = 1000.0
    flat = module(x)
    module.tau = 0.1
    assert not torch.allclose(flat, module(x))


def test_tau_is_state():
    module = _perturb(DyReLUC(4))
    module.tau = 2.5  # annealed by a schedule
    assert isinstance(module.tau, float)
    state = module.state_dict()
    assert state["temperature"].item() == 2.5
    x = torch.randn(2, 4, 5, 5)
    for fresh in (DyReLUC(4), DyReLUC()):  # eager and lazy
        fresh.load_state_dict(state)
        assert fresh.tau == 2.5 and fresh.channels == 4
        torch.testing.assert_close(fresh(x), module(x))
    # A state dict from before τ was state (dyrelu 0.1) loads strictly, keeping the module's own τ ...
    old = {k: v for k, v in state.items() if k != "temperature"}
    kept = nn.Sequential(DyReLUC(4, tau=7.0))
    kept.load_state_dict({f"0.{k}": v for k, v in old.items()})
    assert kept[0].tau == 7.0
    torch.testing.assert_close(kept[0].fc2_weight, module.fc2_weight)
    # ... but any other missing entry is still an error.
    with pytest.raises(RuntimeError, match=r"Missing key.*spatial_weight"):
        DyReLUC(4).load_state_dict({k: v for k, v in state.items() if k != "spatial_weight"})
    with pytest.raises(ValueError, match=r"positive temperature tau, got 0\.0"):
        module.tau = 0.0
    assert module.tau == 2.5
    with torch.device("meta"):
        assert "tau=?" in repr(DyReLUC(4))  # a meta tensor has no value; printing the model still works


def test_changing_tau_does_not_recompile():
    dynamo_testing = pytest.importorskip("torch._dynamo.testing")
    counter = dynamo_testing.CompileCounter()
    module = _perturb(DyReLUC(4))
    compiled = torch.compile(module, backend=counter)
    x = torch.randn(2, 4, 5, 5)
    for tau in (10.0, 5.0, 1.0):
        module.tau = tau
        torch.testing.assert_close(compiled(x), module(x))
    assert counter.frame_count == 1


# -- DyReLU: the public base class ---------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "cls"), [("A", DyReLUA), ("b", DyReLUB), ("C", DyReLUC)])
def test_dyrelu_builds_the_variant_once(variant, cls, monkeypatch):
    calls = []
    init = cls.__init__

    def counting_init(self, *args, **kwargs):
        calls.append((args, kwargs))
        init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting_init)
    module = DyReLU(4, variant=variant, k=3)
    assert type(module) is cls and isinstance(module, DyReLU) and module.k == 3
    assert calls == [((4,), {"k": 3})]  # one __init__, without the variant argument


def test_dyrelu_is_the_public_base_class():
    assert all(issubclass(cls, DyReLU) for cls in VARIANTS)
    assert type(DyReLU(4)) is DyReLUB  # the default variant
    assert DyReLU(4, variant="c", tau=2.0, gamma=3.0).tau == 2.0
    with pytest.raises(TypeError, match="variant"):
        DyReLUB(4, variant="B")  # only DyReLU itself takes a variant

    class DoubledDyReLU(DyReLU):
        def forward(self, x, context=None):
            return 2 * super().forward(x, context)

    act = DoubledDyReLU(4, k=3)
    x = torch.randn(2, 4, 3, 3)
    assert isinstance(act, DyReLU) and act.k == 3 and act.fc2_weight.shape == (2 * 3 * 4, 1)
    torch.testing.assert_close(act(x), 2 * torch.relu(x))


def test_signatures_name_every_argument():
    shared = {name: p for name, p in inspect.signature(DyReLU.__init__).parameters.items() if name != "self"}
    for cls in VARIANTS:
        params = inspect.signature(cls).parameters
        assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values()), cls
        assert {name: params[name].default for name in shared} == {name: p.default for name, p in shared.items()}
    assert set(inspect.signature(DyReLUC).parameters) == {*shared, "tau", "gamma", "spatial_norm"}
    front = inspect.signature(DyReLU).parameters
    assert front["variant"].default == "B" and "k" in front and "self" not in front


@pytest.mark.parametrize("cls", VARIANTS)
def test_pickle_deepcopy_and_torch_save(cls, tmp_path):
    module = _perturb(cls(6))
    if cls is DyReLUC:
        module.tau = 2.5
    x = torch.randn(2, 6, 4, 4)
    expected = module(x)
    torch.save(module, tmp_path / "module.pt")
    copies = [
        copy.deepcopy(module),
        pickle.loads(pickle.dumps(module)),
        torch.load(tmp_path / "module.pt", weights_only=False),
    ]
    for other in copies:
        assert type(other) is cls
        torch.testing.assert_close(other(x), expected)
        if cls is DyReLUC:
            assert other.tau == 2.5
    lazy = copy.deepcopy(cls())
    assert type(lazy) is cls and lazy(x).shape == x.shape and lazy.channels == 6


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DyReLUB(4, k=0), "k .* >= 1, got 0"),
        (lambda: DyReLUB(4, reduction=0), "positive integer, got 0"),
        (lambda: DyReLUB(4, reduction=-2), "positive integer, got -2"),
        (lambda: DyReLUB(0), "channels .* got 0"),
        (lambda: DyReLUB(4, k=3, init_a=(1.0, 0.0)), "expected 3 values in init_a"),
        (lambda: DyReLUC(4, tau=0.0), "positive temperature tau, got 0.0"),
        (lambda: DyReLU(4, variant="D"), r"unknown DY-ReLU variant 'D', expected one of \['A', 'B', 'C'\]"),
    ],
)
def test_bad_configuration(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_input():
    with pytest.raises(ValueError, match="expected 64 channels at dim 1, got 32"):
        DyReLUB(64)(torch.randn(2, 32, 4, 4))
    with pytest.raises(ValueError, match="expected 64 channels at the last dim, got 32"):
        DyReLUB(64, channels_last=True)(torch.randn(2, 4, 32))
    with pytest.raises(ValueError, match="needs spatial positions"):
        DyReLUC(8)(torch.randn(2, 8))
    with pytest.raises(ValueError, match="at most 3 spatial dims"):
        DyReLUB(2)(torch.randn(1, 2, 1, 1, 1, 1))


@pytest.mark.parametrize("cls", VARIANTS)
def test_nan_propagates(cls):
    x = torch.randn(2, 4, 3, 3)
    x[0, 1, 1, 1] = float("nan")
    y = cls(4)(x)
    assert torch.isnan(y[0, 1, 1, 1])
    if cls is DyReLUC:  # in training mode the attention's BatchNorm spreads it through the batch's statistics
        assert torch.isnan(y[1]).all()
        y = cls(4, spatial_norm=False)(x)
    assert not torch.isnan(y[1]).any()  # other samples are unaffected
    y = cls(4).eval()(x)  # in eval mode too (the running statistics)
    assert torch.isnan(y[0, 1, 1, 1]) and not torch.isnan(y[1]).any()


# -- as a drop-in act_layer ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
def test_as_timm_act_layer(cls):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5, act_layer=cls)
    x = torch.randn(2, 3, 32, 32)
    model(x)  # materialises the lazy activations
    acts = [m for m in model.modules() if isinstance(m, cls)]
    assert acts and all(m.channels is not None for m in acts)
    model(x).sum().backward()
    assert all(m.fc2_weight.grad is not None for m in acts)


def test_as_torchvision_activation_layer():
    ops = pytest.importorskip("torchvision.ops")
    block = ops.Conv2dNormActivation(3, 16, activation_layer=DyReLUB)
    assert block(torch.randn(2, 3, 8, 8)).shape == (2, 16, 8, 8)
