"""Whole networks with ReLU, DY-ReLU-B, DY-ReLU-C and the naive DY-ReLU-B: training step, inference, memory.

Networks from ``dyrelu.models.create_model`` in channels-last memory format: ``mobilenetv2_050`` on
1×28×28 inputs (batch 128, ``small_input``, 10 classes) and ``resnet18`` on 3×224×224 (batch 16). Each
network is built with ``act="relu"``, ``act="dyrelu_b"`` and ``act="dyrelu_c"``; ``dyrelu_b_block`` is the
DY-ReLU-B MobileNetV2 whose hyper functions read their block's input (``act_context="block"``; MobileNetV2
only); ``naive_dyrelu_b`` is the DY-ReLU-B network with every activation wrapped in ``_common.NaiveDyReLU``
(the public implementations' K-expanded formulation, same parameters); ``dyrelu_b_aten`` is DY-ReLU-B with
the native kernels off (the ATen implementation). For eager mode and torch.compile, they run in turn in one
process (interleaved, medians): a training step (forward, cross-entropy, backward, SGD with momentum) and an
inference forward pass at the same batch size. Memory: bytes saved for backward by one training forward
(unique storages) and, in a fresh subprocess per network, the peak resident set size over a few steps.

Under torch.compile the DY-ReLU networks call the native kernel inside their graphs (the operator
``torch.ops.dyrelu.piecewise_max``). ``dyrelu_b_aten`` is left out there: whether a graph calls the kernel is
decided once, when it is traced (``DYRELU_NATIVE`` is read then and not guarded), so one process cannot
compile the same network with the kernel and without it; ``_piecewise.COMPILE_WITH_KERNEL`` chooses for a
whole process.

Usage::

    python benchmarks/bench_model.py                 # JSON to docs/benchmarks/model.json
    python benchmarks/bench_model.py --quick --no-compile
    python benchmarks/bench_model.py --models mobilenetv2_050 resnet18 --acts relu dyrelu_b dyrelu_c --no-compile
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    load_average,
    metadata,
    naive_like,
    native_kernels,
    parallel_op_us,
    perturb,
    saved_bytes,
    set_threads,
    time_interleaved,
    write_json,
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "model.json"
ACTS = ("relu", "dyrelu_b", "dyrelu_c", "dyrelu_b_block", "naive_dyrelu_b", "dyrelu_b_aten")
# dyrelu_b_aten: the same DY-ReLU-B network with the native kernels switched off (the ATen implementation);
# dyrelu_b_block: MobileNetV2's act_context="block" (the hyper functions read the block's input).


@dataclass(frozen=True)
class Net:
    name: str
    in_chans: int
    size: int
    batch: int
    num_classes: int
    small_input: bool


NETS = {
    n.name: n
    for n in (
        Net("mobilenetv2_050", 1, 28, 128, 10, True),
        Net("resnet18", 3, 224, 16, 1000, False),
    )
}


def build(net: Net, act: str) -> nn.Module:
    """The network ``net`` with activation ``act`` (one of ``ACTS``), channels-last, DY-ReLU perturbed."""
    from dyrelu.models import create_model

    base = "dyrelu_b" if act in ("naive_dyrelu_b", "dyrelu_b_aten", "dyrelu_b_block") else act
    extra = {"act_context": "block"} if act == "dyrelu_b_block" else {}
    torch.manual_seed(0)
    model = create_model(
        net.name, act=base, num_classes=net.num_classes, in_chans=net.in_chans, small_input=net.small_input, **extra
    )
    if base != "relu":
        # Away from the ReLU-equivalent start, as after some training; only the DY-ReLU hyper functions.
        for module in model.modules():
            if type(module).__name__.startswith("DyReLU"):
                perturb(module, scale=0.1)
    if act == "naive_dyrelu_b":
        model = naive_like(model)
    return model.to(memory_format=torch.channels_last)


def batch(net: Net, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = batch_size or net.batch
    x = torch.randn(n, net.in_chans, net.size, net.size, generator=gen).to(memory_format=torch.channels_last)
    y = torch.randint(0, net.num_classes, (n,), generator=gen)
    return x, y


class Runner:
    """A network with its optimizer; ``train_step`` and ``infer`` are the timed callables."""

    def __init__(self, net: Net, act: str, mode: str, batch_size: int | None = None) -> None:
        self.model = build(net, act)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.x, self.y = batch(net, batch_size)
        self.fn = torch.compile(self.model) if mode == "compile" else self.model
        self.native = act != "dyrelu_b_aten"

    def loss(self) -> torch.Tensor:
        with native_kernels(self.native):
            return F.cross_entropy(self.fn(self.x), self.y)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with native_kernels(self.native):
            self.loss().backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad(), native_kernels(self.native):
            self.fn(self.x)


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0), so that the peak covers what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss(net: str, act: str, mode: str, steps: int, threads: int, batch_size: int | None = None) -> dict:
    """Run ``steps`` training steps in this process and report resident memory (call in a fresh process).

    The peak is VmHWM, the high-water mark of this process's own memory map; ``ru_maxrss`` would not do:
    after fork and exec it starts from the parent's resident size.
    """
    set_threads(threads)
    runner = Runner(NETS[net], act, mode, batch_size)
    if mode == "compile":
        runner.train_step()  # compilation's own memory is not the network's
    before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    for _ in range(steps):
        runner.train_step()
    peak = _status_mb("VmHWM")
    out = {"rss_before_mb": before, "peak_rss_mb": peak, "peak_rss_from_steps": reset}
    if before is not None and peak is not None and reset:
        out["peak_rss_increase_mb"] = peak - before
    return out


def peak_rss_subprocess(net: str, act: str, mode: str, steps: int, threads: int, batch_size: int | None) -> dict:
    cmd = [sys.executable, __file__, "--_peak-rss", net, act, mode, str(steps), str(threads), str(batch_size or 0)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError) as err:
        return {"error": str(err)[-500:]}


def run_net(
    net: Net,
    mode: str,
    repeats: int,
    warmup: int = 1,
    batch_size: int | None = None,
    rss: bool = True,
    rss_steps: int = 3,
    threads: int = 2,
    acts: tuple[str, ...] = ACTS,
) -> list[dict]:
    runners = {}
    compile_s = {}
    for act in acts:
        if act == "dyrelu_b_aten" and mode == "compile":
            continue  # the kernel switch is read when a graph is traced (see the module's doc)
        if act == "dyrelu_b_block" and not net.name.startswith("mobilenetv2"):
            continue  # act_context is MobileNetV2's
        start = time.perf_counter()
        runners[act] = Runner(net, act, mode, batch_size)
        runners[act].train_step()
        runners[act].infer()
        compile_s[act] = time.perf_counter() - start if mode == "compile" else None
    train = time_interleaved({a: r.train_step for a, r in runners.items()}, repeats, warmup)
    infer = time_interleaved({a: r.infer for a, r in runners.items()}, repeats, warmup)
    rows = []
    for act, runner in runners.items():
        runner.model.train()
        saved = saved_bytes(runner.loss) if mode == "eager" else None
        row = {
            "model": net.name,
            "input": [batch_size or net.batch, net.in_chans, net.size, net.size],
            "act": act,
            "mode": mode,
            "train_ms": train[act]["median_ms"],
            "train_min_ms": train[act]["min_ms"],
            "train_cpu_ms": train[act]["cpu_median_ms"],
            "infer_ms": infer[act]["median_ms"],
            "infer_min_ms": infer[act]["min_ms"],
            "repeats": repeats,
            "saved_bytes": saved,
            "compile_s": compile_s[act],
        }
        if rss:
            row.update(peak_rss_subprocess(net.name, act, mode, rss_steps, threads, batch_size))
        rows.append(row)
    by = {r["act"]: r for r in rows}
    for row in rows:
        for key in ("train_ms", "train_cpu_ms", "infer_ms"):
            row[f"{key[:-3]}_vs_relu"] = row[key] / by["relu"][key]
        if row["saved_bytes"] is not None and by["relu"]["saved_bytes"]:
            row["saved_vs_relu"] = row["saved_bytes"] / by["relu"]["saved_bytes"]
    return rows


def goals(rows: list[dict]) -> list[dict]:
    """Issue 18's goal: the mobilenetv2_050 DY-ReLU-B eager training step within 1.2x ReLU's."""
    out = []
    for r in rows:
        if (r["model"], r["act"], r["mode"]) == ("mobilenetv2_050", "dyrelu_b", "eager"):
            out.append({"goal": "mobilenetv2_050 eager training step <= 1.2x ReLU", "value": r["train_vs_relu"]})
    for g in out:
        g["limit"] = 1.2
        g["met"] = g["value"] <= g["limit"]
    return out


def run(
    nets: list[str],
    modes: list[str],
    repeats: int,
    warmup: int = 1,
    threads: int = 2,
    batch_size: int | None = None,
    rss: bool = True,
    argv=None,
    log=print,
    acts: tuple[str, ...] = ACTS,
) -> dict:
    set_threads(threads)
    meta = metadata(threads, argv)
    rows = []
    for name in nets:
        for mode in modes:
            start = time.perf_counter()
            new = run_net(NETS[name], mode, repeats, warmup, batch_size, rss=rss, threads=threads, acts=acts)
            rows.extend(new)
            summary = ", ".join(f"{r['act']} {r['train_ms']:.0f} ms ({r['train_vs_relu']:.2f}x)" for r in new)
            log(f"{name} {mode}: training step {summary} ({time.perf_counter() - start:.0f} s)")
    meta["load_average_end"], meta["parallel_op_us_end"] = load_average(), parallel_op_us()
    return {"benchmark": "model", "meta": meta, "results": rows, "goals": goals(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="mobilenetv2_050 only, few repeats")
    parser.add_argument("--models", nargs="+", choices=sorted(NETS), default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 10, quick 3)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the networks' batch sizes")
    parser.add_argument("--no-compile", action="store_true", help="eager mode only")
    parser.add_argument(
        "--acts", nargs="+", choices=ACTS, default=list(ACTS), help="networks to run (relu is always one)"
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path ('-' for stdout)")
    parser.add_argument("--_peak-rss", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._peak_rss:
        net, act, mode, steps, threads, bs = args._peak_rss
        print(json.dumps(peak_rss(net, act, mode, int(steps), int(threads), int(bs) or None)))
        return 0
    nets = args.models or (["mobilenetv2_050"] if args.quick else list(NETS))
    modes = ["eager"] if args.no_compile else ["eager", "compile"]
    repeats = args.repeats or (3 if args.quick else 10)
    result = run(
        nets,
        modes,
        repeats,
        threads=args.threads,
        batch_size=args.batch_size,
        rss=not args.no_rss,
        argv=sys.argv[1:] if argv is None else argv,
        acts=tuple(dict.fromkeys(["relu", *args.acts])),
    )
    for g in result["goals"]:
        print(f"goal: {g['goal']}: {g['value']:.3f} ({'met' if g['met'] else 'NOT met'})")
    write_json(result, None if args.out == "-" else args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
