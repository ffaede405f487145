"""Activation registry: lower-case names to factories ``factory(channels=None, **kwargs) -> nn.Module``.

Every factory accepts ``channels`` (ignored by the activations that do not need it) and ``inplace``
(where PyTorch's module has it), so ``functools.partial(create_act, name)`` is a timm ``act_layer``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from dyrelu.activations import Maxout, SEReLU, StaticPWL
from dyrelu.aprelu import APReLU
from dyrelu.modules import DyReLUA, DyReLUB, DyReLUC

__all__ = ["create_act", "list_acts", "register_act"]

ActFactory = Callable[..., nn.Module]

_ACTS: dict[str, ActFactory] = {}


def register_act(name: str, factory: ActFactory) -> ActFactory:
    """Register ``factory`` under ``name`` (lower case); a duplicate name raises ``ValueError``."""
    key = name.lower()
    if key in _ACTS:
        raise ValueError(f"activation {key!r} is already registered")
    _ACTS[key] = factory
    return factory


def _stateless(cls: type[nn.Module]) -> ActFactory:
    takes_inplace = "inplace" in inspect.signature(cls).parameters

    def factory(channels: int | None = None, **kwargs) -> nn.Module:
        if not takes_inplace:
            kwargs.pop("inplace", None)  # accepted from act_layer callers, meaningless here
        return cls(**kwargs)

    factory.__doc__ = f"{cls.__name__}; the channel count is not needed."
    return factory


def _prelu(channels: int | None = None, *, init: float = 0.25, inplace: bool = False, **kwargs) -> nn.Module:
    # One slope per channel when the channel count is known (as the paper's PReLU), else one shared slope.
    return nn.PReLU(num_parameters=channels or 1, init=init, **kwargs)


def _rrelu(channels: int | None = None, **kwargs) -> nn.Module:
    kwargs.pop("inplace", None)  # in-place RReLU breaks autograd when the input is needed elsewhere
    return nn.RReLU(**kwargs)


def _with_channels(cls: type[nn.Module]) -> ActFactory:
    def factory(channels: int | None = None, **kwargs) -> nn.Module:
        return cls(channels, **kwargs)

    factory.__doc__ = f"{cls.__name__}(channels, **kwargs)."
    return factory


for _name, _factory in {
    "relu": _stateless(nn.ReLU),
    "relu6": _stateless(nn.ReLU6),
    "lrelu": _stateless(nn.LeakyReLU),
    "prelu": _prelu,
    "rrelu": _rrelu,
    "elu": _stateless(nn.ELU),
    "gelu": _stateless(nn.GELU),
    "silu": _stateless(nn.SiLU),
    "swish": _stateless(nn.SiLU),
    "hardswish": _stateless(nn.Hardswish),
    "se_relu": _with_channels(SEReLU),
    "maxout": _with_channels(Maxout),
    "static_pwl": _with_channels(StaticPWL),
    "aprelu": _with_channels(APReLU),
    "dyrelu_a": _with_channels(DyReLUA),
    "dyrelu_b": _with_channels(DyReLUB),
    "dyrelu_c": _with_channels(DyReLUC),
}.items():
    register_act(_name, _factory)
del _name, _factory


def list_acts() -> list[str]:
    """Sorted names of the registered activations.

    Example:
        >>> "dyrelu_b" in list_acts()
        True
    """
    return sorted(_ACTS)


def create_act(name: str, channels: int | None = None, **kwargs) -> nn.Module:
    """Create the activation registered as ``name``.

    Args:
        name: a registered name (see :func:`list_acts`), case-insensitive.
        channels: the channel count, for activations with per-channel parameters; ``None`` lets the
            DY-ReLU and other channel-dependent modules infer it on their first forward pass.
        **kwargs: passed to the activation (for example ``k=3`` or ``inplace=True``).

    Example:
        >>> create_act("dyrelu_b", 32, k=3)
        DyReLUB(32, k=3, reduction=8, lambda_a=1.0, lambda_b=0.5, init_a=(1.0, 0.0, 0.0), init_b=(0.0, 0.0, 0.0))
    """
    factory = _ACTS.get(str(name).lower())
    if factory is None:
        raise ValueError(f"unknown activation {name!r}, expected one of {', '.join(list_acts())}")
    return factory(channels, **kwargs)
