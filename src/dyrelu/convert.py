"""Replace the ReLU call sites of a network by DY-ReLU: :func:`convert`.

Paper: Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027. The paper replaces the
activations inside the network's blocks, and a fresh DY-ReLU-A/B computes exactly ReLU, so a converted
network starts out computing what the original computed.

Swapping ``nn.ReLU`` modules one for one is not enough: torchvision's ``Bottleneck`` calls one ``self.relu``
at three sites with different channel counts, and DenseNet calls ``F.relu`` in ``forward``. The converter
therefore finds the *call sites* by running the model once, swaps modules where that is exact and rewrites,
with :mod:`torch.fx`, only the ``forward`` of the few modules that need it, after checking that the rewritten
forward reproduces the original on the example input. See :func:`convert`.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import importlib
import inspect
import itertools
import linecache
import math
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from dyrelu._lazy import LazyChannels
from dyrelu.modules import DyReLUA, DyReLUB, DyReLUC

__all__ = ["ConversionError", "convert"]

_VARIANTS: dict[str, type[nn.Module]] = {"A": DyReLUA, "B": DyReLUB, "C": DyReLUC}
_TARGETS = ("relu", "relu6")
# Spatial size of the default example input, by the number of spatial dims of the first convolution.
_DEFAULT_SPATIAL = {1: (64,), 2: (64, 64), 3: (16, 32, 32)}
# Reductions that, over all positions, turn a feature map into a per-sample vector (global pooling).
_REDUCTIONS = frozenset({"mean", "nanmean", "sum", "nansum", "amax", "amin", "max", "min", "logsumexp", "norm"})
_RESERVED_KWARGS = ("channels", "device", "dtype")
_DYRELU_ACTIVATION_MODULES = ("dyrelu.modules", "dyrelu.activations", "dyrelu.aprelu")


class ConversionError(RuntimeError):
    """A call site cannot be converted exactly; the message names the sites and says why."""


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


# -- rewriting a forward with torch.fx ----------------------------------------------------------------------


class _ModuleRef(NamedTuple):
    """A Python module in the globals of generated code, pickled by name."""

    name: str


_forward_ids = itertools.count()


def _compile_forward(code: str, namespace: dict[str, Any], owner: str) -> Callable[..., Any]:
    filename = f"<dyrelu.convert: {owner}.forward #{next(_forward_ids)}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)  # for tracebacks
    scope = dict(namespace)
    exec(compile(code, filename, "exec"), scope)
    return scope["forward"]


def _restore_forward(module: nn.Module, code: str, refs: dict[str, Any]) -> _TracedForward:
    namespace = {k: importlib.import_module(v.name) if isinstance(v, _ModuleRef) else v for k, v in refs.items()}
    return _TracedForward(module, code, namespace)


class _TracedForward:
    """A module's ``forward`` rewritten by :func:`convert`: the Python code torch.fx generates from its graph.

    It is stored as the module's instance attribute ``forward``, so the module keeps its class, its other
    methods and attributes; ``code`` shows the rewritten forward. Deep copies and pickling work.
    """

    def __init__(self, module: nn.Module, code: str, namespace: dict[str, Any]) -> None:
        self.module = module
        self.code = code
        self._namespace = namespace
        self.function = _compile_forward(code, namespace, type(module).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(self.module, *args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        signature = inspect.signature(self.function)
        return signature.replace(parameters=list(signature.parameters.values())[1:])

    def __deepcopy__(self, memo: dict[int, Any]) -> _TracedForward:
        return type(self)(copy.deepcopy(self.module, memo), self.code, self._namespace)

    def __reduce__(self):
        refs = {k: _ModuleRef(v.__name__) if isinstance(v, types.ModuleType) else v for k, v in self._namespace.items()}
        return _restore_forward, (self.module, self.code, refs)

    def __repr__(self) -> str:
        return f"<forward of {type(self.module).__name__} rewritten by dyrelu.convert>"


def _forward_function(module: nn.Module) -> Callable[..., Any]:
    """The function behind ``module.forward``, taking the module first (a rewritten forward too)."""
    forward = module.__dict__.get("forward")
    return forward.function if isinstance(forward, _TracedForward) else type(module).forward


def _python_code(graph: fx.Graph) -> tuple[str, dict[str, Any]]:
    code = graph.python_code(root_module="self")
    return code.src, dict(code.globals)


class _LeafTracer(fx.Tracer):
    """Traces one module's own ``forward``: every submodule call stays one opaque ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


class _Untraceable(Exception):
    pass


def _none_arguments(module: nn.Module, runs: list[_Invocation]) -> dict[str, None]:
    """The parameters of ``forward`` that are ``None`` in every observed call: traced as constants (fx checks them).

    fx would otherwise trace ``if shortcut is None:`` with a placeholder, which is never ``None``.
    """
    try:
        signature = inspect.signature(_forward_function(module))
    except (TypeError, ValueError):
        return {}
    signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    values: dict[str, list[Any]] = {}
    for run in runs:
        try:
            bound = signature.bind(*run.args, **run.kwargs)
        except TypeError:
            return {}
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            if signature.parameters[name].kind not in variadic:
                values.setdefault(name, []).append(value)
    concrete = {}
    for name, seen in values.items():
        nones = sum(value is None for value in seen)
        if nones == len(seen):
            concrete[name] = None
        elif nones:
            raise _Untraceable(f"it is called with {name}=None and with {name} given (one traced graph cannot do both)")
    return concrete


def _trace(module: nn.Module, concrete: dict[str, Any]) -> fx.Graph:
    """The fx graph of ``module``'s forward (a rewritten one too), or ``_Untraceable`` saying why not."""
    cls = type(module)
    before = set(module.__dict__)
    training = module.training
    forward = module.__dict__.get("forward")
    graphs = []
    try:
        if isinstance(forward, _TracedForward):
            # fx traces type(root).forward; a throwaway subclass exposes the rewritten one.
            module.__class__ = type(cls.__name__, (cls,), {"forward": forward.function, "__module__": cls.__module__})
        for mode in (training, not training):
            module.training = mode
            graphs.append(_LeafTracer().trace(module, concrete_args=concrete or None))
    except Exception as exc:
        raise _Untraceable(f"torch.fx cannot trace its forward ({type(exc).__name__}: {exc})") from exc
    finally:
        module.__class__ = cls
        module.training = training
        added = set(module.__dict__) - before
        for name in added:  # fx stores the tensors made during tracing on the root
            del module.__dict__[name]
    if _python_code(graphs[0])[0] != _python_code(graphs[1])[0]:
        raise _Untraceable("its forward depends on self.training (a traced graph would freeze one mode)")
    graph = graphs[0]
    for node in graph.nodes:
        if node.op == "get_attr" and node.target.split(".")[0] in added:
            raise _Untraceable("its forward creates a tensor that a traced graph would freeze as a constant")
    # fx renames the parameters it specialises (shortcut -> shortcut_1): keep the forward's signature.
    try:
        parameters = list(inspect.signature(_forward_function(module)).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(parameters) == len(placeholders):
        for node, parameter in zip(placeholders, parameters, strict=True):
            stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
            node.target = stars.get(parameter.kind, "") + parameter.name
    return graph


def _same(a: Any, b: Any) -> bool:
    """Whether two results (nested containers of tensors) agree, up to the rounding of a nondeterministic kernel."""
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if isinstance(x, Tensor) or isinstance(y, Tensor):
            if not (isinstance(x, Tensor) and isinstance(y, Tensor)) or x.shape != y.shape or x.dtype != y.dtype:
                return False
            if x.is_floating_point() or x.is_complex():
                tol = 100 * torch.finfo(x.real.dtype).eps
                if not torch.allclose(x, y, rtol=tol, atol=tol, equal_nan=True):
                    return False
            elif not torch.equal(x, y):
                return False
        elif isinstance(x, (bool, int, float, str, type(None))) and x != y:
            return False
    return True


@dataclass
class _Site:
    """A target node of a traced graph, matched to its observed calls."""

    node: fx.Node
    kind: str
    module: nn.Module | None  # the activation module, None for a functional call
    calls: list[_Call]


def _graph_sites(module: nn.Module, graph: fx.Graph, targets: frozenset[str]) -> list[tuple[fx.Node, str, Any]]:
    sites = []
    for node in graph.nodes:
        if node.op == "call_module":
            sub = module.get_submodule(node.target)
            kind = _module_target(sub, targets)
            if kind is not None:
                sites.append((node, kind, sub))
        elif node.op in ("call_function", "call_method"):
            func = node.target if node.op == "call_function" else getattr(torch.Tensor, node.target, None)
            hit = _function_target(func, node.args, node.kwargs, targets)
            if hit is not None:
                sites.append((node, hit[0], None))
    return sites


def _match_sites(module: nn.Module, graph: fx.Graph, targets: frozenset[str], runs: list[_Invocation]) -> list[_Site]:
    """Pair the graph's target nodes with the calls of every observed invocation, in order."""
    nodes = _graph_sites(module, graph, targets)
    for run in runs:
        same = len(run.calls) == len(nodes) and all(
            call.kind == kind and call.module is sub for call, (_, kind, sub) in zip(run.calls, nodes, strict=True)
        )
        if not same:
            raise _Untraceable(
                f"its traced forward has {len(nodes)} activation call(s) but a call in the example run made "
                f"{len(run.calls)} (control flow that depends on the input?)"
            )
    return [_Site(node, kind, sub, [run.calls[i] for run in runs]) for i, (node, kind, sub) in enumerate(nodes)]


_VIEWS = frozenset(
    {"getitem", "view", "view_as", "reshape", "flatten", "unflatten", "transpose", "permute", "narrow", "select",
     "expand", "expand_as", "squeeze", "unsqueeze", "movedim", "t", "chunk", "split", "unbind", "as_strided"}
)  # fmt: skip


def _is_view_node(node: fx.Node, of: fx.Node) -> bool:
    """Whether ``node`` may be a view of ``of``."""
    if node.op not in ("call_method", "call_function") or not node.args or node.args[0] is not of:
        return False
    return (node.target if node.op == "call_method" else getattr(node.target, "__name__", "")) in _VIEWS


def _rewrite_graph(module: nn.Module, graph: fx.Graph, todo: list[_Site]) -> dict[str, _Site]:
    """Point each site in ``todo`` at its own new child of ``module``; returns the children's names.

    Only ``graph`` changes. In-place calls stay exact: later reads of their input read the new value, and an
    input that others may see (a view, an argument of the forward) is updated with ``copy_``.
    """
    converted = {site.node for site in todo}
    kept = {n.target for n in graph.nodes if n.op == "call_module" and n not in converted}
    names: dict[str, _Site] = {}
    # The names under which ``module`` holds an activation module that this forward no longer calls: its
    # converted sites take them over, in order (one for torchvision's reused ``relu``, one per registration
    # for a module registered twice in an nn.Sequential).
    reusable: dict[nn.Module, list[str]] = {}

    def free(base: str, first: int) -> str:
        for i in itertools.count(first):
            name = base if i == 0 else f"{base}_{i}"
            if name not in names and not hasattr(module, name):
                return name
        raise AssertionError  # unreachable

    for site in todo:
        node = site.node
        if site.module is not None:
            if site.module not in reusable:
                unused = node.target not in kept
                reusable[site.module] = [n for n, m in module._modules.items() if m is site.module and unused]
            own = reusable[site.module]
            name = own.pop(0) if own else free(node.target.replace(".", "_"), 1)
        else:
            name = free(site.kind, 0)
        names[name] = site

        call = site.calls[0]
        source = node.args[0]
        order = {n: i for i, n in enumerate(graph.nodes)}
        earlier_views = any(order[u] < order[node] and _is_view_node(u, source) for u in source.users)
        if call.inplace and (call.is_view or source.op in ("placeholder", "get_attr") or earlier_views):
            # DY-ReLU keeps its input for backward, so it gets a copy of the tensor it updates.
            with graph.inserting_after(node):
                cloned = graph.call_method("clone", (source,))
            with graph.inserting_after(cloned):
                new = graph.call_module(name, (cloned,))
            with graph.inserting_after(new):
                back = graph.call_method("copy_", (source, new))
            node.replace_all_uses_with(back)
        else:
            with graph.inserting_after(node):
                new = graph.call_module(name, (source,))
            node.replace_all_uses_with(new)
            if call.inplace:
                for user in list(source.users):
                    if user is not new and order.get(user, -1) > order[node]:
                        user.replace_input_with(source, new)
        graph.erase_node(node)
    graph.lint()
    return names


class _Overlay:
    """``module`` with some attributes replaced: runs a rewritten forward before the module changes."""

    def __init__(self, module: nn.Module, replaced: dict[str, nn.Module]) -> None:
        self._module = module
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced[name] if name in self._replaced else getattr(self._module, name)


_REFERENCE = {"relu": nn.ReLU, "relu6": nn.ReLU6}  # what the sites computed, out of place


def _verify(module: nn.Module, graph: fx.Graph, names: dict[str, _Site], capture: _Capture) -> None:
    """Check the rewritten forward against the module's first call in the example run.

    With each new child computing the original activation, it must reproduce the module's result and the
    in-place changes of its arguments: this checks both the fx trace and the rewrite.
    """
    rewritten = _compile_forward(*_python_code(graph), type(module).__name__)
    overlay = _Overlay(module, {name: _REFERENCE[site.kind]() for name, site in names.items()})
    args, kwargs = _clone_tensors(capture.inputs)
    try:
        with _preserved(module, capture.devices):
            _set_rng_states(capture.devices, capture.rng)  # the same dropout masks as in the example run
            result = rewritten(overlay, *args, **kwargs)
    except Exception as exc:
        raise _Untraceable(f"its rewritten forward fails on the example input ({type(exc).__name__}: {exc})") from exc
    if not _same(capture.result, (result, args, kwargs)):
        raise _Untraceable(
            "its rewritten forward does not reproduce its output or the in-place changes of its arguments on the "
            "example input (Python control flow on the input, such as x += y on an argument or isinstance checks?)"
        )


def _install(
    module: nn.Module, graph: fx.Graph, names: dict[str, _Site], make: Callable[[_Call, bool], nn.Module]
) -> None:
    for name, site in names.items():
        setattr(module, name, make(site.calls[0], (site.module or module).training))
    module.forward = _TracedForward(module, *_python_code(graph))


# -- the public function -----------------------------------------------------------------------------------


def _patterns(value: str | Iterable[str] | None, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    patterns = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"expected {name} to be a glob pattern or a sequence of them, got {value!r}")
    return patterns


@dataclass
class _Options:
    """What to convert and into what."""

    cls: type[nn.Module]
    k: int
    kwargs: dict[str, Any]
    targets: frozenset[str]
    include: tuple[str, ...] | None
    exclude: tuple[str, ...] | None
    convert_se: bool

    @property
    def channels_last(self) -> bool:
        return bool(self.kwargs.get("channels_last", False))

    def channels(self, call: _Call) -> int:
        return call.shape[-1] if self.channels_last else call.shape[1]

    def selected(self, names: list[str]) -> bool:
        def matches(patterns: tuple[str, ...]) -> bool:
            return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)

        included = self.include is None or matches(self.include)
        return included and not (self.exclude is not None and matches(self.exclude))

    def skip_reason(self, call: _Call, names: list[str]) -> str | None:
        if not call.dtype.is_floating_point:
            return "input is not floating point"
        if not 2 <= len(call.shape) <= 5:
            return f"input of shape {call.shape} is not (N, C, *spatial) with 0 to 3 spatial dims"
        if call.context and not self.convert_se:
            return "input is a globally pooled vector (squeeze-excitation); convert_se=True converts it"
        if self.cls is DyReLUC and len(call.shape) < 3:
            return "DyReLUC needs spatial positions"
        return None if self.selected(names) else "left out by include/exclude"

    def make(self, call: _Call, training: bool) -> nn.Module:
        new = self.cls(self.channels(call), k=self.k, device=call.device, dtype=call.dtype, **self.kwargs)
        return new.train(training)


def convert(
    model: nn.Module,
    variant: str = "B",
    *,
    k: int = 2,
    targets: str | Sequence[str] = ("relu",),
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    example_input: Tensor | Sequence[Any] | None = None,
    convert_se: bool = False,
    **dyrelu_kwargs: Any,
) -> nn.Module:
    """Give every call site of a ReLU in ``model`` its own DY-ReLU, in place; returns ``model``.

    **Call sites.** The model runs on ``example_input`` (once, twice when a forward is rewritten; without
    gradients, in its current train/eval mode; buffers such as BatchNorm statistics and the RNG state are
    restored afterwards).
    Hooks and a :class:`~torch.overrides.TorchFunctionMode` record every call of a target activation:
    calls of modules (``nn.ReLU``; ``nn.ReLU6`` for ``"relu6"``) and functional calls in a ``forward``
    (``F.relu``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``/``relu_``, with ``inplace`` or not;
    ``F.relu6`` and ``F.hardtanh(x, 0, 6)`` for ``"relu6"``). Each site's DY-ReLU gets the channel count,
    dtype and device of the input seen there, and the train/eval mode of the module it replaces.

    **Minimal rewriting.** An activation module called at most once per call of the one module that calls
    it is swapped in place under the same name. Only a module whose own ``forward`` calls an activation
    function or calls one activation module at several sites (torchvision's ``BasicBlock``/``Bottleneck``
    reuse ``self.relu``; DenseNet's ``forward`` calls ``F.relu``) is traced with :mod:`torch.fx`, its
    submodules kept as opaque calls, and its ``forward`` replaced by the generated code (an instance
    attribute; ``module.forward.code`` shows it). Before anything changes, each rewritten forward runs, with
    stand-ins computing the original activations, on the inputs its module received in the example run, and
    must reproduce the module's result and the in-place changes of its arguments. Every module
    keeps its class and attributes, so ``isinstance(model, ResNet)``, ``model.fc``, ``forward_features`` and
    ``pretrained_cfg`` keep working, and the state_dict keys of existing modules do not change. Deep copies
    and pickling work. Arguments of a rewritten forward that were ``None`` in every call of the example run
    are fixed to ``None`` (a call with a value raises an ``AssertionError``).

    **Names** are deterministic, so ``convert(fresh_model).load_state_dict(converted.state_dict())`` works:

    - a swapped module keeps its name (``layer1.0.relu``);
    - an activation module ``<name>`` called at several sites: the first site takes over ``<name>`` (one
      site per name for a module registered under several names), the following ones are new children
      ``<name>_1``, ``<name>_2``, ... (the next free suffix) of the module whose forward calls them
      (``layer1.0.relu``, ``layer1.0.relu_1``, ``layer1.0.relu_2``);
    - a functional call: a new child ``relu`` (``relu6``) of that module, or ``relu_1``, ... if taken
      (DenseNet's final ``F.relu`` becomes ``model.relu``).

    **Left unchanged** (documented choices): call sites whose input is a *globally pooled* vector
    (computed by global average/max pooling or a mean over all positions: the inner ReLU of
    squeeze-excitation gates, which acts on ``(N, C', 1, 1)``, or an activation after the global pooling of
    a classifier head; use an example input large enough that feature maps keep more than one position)
    unless ``convert_se=True``; with variant ``"C"``, call sites without spatial
    positions (``(N, C)`` inputs: DyReLUC needs a spatial attention map); inputs that are not floating point
    or not ``(N, C, *spatial)`` with 0 to 3 spatial dims; activation modules not reached by the example input
    (a warning names them) and functional calls in forwards that do not run. DY-ReLU modules and this
    package's other activations are leaves, never looked into, so the ReLU of a DY-ReLU's hyper function is
    never converted, and converting twice changes nothing.

    **Exactness.** A fresh DyReLUA/B computes exactly ReLU, so right after conversion a ``"relu"``-converted
    model computes what it computed before. Not so for ``"relu6"`` sites (DY-ReLU does not clip at 6) nor
    for variant ``"C"`` (a fresh DyReLUC computes ``relu(x) / 3``). Channels are read at dim 1, or at the last
    dim with ``channels_last=True`` (for every site). An in-place activation module swapped for an
    out-of-place DY-ReLU assumes its return value is used (as in torchvision and timm); in a traced forward,
    in-place calls are rewritten exactly (later uses of the input read the new value; an input that is a
    view or an argument of the forward is updated with ``copy_``).

    Args:
        model: the network, converted in place.
        variant: ``"A"``, ``"B"`` or ``"C"`` (case-insensitive): DyReLUA, DyReLUB or DyReLUC.
        k: K, the number of linear pieces of each DY-ReLU.
        targets: the activations to replace, ``"relu"`` and/or ``"relu6"``.
        include: glob pattern(s) (:func:`fnmatch.fnmatchcase`, ``*`` also matches dots); only matching call
            sites are converted. A module call site is named by the activation module's qualified name
            (``"layer1.0.relu"``, all its sites together), a functional call by the qualified name of the module
            whose forward makes it plus ``F.relu`` or ``F.relu6``, whichever function or method it calls
            (``"layer1.0.F.relu"``; ``"F.relu"`` in the model's own forward). ``None`` converts every site.
        exclude: glob pattern(s) of call sites to leave unchanged (same names as ``include``).
        example_input: the input the model runs on to find the call sites: a tensor or a tuple of positional
            arguments. ``None`` makes a random ``(2, C, 64, 64)`` tensor, ``C`` the input channels of the first
            registered convolution (``(2, C, 64)`` for a 1-D, ``(2, C, 16, 32, 32)`` for a 3-D convolution;
            ``(2, F)`` for a network without convolutions whose first linear layer has ``F`` inputs), with the
            dtype and device of the model's first parameter.
        convert_se: also convert the call sites whose input is a globally pooled vector (see above).
        **dyrelu_kwargs: passed to each DY-ReLU (``reduction``, ``lambda_a``, ``lambda_b``, ``init_a``,
            ``init_b``, ``channels_last``; ``tau``, ``gamma`` for variant C).

    Returns:
        ``model`` itself, converted.

    Raises:
        ValueError: an unknown variant or target, or bad DY-ReLU arguments.
        ConversionError: a call site that cannot be converted exactly: a functional call or a reused
            activation module in a ``forward`` that torch.fx cannot trace faithfully (control flow on the
            input, dependence on ``self.training``, tensors created in ``forward``), where a module swap would
            not be exact either. The message names the sites and why; the model is left unchanged.
        RuntimeError: the model does not run on the example input.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 1))
        >>> x = torch.randn(2, 3, 16, 16)
        >>> before = net.eval()(x)
        >>> net = convert(net, "B", k=2)
        >>> net[2]
        DyReLUB(8, k=2, reduction=8, lambda_a=1.0, lambda_b=0.5, init_a=(1.0, 0.0), init_b=(0.0, 0.0))
        >>> torch.allclose(net(x), before)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected model to be an nn.Module, got {type(model).__name__}")
    cls = _VARIANTS.get(str(variant).upper())
    if cls is None:
        raise ValueError(f"unknown DY-ReLU variant {variant!r}, expected one of 'A', 'B', 'C' (case-insensitive)")
    target_names = (targets,) if isinstance(targets, str) else tuple(targets)
    bad = [t for t in target_names if not isinstance(t, str) or t.lower() not in _TARGETS]
    if bad or not target_names:
        raise ValueError(f"unknown target activation(s) {bad or target_names!r}, expected some of {_TARGETS}")
    reserved = [key for key in _RESERVED_KWARGS if key in dyrelu_kwargs]
    if reserved:
        raise TypeError(f"convert() sets {reserved} per call site from the model; do not pass them")
    cls(8, k=k, **dyrelu_kwargs)  # check the DY-ReLU arguments before doing anything
    options = _Options(
        cls=cls,
        k=k,
        kwargs=dyrelu_kwargs,
        targets=frozenset(t.lower() for t in target_names),
        include=_patterns(include, "include"),
        exclude=_patterns(exclude, "exclude"),
        convert_se=bool(convert_se),
    )
    if _module_target(model, options.targets) is not None:
        raise ValueError(f"model is itself a {type(model).__name__}; create a DY-ReLU directly (dyrelu.DyReLU)")
    if example_input is None:
        args = _default_example_input(model)
    elif isinstance(example_input, Tensor):
        args = (example_input,)
    elif isinstance(example_input, (tuple, list)):
        args = tuple(example_input)
    else:
        raise TypeError(f"expected example_input to be a tensor or a tuple of arguments, got {type(example_input)}")

    recorder = _Recorder(options.targets)
    _run(model, args, recorder)
    _Conversion(model, args, recorder, options).apply()
    return model


class _Conversion:
    """Plans the conversion from the recorded calls, checks every rewrite, then changes the model."""

    def __init__(self, model: nn.Module, args: tuple[Any, ...], recorder: _Recorder, options: _Options) -> None:
        self.model = model
        self.args = args
        self.recorder = recorder
        self.options = options
        self.names: dict[nn.Module, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(module, []).append(name)
        # Each activation module's calls, with the module that made them and which of its calls.
        self.uses: dict[nn.Module, list[tuple[nn.Module, int, _Call]]] = {}
        for caller, runs in recorder.invocations.items():
            for index, run in enumerate(runs):
                for call in run.calls:
                    if call.module is not None:
                        self.uses.setdefault(call.module, []).append((caller, index, call))
        self.swappable = {act: self._swappable(sites) for act, sites in self.uses.items()}

    def _swappable(self, sites: list[tuple[nn.Module, int, _Call]]) -> bool:
        """One module calls it, at most once per its call, not in place on a view: a swap in place is exact."""
        per_run = [sum(1 for c, i, _ in sites if (c, i) == key) for key in {(c, i) for c, i, _ in sites}]
        return (
            len({caller for caller, _, _ in sites}) == 1
            and max(per_run) == 1
            and not any(call.inplace and call.is_view for _, _, call in sites)
            and len({self.options.channels(call) for _, _, call in sites}) == 1
        )

    def display(self, module: nn.Module) -> str:
        return self.names[module][0] or f"<{type(module).__name__} model>"

    def site_names(self, call: _Call, caller: nn.Module) -> list[str]:
        if call.module is not None:
            return self.names.get(call.module, ["?"])
        return [f"{n}.F.{call.kind}" if n else f"F.{call.kind}" for n in self.names[caller]]

    def convertible(self, call: _Call, caller: nn.Module) -> bool:
        return self.options.skip_reason(call, self.site_names(call, caller)) is None

    def needs_rewrite(self, call: _Call, caller: nn.Module) -> bool:
        """A call to convert that a module swap cannot convert: the caller's forward must be rewritten."""
        return (call.module is None or not self.swappable[call.module]) and self.convertible(call, caller)

    def apply(self) -> None:
        swaps = [
            (act, self.options.make(sites[0][2], act.training))
            for act, sites in self.uses.items()
            if self.swappable[act] and all(self.convertible(call, caller) for caller, _, call in sites)
        ]
        callers = [
            caller
            for caller, runs in self.recorder.invocations.items()
            if any(self.needs_rewrite(call, caller) for run in runs for call in run.calls)
        ]
        plans: list[tuple[nn.Module, fx.Graph, dict[str, _Site]]] = []
        failures: dict[nn.Module, str] = {}
        for caller in callers:
            runs = self.recorder.invocations[caller]
            try:
                graph = _trace(caller, _none_arguments(caller, runs))
                sites = _match_sites(caller, graph, self.options.targets, runs)
                for site in sites:
                    if len({self.options.channels(call) for call in site.calls}) > 1:
                        raise _Untraceable(f"one call site ({site.node.format_node()}) sees different channel counts")
            except _Untraceable as exc:
                failures[caller] = str(exc)
                continue
            todo = [site for site in sites if any(self.needs_rewrite(call, caller) for call in site.calls)]
            plans.append((caller, graph, _rewrite_graph(caller, graph, todo)))
        captures = _capture(self.model, self.args, [caller for caller, _, _ in plans]) if plans else {}
        for caller, graph, names in plans:
            try:
                if caller in captures:
                    _verify(caller, graph, names, captures[caller])
            except _Untraceable as exc:
                failures[caller] = str(exc)
        if failures:
            raise ConversionError(self.describe_failures(failures))

        # Apply: nothing above has changed the model.
        for caller, graph, names in plans:
            _install(caller, graph, names, self.options.make)
        for act, new in swaps:
            for name in self.names[act]:
                parent, _, attr = name.rpartition(".")
                setattr(self.model.get_submodule(parent), attr, new)
        self.warn_unreached()

    def describe_failures(self, failures: dict[nn.Module, str]) -> str:
        lines = []
        for caller, reason in failures.items():
            sites: dict[str, tuple[str, set[tuple[int, ...]]]] = {}
            for run in self.recorder.invocations[caller]:
                for call in run.calls:
                    if self.needs_rewrite(call, caller):
                        if call.module is not None:
                            how = f"{type(call.module).__name__} module called at several sites"
                        else:
                            how = f"{getattr(call.func, '__name__', call.func)}() called"
                        name = self.site_names(call, caller)[0]
                        sites.setdefault(name, (f"{how} in {self.display(caller)}.forward", set()))[1].add(call.shape)
            described = "; ".join(
                f"'{name}' ({how}, input {', '.join(map(str, sorted(shapes)))})"
                for name, (how, shapes) in sorted(sites.items())
            )
            lines.append(f"{self.display(caller)} ({type(caller).__name__}): {reason}; at fault: {described}")
        return (
            "cannot convert these call sites exactly (a module swap is not exact for a functional call or for an "
            "activation module called at several sites, and the calling forward cannot be rewritten):\n  - "
            + "\n  - ".join(lines)
            + "\nRewrite the forward with one activation module per call site, or leave the sites out with exclude=."
        )

    def warn_unreached(self) -> None:
        unreached = [
            name
            for name, module in self.model.named_modules()
            if _module_target(module, self.options.targets) is not None
            and module not in self.recorder.reached
            and self.options.selected([name])
        ]
        if unreached:
            more = ", ..." if len(unreached) > 5 else ""
            warnings.warn(
                f"convert(): {len(unreached)} activation module(s) not reached by the example input were left "
                f"unchanged: {', '.join(unreached[:5])}{more}",
                stacklevel=4,  # the caller of convert()
            )
