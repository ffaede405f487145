"""Baseline activations that the paper compares DY-ReLU with and that need the channel count.

``SEReLU`` (ReLU then squeeze-and-excitation), ``Maxout`` (K learned linear maps over channels, max
taken) and ``StaticPWL`` (DY-ReLU's piecewise-linear function with learned but input-independent
coefficients: the dynamic-versus-static ablation). All take ``channels=None`` (inferred on the first
forward pass), a dummy ``inplace`` and channels at dim 1 ``(N, C, *)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dyrelu import functional as DF
from dyrelu._lazy import LazyChannels

__all__ = ["Maxout", "SEReLU", "StaticPWL"]


class SEReLU(LazyChannels):
    """ReLU followed by squeeze-and-excitation (the paper's "SE+ReLU" baseline).

    ``y = relu(x) * sigmoid(W2 relu(W1 pool(relu(x)) + b1) + b2)``, the excitation per sample and channel.

    Args:
        channels: C (``None``: inferred on the first forward pass).
        reduction: R, hidden width ``max(C // R, 1)``.
        inplace: accepted and ignored.
    """

    def __init__(
        self, channels: int | None = None, *, reduction: int = 8, inplace: bool = False, device=None, dtype=None
    ):
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"expected reduction to be a positive integer, got {reduction!r}")
        self.reduction = reduction
        super().__init__(channels, device, dtype)

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        hidden = max(channels // self.reduction, 1)
        return {
            "fc1_weight": (hidden, channels),
            "fc1_bias": (hidden,),
            "fc2_weight": (channels, hidden),
            "fc2_bias": (channels,),
        }

    def _channels_from(self, name: str, value: Tensor) -> int:
        return value.shape[1]

    def reset_parameters(self) -> None:
        for weight, bias in ((self.fc1_weight, self.fc1_bias), (self.fc2_weight, self.fc2_bias)):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            nn.init.uniform_(bias, -1.0 / math.sqrt(weight.shape[1]), 1.0 / math.sqrt(weight.shape[1]))

    def forward(self, x: Tensor) -> Tensor:
        self._to_channels_first(x)
        x = torch.relu(x)
        context = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        hidden = F.relu(F.linear(context, self.fc1_weight, self.fc1_bias))
        gate = torch.sigmoid(F.linear(hidden, self.fc2_weight, self.fc2_bias))  # (N, C)
        return x * gate.view(gate.shape + (1,) * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"{self.channels}, reduction={self.reduction}"


class Maxout(LazyChannels):
    """Maxout over channels: K learned linear maps C→C at each position, elementwise max over the K.

    ``y_c = max_k (W_k x + b_k)_c``, a 1×1 convolution to ``K·C`` channels then a max over groups.

    Cost: ``K · C²`` multiply-adds per position (a 64-channel 32×32 map with K=2 costs 8.4M MAdds, as
    much as a 1×1 convolution with twice the output channels) and ``K·C² + K·C`` parameters, far more
    than DY-ReLU's hyper function (about ``C²/R + 2KC²/R``, independent of the positions).

    Args:
        channels: C (``None``: inferred on the first forward pass).
        k: K, the number of linear maps.
        inplace: accepted and ignored.
    """

    def __init__(self, channels: int | None = None, *, k: int = 2, inplace: bool = False, device=None, dtype=None):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"expected k (number of pieces) to be an integer >= 1, got {k!r}")
        self.k = k
        super().__init__(channels, device, dtype)

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.k * channels, channels), "bias": (self.k * channels,)}

    def _channels_from(self, name: str, value: Tensor) -> int:
        return value.shape[1]

    def reset_parameters(self) -> None:
        # Piece 0 starts as the identity and the others at zero plus noise, so Maxout starts near ReLU.
        c = self.channels
        with torch.no_grad():
            nn.init.normal_(self.weight, std=0.01)
            self.weight[:c] += torch.eye(c, dtype=self.weight.dtype, device=self.weight.device)
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        self._to_channels_first(x)
        y = torch.einsum("oc,nc...->no...", self.weight.to(x.dtype), x)  # (N, K*C, *)
        y = y + self.bias.to(x.dtype).view((1, -1) + (1,) * (x.dim() - 2))
        return y.unflatten(1, (self.k, self.channels)).amax(dim=1)

    def extra_repr(self) -> str:
        return f"{self.channels}, k={self.k}"


class StaticPWL(LazyChannels):
    """DY-ReLU's piecewise-linear function with learned, input-independent coefficients per channel.

    ``y_c = max_k(a_c^k x_c + b_c^k)``: the same shape as DY-ReLU-B without the hyper function, which
    isolates what the *dynamic* coefficients add. Starts as ReLU (``init_a``/``init_b``); ``k=2`` with
    ``init_a=(1, s)`` is a per-channel PReLU.

    Args:
        channels: C (``None``: inferred on the first forward pass).
        k: K, the number of pieces.
        init_a: initial slopes, ``None`` means ``(1, 0, ..., 0)``. init_b: initial intercepts (zeros).
        inplace: accepted and ignored.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        k: int = 2,
        init_a: Sequence[float] | None = None,
        init_b: Sequence[float] | None = None,
        inplace: bool = False,
        device=None,
        dtype=None,
    ):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"expected k (number of pieces) to be an integer >= 1, got {k!r}")
        self.k = k
        self.init_a = tuple(float(v) for v in init_a) if init_a is not None else (1.0,) + (0.0,) * (k - 1)
        self.init_b = tuple(float(v) for v in init_b) if init_b is not None else (0.0,) * k
        if len(self.init_a) != k or len(self.init_b) != k:
            raise ValueError(f"expected {k} values in init_a and init_b, got {self.init_a} and {self.init_b}")
        super().__init__(channels, device, dtype)

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        return {"a": (channels, self.k), "b": (channels, self.k)}

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.a.copy_(torch.tensor(self.init_a).expand_as(self.a))
            self.b.copy_(torch.tensor(self.init_b).expand_as(self.b))

    def forward(self, x: Tensor) -> Tensor:
        self._to_channels_first(x)
        return DF.piecewise_max(x, self.a.unsqueeze(0), self.b.unsqueeze(0))

    def extra_repr(self) -> str:
        return f"{self.channels}, k={self.k}, init_a={self.init_a}, init_b={self.init_b}"
