"""A compiled training step with the native kernel in the graph against the ATen formulation inductor fuses.

``dyrelu.models.create_model("mobilenetv2_050", act="dyrelu_b", num_classes=10, small_input=True,
in_chans=1)``, its weights moved away from ReLU's start (``_common.perturb``), batch 64 of 1×28×28: one
training step is forward, cross-entropy, backward and an SGD step with momentum, the network compiled with
``torch.compile`` (the optimizer step eager, the same for all). Two copies of the network are compiled, one
with ``dyrelu._piecewise.COMPILE_WITH_KERNEL = True`` (``torch.ops.dyrelu.piecewise_max`` in the graphs),
one with ``False`` (the ATen formulation, fused by inductor), and run in turn in one process, the order
rotating each repeat; the eager network (native kernels) runs beside them for reference. Reports medians
and minimums of wall and process CPU time, and the compile times; JSON with the run's metadata.

Usage::

    python benchmarks/bench_compile_step.py [--threads 1] [--repeats 21] [--channels-last] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import metadata, perturb, set_threads, time_interleaved, write_json

from dyrelu import _piecewise
from dyrelu.models import create_model

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "compile_step.json"


class Step:
    """One training step of a (compiled) copy of the network, with COMPILE_WITH_KERNEL set as it was traced."""

    def __init__(self, model: torch.nn.Module, kernel: bool | None, compiled: bool, x, target) -> None:
        self.model, self.kernel, self.x, self.target = model, kernel, x, target
        self.fn = torch.compile(model) if compiled else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def __call__(self) -> None:
        _piecewise.COMPILE_WITH_KERNEL = self.kernel  # dynamo guards on it: the value this copy was traced with
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.fn(self.x), self.target)
        loss.backward()
        self.optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="mobilenetv2_050")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)
    base = perturb(create_model(args.model, act="dyrelu_b", num_classes=10, small_input=True, in_chans=1))
    x = torch.randn(args.batch_size, 1, 28, 28)
    if args.channels_last:
        base = base.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (args.batch_size,))
    steps = {
        "compiled, kernel in the graph": Step(copy.deepcopy(base), True, True, x, target),
        "compiled, ATen formulation": Step(copy.deepcopy(base), False, True, x, target),
        "eager (native kernels)": Step(copy.deepcopy(base), None, False, x, target),
    }
    compile_s = {}
    for name, step in steps.items():
        start = time.perf_counter()
        step()  # traces and compiles (compiled copies)
        compile_s[name] = time.perf_counter() - start
    times = time_interleaved(steps, args.repeats, warmup=2)
    _piecewise.COMPILE_WITH_KERNEL = None
    reference = times["compiled, ATen formulation"]["median_ms"]
    layout = "channels-last" if args.channels_last else "NCHW"
    print(f"{args.model} ({layout}), batch {args.batch_size} of 1x28x28, {args.threads} thread(s), training step:")
    for name, t in times.items():
        print(
            f"  {name:30s} median {t['median_ms']:8.1f} ms (min {t['min_ms']:.1f}, CPU {t['cpu_median_ms']:.1f}) "
            f"{t['median_ms'] / reference:.2f}x the ATen formulation; first call {compile_s[name]:.0f} s"
        )
    write_json(
        {
            "meta": metadata(args.threads, sys.argv[1:] if argv is None else argv),
            "model": args.model,
            "batch_size": args.batch_size,
            "channels_last": args.channels_last,
            "times": times,
            "first_call_s": compile_s,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
