"""Where a DY-ReLU training step spends its time over ReLU's: a torch.profiler split, part by part.

One process builds the network with ReLU and with DY-ReLU (B, C, or B with MobileNetV2's block context),
in each memory format and thread count asked for, and profiles a few training steps of each (forward,
cross-entropy, backward, SGD with momentum), the networks taking turns. Every profiled event's self time
(CPU time of the calling thread; worker threads of an operation are inside it) goes to one part:

- ``network``: everything the two networks share (convolutions, norms, the loss, the classifier)
- ``activation forward`` / ``activation backward``: ``torch.relu`` and its backward (ReLU), the piecewise
  maximum's kernel and its backward (DY-ReLU)
- ``pooling``: the hyper function's global average pool, forward and backward (backward includes
  autograd's add of the pooling's gradient into the input gradient)
- ``hyper FCs``: the two small linear layers and the ReLU between them, forward and backward
- ``hyper element-wise``: normalisation and coefficient assembly (``2σ(z) − 1``, ``α + λΔ``), forward and
  backward
- ``attention``: DY-ReLU-C's spatial attention (1×1 conv, norm, softmax, clip), forward and backward
- ``conversions``: copies made to change a tensor's layout (``contiguous``, ``clone``, ``copy_``, dtype
  casts) inside DY-ReLU's code, forward and backward
- ``python & dispatch``: DY-ReLU's Python code between operators, views and small glue operators
- ``autograd bookkeeping``: the autograd engine's own time per node (``evaluate_function`` minus the node)
- ``optimizer``: ``zero_grad``, ``step`` and the accumulation of parameter gradients

The table gives each part's milliseconds per step for ReLU and DY-ReLU and the difference, so the
overhead over ReLU splits part by part. The profiler adds a few microseconds per operator (more for
DY-ReLU, which runs more operators), so the totals exceed the wall times printed beside them, which come
from unprofiled steps timed interleaved in the same process (medians).

Usage::

    python benchmarks/profile_step.py                        # B; channels-last and NCHW; 1 and 2 threads
    python benchmarks/profile_step.py --acts dyrelu_c --formats channels_last --threads 1
    python benchmarks/profile_step.py --out docs/benchmarks/profile_step.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import metadata, perturb, set_threads, time_interleaved, write_json

PARTS = (
    "network",
    "activation forward",
    "activation backward",
    "pooling",
    "hyper FCs",
    "hyper element-wise",
    "attention",
    "conversions",
    "python & dispatch",
    "autograd bookkeeping",
    "optimizer",
)
ACTS = {
    # name: (act for create_model, create_model's extra keywords)
    "relu": ("relu", {}),
    "dyrelu_b": ("dyrelu_b", {}),
    "dyrelu_c": ("dyrelu_c", {}),
    "dyrelu_b_block": ("dyrelu_b", {"act_context": "block"}),
}
FORMATS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}
# Switches that turn one of issue 18's changes off (``dyrelu_b/generic``, ``dyrelu_b/generic+fresh``), so that a
# change is timed side by side with the state before it, in one process.
SWITCHES = ("generic", "fresh", "autograd_attention", "serial")


@contextlib.contextmanager
def switched_off(switches: tuple[str, ...]):
    """``generic``: the coefficients and the kernel as separate autograd nodes (``functional.piecewise_max``), not
    one; ``fresh``: the kernels' outputs in fresh memory, not recycled (``DYRELU_RECYCLE=0``);
    ``autograd_attention``: DY-ReLU-C's attention logits differentiated by autograd's formulas, whose input
    gradient is fresh memory; ``serial``: the native kernels on one thread (as they ran before they were built
    with OpenMP), the rest of the step on all."""
    import dyrelu.modules as modules

    saved = []
    if "generic" in switches and hasattr(modules, "residual_max"):
        saved.append((modules, "residual_max", modules.residual_max))
        modules.residual_max = lambda *args: None
    if "autograd_attention" in switches and hasattr(modules, "_AttentionLogits"):
        saved.append((modules._AttentionLogits, "applies", modules._AttentionLogits.applies))
        modules._AttentionLogits.applies = staticmethod(lambda x: False)
    if "serial" in switches:
        import dyrelu._native as native

        for name in ("_forward", "_backward", "coefficients", "coefficients_backward"):
            if hasattr(native, name):
                saved.append((native, name, getattr(native, name)))
                setattr(native, name, _one_thread(getattr(native, name)))
    recycle = os.environ.get("DYRELU_RECYCLE")
    if "fresh" in switches:
        os.environ["DYRELU_RECYCLE"] = "0"
    try:
        yield
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)
        if "fresh" in switches:
            if recycle is None:
                del os.environ["DYRELU_RECYCLE"]
            else:
                os.environ["DYRELU_RECYCLE"] = recycle


def _one_thread(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _act_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    act, _, rest = spec.partition("/")
    switches = tuple(s for s in rest.split("+") if s)
    if act not in ACTS or any(s not in SWITCHES for s in switches):
        raise argparse.ArgumentTypeError(
            f"expected ACT[/SWITCH[+SWITCH]] with ACT in {list(ACTS)} and SWITCH in {SWITCHES}"
        )
    return act, switches


# Labels put around DY-ReLU's functions while profiling (the innermost label names the part of an operator).
_LABEL = "dyrelu::"
_FC_OPS = {"aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::t", "aten::relu", "aten::relu_"}
_COPY_OPS = {"aten::contiguous", "aten::clone", "aten::copy_", "aten::_to_copy", "aten::to"}
_KERNEL_OPS = {"dyrelu_native::forward", "dyrelu_native::backward"}
# The coefficients' assembly inside the one-node path (issue 18): normalisation and its backward.
_TAIL_OPS = {"aten::sigmoid", "dyrelu_native::coefficients", "dyrelu_native::coefficients_backward"}
_RELU_OPS = {"aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_", "aten::threshold_backward"}


def _labelled(fn, label: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with record_function(_LABEL + label):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def labels():
    """Label DY-ReLU's functions for the profiler (those that exist in this version of the code)."""
    import dyrelu.functional as functional
    import dyrelu.modules as modules

    targets = [
        (modules.DyReLU, "forward", "module"),
        (modules.DyReLU, "hyper", "hyper"),
        (modules.DyReLU, "_logits", "hyper"),
        (modules.DyReLU, "_coefficients", "hyper"),
        (modules, "spatial_mean", "pool"),
        (modules.DyReLUC, "_scale", "attention"),
        (functional, "piecewise_max", "kernel"),
    ]
    if hasattr(modules, "residual_max"):  # the one-node path of issue 18
        targets.append((modules, "residual_max", "kernel"))
    saved = []
    for owner, name, label in targets:
        if name in vars(owner):
            saved.append((owner, name, vars(owner)[name]))
            setattr(owner, name, _labelled(getattr(owner, name), label))
    try:
        yield
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)


def _forward_part(label: str | None, op: str) -> str:
    """The part of a forward operator ``op`` run under the innermost DY-ReLU ``label`` (None: outside)."""
    if label is None:
        return "activation forward" if op in _RELU_OPS else "network"
    if op in _KERNEL_OPS or op.startswith("dyrelu::piecewise_max"):
        return "activation forward"
    if label == "kernel" and op in _TAIL_OPS:
        return "hyper element-wise"
    if label == "pool":
        return "pooling"
    if label == "attention":
        return "attention"
    if op in _COPY_OPS:
        return "conversions"
    if label == "hyper":
        return "hyper FCs" if op in _FC_OPS else "hyper element-wise"
    return "python & dispatch"


def _backward_part(node_part: str | None, op: str) -> str:
    """The part of an operator run by a backward node whose forward was in part ``node_part``."""
    if op in _KERNEL_OPS or op.startswith("dyrelu::piecewise_max"):
        return "activation backward"
    if op in _TAIL_OPS:
        return "hyper element-wise"
    if node_part is None or node_part == "network":
        return "activation backward" if op in _RELU_OPS else "network"
    if node_part == "activation forward":
        if op in _RELU_OPS:
            return "activation backward"
        return "conversions" if op in _COPY_OPS else "python & dispatch"
    if node_part in ("python & dispatch", "conversions") and op in _COPY_OPS:
        return "conversions"
    return node_part


def split(events) -> dict[str, float]:
    """Milliseconds of self time per part over the profiled ``events`` (``prof.events()``)."""
    out: dict[str, float] = defaultdict(float)
    forward_part: dict[int, str] = {}  # sequence number of an autograd node -> part of its forward operator
    optimizer = set()

    def label_of(e) -> str | None:
        p = e
        while p is not None:
            if p.name.startswith(_LABEL):
                return p.name[len(_LABEL) :]
            p = p.cpu_parent
        return None

    def node_of(e):
        p = e
        while p is not None:
            if p.name.startswith("autograd::engine::evaluate_function: "):
                return p
            p = p.cpu_parent
        return None

    def in_optimizer(e) -> bool:
        p = e
        while p is not None:
            if p.name in ("step::optimizer", "Optimizer.step#SGD.step", "Optimizer.zero_grad#SGD.zero_grad"):
                return True
            p = p.cpu_parent
        return False

    events = sorted(events, key=lambda e: e.time_range.start)
    for e in events:
        ms = e.self_cpu_time_total / 1e3
        name = e.name
        if name.startswith("step::"):
            continue  # the script's own labels: their self time is the script's Python
        if in_optimizer(e):
            out["optimizer"] += ms
            optimizer.add(id(e))
            continue
        node = node_of(e)
        if node is None:  # forward
            label = label_of(e)
            if name.startswith(_LABEL):
                part = "attention" if label == "attention" else ("pooling" if label == "pool" else "python & dispatch")
            else:
                part = _forward_part(label, name)
            # the node's part: its forward operator's, not that of a dtype cast recorded with the same number
            if e.sequence_nr >= 0 and forward_part.get(e.sequence_nr, "conversions") == "conversions":
                forward_part[e.sequence_nr] = part
            out[part] += ms
            continue
        node_name = node.name.split(": ", 1)[1]
        if "AccumulateGrad" in node_name:
            out["optimizer"] += ms
            continue
        if e is node:
            out["autograd bookkeeping"] += ms
            continue
        part = _backward_part(forward_part.get(node.sequence_nr), name)
        out[part] += ms
    return {p: out.get(p, 0.0) for p in PARTS}


# ---- the networks ---------------------------------------------------------------------------------------


def build(model_name: str, act: str, memory_format: torch.memory_format):
    from dyrelu.models import create_model

    base, extra = ACTS[_act_spec(act)[0]]
    torch.manual_seed(0)
    model = create_model(model_name, act=base, num_classes=10, in_chans=1, small_input=True, **extra)
    if base != "relu":
        for module in model.modules():
            if type(module).__name__.startswith("DyReLU"):
                perturb(module, scale=0.1)  # away from the ReLU-equivalent start, as bench_model does
    return model.to(memory_format=memory_format)


class Step:
    def __init__(self, model_name: str, act: str, memory_format: torch.memory_format, batch: int, size: int):
        self.model = build(model_name, act, memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 1, size, size, generator=gen).to(memory_format=memory_format)
        self.y = torch.randint(0, 10, (batch,), generator=gen)
        self.switches = _act_spec(act)[1]
        self.model.train()

    def __call__(self) -> None:
        with switched_off(self.switches):
            with record_function("step::optimizer"):
                self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            with record_function("step::optimizer"):
                self.optimizer.step()


def profile_case(model_name, acts, fmt, threads, steps, repeats, batch, size, log=print) -> dict:
    set_threads(threads)
    runners = {act: Step(model_name, act, FORMATS[fmt], batch, size) for act in acts}
    for r in runners.values():
        r()
        r()
    wall = time_interleaved(dict(runners), repeats, warmup=1)
    parts: dict[str, dict[str, float]] = {act: defaultdict(float) for act in acts}
    profiled_ms: dict[str, float] = defaultdict(float)
    with labels():
        for r in runners.values() if steps else ():
            r()  # warm the labelled code
        for i in range(steps):
            for act in acts[i % len(acts) :] + acts[: i % len(acts)]:
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    start = time.perf_counter()
                    runners[act]()
                    profiled_ms[act] += (time.perf_counter() - start) * 1e3
                for part, ms in split(prof.events()).items():
                    parts[act][part] += ms
    rows = {}
    for act in acts:
        rows[act] = {
            "wall_ms": wall[act]["median_ms"],
            "wall_vs_relu": wall[act]["median_ms"] / wall["relu"]["median_ms"],
            "profiled_wall_ms": profiled_ms[act] / max(steps, 1),
            "parts_ms": {p: parts[act][p] / max(steps, 1) for p in PARTS},
        }
    summary = ", ".join(f"{a} {rows[a]['wall_ms']:.0f} ms ({rows[a]['wall_vs_relu']:.2f}x)" for a in acts)
    log(f"{model_name} {fmt} {threads} thread(s): {summary}")
    return {"model": model_name, "format": fmt, "threads": threads, "steps": steps, "repeats": repeats, "acts": rows}


def table(case: dict, act: str) -> str:
    """A markdown table: ms per step of each part for ReLU and ``act`` and the difference."""
    relu, dy = case["acts"]["relu"], case["acts"][act]
    extra = dy["wall_ms"] - relu["wall_ms"]
    lines = [
        f"{case['model']}, {case['format']}, {case['threads']} thread(s), {act}: step {dy['wall_ms']:.0f} ms vs ReLU "
        f"{relu['wall_ms']:.0f} ms (**{dy['wall_vs_relu']:.2f}×**, unprofiled medians of {case['repeats']})",
        "",
        "| part | ReLU ms | DY-ReLU ms | difference ms | share of the difference |",
        "|---|---:|---:|---:|---:|",
    ]
    total_relu = sum(relu["parts_ms"].values())
    total_dy = sum(dy["parts_ms"].values())
    diff_total = total_dy - total_relu
    for part in PARTS:
        r, d = relu["parts_ms"][part], dy["parts_ms"][part]
        if r == 0 and d == 0:
            continue
        share = (d - r) / diff_total if diff_total else float("nan")
        lines.append(f"| {part} | {r:.1f} | {d:.1f} | {d - r:+.1f} | {share:.0%} |")
    lines.append(f"| **profiled total** | {total_relu:.1f} | {total_dy:.1f} | {diff_total:+.1f} | 100% |")
    lines.append(f"| unprofiled wall time | {relu['wall_ms']:.1f} | {dy['wall_ms']:.1f} | {extra:+.1f} | |")
    return "\n".join(lines)


def diff_table(before: str, after: str, act: str = "dyrelu_b") -> str:
    """One markdown table: each part's overhead over ReLU (ms per step, profiled) in two saved runs, per case."""
    import json

    runs = [json.loads(Path(p).read_text())["results"] for p in (before, after)]
    cases = [(c["format"], c["threads"]) for c in runs[0] if act in c["acts"]]
    header = "| part | " + " | ".join(f"{f}, {t} thr.: before | after" for f, t in cases) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(cases)]

    def find(run, fmt, threads):
        return next(c for c in run if (c["format"], c["threads"]) == (fmt, threads))

    def delta(case, part):
        return case["acts"][act]["parts_ms"][part] - case["acts"]["relu"]["parts_ms"][part]

    for part in PARTS:
        cells = []
        for fmt, threads in cases:
            b, a = (find(run, fmt, threads) for run in runs)
            cells += [f"{delta(b, part):+.0f}", f"{delta(a, part):+.0f}"]
        if any(c not in ("+0", "-0") for c in cells):
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    for label, key in (("profiled total", None), ("unprofiled step ×ReLU", "wall_vs_relu")):
        cells = []
        for fmt, threads in cases:
            for run in runs:
                case = find(run, fmt, threads)
                if key is None:
                    cells.append(f"{sum(delta(case, p) for p in PARTS):+.0f}")
                else:
                    cells.append(f"{case['acts'][act][key]:.2f}×")
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_050")
    parser.add_argument(
        "--acts",
        nargs="+",
        default=["dyrelu_b"],
        help=f"networks besides ReLU: {', '.join(a for a in ACTS if a != 'relu')}, each optionally with "
        f"/SWITCH[+SWITCH] to turn changes off ({', '.join(SWITCHES)}; see switched_off)",
    )
    parser.add_argument("--formats", nargs="+", default=["channels_last", "nchw"], choices=list(FORMATS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per network (default 3; 0: time only)")
    parser.add_argument("--repeats", type=int, default=6, help="unprofiled timed steps per network (default 6)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--out", default=None, help="JSON output path (default: none)")
    parser.add_argument("--tables", default=None, metavar="JSON", help="print the tables of a saved run and exit")
    parser.add_argument(
        "--diff", nargs=2, default=None, metavar=("BEFORE", "AFTER"), help="print two saved runs' overheads"
    )
    args = parser.parse_args(argv)
    if args.diff:
        print(diff_table(*args.diff, act=args.acts[0]))
        return 0
    if args.tables:
        import json

        for case in json.loads(Path(args.tables).read_text())["results"]:
            for act in case["acts"]:
                if act != "relu" and any(case["acts"][act]["parts_ms"].values()):
                    print(table(case, act) + "\n")
        return 0
    for spec in args.acts:
        _act_spec(spec)
    acts = ["relu", *args.acts]
    cases = []
    for threads in args.threads:
        for fmt in args.formats:
            case = profile_case(args.model, acts, fmt, threads, args.steps, args.repeats, args.batch, args.size)
            cases.append(case)
            for act in args.acts if args.steps else ():
                print()
                print(table(case, act))
                print()
    meta = metadata(max(args.threads), sys.argv[1:] if argv is None else argv)
    if args.out:
        write_json({"benchmark": "profile_step", "meta": meta, "results": cases}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
