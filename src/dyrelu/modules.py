"""DY-ReLU modules: the public base class DyReLU (also a front, ``DyReLU(variant=...)``) and DyReLUA/B/C.

Paper: Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from dyrelu import _native
from dyrelu import functional as DF
from dyrelu._lazy import LazyChannels
from dyrelu._piecewise import residual_max, spatial_mean, tracing

__all__ = ["DyReLU", "DyReLUA", "DyReLUB", "DyReLUC"]


def _default_init(values: Sequence[float] | None, k: int, first: float, name: str) -> tuple[float, ...]:
    if values is None:
        return (first,) + (0.0,) * (k - 1)
    values = tuple(float(v) for v in values)
    if len(values) != k:
        raise ValueError(f"expected {k} values in {name} (one per piece, k={k}), got {len(values)}: {values}")
    return values


def _linear_init(weight: Tensor, bias: Tensor) -> None:
    """nn.Linear's initialisation (uniform, bound ``1/sqrt(fan_in)`` for the bias)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1.0 / math.sqrt(weight.shape[1])
    nn.init.uniform_(bias, -bound, bound)


def _check_tau(tau: float) -> float:
    try:
        value = float(tau)
    except (TypeError, ValueError):
        value = math.nan
    if not value > 0:  # NaN too
        raise ValueError(f"expected a positive temperature tau, got {tau!r}")
    return value


# DY-ReLU-C's attention normalisation: nn.BatchNorm1d's defaults.
_SPATIAL_BN_MOMENTUM = 0.1
_SPATIAL_BN_EPS = 1e-5


class _DyReLUType(type):
    """``DyReLU(...)`` itself builds the variant named by ``variant``; its subclasses construct as usual.

    In the metaclass rather than ``DyReLU.__new__``: Python calls ``__init__`` on whatever ``__new__`` returns
    when it is an instance of the class called, so a ``__new__`` dispatch would run the variant's ``__init__``
    a second time, with ``variant`` among its arguments.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is DyReLU:
            return _variant_class(kwargs.pop("variant", "B"))(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    @property
    def __signature__(cls) -> inspect.Signature:
        # inspect.signature(cls) would otherwise report __call__'s (*args, **kwargs) for every subclass.
        init = inspect.signature(cls.__init__)
        params = list(init.parameters.values())[1:]  # without self
        if cls is DyReLU:
            variant = inspect.Parameter("variant", inspect.Parameter.KEYWORD_ONLY, default="B", annotation="str")
            extra = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)  # the variant's own (tau, ...)
            params = [params[0], variant, *params[1:], extra]
        return init.replace(parameters=params)


class DyReLU(LazyChannels, metaclass=_DyReLUType):
    """Dynamic ReLU: the public base class of :class:`DyReLUA`, :class:`DyReLUB` and :class:`DyReLUC`.

    ``y_c = max_k(a_c^k(x) * x_c + b_c^k(x))``: a piecewise-linear activation whose K pieces come from a
    hyper function θ(x) of the input (global average pool → FC C→C/R → ReLU → FC → ``2σ − 1`` →
    ``a = α + λ_a Δa``, ``b = β + λ_b Δb``). The class holds what the variants share (arguments, layouts,
    lazy channels, θ); ``isinstance(m, DyReLU)`` matches every variant, and it can be subclassed (a direct
    subclass computes one function per channel, as DY-ReLU-B).

    Called itself, ``DyReLU(channels, variant="B", **kwargs)`` builds the variant named by ``variant``
    (``"A"``, ``"B"`` or ``"C"``, case-insensitive) with the other arguments.

    Args:
        channels: C; ``None`` infers it on the first forward pass (a lazy module).
        k, reduction, min_hidden, lambda_a, lambda_b, init_a, init_b, zero_init_last, context_channels,
            channels_last, inplace, device, dtype: as for :class:`DyReLUA`.
        variant: only when calling ``DyReLU`` itself: the variant to build (DY-ReLU-C also takes ``tau``,
            ``gamma`` and ``spatial_norm``, see :class:`DyReLUC`).

    Shape:
        - Input: :math:`(N, C, *)` with 0 to 3 spatial dims, or :math:`(N, *, C)` with ``channels_last``.
        - Output: same shape and memory format as the input.

    Example:
        >>> DyReLU(8, variant="a")
        DyReLUA(8, k=2, reduction=8, lambda_a=1.0, lambda_b=0.5, init_a=(1.0, 0.0), init_b=(0.0, 0.0))
        >>> isinstance(DyReLUC(8), DyReLU)
        True
    """

    _per_channel: bool = True

    def __init__(
        self,
        channels: int | None = None,
        *,
        k: int = 2,
        reduction: int = 8,
        min_hidden: int = 1,
        lambda_a: float = 1.0,
        lambda_b: float = 0.5,
        init_a: Sequence[float] | None = None,
        init_b: Sequence[float] | None = None,
        zero_init_last: bool = True,
        context_channels: int | None = None,
        channels_last: bool = False,
        inplace: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"expected k (number of pieces) to be an integer >= 1, got {k!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"expected reduction to be a positive integer, got {reduction!r}")
        if not isinstance(min_hidden, int) or min_hidden < 1:
            raise ValueError(f"expected min_hidden to be a positive integer, got {min_hidden!r}")
        self.min_hidden = min_hidden
        self.k = k
        self.reduction = reduction
        self.lambda_a = float(lambda_a)
        self.lambda_b = float(lambda_b)
        self.init_a = _default_init(init_a, k, 1.0, "init_a")
        self.init_b = _default_init(init_b, k, 0.0, "init_b")
        if context_channels is not None and (not isinstance(context_channels, int) or context_channels < 1):
            raise ValueError(f"expected context_channels to be a positive integer or None, got {context_channels!r}")
        self.last_init = "zero" if zero_init_last else "linear"
        self.context_channels = context_channels
        self.channels_last = channels_last
        del inplace  # accepted for act_layer compatibility; the output is always a new tensor
        super().__init__(channels, device=device, dtype=dtype)

    # -- construction -------------------------------------------------------------------------------
    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        context = self.context_channels or channels
        hidden = max(context // self.reduction, self.min_hidden)
        out = 2 * self.k * (channels if self._per_channel else 1)
        return {
            "fc1_weight": (hidden, context),
            "fc1_bias": (hidden,),
            "fc2_weight": (out, hidden),
            "fc2_bias": (out,),
        }

    def _channels_from_state(self, state_dict, prefix: str) -> tuple[int, int | None] | None:
        fc1, fc2 = state_dict.get(prefix + "fc1_weight"), state_dict.get(prefix + "fc2_weight")
        if fc1 is None or fc2 is None or isinstance(fc1, UninitializedParameter):
            return None
        context = fc1.shape[1]
        if not self._per_channel:  # DY-ReLU-A: C is not in the state; the context is assumed to be x itself
            return context, self.context_channels
        channels = fc2.shape[0] // (2 * self.k)
        return channels, (None if context == channels and self.context_channels is None else context)

    def _lazy_load_hook(self, state_dict, prefix, *args) -> None:
        LazyModuleMixin._lazy_load_hook(self, state_dict, prefix, *args)
        found = self._channels_from_state(state_dict, prefix) if self.channels is None else None
        if found is not None:
            self.channels, self.context_channels = found

    def initialize_parameters(self, x: Tensor, context: Tensor | None = None) -> None:
        if self.has_uninitialized_params() and context is not None and self.context_channels is None:
            self.context_channels = self._channel_count(context)
        super().initialize_parameters(x)

    def reset_parameters(self) -> None:
        """The first FC as nn.Linear initialises it; the last FC at zero (a fresh module is ReLU) or, with
        ``zero_init_last=False``, as nn.Linear initialises it (the authors' code)."""
        _linear_init(self.fc1_weight, self.fc1_bias)
        if self.last_init == "zero":
            nn.init.zeros_(self.fc2_weight)
            nn.init.zeros_(self.fc2_bias)
        else:
            _linear_init(self.fc2_weight, self.fc2_bias)

    def zero_init_last(self) -> None:
        """Zero the hyper function's last layer: the module then computes α/β's static function (ReLU).

        timm's convention: its networks built with ``zero_init_last=True`` (their default) call this method
        on every module that has it, so a DY-ReLU inside a timm ResNet starts as ReLU whatever its own
        ``zero_init_last`` argument said.
        """
        self.last_init = "zero"  # a lazy module zeroes them when it materialises
        if not self.has_uninitialized_params():
            with torch.no_grad():
                self.fc2_weight.zero_()
                self.fc2_bias.zero_()

    # -- hyper function θ(x) --------------------------------------------------------------------------
    def hyper(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Coefficients ``a`` and ``b`` from the input, or from ``context`` when given (channels at dim 1).

        Shape:
            - x: :math:`(N, C, *)`
            - context: :math:`(N, C_{ctx}, *)`, any spatial size (it is averaged over its positions)
            - output: two tensors :math:`(N, C, K)` (DY-ReLU-B/C) or :math:`(N, 1, K)` (DY-ReLU-A).
        """
        return self._coefficients(self._logits(x, context), x.shape[0])

    def _logits(self, x: Tensor, context: Tensor | None) -> Tensor:
        """θ(x) before the normalisation: pool, FC, ReLU, FC; ``(N, C' 2K)``, a channel's 2K columns together."""
        pooled = spatial_mean(x if context is None else context, self.fc1_weight.dtype)  # (N, C_ctx)
        hidden = F.relu(F.linear(pooled, self.fc1_weight, self.fc1_bias))
        return F.linear(hidden, self.fc2_weight, self.fc2_bias)

    def _coefficients(self, logits: Tensor, n: int) -> tuple[Tensor, Tensor]:
        residual = DF.normalize_residual(logits)  # (N, C'*2K)
        residual = residual.view(n, self.channels if self._per_channel else 1, 2 * self.k)  # (N, C', 2K)
        return DF.coefficients(residual, self.init_a, self.init_b, self.lambda_a, self.lambda_b)

    def _residual_constants(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """α then β, and λ_a K times then λ_b K times, as (2K,) tensors of ``like``'s dtype and device."""
        ranges = (self.lambda_a,) * self.k + (self.lambda_b,) * self.k
        return DF._as_constant(self.init_a + self.init_b, like), DF._as_constant(ranges, like)

    def _context_first(self, context: Tensor | None, x: Tensor) -> Tensor | None:
        """Check ``context`` against ``x`` (channels first) and return it with channels at dim 1."""
        if context is None:
            return None
        expected = self.context_channels or self.channels
        got = self._channel_count(context)
        if got != expected or context.shape[0] != x.shape[0]:
            where = "the last dim" if self.channels_last else "dim 1"
            raise ValueError(
                f"expected a context of {x.shape[0]} samples with {expected} channels at {where} (context_channels), "
                f"got shape {tuple(context.shape)}"
            )
        return context.movedim(-1, 1) if self.channels_last else context

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = self._to_channels_first(x)
        logits = self._logits(x, self._context_first(context, x))
        scale = self._scale(x)
        # Eager CPU float32/float64: coefficients and piecewise maximum as one node on the native kernels.
        y = None if tracing() else residual_max(x, logits, *self._residual_constants(logits), self.k, scale)
        if y is None:
            a, b = self._coefficients(logits, x.shape[0])
            y = DF.piecewise_max(x, a, b, scale)
        return self._from_channels_first(y)

    def _scale(self, x: Tensor) -> Tensor | None:
        return None

    def extra_repr(self) -> str:
        parts = [
            f"{self.channels}",
            f"k={self.k}",
            f"reduction={self.reduction}",
            *([f"min_hidden={self.min_hidden}"] if self.min_hidden != 1 else []),
            f"lambda_a={self.lambda_a}",
            f"lambda_b={self.lambda_b}",
            f"init_a={self.init_a}",
            f"init_b={self.init_b}",
        ]
        if self.last_init != "zero":
            parts.append("zero_init_last=False")
        if self.context_channels is not None:
            parts.append(f"context_channels={self.context_channels}")
        if self.channels_last:
            parts.append("channels_last=True")
        return ", ".join(parts)


class DyReLUA(DyReLU):
    """DY-ReLU-A: one piecewise-linear function shared by all channels and positions of a sample.

    ``y = max_k(a^k(x) * x + b^k(x))`` with ``2K`` coefficients per sample from the hyper function
    θ(x): global average pool → FC C→C/R → ReLU → FC C/R→2K → ``2σ − 1`` → ``a = α + λ_a Δa``,
    ``b = β + λ_b Δb``. The last FC starts at zero, so a fresh module computes exactly ``α``/``β``'s
    function: ReLU by default.

    Args:
        channels: C; ``None`` infers it on the first forward pass (a lazy module), so the class works
            as a timm ``act_layer`` or torchvision ``activation_layer`` factory.
        k: K, the number of pieces. ``k=1`` is an affine, SE-like map ``a(x) * x + b(x)`` with no
            rectification; use it only deliberately.
        reduction: R, the hyper function's reduction ratio (hidden width ``max(C // R, min_hidden)``).
        min_hidden: the hyper function's smallest hidden width. With the default 1, a 16-channel layer
            has 2 hidden units, which can all start dead (ReLU of a negative pre-activation), leaving the
            coefficients input-independent; the same group's MicroNet code uses a floor of 4.
        lambda_a: λ_a, the range of the slopes' residual.
        lambda_b: λ_b, the range of the intercepts' residual.
        init_a: α, the K initial slopes; ``None`` means ``(1, 0, ..., 0)``.
        init_b: β, the K initial intercepts; ``None`` means zeros.
        zero_init_last: start the hyper function's last FC at zero, so that a fresh module computes
            exactly α/β's function (ReLU): what :func:`~dyrelu.convert` needs for a trained network.
            ``False`` initialises it as ``nn.Linear`` does (the authors' code): the module is dynamic
            from the first step, which training from scratch may want (see the README's recipe). The
            choice is kept in ``last_init`` (``"zero"`` or ``"linear"``); the method :meth:`zero_init_last`
            (timm's name) zeroes the last FC again.
        context_channels: the channels of a ``context`` tensor that the hyper function reads instead of
            the input (``forward(x, context)``); ``None``: the input's own channel count, or inferred
            from the first ``context`` passed to a lazy module. The paper's hyper function reads the
            activation's own input (the default, ``context=None``); the authors' code can compute the
            coefficients from another tensor (``[x_in, x_out]``), for example a block's input, which
            has fewer channels than the expanded tensor it activates (a smaller hyper function).
        channels_last: the input is ``(N, *, C)`` (for example ``(N, L, C)`` tokens) instead of
            ``(N, C, *)``; a ``context`` then is ``(N, *, C_ctx)`` too.
        inplace: accepted and ignored (the output is always a new tensor).
        device: device of the parameters.
        dtype: dtype of the parameters; inputs of another float dtype are accepted (the hyper function
            runs in the parameters' dtype, the piecewise maximum in the input's).

    Shape:
        - Input: :math:`(N, C, *)` with 0 to 3 spatial dims, or :math:`(N, *, C)` with ``channels_last``.
        - Output: same shape and memory format as the input.

    Example:
        >>> act = DyReLUA(16)
        >>> x = torch.randn(2, 16, 8, 8)
        >>> torch.equal(act(x), torch.relu(x))
        True
    """

    _per_channel = False


class DyReLUB(DyReLU):
    """DY-ReLU-B: one piecewise-linear function per channel, shared over positions (the paper's default).

    ``y_c = max_k(a_c^k(x) * x_c + b_c^k(x))`` with ``2KC`` coefficients per sample from the hyper
    function θ(x) (see :class:`DyReLUA`; the last FC outputs ``2KC``). A fresh module is exactly ReLU.

    Args:
        channels: C; ``None`` infers it on the first forward pass.
        k: K, the number of pieces (``k=1``: affine, SE-like, no rectification).
        reduction: R, the hyper function's reduction ratio. min_hidden: its smallest hidden width.
        lambda_a: λ_a. lambda_b: λ_b. init_a: α (``None``: ``(1, 0, ...)``). init_b: β (``None``: zeros).
        zero_init_last: ``True`` (default): a fresh module is ReLU; ``False``: the last FC as nn.Linear.
        context_channels: the channels of the ``context`` that the hyper function reads instead of the
            input (see :class:`DyReLUA`).
        channels_last: the input is ``(N, *, C)``.
        inplace: accepted and ignored.
        device: device of the parameters. dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, *)` with 0 to 3 spatial dims, or :math:`(N, *, C)` with ``channels_last``.
        - Output: same shape and memory format as the input.

    Example:
        >>> act = DyReLUB(16)
        >>> x = torch.randn(2, 16, 8, 8)
        >>> torch.equal(act(x), torch.relu(x))
        True
    """


class DyReLUC(DyReLU):
    """DY-ReLU-C: per channel and per position, ``a_{c,p}^k = π_p · a_c^k`` (same for ``b``).

    The spatial attention is ``π = min(γ · softmax(z / τ), 1)`` with ``z`` a 1×1 convolution C→1 of the
    input (no bias: the normalisation and the softmax ignore it), batch-normalised as in the paper and the
    authors' code (``spatial_norm``: a one-channel BatchNorm over the batch and the positions). As ``π ≥ 0``,
    ``y = π · max_k(a_c^k x + b_c^k)``. With the normalisation ``π`` depends on the direction of the attention
    weight, not on its norm, and in training mode it does not change when the input is scaled by a positive
    factor; like any BatchNorm, it makes a sample's output depend on the rest of its batch in training mode
    (not in eval mode).

    Where a fresh module starts: the last FC and the attention convolution start at zero, so ``z = 0``, the
    normalised logits are 0 too (in training mode the batch's variance is 0; in eval mode a fresh BatchNorm
    is near identity), ``π`` is uniform and equals ``γ / HW`` (``1/3`` with the default ``γ = HW/3``): a
    fresh DyReLUC computes ``relu(x) / 3``, not ``relu(x)``. A converted network therefore does not reproduce
    the original output until trained; use ``gamma`` to move the starting point. Once the attention weight
    is not zero, a training-mode BatchNorm scales its logits to unit variance however small the weight is.

    Args:
        channels: C; ``None`` infers it on the first forward pass.
        k, reduction, min_hidden, lambda_a, lambda_b, init_a, init_b, zero_init_last, context_channels: as for
            :class:`DyReLUA` (``zero_init_last=False`` also initialises the attention convolution as
            ``nn.Conv2d`` does; the attention always reads the input ``x``, never the context).
        tau: τ, the softmax temperature (10 in the paper). Part of the module's state: the buffer
            ``temperature`` (0-dim, in the module's dtype) is in ``state_dict()``, so an annealed τ is saved and
            loaded with the weights (a state dict without it, from dyrelu 0.1, loads and keeps the module's τ).
            The property ``tau`` reads and assigns it as a float: a training schedule may change it between
            steps (see :func:`dyrelu.train.set_tau`).
        gamma: γ; ``None`` means ``HW / 3`` for each input's spatial size.
        spatial_norm: normalise the attention logits ``z`` (shape ``(N, 1, P)`` over the ``P`` positions) as
            ``nn.BatchNorm1d(1)`` does (momentum 0.1, eps 1e-5): batch statistics in training mode, running
            statistics in eval mode, as the authors do. Its state is the parameters ``spatial_bn_weight`` and
            ``spatial_bn_bias`` (shape ``(1,)``, starting at 1 and 0; they are the module's, like the rest of the
            attention) and the buffers ``spatial_bn_running_mean`` and ``spatial_bn_running_var``. ``False``: the
            raw logits, as dyrelu 0.1 computed them; the module then has none of these and 0.1's state (its state
            dicts load strictly). A training batch of a single value (one sample, one position) is not
            normalised: ``π = min(γ, 1)`` does not depend on ``z`` then.
        channels_last: the input is ``(N, *, C)``.
        inplace: accepted and ignored.
        device: device of the parameters. dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, *)` with 1 to 3 spatial dims, or :math:`(N, *, C)` with ``channels_last``.
        - Output: same shape and memory format as the input.

    Example:
        >>> act = DyReLUC(16)
        >>> x = torch.randn(2, 16, 8, 8)
        >>> torch.allclose(act(x), torch.relu(x) / 3)
        True
    """

    _needs_spatial = True

    def __init__(
        self,
        channels: int | None = None,
        *,
        k: int = 2,
        reduction: int = 8,
        min_hidden: int = 1,
        lambda_a: float = 1.0,
        lambda_b: float = 0.5,
        init_a: Sequence[float] | None = None,
        init_b: Sequence[float] | None = None,
        zero_init_last: bool = True,
        context_channels: int | None = None,
        tau: float = 10.0,
        gamma: float | None = None,
        spatial_norm: bool = True,
        channels_last: bool = False,
        inplace: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        tau = _check_tau(tau)
        if gamma is not None and gamma <= 0:
            raise ValueError(f"expected a positive gamma or None (HW/3), got {gamma}")
        self.gamma = None if gamma is None else float(gamma)
        self.spatial_norm = bool(spatial_norm)
        super().__init__(
            channels,
            k=k,
            reduction=reduction,
            min_hidden=min_hidden,
            lambda_a=lambda_a,
            lambda_b=lambda_b,
            init_a=init_a,
            init_b=init_b,
            zero_init_last=zero_init_last,
            context_channels=context_channels,
            channels_last=channels_last,
            inplace=inplace,
            device=device,
            dtype=dtype,
        )
        # τ is state (an annealed τ travels with the weights); a tensor rather than a float in forward, so
        # that a schedule changing it every step does not recompile a torch.compile'd model.
        self.register_buffer("temperature", torch.tensor(tau, device=device, dtype=dtype))
        if self.spatial_norm:
            # One channel: the logits of all samples and positions share the statistics. The shapes do not depend
            # on C, so a lazy module has them from the start (an uninitialised buffer could not be deep-copied).
            factory = {"device": device, "dtype": dtype}
            self.spatial_bn_weight = nn.Parameter(torch.ones(1, **factory))
            self.spatial_bn_bias = nn.Parameter(torch.zeros(1, **factory))
            self.register_buffer("spatial_bn_running_mean", torch.zeros(1, **factory))
            self.register_buffer("spatial_bn_running_var", torch.ones(1, **factory))

    @property
    def tau(self) -> float:
        """τ as a float; assigning a float sets the ``temperature`` buffer in place."""
        return float(self.temperature)

    @tau.setter
    def tau(self, value: float) -> None:
        with torch.no_grad():
            self.temperature.fill_(_check_tau(value))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        key = prefix + "temperature"
        if key not in state_dict and key in missing_keys:
            # A state dict from before τ was state (dyrelu 0.1): keep this module's τ, as BatchNorm does
            # for a state dict without num_batches_tracked.
            missing_keys.remove(key)

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        return {**super()._shapes(channels), "spatial_weight": (channels,)}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.last_init == "zero":
            nn.init.zeros_(self.spatial_weight)
        else:  # as nn.Conv2d(C, 1, 1) initialises its weight: uniform, bound 1/sqrt(C)
            bound = 1.0 / math.sqrt(self.spatial_weight.shape[0])
            nn.init.uniform_(self.spatial_weight, -bound, bound)
        self._reset_spatial_bn()

    def zero_init_last(self) -> None:
        """Zero the hyper function's last layer and the attention convolution (uniform π, see above).

        The attention's BatchNorm starts afresh too: its running statistics described the old weight's logits.
        """
        super().zero_init_last()
        if not self.has_uninitialized_params():
            with torch.no_grad():
                self.spatial_weight.zero_()
        self._reset_spatial_bn()

    def _reset_spatial_bn(self) -> None:
        # LazyChannels' initialiser calls reset_parameters before this class's initialiser creates them.
        if self.spatial_norm and hasattr(self, "spatial_bn_weight"):
            with torch.no_grad():
                self.spatial_bn_weight.fill_(1.0)
                self.spatial_bn_bias.zero_()
                self.spatial_bn_running_mean.zero_()
                self.spatial_bn_running_var.fill_(1.0)

    def _scale(self, x: Tensor) -> Tensor:
        weight = self.spatial_weight.to(x.dtype)
        if _AttentionLogits.applies(x):
            logits = _AttentionLogits.apply(x, weight)
        else:
            logits = _attention_logits(x, weight)
        # A single value in training mode has no batch statistics (BatchNorm raises); π = min(γ, 1) then anyway.
        if self.spatial_norm and not (self.training and logits.shape[0] * logits.shape[2] == 1):
            # In the parameters' dtype (an input of another float dtype, autocast), then back to the input's.
            logits = F.batch_norm(
                logits.to(self.spatial_bn_weight.dtype),
                self.spatial_bn_running_mean,
                self.spatial_bn_running_var,
                self.spatial_bn_weight,
                self.spatial_bn_bias,
                training=self.training,
                momentum=_SPATIAL_BN_MOMENTUM,
                eps=_SPATIAL_BN_EPS,
            ).to(logits.dtype)
        pi = DF.spatial_attention(logits, self.temperature, self.gamma)
        return pi.view((x.shape[0], 1, *x.shape[2:]))

    def extra_repr(self) -> str:
        tau = "?" if self.temperature.is_meta else self.tau  # a meta tensor has no value to print
        return f"{super().extra_repr()}, tau={tau}, gamma={self.gamma}, spatial_norm={self.spatial_norm}"


def _attention_logits(x: Tensor, weight: Tensor) -> Tensor:
    """DY-ReLU-C's attention logits ``z = Σ_c w_c x_c`` per position, ``(N, 1, P)``."""
    flat = x.flatten(2)  # (N, C, P)
    # Contract over C without a transposed copy of x (autograd would keep it for backward).
    if flat.stride(1) == 1:  # channels-last memory: (N, P, C) folds to a (N·P, C) matrix
        return torch.matmul(flat.transpose(1, 2), weight).unsqueeze(1)  # (N, 1, P)
    return torch.bmm(weight.view(1, 1, -1).expand(x.shape[0], 1, -1), flat)  # (N, 1, P)


class _AttentionLogits(torch.autograd.Function):
    """:func:`_attention_logits` whose backward writes the input's gradient (an outer product of the logits'
    gradient and the weight, a full-size tensor) into the native kernels' recycled memory (issue 18): autograd's
    own formula allocated it fresh at every call, and page-faulting it in cost more than computing it. The same
    operations as autograd's formulas (``mv``'s and ``bmm``'s), so the same values; for dense CPU float32 or
    float64 input in eager mode, the rest takes :func:`_attention_logits`."""

    @staticmethod
    def applies(x: Tensor) -> bool:
        if tracing() or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return False
        flat = x.flatten(2)
        return flat.transpose(1, 2).is_contiguous() or flat.is_contiguous()

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return _attention_logits(x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        flat = x.flatten(2)  # (N, C, P)
        rows = flat.stride(1) == 1
        grad_x = grad_w = None
        if rows:  # mv of the (N·P, C) matrix: ger for the matrix, the transposed matrix times grad for the vector
            matrix, g = flat.transpose(1, 2).reshape(-1, flat.shape[1]), grad.reshape(-1)
            if ctx.needs_input_grad[1]:
                grad_w = matrix.t().mv(g)
            if ctx.needs_input_grad[0]:
                if torch.is_grad_enabled():
                    grad_x = g.outer(weight).view(x.shape[0], -1, x.shape[1]).transpose(1, 2).view(x.shape)
                else:
                    grad_x = _native._like(x)
                    torch.outer(g, weight, out=grad_x.flatten(2).transpose(1, 2).view(-1, x.shape[1]))
        else:  # bmm with the weight expanded over the samples
            if ctx.needs_input_grad[1]:
                grad_w = torch.bmm(grad, flat.transpose(1, 2)).sum(0, keepdim=True).view(-1)
            if ctx.needs_input_grad[0]:
                expanded = weight.view(1, 1, -1).expand(x.shape[0], 1, -1).transpose(1, 2)  # (N, C, 1)
                if torch.is_grad_enabled():
                    grad_x = torch.bmm(expanded, grad).view(x.shape)
                else:
                    grad_x = _native._like(x)
                    torch.bmm(expanded, grad, out=grad_x.view(flat.shape))
        return grad_x, grad_w


_VARIANTS = {"A": DyReLUA, "B": DyReLUB, "C": DyReLUC}


def _variant_class(variant: str) -> type[DyReLU]:
    cls = _VARIANTS.get(str(variant).upper())
    if cls is None:
        raise ValueError(f"unknown DY-ReLU variant {variant!r}, expected one of {sorted(_VARIANTS)}")
    return cls
