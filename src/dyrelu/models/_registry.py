"""Model registry: lower-case names to entry points, and :func:`create_model` (timm style, a plain dict)."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from dyrelu.recipe import SCRATCH_DYRELU_KWARGS
from dyrelu.registry import create_act, list_acts

__all__ = ["create_model", "list_models", "register_model"]

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register an entry point under its function name (lower case); a duplicate name raises ``ValueError``.

    The entry point takes the model class's keyword arguments: ``act_layer``, ``num_classes``,
    ``in_chans`` and ``small_input``.
    """
    name = fn.__name__.lower()
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(filter: str = "") -> list[str]:
    """Sorted names of the registered models, optionally those matching a shell-style pattern.

    Example:
        >>> list_models("resnet*")
        ['resnet10', 'resnet18', 'resnet34', 'resnet50']
    """
    names = sorted(_MODELS)
    return fnmatch.filter(names, filter) if filter else names


def create_model(
    name: str,
    act: str | None = "relu",
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    act_context: str = "input",
    **act_kwargs,
) -> nn.Module:
    """Create the registered model ``name`` with activation ``act`` at the paper's placement.

    Each activation site gets its own module ``dyrelu.create_act(act, channels, **act_kwargs)`` with the
    channel count known at build time, so all parameters exist right after this call (no lazy modules).
    Each model family's docstring says which sites it replaces.

    Args:
        name: a registered model name (see :func:`list_models`), case-insensitive.
        act: a registered activation name (see :func:`dyrelu.list_acts`), or ``None`` to keep the
            architecture's own activations (ReLU6 in MobileNetV2, ReLU and hard-swish in MobileNetV3,
            ReLU in ResNet).
        num_classes: the classifier's outputs.
        in_chans: the stem's input channels (1 for Fashion-MNIST).
        small_input: adapt the stem to 28×28 and 32×32 images (total stride 8 instead of 32; each
            family's docstring says how).
        act_context: ``"input"`` (default): each DY-ReLU's hyper function reads the activation's own
            input, as in the paper; ``"block"``: in MobileNetV2, the inverted residual's input (see
            :class:`~dyrelu.models.MobileNetV2`; other families and activations raise ``ValueError``).
        **act_kwargs: passed to every activation, for example ``k=3`` or ``reduction=4`` for DY-ReLU. A network
            built here is one to train from scratch: its DY-ReLUs get the recipe's options
            (:data:`dyrelu.recipe.SCRATCH_DYRELU_KWARGS`: ``zero_init_last=False``) unless given; pass
            ``zero_init_last=True`` for a network that starts exactly as its ReLU twin.

    Example:
        >>> import torch
        >>> model = create_model("resnet10", act="dyrelu_b", num_classes=10, small_input=True)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    fn = _MODELS.get(str(name).lower())
    if fn is None:
        raise ValueError(f"unknown model {name!r}, expected one of {', '.join(list_models())}")
    if act is None:
        if act_kwargs:
            raise ValueError(f"act=None keeps the original activations and takes no arguments, got {act_kwargs}")
        act_layer = None
    else:
        if str(act).lower() not in list_acts():
            raise ValueError(f"unknown activation {act!r}, expected one of {', '.join(list_acts())}")
        if str(act).lower().startswith("dyrelu"):
            act_kwargs = {**SCRATCH_DYRELU_KWARGS, **act_kwargs}
        act_layer = functools.partial(create_act, act, **act_kwargs)
    for arg, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"expected {arg} to be a positive integer, got {value!r}")
    extra = {}
    if act_context != "input":
        if act is None or not str(act).lower().startswith("dyrelu"):
            raise ValueError(f"act_context={act_context!r} needs a DY-ReLU activation (dyrelu_a/b/c), got act={act!r}")
        extra["act_context"] = act_context
    try:
        return fn(act_layer=act_layer, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **extra)
    except TypeError as err:
        if extra and "act_context" in str(err):
            raise ValueError(f"model {name!r} has no act_context option (it is for mobilenetv2_*)") from None
        raise
