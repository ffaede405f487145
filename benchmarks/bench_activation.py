"""DY-ReLU A/B/C side by side with nn.ReLU and the naive K-expanded formulation: time and saved bytes.

For each variant, K, input shape and dtype, in eager mode and under torch.compile, three modules run in
turn in one process (interleaved, medians of the repeats): ``relu`` (nn.ReLU), ``naive`` (the public
implementations' formulation, see ``_common.NaiveDyReLU``, sharing the parameters of ours) and ``ours``
(dyrelu's module). Measured: forward time without autograd, forward + backward time, and the bytes
autograd saves for backward (unique storages) relative to the input's bytes.

Usage::

    python benchmarks/bench_activation.py                      # full grid, JSON to docs/benchmarks/
    python benchmarks/bench_activation.py --quick --no-compile
    python benchmarks/make_docs.py                             # docs/benchmarks.md from the JSON

torch.compile on CPU compiles C++ kernels (seconds per graph); inductor caches them on disk
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temp dir), so a rerun is much faster.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    VARIANTS,
    NaiveDyReLU,
    load_average,
    metadata,
    native_kernels,
    parallel_op_us,
    perturb,
    saved_bytes,
    set_threads,
    time_interleaved,
    write_json,
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "activation.json"
IMPLS = ("relu", "naive", "ours")
# In eager mode "ours" also runs with the native kernels switched off (the ATen implementation), side by side.
EAGER_IMPLS = (*IMPLS, "ours_aten")
# Under torch.compile the eager nn.ReLU runs too, as a second baseline: inductor's ReLU for training
# stores a bool mask for backward, which is slow on some CPUs.
COMPILE_IMPLS = (*IMPLS, "relu_eager")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Shape:
    """An input shape; ``channels_last`` means ``(N, *, C)`` tokens (the module's ``channels_last=True``)."""

    name: str
    shape: tuple[int, ...]
    channels_last: bool = False

    @property
    def channels(self) -> int:
        return self.shape[-1] if self.channels_last else self.shape[1]


SHAPES = {
    s.name: s
    for s in (
        Shape("2d-small", (128, 32, 14, 14)),
        Shape("2d-large", (32, 64, 32, 32)),
        Shape("1d", (32, 64, 1024)),
        Shape("tokens", (32, 196, 64), channels_last=True),
    )
}


@dataclass(frozen=True)
class Config:
    variant: str
    k: int
    shape: Shape
    dtype: str
    mode: str  # "eager" or "compile"


def grid(quick: bool, compile_mode: str) -> list[Config]:
    """The configurations to run. ``compile_mode``: "none", "subset" (DyReLU-B K=2 everywhere, A and C on
    the large 2-D map) or "all"."""
    if quick:
        eager = [Config(v, 2, SHAPES[s], "float32", "eager") for v in "ABC" for s in ("2d-large", "tokens")]
        eager.append(Config("B", 3, SHAPES["2d-large"], "float32", "eager"))
        eager.append(Config("B", 2, SHAPES["2d-large"], "bfloat16", "eager"))
        compiled = [Config("B", 2, SHAPES["2d-large"], "float32", "compile")]
    else:
        eager = [
            Config(v, k, s, d, "eager")
            for v in "ABC"
            for k in (2, 3)
            for s in SHAPES.values()
            for d in DTYPES
            if d != "float16"
        ]
        compiled = [Config(c.variant, c.k, c.shape, c.dtype, "compile") for c in eager]
        if compile_mode == "subset":
            compiled = [
                c
                for c in compiled
                if c.k == 2 and (c.variant == "B" or (c.shape.name == "2d-large" and c.dtype == "float32"))
            ]
    return eager + ([] if compile_mode == "none" else compiled)


def build(config: Config) -> dict[str, nn.Module]:
    """relu, naive and ours for ``config``; naive shares ours' (perturbed) parameters."""
    dtype = DTYPES[config.dtype]
    cls = VARIANTS[config.variant]
    ours = perturb(cls(config.shape.channels, k=config.k, channels_last=config.shape.channels_last)).to(dtype)
    modules = {"relu": nn.ReLU(), "naive": NaiveDyReLU(ours), "ours": ours}
    if config.mode == "compile":
        modules["relu_eager"] = nn.ReLU()
    else:
        modules["ours_aten"] = ours
    return modules


def run_config(config: Config, repeats: int, warmup: int = 1) -> list[dict]:
    """Rows (one per implementation) of forward / forward+backward medians and saved bytes."""
    torch.manual_seed(0)
    dtype = DTYPES[config.dtype]
    modules = build(config)
    x = torch.randn(config.shape.shape, dtype=dtype)
    x_grad = x.clone().requires_grad_()
    grad = torch.randn_like(x)
    fns = dict(modules)
    impls = COMPILE_IMPLS if config.mode == "compile" else EAGER_IMPLS
    compile_s: dict[str, float | None] = dict.fromkeys(impls)
    if config.mode == "compile":
        torch._dynamo.reset()
        for name, module in modules.items():
            if name == "relu_eager":
                continue
            fns[name] = torch.compile(module)
            start = time.perf_counter()
            with torch.no_grad():
                fns[name](x)
            fns[name](x_grad).backward(grad)
            compile_s[name] = time.perf_counter() - start

    def forward(name):
        def run():
            with torch.no_grad(), native_kernels(name != "ours_aten"):
                return fns[name](x)

        return run

    def train(name):
        def run():
            with native_kernels(name != "ours_aten"):
                fns[name](x_grad).backward(grad)
            x_grad.grad = None
            modules[name].zero_grad(set_to_none=True)

        return run

    fwd = time_interleaved({n: forward(n) for n in impls}, repeats, warmup)
    both = time_interleaved({n: train(n) for n in impls}, repeats, warmup)
    rows = []
    for name in impls:
        try:
            with native_kernels(name != "ours_aten"):
                saved = saved_bytes(lambda name=name: fns[name](x_grad))
        except Exception:  # some torch versions refuse saved-tensor hooks under compile
            saved = None
        rows.append(
            {
                "variant": config.variant,
                "k": config.k,
                "shape_name": config.shape.name,
                "shape": list(config.shape.shape),
                "channels_last": config.shape.channels_last,
                "dtype": config.dtype,
                "mode": config.mode,
                "impl": name,
                "forward_ms": fwd[name]["median_ms"],
                "forward_min_ms": fwd[name]["min_ms"],
                "train_ms": both[name]["median_ms"],
                "train_min_ms": both[name]["min_ms"],
                "forward_cpu_ms": fwd[name]["cpu_median_ms"],
                "train_cpu_ms": both[name]["cpu_median_ms"],
                "repeats": repeats,
                "saved_bytes": saved,
                "input_bytes": x.numel() * x.element_size(),
                "saved_ratio": None if saved is None else saved / (x.numel() * x.element_size()),
                "compile_s": compile_s[name],
            }
        )
    by = {r["impl"]: r for r in rows}
    for key in ("forward_ms", "train_ms", "train_cpu_ms"):
        for other in ("relu", "naive", "relu_eager", "ours_aten"):
            if other in by:
                by["ours"][f"{key[:-3]}_vs_{other}"] = by["ours"][key] / by[other][key]
    return rows


def goals(rows: list[dict]) -> list[dict]:
    """The issue's targets, checked on DyReLU-B K=2, (32, 64, 32, 32), float32."""

    def ours(mode: str) -> dict | None:
        for r in rows:
            if (r["impl"], r["variant"], r["k"], r["shape_name"], r["dtype"], r["mode"]) == (
                "ours",
                "B",
                2,
                "2d-large",
                "float32",
                mode,
            ):
                return r
        return None

    out = []
    eager, compiled = ours("eager"), ours("compile")
    if eager is not None:
        out.append({"goal": "eager forward+backward <= 0.5x naive", "value": eager["train_vs_naive"], "limit": 0.5})
        if eager["saved_ratio"] is not None:
            out.append({"goal": "saved for backward <= 1.1x input", "value": eager["saved_ratio"], "limit": 1.1})
    if compiled is not None:
        out.append({"goal": "compiled forward+backward <= 2x ReLU", "value": compiled["train_vs_relu"], "limit": 2.0})
        out.append(
            {
                "goal": "compiled forward+backward <= 2x eager ReLU (stricter)",
                "value": compiled["train_vs_relu_eager"],
                "limit": 2.0,
            }
        )
    for g in out:
        g["met"] = g["value"] <= g["limit"]
    return out


def run(configs: list[Config], repeats: int, warmup: int = 1, threads: int = 2, argv=None, log=print) -> dict:
    set_threads(threads)
    meta = metadata(threads, argv)
    rows = []
    for i, config in enumerate(configs, 1):
        start = time.perf_counter()
        new = run_config(config, repeats, warmup)
        rows.extend(new)
        ours = next(r for r in new if r["impl"] == "ours")
        log(
            f"[{i}/{len(configs)}] {config.mode:7s} {config.variant} k={config.k} {config.shape.name:8s} "
            f"{config.dtype:8s} fwd+bwd ours {ours['train_ms']:.2f} ms = {ours['train_vs_relu']:.2f}x relu, "
            f"{ours['train_vs_naive']:.2f}x naive; saved {ours['saved_ratio'] or float('nan'):.2f}x input "
            f"({time.perf_counter() - start:.0f} s)"
        )
    meta["load_average_end"], meta["parallel_op_us_end"] = load_average(), parallel_op_us()
    return {"benchmark": "activation", "meta": meta, "results": rows, "goals": goals(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few configurations, few repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 15, quick 5)")
    parser.add_argument("--no-compile", action="store_true", help="eager mode only")
    parser.add_argument("--compile-all", action="store_true", help="torch.compile every configuration")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path ('-' for stdout)")
    args = parser.parse_args(argv)
    compile_mode = "none" if args.no_compile else ("all" if args.compile_all else "subset")
    repeats = args.repeats or (5 if args.quick else 15)
    result = run(
        grid(args.quick, compile_mode), repeats, threads=args.threads, argv=sys.argv[1:] if argv is None else argv
    )
    for g in result["goals"]:
        print(f"goal: {g['goal']}: {g['value']:.3f} ({'met' if g['met'] else 'NOT met'})")
    write_json(result, None if args.out == "-" else args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
