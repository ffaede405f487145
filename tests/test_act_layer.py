"""``act_layer`` as timm and torchvision mean it: dyrelu.get_act_layer and the model classes built with it."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

import dyrelu
from dyrelu import DyReLUB, get_act_layer
from dyrelu.models import _registry, create_model, list_models
from dyrelu.models.mobilenetv2 import MobileNetV2

# What a timm or torchvision user passes as act_layer, and the module each site must then hold.
ACT_LAYERS = {
    "nn.ReLU": (nn.ReLU, nn.ReLU),
    "nn.GELU": (nn.GELU, nn.GELU),
    "'dyrelu_b'": ("dyrelu_b", DyReLUB),
    "DyReLUB": (DyReLUB, DyReLUB),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _sites(name: str) -> dict[str, int]:
    """The activation sites of ``name`` (module name -> channels), from create_model's DY-ReLU-B build."""
    model = create_model(name, act="dyrelu_b", num_classes=10, small_input=True)
    return {n: m.channels for n, m in model.named_modules() if isinstance(m, DyReLUB)}


def _names_of(model: nn.Module, cls: type[nn.Module]) -> set[str]:
    return {n for n, m in model.named_modules() if type(m) is cls}


# -- every registered model with each kind of act_layer ----------------------------------------------------


@pytest.mark.parametrize("act", list(ACT_LAYERS))
@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_act_layer_as_timm_does(name: str, act: str) -> None:
    act_layer, cls = ACT_LAYERS[act]
    sites = _sites(name)
    torch.manual_seed(0)
    model = _registry._MODELS[name](act_layer=act_layer, num_classes=10, small_input=True).eval()
    # The requested class at every site and nowhere else (the SE gates' own ReLUs of MobileNetV3 stay).
    reference = create_model(name, act=None, num_classes=10, small_input=True)
    untouched = {n for n in _names_of(reference, cls) if not any(n == s or n.startswith(f"{s}.") for s in sites)}
    assert _names_of(model, cls) == set(sites) | untouched
    modules = dict(model.named_modules())
    assert len({id(modules[n]) for n in sites}) == len(sites), "two sites share a module"
    for site, channels in sites.items():
        module = modules[site]
        if cls is nn.ReLU:
            assert module.inplace is False, f"{site}: nn.ReLU got the channel count as inplace"
        elif cls is nn.GELU:
            assert module.approximate == "none"
        else:
            assert module.channels == channels, site
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_mobilenetv2_block_context_with_a_class() -> None:
    model = MobileNetV2(0.35, act_layer=DyReLUB, num_classes=10, small_input=True, act_context="block")
    block = model.features[2]
    assert block.conv[0][-1].context_channels == block.conv[0][0].in_channels
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_create_model_still_passes_its_partial() -> None:
    # create_model hands the models functools.partial(create_act, act, **act_kwargs): channels go by keyword.
    model = create_model("resnet10", act="dyrelu_b", num_classes=10, small_input=True, k=3)
    assert model.layer2[0].act2.channels == 128 and model.layer2[0].act2.k == 3
    relu = create_model("mobilenetv2_035", act="relu", num_classes=10, small_input=True)
    assert all(not m.inplace for m in relu.modules() if isinstance(m, nn.ReLU))


# -- get_act_layer -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", nn.ReLU),
        ("ReLU", nn.ReLU),
        ("relu6", nn.ReLU6),
        ("leaky_relu", nn.LeakyReLU),
        ("lrelu", nn.LeakyReLU),
        ("hard_swish", nn.Hardswish),
        ("hardswish", nn.Hardswish),
        ("swish", nn.SiLU),
        ("silu", nn.SiLU),
        ("gelu", nn.GELU),
        ("elu", nn.ELU),
        ("prelu", nn.PReLU),
        ("dyrelu_b", DyReLUB),
    ],
)
def test_names_and_timm_spellings(name: str, cls: type[nn.Module]) -> None:
    assert type(get_act_layer(name)(16)) is cls


def test_timm_spellings_build_timm_classes() -> None:
    timm_act = pytest.importorskip("timm.layers.create_act")
    # The names timm maps to torch's own classes build the same class here.
    for name in ("relu", "relu6", "leaky_relu", "elu", "silu", "swish", "hard_swish"):
        assert type(get_act_layer(name)(8)) is timm_act.get_act_layer(name), name


def test_channels_only_where_taken() -> None:
    relu = get_act_layer(nn.ReLU)(64)
    assert type(relu) is nn.ReLU and relu.inplace is False
    assert get_act_layer(nn.ReLU)(64, inplace=True).inplace is True
    assert get_act_layer(nn.GELU)(channels=64, approximate="tanh").approximate == "tanh"
    assert get_act_layer(nn.PReLU)(64).num_parameters == 1  # as timm: nn.PReLU's argument is not a channel count
    assert get_act_layer(DyReLUB)(64, k=3).channels == 64
    assert get_act_layer("prelu")(64).num_parameters == 64  # the registry's PReLU is per channel
    assert get_act_layer(functools.partial(dyrelu.create_act, "dyrelu_b", k=3))(32).channels == 32

    def takes_channels(*, channels: int | None = None) -> nn.Module:
        return nn.PReLU(channels)

    assert get_act_layer(takes_channels)(12).num_parameters == 12
    assert type(get_act_layer(lambda: nn.Tanh())(12)) is nn.Tanh
    factory = get_act_layer(DyReLUB)
    assert get_act_layer(factory) is factory and "DyReLUB" in repr(factory)


def test_positional_factory_is_deprecated_but_works() -> None:
    with pytest.warns(DeprecationWarning, match="channels"):
        factory = get_act_layer(lambda c: nn.PReLU(c))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, when resolved, not at every site
        assert factory(7).num_parameters == 7


def test_errors() -> None:
    assert get_act_layer(None) is None
    with pytest.raises(ValueError, match=r"unknown activation 'mish', expected one of .*dyrelu_b.*leaky_relu"):
        get_act_layer("mish")
    with pytest.raises(TypeError, match="pass its class"):
        get_act_layer(nn.ReLU())
    with pytest.raises(TypeError, match="got 3"):
        get_act_layer(3)
    with pytest.raises(ValueError, match="unknown activation 'mish'"):
        MobileNetV2(0.35, act_layer="mish")
