"""A SimpleBaseline-style keypoint network: a registry backbone, a deconvolution head, one heatmap per keypoint.

Paper: Xiao, Wu, Wei, "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018,
https://arxiv.org/abs/1804.06208 (the head); Chen et al., "Dynamic ReLU", ECCV 2020,
https://arxiv.org/abs/2003.10027 (the activations in the backbone and in the head, chosen separately).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["KeypointNet", "backbone_strides"]


def _feature_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The feature extractor of a registry model as ``(name, layer)`` pairs, input to deepest."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):  # MobileNetV2, MobileNetV3
        return [(f"features.{name}", layer) for name, layer in features.named_children()]
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    if all(hasattr(model, name) for name in names):  # ResNet
        return [(name, getattr(model, name)) for name in names]
    raise ValueError(
        f"cannot take the feature layers of {type(model).__name__}: expected a MobileNet (.features) or a ResNet"
    )


@torch.no_grad()
def _probe(layers: list[tuple[str, nn.Module]], in_chans: int, probe: int) -> list[tuple[int, int]]:
    """``(stride, channels)`` after each layer, from one forward pass of zeros in eval mode (no state changes)."""
    x = torch.zeros(1, in_chans, probe, probe)
    out = []
    modes = [layer.training for _, layer in layers]
    try:
        for _, layer in layers:
            layer.eval()
            x = layer(x)
            out.append((probe // x.shape[-1], x.shape[1]))
    finally:
        for (_, layer), mode in zip(layers, modes, strict=True):
            layer.train(mode)
    return out


def backbone_strides(backbone: str, *, small_input: bool = False) -> list[int]:
    """The output strides :class:`KeypointNet` can cut ``backbone`` at.

    Example:
        >>> backbone_strides("mobilenetv2_035")
        [2, 4, 8, 16, 32]
    """
    from dyrelu.models import create_model

    model = create_model(backbone, act="relu", num_classes=1, in_chans=1, small_input=small_input)
    return sorted({stride for stride, _ in _probe(_feature_layers(model), 1, 64)})


class KeypointNet(nn.Module):
    """Backbone features at ``output_stride``, ``head_layers`` deconvolutions, a 1×1 conv to K heatmaps.

    The backbone is :func:`dyrelu.models.create_model`'s network with activation ``backbone_act`` at the
    paper's placement (every site), cut after its deepest layer of output stride ``output_stride`` (its
    classifier and deeper layers dropped). Each head layer is SimpleBaseline's: a 4×4 transposed
    convolution with stride 2 (no bias), batch norm and its own ``head_act`` module, doubling the
    resolution; the heatmaps come out at stride ``output_stride / 2**head_layers``.

    Args:
        num_keypoints: K, the heatmaps.
        backbone: a name of :func:`dyrelu.models.list_models`.
        backbone_act: the backbone's activation (a name of :func:`dyrelu.list_acts`, or ``None`` for the
            architecture's own).
        head_act: the head's activation (a name of :func:`dyrelu.list_acts`).
        backbone_act_kwargs: passed to every backbone activation (for example ``{"reduction": 4}``).
        head_act_kwargs: passed to every head activation.
        in_chans: the input channels.
        output_stride: where to cut the backbone (see :func:`backbone_strides`).
        head_layers: the number of deconvolution layers (at least 1).
        head_channels: the channels of each head layer.
        small_input: the backbone's stem for small images (see :func:`dyrelu.models.create_model`).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)` with ``H`` and ``W`` multiples of ``output_stride``
        - Output: :math:`(N, K, H / s, W / s)` with ``s`` = :attr:`heatmap_stride`

    Example:
        >>> net = KeypointNet(5, backbone_act="dyrelu_b", head_act="dyrelu_c", output_stride=16, head_layers=2)
        >>> net(torch.randn(2, 1, 64, 64)).shape, net.heatmap_stride
        (torch.Size([2, 5, 16, 16]), 4)
    """

    def __init__(
        self,
        num_keypoints: int = 5,
        *,
        backbone: str = "mobilenetv2_035",
        backbone_act: str | None = "relu",
        head_act: str = "relu",
        backbone_act_kwargs: Mapping[str, Any] | None = None,
        head_act_kwargs: Mapping[str, Any] | None = None,
        in_chans: int = 1,
        output_stride: int = 16,
        head_layers: int = 2,
        head_channels: int = 64,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        from dyrelu.models import create_model
        from dyrelu.recipe import SCRATCH_DYRELU_KWARGS

        _check_sizes(num_keypoints, head_layers, head_channels, in_chans, output_stride)
        head_kwargs = dict(head_act_kwargs or {})
        if str(head_act).lower().startswith("dyrelu"):  # trained from scratch: the recipe, as create_model does
            head_kwargs = {**SCRATCH_DYRELU_KWARGS, **head_kwargs}
        full = create_model(
            backbone,
            act=backbone_act,
            num_classes=1,
            in_chans=in_chans,
            small_input=small_input,
            **dict(backbone_act_kwargs or {}),
        )
        self.backbone, channels = _cut(full, backbone, in_chans, output_stride)
        self.head = _deconvolutions(channels, head_layers, head_channels, head_act, head_kwargs)
        self.final = nn.Conv2d(head_channels, num_keypoints, 1)
        # SimpleBaseline's initialisation of the head
        for m in self.head.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        self.num_keypoints = num_keypoints
        self.output_stride = output_stride
        self.heatmap_stride = output_stride // 2**head_layers

    def forward(self, x: Tensor) -> Tensor:
        return self.final(self.head(self.backbone(x)))


def _check_sizes(num_keypoints: int, head_layers: int, head_channels: int, in_chans: int, output_stride: int) -> None:
    """Raise ``ValueError`` on a size that is not a positive integer, or a stride the head cannot reach."""
    for name, value in (
        ("num_keypoints", num_keypoints),
        ("head_layers", head_layers),
        ("head_channels", head_channels),
        ("in_chans", in_chans),
        ("output_stride", output_stride),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"expected {name} to be an integer >= 1, got {value!r}")
    if output_stride % 2**head_layers:
        raise ValueError(
            f"expected output_stride divisible by 2**head_layers = {2**head_layers} (each head layer doubles "
            f"the resolution), got output_stride={output_stride}"
        )


def _cut(full: nn.Module, name: str, in_chans: int, output_stride: int) -> tuple[nn.Sequential, int]:
    """The feature layers of the classification network ``full`` up to ``output_stride``, and their channels."""
    layers = _feature_layers(full)
    shapes = _probe(layers, in_chans, 64)
    strides = sorted({s for s, _ in shapes})
    if output_stride not in strides:
        raise ValueError(f"{name} cannot be cut at output_stride={output_stride}, expected one of {strides}")
    cut = max(i for i, (s, _) in enumerate(shapes) if s == output_stride)
    backbone = nn.Sequential()
    for layer_name, layer in layers[: cut + 1]:
        backbone.add_module(layer_name.replace(".", "_"), layer)
    return backbone, shapes[cut][1]


def _deconvolutions(
    channels: int, layers: int, head_channels: int, act: str, act_kwargs: dict[str, Any]
) -> nn.Sequential:
    """SimpleBaseline's head: ``layers`` times a stride-2 transposed convolution, batch norm and ``act``."""
    from dyrelu.registry import create_act

    head: list[nn.Module] = []
    for _ in range(layers):
        head += [
            nn.ConvTranspose2d(channels, head_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            create_act(act, head_channels, **act_kwargs),
        ]
        channels = head_channels
    return nn.Sequential(*head)
