"""Pure functions of DY-ReLU (Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027).

The central operation is the piecewise maximum ``y = s * max_k(a_k * x + b_k)``. Public implementations
build the K-times expanded tensor ``(N, C, *S, K)`` and let autograd keep it for backward (about three
times the activation memory of a ReLU). :func:`piecewise_max` instead saves only ``x`` and the small
coefficient tensors, and recomputes the active piece in backward.

Layouts: ``x`` has channels at dim 1, ``(N, C, *S)`` with any number of spatial dims (any strides: a
channels-last tensor or a ``movedim`` view of ``(N, L, C)`` tokens work without a copy, and the output
keeps the input's memory layout). Coefficients ``a`` and ``b`` are ``(N, C', K)`` where ``C'`` is 1
(one function for all channels: DY-ReLU-A) or ``C`` (per channel: DY-ReLU-B/C), and ``N`` may be 1 for
input-independent coefficients. The optional ``scale`` is ``(N, 1, *S)`` (DY-ReLU-C's spatial attention).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from dyrelu._piecewise import PiecewiseMax, forward_max, kernel_in_graph, tracing

__all__ = [
    "coefficients",
    "normalize_residual",
    "piecewise_max",
    "spatial_attention",
]


def _check_coefficients(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None) -> None:
    if x.dim() < 2:
        raise ValueError(f"expected input of shape (N, C, *spatial) with at least 2 dims, got shape {tuple(x.shape)}")
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(
            f"expected coefficients a and b of equal shape (N, C or 1, K), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] not in (1, x.shape[0]) or a.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"expected coefficients of shape ({x.shape[0]} or 1, {x.shape[1]} or 1, K) for input of shape "
            f"{tuple(x.shape)}, got {tuple(a.shape)}"
        )
    if scale is not None:
        expected = (x.shape[0], 1, *x.shape[2:])
        if tuple(scale.shape) != expected:
            raise ValueError(f"expected scale of shape {expected}, got {tuple(scale.shape)}")


def piecewise_max(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None = None) -> Tensor:
    """The piecewise-linear maximum ``y = scale * max_k(a_k * x + b_k)``.

    Args:
        x: input with channels at dim 1.
        a: slopes, one set of K per sample and channel (or shared over channels or samples).
        b: intercepts, same shape as ``a``.
        scale: optional non-negative per-position factor (DY-ReLU-C's spatial attention).

    Shape:
        - x: :math:`(N, C, *)`
        - a, b: :math:`(N \\text{ or } 1, C \\text{ or } 1, K)`
        - scale: :math:`(N, 1, *)`
        - output: :math:`(N, C, *)`, with the memory layout of ``x``.

    Only ``x`` and the coefficients are saved for backward; no ``K``-times expanded tensor is kept. On the CPU
    a fused native kernel computes it (float32, float64, bfloat16), also inside torch.compile'd graphs, where
    it is the operator ``torch.ops.dyrelu.piecewise_max``; torch.export and ONNX get ATen operations.

    Edge values: an infinite ``x`` (fp16 overflow, say) takes the limit ``x -> +-inf``: a zero slope (or scale)
    times ``+-inf`` contributes 0, not NaN, and the gradient follows the piece active in the limit, so that
    ReLU's pieces give ``torch.relu``'s values and gradients at ``+-inf`` and NaN (NaN stays NaN). The slopes'
    gradients sum ``grad * x``: they are not finite where ``x`` is not.

    Example:
        >>> x = torch.tensor([[-2.0, 3.0]])
        >>> a = torch.tensor([[[1.0, 0.1]]])  # LeakyReLU(0.1) as two pieces
        >>> piecewise_max(x, a, torch.zeros_like(a))
        tensor([[-0.2000,  3.0000]])
    """
    _check_coefficients(x, a, b, scale)
    a = a.to(x.dtype)
    b = b.to(x.dtype)
    if scale is not None:
        scale = scale.to(x.dtype)
    if tracing() and kernel_in_graph(x, a):
        return torch.ops.dyrelu.piecewise_max(x, a, b, scale)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, a, b, scale))
    if not needs_grad:
        return forward_max(x, a, b, scale)
    return PiecewiseMax.apply(x, a, b, scale)


def normalize_residual(z: Tensor) -> Tensor:
    """The paper's normalisation of the hyper function's output: ``2 * sigmoid(z) - 1``, in (-1, 1).

    A NaN ``z`` gives 0, the static pieces, and no gradient: the hyper function read a non-finite input (a NaN,
    or an infinity that a fresh layer's zero last FC turns into ``0 * inf``), and a fresh DY-ReLU then still
    computes ReLU there, as ``torch.relu`` would.

    Example:
        >>> normalize_residual(torch.zeros(2))
        tensor([0., 0.])
    """
    return torch.sigmoid(torch.where(z.isnan(), 0.0, z)).mul(2.0).sub(1.0)


@functools.lru_cache(maxsize=64)
def _cached_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # a normal tensor even when first asked for in inference mode
        return torch.tensor(values, dtype=dtype, device=device)


def _as_constant(values: Tensor | tuple[float, ...], like: Tensor) -> Tensor:
    """``values`` as a tensor of ``like``'s dtype and device. Tuples of floats (the modules' α, β) are cached:
    building them each call would copy from host memory to the GPU, a synchronising copy, on every forward."""
    if isinstance(values, Tensor) or tracing():
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return _cached_constant(tuple(float(v) for v in values), like.dtype, like.device)


def coefficients(
    residual: Tensor,
    init_a: Tensor | tuple[float, ...],
    init_b: Tensor | tuple[float, ...],
    lambda_a: float = 1.0,
    lambda_b: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Residual parametrisation ``a_k = α_k + λ_a Δa_k`` and ``b_k = β_k + λ_b Δb_k``.

    Args:
        residual: normalised residuals Δ, the K slopes' then the K intercepts' along the last dim.
        init_a: α, the K initial slopes.
        init_b: β, the K initial intercepts.
        lambda_a: λ_a, the range of the slopes' residual.
        lambda_b: λ_b, the range of the intercepts' residual.

    Shape:
        - residual: :math:`(*, 2K)`
        - output: two tensors :math:`(*, K)`

    Example:
        >>> a, b = coefficients(torch.zeros(1, 4), (1.0, 0.0), (0.0, 0.0))
        >>> a, b
        (tensor([[1., 0.]]), tensor([[0., 0.]]))
    """
    k = residual.shape[-1] // 2
    if residual.shape[-1] != 2 * k or k < 1:
        raise ValueError(f"expected an even, positive last dim (2K) in residual, got shape {tuple(residual.shape)}")
    init_a = _as_constant(init_a, residual)
    init_b = _as_constant(init_b, residual)
    if init_a.shape != (k,) or init_b.shape != (k,):
        raise ValueError(
            f"expected {k} initial slopes and intercepts, got {tuple(init_a.shape)} and {tuple(init_b.shape)}"
        )
    delta_a, delta_b = residual.split(k, dim=-1)
    return init_a + lambda_a * delta_a, init_b + lambda_b * delta_b


def spatial_attention(logits: Tensor, tau: float | Tensor = 10.0, gamma: float | None = None) -> Tensor:
    """DY-ReLU-C's spatial attention ``π = min(γ · softmax(z / τ), 1)`` over all spatial positions.

    Args:
        logits: z, one logit per position.
        tau: τ, the softmax temperature (large values flatten the map): a positive float, or a 0-dim tensor
            (DyReLUC's ``temperature`` buffer; not checked, as that would synchronise with the device).
        gamma: γ; ``None`` means ``HW / 3``, so that a uniform map gives ``π = 1/3`` everywhere.

    Shape:
        - logits: :math:`(N, 1, *)` with at least one spatial dim
        - output: same as ``logits``

    Example:
        >>> spatial_attention(torch.zeros(1, 1, 2, 3))
        tensor([[[[0.3333, 0.3333, 0.3333],
                  [0.3333, 0.3333, 0.3333]]]])
    """
    if logits.dim() < 3:
        raise ValueError(f"expected logits of shape (N, 1, *spatial) with a spatial dim, got {tuple(logits.shape)}")
    if not isinstance(tau, Tensor) and not tau > 0:
        raise ValueError(f"expected a positive temperature tau, got {tau}")
    positions = logits.shape[2:].numel()
    gamma = positions / 3.0 if gamma is None else gamma
    weights = torch.softmax(logits.flatten(2) / tau, dim=-1).view_as(logits)
    return torch.clamp(weights * gamma, max=1.0)


def _dyrelu_reference(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None = None) -> Tensor:
    # The naive K-times expanded formulation, kept only behind the deprecated name below (removed in 0.3).
    spatial = x.dim() - 2
    a = a.reshape(a.shape[:2] + (1,) * spatial + a.shape[-1:]).to(x.dtype)
    b = b.reshape(b.shape[:2] + (1,) * spatial + b.shape[-1:]).to(x.dtype)
    y = (x.unsqueeze(-1) * a + b).max(dim=-1).values
    return y if scale is None else y * scale


def __getattr__(name: str):
    if name == "dyrelu_reference":
        warnings.warn(
            "dyrelu.functional.dyrelu_reference is deprecated and will be removed in dyrelu 0.3: it is a test "
            "reference (the K-times expanded formulation), not part of the API; copy it if you need it",
            DeprecationWarning,
            stacklevel=2,
        )
        return _dyrelu_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
