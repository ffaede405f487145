"""The public :func:`convert`: plans the swaps and rewrites from the recorded calls, then applies them."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, fx, nn

from dyrelu.convert._record import (
    _RESERVED_KWARGS,
    _TARGETS,
    _Call,
    _capture,
    _default_example_input,
    _module_target,
    _Recorder,
    _run,
)
from dyrelu.convert._rewrite import (
    _install,
    _match_sites,
    _none_arguments,
    _rewrite_graph,
    _Site,
    _trace,
    _Untraceable,
    _verify,
)
from dyrelu.modules import DyReLUA, DyReLUB, DyReLUC

_VARIANTS: dict[str, type[nn.Module]] = {"A": DyReLUA, "B": DyReLUB, "C": DyReLUC}


class ConversionError(RuntimeError):
    """A call site cannot be converted exactly; the message names the sites and says why."""


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
        >>> import torch
        >>> from torch import nn
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
