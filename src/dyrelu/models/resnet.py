"""ResNet with one activation module per call site, for DY-ReLU.

Papers: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385; Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027.

Built on ``torchvision.models.ResNet`` (same modules and state-dict keys, so torchvision checkpoints
load), with block subclasses that own one activation per call site: torchvision's blocks call a single
``nn.ReLU`` two or three times, which a DY-ReLU (with its own parameters, reading its own input) cannot
replace.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torchvision.models as tvm
from torch import Tensor, nn

from dyrelu.models._layers import ActLayer, default_relu, new_stem_conv
from dyrelu.models._registry import register_model
from dyrelu.registry import get_act_layer

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


class BasicBlock(tvm.resnet.BasicBlock):
    """torchvision's BasicBlock with two activation modules: ``act1`` after ``bn1``, ``act2`` after the sum.

    Args:
        inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer: as torchvision's.
        act_layer: the activation at each site, as :class:`ResNet` takes it (default: in-place ReLU).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        act_layer: ActLayer = default_relu,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer)
        del self.relu  # shared by both sites in torchvision
        act_layer = get_act_layer(act_layer)
        self.act1 = act_layer(channels=planes)
        self.act2 = act_layer(channels=planes * self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + shortcut)


class Bottleneck(tvm.resnet.Bottleneck):
    """torchvision's Bottleneck (ResNet v1.5) with three activation modules: ``act1``, ``act2``, ``act3``.

    ``act1`` after ``bn1`` and ``act2`` after ``bn2`` (``width`` channels), ``act3`` after the sum
    (``planes * 4`` channels).

    Args:
        inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer: as torchvision's.
        act_layer: the activation at each site, as :class:`ResNet` takes it (default: in-place ReLU).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        act_layer: ActLayer = default_relu,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer)
        del self.relu  # shared by the three sites in torchvision
        width = self.bn1.num_features
        act_layer = get_act_layer(act_layer)
        self.act1 = act_layer(channels=width)
        self.act2 = act_layer(channels=width)
        self.act3 = act_layer(channels=planes * self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + shortcut)


class ResNet(tvm.ResNet):
    """torchvision's ResNet with an activation module at every call site.

    Activation sites (the paper's "ReLUs of the blocks", plus the stem): the stem's activation (kept
    under torchvision's attribute name ``relu``, so torchvision's forward applies), and every block's
    ``act1``, ``act2`` (and ``act3`` in a Bottleneck). Each site is called once per forward pass.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck` (this module's, not torchvision's).
        layers: the number of blocks in each of the four stages.
        act_layer: the activation at each site, as timm takes it: a name of :func:`dyrelu.list_acts` (or
            timm's spelling), an ``nn.Module`` class (``nn.ReLU``, ``nn.GELU``, ``dyrelu.DyReLUB``) or a
            callable returning a module, given ``channels=`` if it takes it (see
            :func:`dyrelu.get_act_layer`); ``None`` means torchvision's in-place ReLU.
        num_classes: the classifier's outputs.
        in_chans: the stem's input channels.
        small_input: for 28×28 and 32×32 images (the usual CIFAR ResNet stem): a 3×3 stride-1 stem conv
            instead of 7×7 stride 2, and no max-pool; total stride 8 instead of 32, so the last feature
            map is 4×4 for 32×32 and 28×28 inputs.
        zero_init_residual: start each block's last BN at zero (torchvision's option).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, num\\_classes)`
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        *,
        act_layer: ActLayer | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        act_layer = get_act_layer(default_relu if act_layer is None else act_layer)
        block_fn = functools.partial(block, act_layer=act_layer)
        block_fn.expansion = block.expansion  # torchvision's ResNet reads block.expansion
        super().__init__(block_fn, list(layers), num_classes=num_classes, zero_init_residual=zero_init_residual)
        if small_input or in_chans != 3:
            self.conv1 = new_stem_conv(
                self.conv1, in_chans, kernel_size=3 if small_input else 7, stride=1 if small_input else 2
            )
        if small_input:
            self.maxpool = nn.Identity()
        self.relu = act_layer(channels=self.bn1.num_features)


def _create_resnet(block: type[BasicBlock | Bottleneck], layers: Sequence[int], **kwargs) -> ResNet:
    return ResNet(block, layers, **kwargs)


@register_model
def resnet10(**kwargs) -> ResNet:
    """ResNet-10: BasicBlock, one block per stage."""
    return _create_resnet(BasicBlock, [1, 1, 1, 1], **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: BasicBlock, [2, 2, 2, 2]."""
    return _create_resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: BasicBlock, [3, 4, 6, 3]."""
    return _create_resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (v1.5, stride in the 3×3 conv as torchvision's): Bottleneck, [3, 4, 6, 3]."""
    return _create_resnet(Bottleneck, [3, 4, 6, 3], **kwargs)
