"""Tests of dyrelu.models: every model with every activation, placement, starting as ReLU, stems, registry."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.nn.parameter import UninitializedParameter
from torchvision.ops import SqueezeExcitation

import dyrelu
from dyrelu import DyReLUA, DyReLUB
from dyrelu.models import _registry, create_model, list_models, register_model
from dyrelu.models.mobilenetv2 import MobileNetV2
from dyrelu.models.mobilenetv3 import MobileNetV3
from dyrelu.models.resnet import ResNet

MODELS = list_models()
ACTS = dyrelu.list_acts()
SMALL_MODELS = ("resnet10", "mobilenetv2_035", "mobilenetv3_small")
KEY_ACTS = ("relu", "dyrelu_b", "dyrelu_c")


pytestmark = pytest.mark.usefixtures("one_thread")


def _acts(model: nn.Module, cls: type[nn.Module] = DyReLUB) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, cls)]


def _build_and_step(name: str, act: str, in_chans: int, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, act=act, num_classes=10, in_chans=in_chans, small_input=True)
    assert not any(isinstance(p, UninitializedParameter) for p in model.parameters()), "lazy parameters left"
    out = model(torch.randn(2, in_chans, size, size))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


# Every model with the key activations (1×28×28, Fashion-MNIST's shape), every activation with the small
# models (3×32×32, CIFAR's); the remaining pairs of the full cross product are marked slow.
_FAST = sorted(set(itertools.product(MODELS, KEY_ACTS)) | set(itertools.product(SMALL_MODELS, ACTS)))
_SLOW = sorted(set(itertools.product(MODELS, ACTS)) - set(_FAST))


@pytest.mark.parametrize(("name", "act"), _FAST)
def test_builds_and_trains(name: str, act: str) -> None:
    _build_and_step(name, act, in_chans=1 if act in KEY_ACTS else 3, size=28 if act in KEY_ACTS else 32)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "act"), _SLOW)
def test_builds_and_trains_cross_product(name: str, act: str) -> None:
    _build_and_step(name, act, in_chans=3, size=32)


@pytest.mark.parametrize("name", ["mobilenetv2_035", "resnet10", "resnet50", "mobilenetv3_small"])
@pytest.mark.parametrize("act", ["dyrelu_a", "dyrelu_b"])
def test_fresh_dyrelu_model_equals_relu_model(name: str, act: str) -> None:
    torch.manual_seed(0)
    relu_model = create_model(name, act="relu", num_classes=10, small_input=True).eval()
    dy_model = create_model(name, act=act, num_classes=10, small_input=True, zero_init_last=True).eval()
    result = dy_model.load_state_dict(relu_model.state_dict(), strict=False)
    assert result.unexpected_keys == []
    act_cls = DyReLUA if act == "dyrelu_a" else DyReLUB
    act_names = {n for n, m in dy_model.named_modules() if isinstance(m, act_cls)}
    assert result.missing_keys and all(key.rsplit(".", 1)[0] in act_names for key in result.missing_keys)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dy_model(x), relu_model(x), rtol=0, atol=0)


def test_mobilenetv2_placement() -> None:
    model = create_model("mobilenetv2_100", act="dyrelu_b")
    assert isinstance(model, MobileNetV2)
    blocks = [m for m in model.features if isinstance(m, tvm.mobilenetv2.InvertedResidual)]
    assert len(blocks) == 17
    for i, block in enumerate(blocks):
        assert len(_acts(block)) == (1 if i == 0 else 2), f"block {i}"
        # The projection stays linear: 1×1 conv then BN, no activation.
        assert isinstance(block.conv[-2], nn.Conv2d) and block.conv[-2].kernel_size == (1, 1)
        assert isinstance(block.conv[-1], nn.BatchNorm2d)
    assert isinstance(model.features[0][2], DyReLUB)  # stem
    assert isinstance(model.features[-1][2], DyReLUB) and model.features[-1][2].channels == 1280  # last 1×1 conv
    assert len(_acts(model)) == 35
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    for m in model.modules():
        if isinstance(m, tvm.mobilenetv2.Conv2dNormActivation):
            assert m[2].channels == m[1].num_features


@pytest.mark.parametrize(("name", "sites"), [("resnet18", 1 + 8 * 2), ("resnet50", 1 + 16 * 3)])
def test_resnet_each_activation_called_once(name: str, sites: int) -> None:
    model = create_model(name, act="dyrelu_b", num_classes=10, small_input=True)
    assert isinstance(model, ResNet)
    acts = _acts(model)
    assert len(acts) == sites == len({id(m) for m in acts})
    calls = dict.fromkeys(map(id, acts), 0)
    for m in acts:
        m.register_forward_pre_hook(lambda mod, args: calls.__setitem__(id(mod), calls[id(mod)] + 1))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 28, 28))
    assert set(calls.values()) == {1}
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_resnet_bottleneck_channels() -> None:
    block = create_model("resnet50", act="dyrelu_b").layer1[0]
    assert (block.act1.channels, block.act2.channels, block.act3.channels) == (64, 64, 256)


@pytest.mark.parametrize(
    ("name", "sites"), [("mobilenetv3_small", 2 + 11 * 2 - 1), ("mobilenetv3_large", 2 + 15 * 2 - 1)]
)
def test_mobilenetv3_placement(name: str, sites: int) -> None:
    model = create_model(name, act="dyrelu_b")
    assert isinstance(model, MobileNetV3)
    # Every block has an expansion conv except the first (expansion 1); stem and last conv count 2.
    assert len(_acts(model)) == sites
    se = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert se and all(isinstance(m.activation, nn.ReLU) and isinstance(m.scale_activation, nn.Hardsigmoid) for m in se)
    se_parts = {id(m.activation) for m in se}
    assert not any(isinstance(m, (nn.ReLU, nn.Hardswish)) and id(m) not in se_parts for m in model.features.modules())
    assert isinstance(model.classifier[1], nn.Hardswish)  # acts on the pooled vector


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("mobilenetv2_035", lambda: tvm.mobilenet_v2(width_mult=0.35)),
        ("resnet18", tvm.resnet18),
        ("mobilenetv3_small", tvm.mobilenet_v3_small),
    ],
)
def test_act_none_is_torchvision(name: str, reference) -> None:
    torch.manual_seed(0)
    model = create_model(name, act=None).eval()
    torch.manual_seed(0)
    ref = reference().eval()
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_mobilenetv2_relu6_is_torchvision() -> None:
    model = create_model("mobilenetv2_035", act="relu6")
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 35
    assert not any(type(m) is nn.ReLU for m in model.modules())


@pytest.mark.parametrize(
    ("name", "features"),
    [
        ("resnet10", lambda m: m.layer4),
        ("mobilenetv2_035", lambda m: m.features),
        ("mobilenetv3_small", lambda m: m.features),
        ("mobilenetv3_large", lambda m: m.features),
    ],
)
@pytest.mark.parametrize(("small_input", "size", "expected"), [(True, 32, 4), (True, 28, 4), (False, 64, 2)])
def test_total_stride(name: str, features, small_input: bool, size: int, expected: int) -> None:
    model = create_model(name, num_classes=10, in_chans=1, small_input=small_input).eval()
    shapes = []
    features(model).register_forward_hook(lambda mod, args, out: shapes.append(out.shape[-2:]))
    with torch.no_grad():
        model(torch.randn(1, 1, size, size))
    assert shapes == [(expected, expected)]


def test_small_input_stems() -> None:
    resnet = create_model("resnet10", in_chans=1, small_input=True)
    assert (resnet.conv1.in_channels, resnet.conv1.kernel_size, resnet.conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(resnet.maxpool, nn.Identity)
    mnv2 = create_model("mobilenetv2_035", in_chans=1, small_input=True)
    assert (mnv2.features[0][0].in_channels, mnv2.features[0][0].stride) == (1, (1, 1))
    assert create_model("resnet10", in_chans=4).conv1.stride == (2, 2)


def test_act_kwargs_reach_every_activation() -> None:
    model = create_model("resnet10", act="dyrelu_b", k=3, reduction=4)
    acts = _acts(model)
    assert len(acts) == 9 and all(m.k == 3 and m.reduction == 4 for m in acts)


def test_list_models() -> None:
    expected = ["mobilenetv2_025", "mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100"]
    expected += ["mobilenetv3_large", "mobilenetv3_small", "resnet10", "resnet18", "resnet34", "resnet50"]
    assert list_models() == expected
    assert list_models("mobilenetv3*") == ["mobilenetv3_large", "mobilenetv3_small"]


def test_name_is_case_insensitive() -> None:
    assert isinstance(create_model("ResNet10", num_classes=3), ResNet)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet11', expected one of .*resnet10, resnet18"):
        create_model("resnet11")
    with pytest.raises(ValueError, match=r"unknown activation 'dyrelu_d', expected one of .*dyrelu_c"):
        create_model("resnet10", act="dyrelu_d")
    with pytest.raises(ValueError, match="act=None"):
        create_model("resnet10", act=None, k=3)
    with pytest.raises(ValueError, match="num_classes to be a positive integer, got 0"):
        create_model("resnet10", num_classes=0)
    with pytest.raises(ValueError, match=r"in_chans to be a positive integer, got 1\.5"):
        create_model("resnet10", in_chans=1.5)
    with pytest.raises(ValueError, match="unknown MobileNetV3 arch 'tiny'"):
        MobileNetV3("tiny")


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    @register_model
    def tiny_net(act_layer=None, num_classes=1000, in_chans=3, small_input=False) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3), act_layer(4), nn.Flatten(), nn.LazyLinear(num_classes))

    assert "tiny_net" in list_models()
    assert isinstance(create_model("tiny_net", act="dyrelu_b")[1], DyReLUB)
    with pytest.raises(ValueError, match="'tiny_net' is already registered"):
        register_model(tiny_net)


def test_create_model_applies_the_scratch_recipe() -> None:
    """A network built by create_model is trained from scratch: its DY-ReLUs get the recipe, ReLU its own."""
    from dyrelu.recipe import SCRATCH_DYRELU_KWARGS

    model = create_model("mobilenetv2_035", act="dyrelu_b", num_classes=10, small_input=True)
    layers = [m for m in model.modules() if isinstance(m, dyrelu.DyReLU)]
    expected = "zero" if SCRATCH_DYRELU_KWARGS.get("zero_init_last", True) else "linear"
    assert layers and all(m.last_init == expected for m in layers)
    exact = create_model("mobilenetv2_035", act="dyrelu_b", small_input=True, zero_init_last=True)
    assert all(m.last_init == "zero" for m in exact.modules() if isinstance(m, dyrelu.DyReLU))
    assert dyrelu.DyReLUB(8).last_init == "zero"  # the module's own default stays exactly ReLU
    create_model("mobilenetv2_035", act="relu")  # the recipe's options never reach other activations
