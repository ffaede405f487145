"""The activation sites of a network, one part at a time: DY-ReLU's kernels and pooling against ReLU's.

Collects the input shape of every activation of ``mobilenetv2_050`` (batch 128, 1×28×28, small-input stem,
channels-last by default) and times, per distinct shape and summed over the network's sites, each part of
DY-ReLU-B's activation work next to ReLU's: ReLU forward in place (as the network runs it) and into a new output, and
its backward (``threshold_backward``, a fresh gradient), the kernel's forward (a fresh output, and into one
output reused every call) and backward (a fresh input
gradient, the per-piece sums), the pooling, and autograd's in-place add of the pooling's gradient. The
cases take turns (interleaved repeats, medians) at each thread count, so the scaling from 1 to 2 threads
of each part shows side by side with ReLU's.

Usage::

    python benchmarks/bench_sites.py [--threads 1 2] [--format channels_last|nchw] [--repeats 7]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import metadata, set_threads, time_interleaved, write_json

import dyrelu._native as native
from dyrelu import DyReLUB
from dyrelu.models import create_model


def site_shapes(model_name: str, batch: int, size: int) -> collections.Counter:
    """How many activation sites of each input shape ``(N, C, H, W)`` the network has."""
    model = create_model(model_name, act="dyrelu_b", num_classes=10, in_chans=1, small_input=True)
    shapes: collections.Counter = collections.Counter()
    hooks = [
        m.register_forward_pre_hook(lambda m, args: shapes.update([tuple(args[0].shape)]))
        for m in model.modules()
        if isinstance(m, DyReLUB)
    ]
    with torch.no_grad():
        model(torch.zeros(batch, 1, size, size))
    for h in hooks:
        h.remove()
    return shapes


def cases(shape: tuple[int, ...], memory_format: torch.memory_format) -> dict:
    ops = native.native_ops()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).contiguous(memory_format=memory_format)
    g = torch.randn(shape, generator=gen).contiguous(memory_format=memory_format)
    n, c = shape[:2]
    a = torch.stack([1 + 0.1 * torch.randn(n, c, generator=gen), 0.1 * torch.randn(n, c, generator=gen)])
    b = 0.1 * torch.randn(2, n, c, generator=gen)
    rows = native._layout(x)
    pooled_grad = torch.randn(n, c, 1, 1, generator=gen).expand(shape)
    grad_x = torch.empty_like(g)
    y = torch.empty_like(x)
    return {
        "relu forward (in place)": lambda: torch.relu_(x),
        "relu forward (new output)": lambda: torch.relu(x),
        "relu backward": lambda: torch.ops.aten.threshold_backward(g, x, 0),
        "kernel forward": lambda: native._forward(ops, rows, x, a, b, None),
        "kernel forward (reused output)": lambda: ops.forward(
            native._view3(x, rows), a, b, None, rows, native._view3(y, rows)
        ),
        "kernel backward": lambda: native._backward(ops, rows, g, x, a, b, None, (True, True, True, False)),
        "pooling": lambda: torch.mean(x, (2, 3)),
        "pooling gradient add": lambda: grad_x.add_(pooled_grad),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_050")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--format", default="channels_last", choices=("channels_last", "nchw"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="JSON output path (default: none)")
    args = parser.parse_args(argv)
    fmt = torch.channels_last if args.format == "channels_last" else torch.contiguous_format
    shapes = site_shapes(args.model, args.batch, args.size)
    results = []
    for threads in args.threads:
        set_threads(threads)
        totals: dict[str, float] = collections.defaultdict(float)
        for shape, count in sorted(shapes.items(), key=lambda kv: -kv[0][1] * kv[0][2] * kv[0][3]):
            timed = time_interleaved(cases(shape, fmt), args.repeats, warmup=2)
            row = {"shape": list(shape), "sites": count, "threads": threads}
            row.update({name: t["median_ms"] for name, t in timed.items()})
            results.append(row)
            for name, t in timed.items():
                totals[name] += count * t["median_ms"]
            parts = ", ".join(f"{name} {t['median_ms']:.2f}" for name, t in timed.items())
            print(f"{threads} thread(s) {shape} x{count}: {parts} ms")
        print(f"{threads} thread(s), all sites: " + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()) + " ms")
        results.append({"shape": "all sites", "threads": threads, **totals})
    if args.out:
        meta = metadata(max(args.threads), sys.argv[1:] if argv is None else argv)
        write_json({"benchmark": "sites", "meta": meta, "results": results}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
