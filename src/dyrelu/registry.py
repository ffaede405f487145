"""Activation registry: lower-case names to factories ``factory(channels=None, **kwargs) -> nn.Module``.

Every factory accepts ``channels`` (ignored by the activations that do not need it) and ``inplace``
(where PyTorch's module has it), so ``functools.partial(create_act, name)`` is a timm ``act_layer``.
:func:`get_act_layer` turns what timm and torchvision accept as an activation (a name, a class, a
factory) into such a factory.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import overload

from torch import nn

from dyrelu.activations import Maxout, SEReLU, StaticPWL
from dyrelu.aprelu import APReLU
from dyrelu.modules import DyReLUA, DyReLUB, DyReLUC

__all__ = ["create_act", "get_act_layer", "list_acts", "register_act"]

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


# timm's spellings (timm.layers.create_act) of activations registered here under another name; the
# names both use (relu, relu6, elu, prelu, gelu, silu, swish) need no alias.
_TIMM_ALIASES = {"leaky_relu": "lrelu", "hard_swish": "hardswish"}


class _ActLayer:
    """``factory(channels=None, **kwargs) -> nn.Module`` around an activation class or callable.

    ``how`` says how the channel count reaches ``fn``: ``"keyword"`` (``fn`` has a ``channels``
    parameter), ``"positional"`` (the deprecated ``act_layer(channels)`` call of a callable whose first
    parameter is required), or ``"none"`` (not passed: ``nn.ReLU``, ``nn.GELU``, ...).
    """

    __slots__ = ("fn", "how", "name")

    def __init__(self, fn: Callable[..., nn.Module], how: str, name: str) -> None:
        self.fn = fn
        self.how = how
        self.name = name

    def __call__(self, channels: int | None = None, **kwargs) -> nn.Module:
        if self.how == "keyword":
            return self.fn(channels=channels, **kwargs)
        if self.how == "positional":
            return self.fn(channels, **kwargs)
        return self.fn(**kwargs)

    def __repr__(self) -> str:
        return f"get_act_layer({self.name})"


def _channels_rule(fn: Callable[..., nn.Module]) -> str:
    """How :class:`_ActLayer` passes the channel count to ``fn`` (inspected once, not per call site)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: call it as nn.ReLU is called
        return "none"
    named = {p.name: p for p in params}
    if "channels" in named and named["channels"].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    ):
        return "keyword"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not isinstance(fn, type) and params and params[0].kind in positional and params[0].default is params[0].empty:
        # The old contract of dyrelu.models was act_layer(channels), positionally: keep such a factory
        # (``lambda c: nn.PReLU(c)``) working for one release.
        warnings.warn(
            f"act_layer {fn!r} is called with the channel count positionally as its parameter "
            f"{params[0].name!r}; name that parameter 'channels' (it is then passed by keyword): the positional "
            "call is deprecated and will be removed in dyrelu 0.3",
            DeprecationWarning,
            stacklevel=3,
        )
        return "positional"
    return "none"


def _known_names() -> str:
    aliases = ", ".join(f"{alias} (= {name})" for alias, name in sorted(_TIMM_ALIASES.items()))
    return f"{', '.join(list_acts())}, or timm's spellings {aliases}"


@overload
def get_act_layer(act_layer: None) -> None: ...


@overload
def get_act_layer(act_layer: str | type[nn.Module] | Callable[..., nn.Module]) -> ActFactory: ...


def get_act_layer(
    act_layer: str | type[nn.Module] | Callable[..., nn.Module] | None,
) -> ActFactory | None:
    """An activation factory ``f(channels=None, **kwargs) -> nn.Module`` from what timm and torchvision accept.

    The channel count is passed, by keyword, only where it is accepted: ``get_act_layer(nn.ReLU)(64)``
    builds ``nn.ReLU()`` (not ``nn.ReLU(64)``, an in-place ReLU by accident), ``get_act_layer(DyReLUB)(64)``
    builds ``DyReLUB(channels=64)``. The signature is inspected once, here.

    Args:
        act_layer: a registered name (see :func:`list_acts`) or timm's spelling of one (``leaky_relu``,
            ``hard_swish``, ``swish``, ...), case-insensitive; an ``nn.Module`` class (``nn.ReLU``,
            ``nn.GELU``, :class:`~dyrelu.DyReLUB`, ...); or a callable returning a module, which gets
            ``channels=`` if it has a parameter of that name. ``None`` gives ``None`` (as in timm: keep the
            default activation).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
        TypeError: neither a name nor a callable, or a module instance (each call site needs its own
            module: pass the class).

    Example:
        >>> from torch import nn
        >>> get_act_layer(nn.ReLU)(64)
        ReLU()
        >>> get_act_layer("leaky_relu")(64, negative_slope=0.1)
        LeakyReLU(negative_slope=0.1)
        >>> get_act_layer("dyrelu_b")(16, k=3).k
        3
    """
    if act_layer is None:
        return None
    if isinstance(act_layer, _ActLayer):
        return act_layer
    if isinstance(act_layer, str):
        key = act_layer.lower()
        key = _TIMM_ALIASES.get(key, key)
        if key not in _ACTS:
            raise ValueError(f"unknown activation {act_layer!r}, expected one of {_known_names()}")
        return _ActLayer(functools.partial(create_act, key), "keyword", repr(key))
    if isinstance(act_layer, nn.Module):
        raise TypeError(
            f"expected an activation class, name or factory, got the module {act_layer!r}: each call site needs its "
            f"own module, so pass its class ({type(act_layer).__name__})"
        )
    if not callable(act_layer):
        raise TypeError(
            f"expected an activation name ({_known_names()}), an nn.Module class or a factory, got {act_layer!r}"
        )
    name = act_layer.__name__ if isinstance(act_layer, type) else repr(act_layer)
    return _ActLayer(act_layer, _channels_rule(act_layer), name)
