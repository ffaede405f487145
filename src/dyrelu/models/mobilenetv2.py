"""MobileNetV2 with DY-ReLU placement.

Papers: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
https://arxiv.org/abs/1801.04381; Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027.

Built on ``torchvision.models.MobileNetV2``: same modules and state-dict keys, activations swapped after
construction.
"""

from __future__ import annotations

import torchvision.models as tvm

from dyrelu.models._layers import ActLayer, new_stem_conv, replace_conv_norm_acts
from dyrelu.models._registry import register_model

__all__ = ["MobileNetV2"]

# torchvision's table (t: expansion, c: channels, n: blocks, s: first block's stride).
_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class MobileNetV2(tvm.MobileNetV2):
    """torchvision's MobileNetV2 with the activation at every site of the paper's placement.

    Activation sites (each its own module, ``act_layer(channels)``): after the stem conv, after every
    1×1 expansion conv, after every 3×3 depthwise conv, and after the last 1×1 conv (1280 channels).
    The 1×1 projection of each inverted residual stays linear. So a block has two activations, except
    the first (expansion 1, no expansion conv), which has one; 35 in all.

    ReLU6 or ReLU: the original network (and the paper's ReLU baseline) uses ReLU6; ``act_layer=None``
    keeps it (exactly torchvision's network). :func:`~dyrelu.models.create_model` always puts the
    requested activation at every site, so ``act="relu"`` gives plain ReLU and ``act="relu6"`` the
    original. Plain ReLU is what a fresh DY-ReLU-A or -B computes, so ``act="relu"`` is the baseline
    that such a model starts identical to; the cost (params, MAdds) of ReLU and ReLU6 is the same.

    Args:
        width_mult: the width multiplier (0.35, 0.5, 0.75, 1.0 in the paper).
        act_layer: ``act_layer(channels) -> nn.Module`` for each site; ``None`` keeps ReLU6.
        num_classes: the classifier's outputs.
        in_chans: the stem's input channels.
        small_input: for 28×28 and 32×32 images: the stem conv has stride 1 instead of 2, and the first
            block of the 24-channel stage stride 1 instead of 2; total stride 8 instead of 32, so the
            last feature map is 4×4 for 32×32 and 28×28 inputs (7×7 for 224×224 without it).
        dropout: dropout before the classifier.

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
    ) -> None:
        setting = [list(row) for row in _SETTING]
        if small_input:
            setting[1][3] = 1
        super().__init__(
            num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=setting, dropout=dropout
        )
        stem = self.features[0]
        if small_input or in_chans != 3:
            stem[0] = new_stem_conv(stem[0], in_chans, kernel_size=3, stride=1 if small_input else 2)
        if act_layer is not None:
            replace_conv_norm_acts(self.features, act_layer)


def _create_mobilenetv2(width_mult: float, **kwargs) -> MobileNetV2:
    return MobileNetV2(width_mult, **kwargs)


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
