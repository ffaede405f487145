"""MobileNetV3 (Large and Small) with DY-ReLU placement.

Papers: Howard et al., "Searching for MobileNetV3", ICCV 2019, https://arxiv.org/abs/1905.02244;
Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027.

Built on ``torchvision.models.MobileNetV3`` and its configuration tables: same modules and state-dict
keys, activations swapped after construction.
"""

from __future__ import annotations

import torchvision.models as tvm

# Private but stable (since torchvision 0.9; torchvision's detection, segmentation and quantized
# MobileNetV3 build on it): the paper's Tables 1 and 2, so they are not copied here.
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf

from dyrelu.models._layers import ActLayer, new_stem_conv, replace_conv_norm_acts
from dyrelu.models._registry import register_model

__all__ = ["MobileNetV3"]

_ARCHS = ("large", "small")


class MobileNetV3(tvm.MobileNetV3):
    """torchvision's MobileNetV3 with the activation at the block sites of the paper's placement.

    Activation sites (each its own module from ``act_layer``, given ``channels=`` if it takes it): the
    stem conv, every 1×1 expansion conv, every depthwise conv, and the last 1×1 conv. Where the original
    uses ReLU or hard-swish, both are replaced: both are the network's feature activations (which one
    sits where is a search result for a fixed ReLU/h-swish menu), and those are what DY-ReLU replaces.
    The 1×1 projections stay linear. This is our reading of the paper, which reports MobileNetV3 with
    DY-ReLU without spelling out the sites.

    Kept as they are:
        - the squeeze-and-excitation gates (their inner ReLU and hard-sigmoid): a gate is a hyper
          function, not a feature activation; DY-ReLU inside it would be a hyper function of a hyper
          function, and its output must stay in [0, 1].
        - the classifier's hidden hard-swish, which acts on the pooled ``(N, 1024 or 1280)`` vector
          after the network's last feature map (DY-ReLU-C needs spatial positions there are none of).

    ``act_layer=None`` keeps torchvision's network exactly (ReLU in the early blocks, hard-swish later).

    Args:
        arch: ``"large"`` or ``"small"``.
        act_layer: the activation at each site, as timm takes it: a name of :func:`dyrelu.list_acts` (or
            timm's spelling), an ``nn.Module`` class or a callable returning a module (see
            :func:`dyrelu.get_act_layer`); ``None`` keeps the original.
        num_classes: the classifier's outputs.
        in_chans: the stem's input channels.
        small_input: for 28×28 and 32×32 images: the stem conv has stride 1 instead of 2, and the first
            stride-2 block (the 24-channel block of Large, the first, 16-channel block of Small) stride
            1; total stride 8 instead of 32, so the last feature map is 4×4 for 32×32 and 28×28 inputs.
        dropout: dropout in the classifier.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, num\\_classes)`
    """

    def __init__(
        self,
        arch: str = "large",
        *,
        act_layer: ActLayer | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        dropout: float = 0.2,
    ) -> None:
        if arch not in _ARCHS:
            raise ValueError(f"unknown MobileNetV3 arch {arch!r}, expected one of {_ARCHS}")
        setting, last_channel = _mobilenet_v3_conf(f"mobilenet_v3_{arch}")
        if small_input:
            next(cnf for cnf in setting if cnf.stride == 2).stride = 1
        super().__init__(setting, last_channel, num_classes=num_classes, dropout=dropout)
        stem = self.features[0]
        if small_input or in_chans != 3:
            stem[0] = new_stem_conv(stem[0], in_chans, kernel_size=3, stride=1 if small_input else 2)
        if act_layer is not None:
            replace_conv_norm_acts(self.features, act_layer)


def _create_mobilenetv3(arch: str, **kwargs) -> MobileNetV3:
    return MobileNetV3(arch, **kwargs)


@register_model
def mobilenetv3_large(**kwargs) -> MobileNetV3:
    """MobileNetV3-Large ×1.0."""
    return _create_mobilenetv3("large", **kwargs)


@register_model
def mobilenetv3_small(**kwargs) -> MobileNetV3:
    """MobileNetV3-Small ×1.0."""
    return _create_mobilenetv3("small", **kwargs)
