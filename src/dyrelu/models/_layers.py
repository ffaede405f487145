"""Helpers shared by the model families: activation factories, activation swaps and stem convolutions."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from dyrelu.registry import get_act_layer

__all__ = ["ActLayer", "default_relu", "new_stem_conv", "replace_conv_norm_acts"]

#: What the model classes take as ``act_layer``, as timm does: a registered name (``"dyrelu_b"``, or timm's
#: spelling such as ``"hard_swish"``), an ``nn.Module`` class (``nn.ReLU``, ``nn.GELU``, ``DyReLUB``) or a
#: callable returning a new module. :func:`dyrelu.get_act_layer` resolves it once; each call site then
#: gets its own module, with ``channels=`` passed only where the class or callable takes it.
ActLayer = str | type[nn.Module] | Callable[..., nn.Module]

# The activations torchvision hard-codes in Conv2dNormActivation (ReLU6, ReLU, hard-swish).
_TORCHVISION_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish)


def default_relu(channels: int | None = None) -> nn.Module:
    """torchvision's in-place ReLU; the channel count is not needed."""
    return nn.ReLU(inplace=True)


def replace_conv_norm_acts(module: nn.Module, act_layer: ActLayer) -> int:
    """Replace the activation of every ``Conv2dNormActivation`` under ``module`` by a new one from ``act_layer``.

    ``act_layer`` is resolved by :func:`dyrelu.get_act_layer`, so it gets ``channels=out_channels`` only
    if it takes it. Other modules (a squeeze-and-excitation gate, a classifier) are left alone. Returns the
    number of activations replaced.
    """
    factory = get_act_layer(act_layer)
    count = 0
    for block in list(module.modules()):
        if isinstance(block, Conv2dNormActivation) and isinstance(block[-1], _TORCHVISION_ACTS):
            block[len(block) - 1] = factory(channels=block[0].out_channels)
            count += 1
    return count


def new_stem_conv(conv: nn.Conv2d, in_chans: int, *, kernel_size: int, stride: int) -> nn.Conv2d:
    """A stem convolution like ``conv`` with ``in_chans`` inputs, initialised as torchvision initialises convs."""
    new = nn.Conv2d(
        in_chans, conv.out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=conv.bias is not None
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new
