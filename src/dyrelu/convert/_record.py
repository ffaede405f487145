"""Running the model once without changing it, and recording every call of a target activation."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from dyrelu._lazy import LazyChannels

_TARGETS = ("relu", "relu6")
# Spatial size of the default example input, by the number of spatial dims of the first convolution.
_DEFAULT_SPATIAL = {1: (64,), 2: (64, 64), 3: (16, 32, 32)}
# Reductions that, over all positions, turn a feature map into a per-sample vector (global pooling).
_REDUCTIONS = frozenset({"mean", "nanmean", "sum", "nansum", "amax", "amin", "max", "min", "logsumexp", "norm"})
_RESERVED_KWARGS = ("channels", "device", "dtype")
_DYRELU_ACTIVATION_MODULES = ("dyrelu.modules", "dyrelu.activations", "dyrelu.aprelu")


# -- what counts as a target activation ---------------------------------------------------------------------


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _function_target(
    func: Any, args: Sequence[Any], kwargs: dict[str, Any], targets: frozenset[str]
) -> tuple[str, bool] | None:
    """``(target, inplace)`` when ``func(*args, **kwargs)`` applies a target activation, else ``None``."""
    if "relu" in targets:
        if func is F.relu:
            return "relu", bool(_arg(args, kwargs, 1, "inplace", False))
        if func is torch.relu or func is torch.Tensor.relu:
            return "relu", False
        if func is torch.relu_ or func is torch.Tensor.relu_:
            return "relu", True
    if "relu6" in targets:
        if func is F.relu6:
            return "relu6", bool(_arg(args, kwargs, 1, "inplace", False))
        if func is F.hardtanh or func is F.hardtanh_:
            bounds = (_arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0))
            if bounds == (0, 6):
                return "relu6", func is F.hardtanh_ or bool(_arg(args, kwargs, 3, "inplace", False))
    return None


def _module_target(module: nn.Module, targets: frozenset[str]) -> str | None:
    if "relu" in targets and isinstance(module, nn.ReLU):
        return "relu"
    if "relu6" in targets and (
        isinstance(module, nn.ReLU6) or (type(module) is nn.Hardtanh and (module.min_val, module.max_val) == (0, 6))
    ):
        return "relu6"
    return None


def _is_dyrelu_activation(module: nn.Module) -> bool:
    """DY-ReLU and the other activations of this package: leaves, never traced or looked into."""
    return isinstance(module, LazyChannels) or type(module).__module__ in _DYRELU_ACTIVATION_MODULES


def _is_vector(t: Tensor) -> bool:
    """(N, C) or (N, C, 1, ..., 1): no spatial extent."""
    return t.dim() >= 2 and all(s == 1 for s in t.shape[2:])


# -- running the model without changing it --------------------------------------------------------------------


@contextlib.contextmanager
def _preserved(module: nn.Module, devices: list[int] | None = None) -> Iterator[None]:
    """No gradients; buffers (BatchNorm statistics) and the RNG states (CPU and ``devices``) are kept."""
    buffers = {name: b.detach().clone() for name, b in module.named_buffers() if not is_lazy(b)}
    try:
        with torch.random.fork_rng(devices=_cuda_devices(module) if devices is None else devices), torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for name, value in buffers.items():
                current = module.get_buffer(name)
                if current.shape == value.shape:
                    current.copy_(value)


def _clone_tensors(tree: Any) -> Any:
    return pytree.tree_map_only(Tensor, lambda t: t.clone(), tree)


class _TensorArg:
    """Stands for a tensor in the recorded arguments of a call."""


_TENSOR = _TensorArg()


# -- finding the call sites: one run of the model ----------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One observed call of a target activation, made by the ``forward`` of the module on top of the stack."""

    kind: str  # "relu" or "relu6"
    module: nn.Module | None  # the activation module, None for a functional call
    func: Any  # the function, for a functional call
    inplace: bool
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    is_view: bool  # an in-place call on a view also changes the viewed tensor
    context: bool  # the input was computed by a global pooling (as a squeeze-excitation gate's hidden vector)


@dataclass
class _Invocation:
    """One call of a module: its arguments (tensors replaced by ``_TENSOR``) and the activations its forward called."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    calls: list[_Call] = field(default_factory=list)


class _Recorder(TorchFunctionMode):
    """Records target-activation calls, per call of the module whose ``forward`` makes them.

    Forward hooks keep a stack of the running modules; the torch-function mode sees the functional calls
    (and every other torch function, to mark the tensors that come from a global pooling).
    """

    def __init__(self, targets: frozenset[str]) -> None:
        super().__init__()
        self.targets = targets
        self.stack: list[_Invocation] = []
        self.opaque = 0  # > 0 inside an activation module or a dyrelu activation
        self.invocations: dict[nn.Module, list[_Invocation]] = {}
        self.reached: set[nn.Module] = set()
        self._pooled: dict[int, Tensor] = {}  # strong references keep the ids unique during the run

    def attach(self, model: nn.Module) -> list[Any]:
        handles = []
        for module in model.modules():
            if _is_dyrelu_activation(module) or _module_target(module, self.targets):
                handles.append(module.register_forward_pre_hook(self._enter_opaque))
                handles.append(module.register_forward_hook(self._exit_opaque, always_call=True))
            else:
                handles.append(module.register_forward_pre_hook(self._push, with_kwargs=True))
                handles.append(module.register_forward_hook(self._pop, always_call=True))
        return handles

    def _push(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        summary = pytree.tree_map_only(Tensor, lambda t: _TENSOR, (args, kwargs))
        self.stack.append(_Invocation(*summary))

    def _pop(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.invocations.setdefault(module, []).append(self.stack.pop())

    def _enter_opaque(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        kind = _module_target(module, self.targets)
        if kind is not None:
            self.reached.add(module)
            if args:
                self._record(kind, module, None, bool(getattr(module, "inplace", False)), args[0])
        self.opaque += 1

    def _exit_opaque(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.opaque -= 1

    def _record(self, kind: str, module: nn.Module | None, func: Any, inplace: bool, x: Any) -> None:
        if self.opaque or not self.stack or not isinstance(x, Tensor):
            return
        call = _Call(
            kind, module, func, inplace, tuple(x.shape), x.dtype, x.device, x._base is not None, self._is_pooled(x)
        )
        self.stack[-1].calls.append(call)

    def _is_pooled(self, x: Tensor) -> bool:
        return id(x) in self._pooled

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.opaque and self.stack and args:
            hit = _function_target(func, args, kwargs, self.targets)
            if hit is not None:
                self._record(hit[0], None, func, hit[1], args[0])
        out = func(*args, **kwargs)
        self._track_pooling(func, args, kwargs, out)
        return out

    def _track_pooling(self, func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> None:
        outs = [t for t in pytree.tree_leaves(out) if isinstance(t, Tensor) and _is_vector(t)]
        if not outs:
            return
        ins = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        pooled = any(self._is_pooled(t) for t in ins)
        if not pooled:
            name = getattr(func, "__name__", "")
            if "pool" in name or name in _REDUCTIONS:
                # A reduction over all positions of a feature map, keeping its batch and channels. On a map
                # of one position only an explicitly global one (adaptive pooling, mean over positions) counts.
                is_global = name.startswith("adaptive") or name in _REDUCTIONS
                pooled = any(
                    t.dim() >= 3 and t.shape[:2] == outs[0].shape[:2] and (math.prod(t.shape[2:]) > 1 or is_global)
                    for t in ins
                )
        if pooled:
            for t in outs:
                self._pooled[id(t)] = t


def _default_example_input(model: nn.Module) -> tuple[Tensor, ...]:
    ref = next((t for t in itertools.chain(model.parameters(), model.buffers()) if not is_lazy(t)), None)
    floating = ref is not None and ref.is_floating_point()
    dtype = ref.dtype if floating else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.in_channels > 0:
            shape = (2, module.in_channels, *_DEFAULT_SPATIAL[len(module.kernel_size)])
            return (torch.randn(shape, generator=generator).to(device=device, dtype=dtype),)
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.in_features > 0:
            return (torch.randn(2, module.in_features, generator=generator).to(device=device, dtype=dtype),)
    raise ValueError(
        f"cannot infer an example input for {type(model).__name__}: expected a convolution or a linear layer "
        "to read the input channels from; pass example_input="
    )


def _run(model: nn.Module, args: tuple[Any, ...], recorder: _Recorder) -> None:
    """Run ``model(*args)`` under the recorder, leaving the model and the RNG as they were."""
    handles = recorder.attach(model)
    try:
        with _preserved(model), recorder:
            model(*args)
    except Exception as exc:
        shapes = ", ".join(f"{tuple(a.shape)} {a.dtype}" if isinstance(a, Tensor) else type(a).__name__ for a in args)
        raise RuntimeError(
            f"convert() could not run {type(model).__name__} on the example input ({shapes}) to find its activation "
            f"call sites: {type(exc).__name__}: {exc}. Pass a suitable example_input="
        ) from exc
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class _Capture:
    """A module's first call in the example run: copies of its arguments before and after, its result, the RNG."""

    inputs: Any
    devices: list[int]  # the CUDA devices whose RNG states follow the CPU's in ``rng``
    rng: list[Tensor]
    result: Any = None
    done: bool = False


def _rng_states(devices: list[int]) -> list[Tensor]:
    return [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in devices)]


def _set_rng_states(devices: list[int], states: list[Tensor]) -> None:
    torch.set_rng_state(states[0])
    for device, state in zip(devices, states[1:], strict=True):
        torch.cuda.set_rng_state(state, device)


def _cuda_devices(module: nn.Module) -> list[int]:
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})


def _capture(model: nn.Module, args: tuple[Any, ...], modules: Iterable[nn.Module]) -> dict[nn.Module, _Capture]:
    """The first call of each of ``modules`` in a second run of the model, identical to the first."""
    captured: dict[nn.Module, _Capture] = {}
    devices = _cuda_devices(model)

    def before(module: nn.Module, module_args: tuple[Any, ...], module_kwargs: dict[str, Any]) -> None:
        if module not in captured:
            captured[module] = _Capture(_clone_tensors((module_args, module_kwargs)), devices, _rng_states(devices))

    def after(module: nn.Module, module_args: tuple[Any, ...], module_kwargs: dict[str, Any], result: Any) -> None:
        capture = captured[module]
        if not capture.done:
            capture.result = _clone_tensors((result, module_args, module_kwargs))
            capture.done = True

    handles = []
    for module in modules:
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True, prepend=True))
    try:
        with _preserved(model):
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return {module: capture for module, capture in captured.items() if capture.done}
