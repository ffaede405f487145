"""APReLU: adaptively parametric ReLU, the closest dynamic peer of DY-ReLU.

Zhao, Zhong, Fu, Tang and Pecht, "Deep Residual Networks With Adaptively Parametric Rectifier Linear
Units for Fault Diagnosis", IEEE Transactions on Industrial Electronics 68(3), 2020.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dyrelu._lazy import LazyChannels

__all__ = ["APReLU"]


class APReLU(LazyChannels):
    """Adaptively parametric ReLU: ``y = max(x, 0) + α(x) · min(x, 0)``, one α per sample and channel.

    α comes from a sub-network that sees the positive and the negative parts separately (Zhao et al.,
    2020): ``GAP(max(x, 0)) ‖ GAP(min(x, 0))`` (2C) → FC → BatchNorm → ReLU → FC (C) → BatchNorm →
    sigmoid. Unlike DY-ReLU it only adapts the negative slope, in (0, 1), and has no intercepts and no
    maximum over K pieces. A fresh APReLU is not ReLU (α starts near 0.5, as in the paper).

    The BatchNorm layers normalise over the batch in training mode, like any BatchNorm: a training
    batch needs at least 2 samples, and a sample's output depends on the rest of its batch in training
    (not in eval mode). ``norm=False`` drops them.

    Args:
        channels: C (``None``: inferred on the first forward pass).
        reduction: hidden width ``max(C // reduction, 1)`` (the paper uses C: ``reduction=1``).
        norm: use the paper's BatchNorm layers.
        channels_last: the input is ``(N, *, C)`` instead of ``(N, C, *)``.
        inplace: accepted and ignored.
        device: device of the parameters. dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, *)` with 0 to 3 spatial dims, or :math:`(N, *, C)` with ``channels_last``.
        - Output: same as the input.

    Example:
        >>> act = APReLU(8).eval()
        >>> act(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        reduction: int = 1,
        norm: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
        channels_last: bool = False,
        inplace: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"expected reduction to be a positive integer, got {reduction!r}")
        self.reduction = reduction
        self.norm = norm
        self.momentum = momentum
        self.eps = eps
        self.channels_last = channels_last
        super().__init__(channels, device=device, dtype=dtype)

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        hidden = max(channels // self.reduction, 1)
        shapes = {"fc1_weight": (hidden, 2 * channels), "fc1_bias": (hidden,)}
        shapes |= {"fc2_weight": (channels, hidden), "fc2_bias": (channels,)}
        if self.norm:
            shapes |= {"norm1_weight": (hidden,), "norm1_bias": (hidden,)}
            shapes |= {"norm2_weight": (channels,), "norm2_bias": (channels,)}
        return shapes

    def _buffer_shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        if not self.norm:
            return {}
        hidden = max(channels // self.reduction, 1)
        return {
            "norm1_running_mean": (hidden,),
            "norm1_running_var": (hidden,),
            "norm2_running_mean": (channels,),
            "norm2_running_var": (channels,),
        }

    def _channels_from(self, name: str, value: Tensor) -> int:
        return value.shape[1] // 2

    def reset_parameters(self) -> None:
        for weight, bias in ((self.fc1_weight, self.fc1_bias), (self.fc2_weight, self.fc2_bias)):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            nn.init.uniform_(bias, -1.0 / math.sqrt(weight.shape[1]), 1.0 / math.sqrt(weight.shape[1]))
        if self.norm:
            for i in (1, 2):
                nn.init.ones_(getattr(self, f"norm{i}_weight"))
                nn.init.zeros_(getattr(self, f"norm{i}_bias"))
                nn.init.zeros_(getattr(self, f"norm{i}_running_mean"))
                nn.init.ones_(getattr(self, f"norm{i}_running_var"))

    def _norm(self, h: Tensor, i: int) -> Tensor:
        if not self.norm:
            return h
        return F.batch_norm(
            h,
            getattr(self, f"norm{i}_running_mean"),
            getattr(self, f"norm{i}_running_var"),
            getattr(self, f"norm{i}_weight"),
            getattr(self, f"norm{i}_bias"),
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )

    def slope(self, x: Tensor) -> Tensor:
        """α(x), the negative slope per sample and channel, from input with channels at dim 1.

        Shape:
            - x: :math:`(N, C, *)`
            - output: :math:`(N, C)`
        """
        return self._slope(*_parts(x))

    def _slope(self, positive: Tensor, negative: Tensor) -> Tensor:
        dtype = self.fc1_weight.dtype
        dims = tuple(range(2, positive.dim()))
        if dims:
            # sum, then divide the small result: mean's backward divides a full-size tensor
            count = math.prod(positive.shape[2:])
            context = torch.cat([positive.sum(dims, dtype=dtype), negative.sum(dims, dtype=dtype)], dim=1) / count
        else:
            context = torch.cat([positive, negative], dim=1).to(dtype)  # (N, 2C)
        hidden = torch.relu(self._norm(F.linear(context, self.fc1_weight, self.fc1_bias), 1))
        return torch.sigmoid(self._norm(F.linear(hidden, self.fc2_weight, self.fc2_bias), 2))

    def forward(self, x: Tensor) -> Tensor:
        positive, negative = _parts(self._to_channels_first(x))
        alpha = self._slope(positive, negative).to(x.dtype)
        alpha = alpha.view(alpha.shape + (1,) * (positive.dim() - 2))
        return self._from_channels_first(torch.addcmul(positive, alpha, negative))

    def extra_repr(self) -> str:
        text = f"{self.channels}, reduction={self.reduction}, norm={self.norm}"
        return text + (", channels_last=True" if self.channels_last else "")


def _parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """``max(x, 0)`` and ``min(x, 0)``, the second as ``x - max(x, 0)``: the same values bit for bit, and a backward
    pass of a subtraction instead of clamp's (a comparison and a ``where``, the slowest step of APReLU on the CPU)."""
    positive = torch.relu(x)
    return positive, x - positive
