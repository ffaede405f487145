"""MobileNetV2 with DY-ReLU placement.

Papers: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
https://arxiv.org/abs/1801.04381; Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027.

Built on ``torchvision.models.MobileNetV2``: same modules and state-dict keys, activations swapped after
construction.
"""

from __future__ import annotations

import functools

import torchvision.models as tvm
from torch import Tensor
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

from dyrelu.models._layers import ActLayer, new_stem_conv, replace_conv_norm_acts
from dyrelu.models._registry import register_model
from dyrelu.modules import DyReLU
from dyrelu.registry import get_act_layer

__all__ = ["ACT_CONTEXTS", "MobileNetV2"]

#: Where the hyper functions of a block's DY-ReLUs read their context (see :class:`MobileNetV2`).
ACT_CONTEXTS = ("input", "block")

# torchvision's table (t: expansion, c: channels, n: blocks, s: first block's stride).
_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class MobileNetV2(tvm.MobileNetV2):
    """torchvision's MobileNetV2 with the activation at every site of the paper's placement.

    Activation sites (each its own module from ``act_layer``, given ``channels=`` if it takes it): after
    the stem conv, after every 1×1 expansion conv, after every 3×3 depthwise conv, and after the last 1×1
    conv (1280 channels). The 1×1 projection of each inverted residual stays linear. So a block has two
    activations, except the first (expansion 1, no expansion conv), which has one; 35 in all.

    ReLU6 or ReLU: the original network (and the paper's ReLU baseline) uses ReLU6; ``act_layer=None``
    keeps it (exactly torchvision's network). :func:`~dyrelu.models.create_model` always puts the
    requested activation at every site, so ``act="relu"`` gives plain ReLU and ``act="relu6"`` the
    original. Plain ReLU is what a fresh DY-ReLU-A or -B computes, so ``act="relu"`` is the baseline
    that such a model starts identical to; the cost (params, MAdds) of ReLU and ReLU6 is the same.

    Args:
        width_mult: the width multiplier (0.35, 0.5, 0.75, 1.0 in the paper).
        act_layer: the activation at each site, as timm takes it: a name of :func:`dyrelu.list_acts` (or
            timm's spelling), an ``nn.Module`` class (``nn.ReLU``, ``nn.GELU``, ``dyrelu.DyReLUB``) or a
            callable returning a module (see :func:`dyrelu.get_act_layer`); ``None`` keeps ReLU6.
        num_classes: the classifier's outputs.
        in_chans: the stem's input channels.
        small_input: for 28×28 and 32×32 images: the stem conv has stride 1 instead of 2, and the first
            block of the 24-channel stage stride 1 instead of 2; total stride 8 instead of 32, so the
            last feature map is 4×4 for 32×32 and 28×28 inputs (7×7 for 224×224 without it).
        dropout: dropout before the classifier.
        act_context: what the hyper function of each inverted residual's DY-ReLUs reads. ``"input"``
            (default, the paper's text): each activation's own input. ``"block"``: the block's input,
            as the authors' module allows (it computes the coefficients from one tensor and applies them
            to another); it has 6× fewer channels than the expanded tensor at expansion 6, so the hyper
            functions are about 4× smaller, and both activations of a block see the same context. The
            stem's and the last conv's activations read their own input either way. ``"block"`` needs
            a DY-ReLU ``act_layer`` (it is called with ``context_channels=``).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, num\\_classes)`
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        *,
        act_layer: ActLayer | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        dropout: float = 0.2,
        act_context: str = "input",
    ) -> None:
        if act_context not in ACT_CONTEXTS:
            raise ValueError(f"unknown act_context {act_context!r}, expected one of {', '.join(ACT_CONTEXTS)}")
        if act_context == "block" and act_layer is None:
            raise ValueError("act_context='block' needs a DY-ReLU act_layer, got act_layer=None (ReLU6)")
        act_layer = get_act_layer(act_layer)
        setting = [list(row) for row in _SETTING]
        if small_input:
            setting[1][3] = 1
        super().__init__(
            num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=setting, dropout=dropout
        )
        stem = self.features[0]
        if small_input or in_chans != 3:
            stem[0] = new_stem_conv(stem[0], in_chans, kernel_size=3, stride=1 if small_input else 2)
        self.act_context = act_context
        if act_context == "block":
            for block in self.features:
                if isinstance(block, InvertedResidual):
                    in_channels = block.conv[0][0].in_channels
                    replace_conv_norm_acts(block, functools.partial(act_layer, context_channels=in_channels))
                    block.__class__ = BlockContextInvertedResidual
        if act_layer is not None:
            replace_conv_norm_acts(self.features, act_layer)


class BlockContextInvertedResidual(InvertedResidual):
    """torchvision's inverted residual whose DY-ReLUs read the block's input as their context.

    Same modules and state-dict keys as :class:`~torchvision.models.mobilenetv2.InvertedResidual`; only
    ``forward`` differs: each ``Conv2dNormActivation`` whose activation is a DY-ReLU calls it as
    ``act(h, context=x)`` with ``x`` the block's input.
    """

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.conv:
            if isinstance(layer, Conv2dNormActivation) and isinstance(layer[-1], DyReLU):
                *inner, act = layer
                for module in inner:
                    h = module(h)
                h = act(h, context=x)
            else:
                h = layer(h)
        return x + h if self.use_res_connect else h


def _create_mobilenetv2(width_mult: float, **kwargs) -> MobileNetV2:
    return MobileNetV2(width_mult, **kwargs)


@register_model
def mobilenetv2_025(**kwargs) -> MobileNetV2:
    """MobileNetV2 ×0.25 (not in the paper: the small end of the converged grid's size trend)."""
    return _create_mobilenetv2(0.25, **kwargs)


@register_model
def mobilenetv2_035(**kwargs) -> MobileNetV2:
    """MobileNetV2 ×0.35."""
    return _create_mobilenetv2(0.35, **kwargs)


@register_model
def mobilenetv2_050(**kwargs) -> MobileNetV2:
    """MobileNetV2 ×0.5."""
    return _create_mobilenetv2(0.5, **kwargs)


@register_model
def mobilenetv2_075(**kwargs) -> MobileNetV2:
    """MobileNetV2 ×0.75."""
    return _create_mobilenetv2(0.75, **kwargs)


@register_model
def mobilenetv2_100(**kwargs) -> MobileNetV2:
    """MobileNetV2 ×1.0."""
    return _create_mobilenetv2(1.0, **kwargs)
