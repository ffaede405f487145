"""Rewriting a module's forward with torch.fx so that each call site gets its own DY-ReLU, and checking it."""

from __future__ import annotations

import copy
import importlib
import inspect
import itertools
import linecache
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn
from torch.utils import _pytree as pytree

from dyrelu.convert._record import (
    _Call,
    _Capture,
    _clone_tensors,
    _function_target,
    _Invocation,
    _module_target,
    _preserved,
    _set_rng_states,
)

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
