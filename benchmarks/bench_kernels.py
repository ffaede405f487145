"""The piecewise maximum's eager kernels alone: native (fused C++) against the ATen path and ReLU.

Times forward and backward of ``dyrelu.functional``'s eager implementation (no hyper function, no
autograd) on channels-first and channels-last maps, medians of repeats, and prints one line per case.
The figures of the "What we tried" table in docs/benchmarks.md come from this script.

Usage::

    python benchmarks/bench_kernels.py [--threads 1] [--dtype float32|bfloat16|float64] [--k 2 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from dyrelu import _piecewise as P
from dyrelu._native import native_ops

SHAPES = ((32, 64, 32, 32), (128, 96, 7, 7))


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 3):  # the first calls page-fault fresh allocations: not timed
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:]) * 1e3


def _case(x: torch.Tensor, g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, repeats: int) -> dict:
    """Medians (ms) of the forward and backward with the kernels on and off, and of ReLU's."""
    needs = (True, True, True, False)
    out = {}
    for name, flag in (("native", "1"), ("aten", "0")):
        os.environ["DYRELU_NATIVE"] = flag
        out[name] = (
            _median_ms(lambda: P._forward_eager(x, a, b, None), repeats),
            _median_ms(lambda: P._backward_eager(g, x, a, b, None, needs), repeats),
        )
    out["relu"] = (
        _median_ms(lambda: torch.relu(x), repeats),
        _median_ms(lambda: torch.ops.aten.threshold_backward(g, x, 0), repeats),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    parser.add_argument("--k", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"native kernels: {'available' if native_ops() is not None else 'unavailable'}; threads {args.threads}")
    for channels_last in (False, True):
        for k in args.k:
            for shape in SHAPES:
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                x = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
                g = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
                a = torch.randn(shape[0], shape[1], k).to(dtype)
                b = torch.randn_like(a)
                result = _case(x, g, a, b, args.repeats)
                layout = "channels-last " if channels_last else "channels-first"
                print(
                    f"{layout} K={k} {tuple(shape)} {args.dtype}: forward native {result['native'][0]:.2f} ms, "
                    f"ATen {result['aten'][0]:.2f}, ReLU {result['relu'][0]:.2f} | "
                    f"backward native {result['native'][1]:.2f} ms, "
                    f"ATen {result['aten'][1]:.2f}, "
                    f"ReLU {result['relu'][1]:.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
