"""What handling ±inf and NaN like torch.relu costs: the piecewise maximum now against an earlier commit.

Builds the earlier commit's C++ kernels under another library name (``dyrelu_native_base``) and loads its
``dyrelu/_piecewise.py`` as a second module, then times forward + backward of the eager piecewise maximum
(no hyper function; the coefficient gradients are computed, as in a module) for both, side by side in one
process: the candidates run in turn, the order rotating each repeat, and the medians are compared. Cases:
the native kernel, the ATen path (``DYRELU_NATIVE=0``), the ATen path with other ways of spotting a NaN in
a block (``--alternatives``), and the formulation torch.compile captures (``--compile``, forward + backward
compiled for each version). Inputs are finite (the cost everyone pays); ``--with-inf`` puts one +inf in each
sample as well (the cost of the repair). Coefficients are near ReLU's, as after training, or exactly ReLU's
(``--fresh``: a fresh DY-ReLU, whose zero slopes take the kernel's other loops). Times are the thread's CPU
time (less sensitive than wall time to other processes on a shared machine): medians and minimums.

Usage::

    python benchmarks/bench_edge_values.py --base fb82efc [--threads 1] [--repeats 41] [--alternatives]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, load_average, native_kernels, set_threads

from dyrelu import _native
from dyrelu import _piecewise as current


def _show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True, check=True).stdout


def _base_kernels(rev: str):
    """The kernels of ``rev`` as ``torch.ops.dyrelu_native_base`` (built in a temporary folder)."""
    source = _show(rev, "src/dyrelu/_native/piecewise_max.cpp")
    source = source.replace("TORCH_LIBRARY(dyrelu_native,", "TORCH_LIBRARY(dyrelu_native_base,")
    source = source.replace("TORCH_LIBRARY_IMPL(dyrelu_native,", "TORCH_LIBRARY_IMPL(dyrelu_native_base,")
    folder = Path(tempfile.mkdtemp(prefix="dyrelu_base_"))
    (folder / "piecewise_max_base.cpp").write_text(source)
    with _native._build_environment() as cpp_extension:
        cpp_extension.load(
            name=f"dyrelu_native_base_{abs(hash(source)) % 10**8}",
            sources=[str(folder / "piecewise_max_base.cpp")],
            extra_cflags=["-O3", "-march=native", "-fopenmp-simd"],
            is_python_module=False,
            build_directory=str(folder),
            verbose=False,
        )
    return torch.ops.dyrelu_native_base


def _base_piecewise(rev: str):
    """``dyrelu/_piecewise.py`` of ``rev`` as a module of its own."""
    spec = importlib.util.spec_from_loader("dyrelu._piecewise_base", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(_show(rev, "src/dyrelu/_piecewise.py"), f"{rev}:_piecewise.py", "exec"), module.__dict__)
    return module


def _step(module, x, a, b, g, ops=None):
    """Forward and backward of the eager piecewise maximum of ``module`` (with the kernels ``ops``, if any)."""
    needs = (True, True, True, False)

    def run():
        if ops is not None:
            _native._STATE.update(tried=True, ops=ops)
        module._forward_eager(x, a, b, None)
        module._backward_eager(g, x, a, b, None, needs)

    return run


def _compiled_step(module, x, a, b, g):
    """The same, as torch.compile captures it (PiecewiseMax in a compiled function, forward and backward)."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, a, b)]
    fn = torch.compile(lambda x, a, b: module.PiecewiseMax.apply(x, a, b, None), fullgraph=True)

    def run():
        y = fn(*leaves)
        torch.autograd.grad(y, leaves, g)

    return run


def _interleaved(cases: dict, repeats: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Thread CPU time of each case in ms (median, min), the cases in turn, the order rotating each repeat."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.thread_time()
            cases[name]()
            times[name].append((time.thread_time() - start) * 1e3)
    return {name: {"median_ms": statistics.median(t), "min_ms": min(t)} for name, t in times.items()}


def _any_nan_isnan(t: torch.Tensor) -> bool:
    return bool(torch.isnan(t).any())


def _any_nan_none(t: torch.Tensor) -> bool:
    return False  # not correct: what the check itself costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (before the change)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--shape", type=int, nargs="+", default=[128, 32, 14, 14])
    parser.add_argument("--alternatives", action="store_true", help="also other NaN checks in the ATen path")
    parser.add_argument("--compile", action="store_true", help="also the formulation torch.compile captures")
    parser.add_argument("--with-inf", action="store_true", help="one +inf in every sample")
    parser.add_argument("--fresh", action="store_true", help="ReLU's coefficients (a fresh DY-ReLU)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    new_ops = _native.native_ops()
    base_ops = _base_kernels(args.base)
    base = _base_piecewise(args.base)
    print(f"torch {torch.__version__}, {args.threads} thread(s), base {args.base}, load average {load_average()}")
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        shape = tuple(args.shape)
        x = torch.randn(shape).contiguous(memory_format=fmt)
        if args.with_inf:
            x.view(shape[0], -1)[:, 5] = math.inf
        g = torch.randn(shape).contiguous(memory_format=fmt)
        a = torch.randn(shape[0], shape[1], 2) * 0.1 + torch.tensor([1.0, 0.0])  # near ReLU, as after training
        b = torch.randn_like(a) * 0.1
        if args.fresh:
            a, b = torch.tensor([1.0, 0.0]).expand_as(a).contiguous(), torch.zeros_like(b)
        with native_kernels(True):
            kernel = _interleaved(
                {"kernel base": _step(base, x, a, b, g, base_ops), "kernel new": _step(current, x, a, b, g, new_ops)},
                args.repeats,
                warmup=2,
            )
        cases = {"ATen base": _step(base, x, a, b, g), "ATen new": _step(current, x, a, b, g)}
        with native_kernels(False):
            if args.alternatives:
                for name, check in (("isnan().any()", _any_nan_isnan), ("no check", _any_nan_none)):
                    step = _step(current, x, a, b, g)

                    def run(step=step, check=check):
                        real = current._any_nan
                        current._any_nan = check
                        try:
                            step()
                        finally:
                            current._any_nan = real

                    cases[f"ATen new, {name}"] = run
            aten = _interleaved(cases, args.repeats, warmup=2)
            if args.compile:
                steps = {"compiled base": _compiled_step(base, x, a, b, g)}
                steps["compiled new"] = _compiled_step(current, x, a, b, g)
                compiled = _interleaved(steps, args.repeats, warmup=2)
        layout = "channels-last" if channels_last else "channels-first"
        print(f"\n{layout} {shape} float32, forward + backward, thread CPU ms: median (min), ratio of medians to base:")
        groups = [(kernel, "kernel base"), (aten, "ATen base")]
        if args.compile:
            groups.append((compiled, "compiled base"))
        for times, reference in groups:
            ref = times[reference]["median_ms"]
            for name, t in times.items():
                print(f"  {name:28s} {t['median_ms']:7.3f} ({t['min_ms']:.3f})  {t['median_ms'] / ref:.3f}x")
    _native._STATE.update(tried=True, ops=new_ops)
    print(f"\nload average after: {load_average()}; medians of {args.repeats} interleaved repeats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
