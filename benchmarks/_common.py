"""Shared helpers of the benchmarks: run metadata, interleaved timing, bytes saved for backward, and the
naive DY-ReLU formulation of the public implementations that the benchmarks compare against.

Machines here are shared and noisy, so every benchmark times its candidates side by side in one process,
interleaved (the order rotates from one repeat to the next) and reports medians and ratios.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dyrelu
from dyrelu import DyReLUA, DyReLUB, DyReLUC
from dyrelu import functional as DF

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"A": DyReLUA, "B": DyReLUB, "C": DyReLUC}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: how busy the (shared) machine was."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def parallel_op_us(repeats: int = 50) -> float:
    """Median time of a small in-place add (1M floats, split over the intra-op threads), in microseconds.

    A contention probe: about 50 us on an idle 2-core machine; when other processes keep the cores busy,
    every multi-threaded operation waits for a descheduled worker thread and this grows to milliseconds.
    """
    x = torch.zeros(1 << 20)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.add_(1.0)
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def metadata(threads: int, argv: list[str] | None = None) -> dict:
    """Where and how the numbers were measured: date, machine, threads, versions, commit."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "threads": threads,
        "load_average": load_average(),
        "parallel_op_us": parallel_op_us(),
        "torch": torch.__version__,
        "dyrelu": dyrelu.__version__,
        "native_kernels": native_available(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "argv": argv,
    }


@contextlib.contextmanager
def native_kernels(enabled: bool):
    """Run with dyrelu's fused native CPU kernels on or off (the ``DYRELU_NATIVE`` switch)."""
    before = os.environ.get("DYRELU_NATIVE")
    os.environ["DYRELU_NATIVE"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["DYRELU_NATIVE"]
        else:
            os.environ["DYRELU_NATIVE"] = before


def native_available() -> bool:
    """Whether the native kernels are built and enabled here (building them if needed)."""
    from dyrelu._native import native_ops

    return native_ops() is not None


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def time_interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, float | int]]:
    """Wall time of each case in ms (median, min) and the process CPU time (median), the cases run in turn,
    the order rotating each repeat. CPU time is less sensitive to other processes on a shared machine (it
    also counts the threads' spinning while they wait for one another)."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            cases[name]()
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return {
        name: {
            "median_ms": statistics.median(wall[name]),
            "min_ms": min(wall[name]),
            "cpu_median_ms": statistics.median(cpu[name]),
            "repeats": repeats,
        }
        for name in names
    }


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes autograd keeps for backward while ``fn`` runs: unique storages, so views count once."""
    storages: dict[tuple[str, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def perturb(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Move the parameters away from their (ReLU-equivalent) start, as after some training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p))
    return module


class NaiveDyReLU(nn.Module):
    """DY-ReLU as the public implementations compute it, sharing the parameters of a dyrelu module.

    The hyper function is the same (global average pool with torch.mean, FC, ReLU, FC, 2σ−1,
    residual coefficients; DY-ReLU-C's spatial attention with its normalised logits), then the input is
    broadcast against the coefficients to a K-times expanded tensor ``(N, C, *S, K)`` and reduced with
    ``max`` over K; autograd keeps the input and the max's int64 indices for backward.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        m = self.inner
        if m.channels_last:
            x = x.movedim(-1, 1)
        dtype = m.fc1_weight.dtype
        context = x.mean(tuple(range(2, x.dim()))).to(dtype) if x.dim() > 2 else x.to(dtype)
        hidden = F.relu(F.linear(context, m.fc1_weight, m.fc1_bias))
        residual = 2 * torch.sigmoid(F.linear(hidden, m.fc2_weight, m.fc2_bias)) - 1
        residual = residual.view(x.shape[0], -1, 2 * m.k)  # (N, C', 2K)
        a, b = DF.coefficients(residual, m.init_a, m.init_b, m.lambda_a, m.lambda_b)
        expand = (x.shape[0], a.shape[1]) + (1,) * (x.dim() - 2) + (m.k,)
        y = (x.unsqueeze(-1) * a.view(expand).to(x.dtype) + b.view(expand).to(x.dtype)).max(dim=-1).values
        if isinstance(m, DyReLUC):
            logits = torch.matmul(m.spatial_weight.to(x.dtype), x.flatten(2)).unsqueeze(1)  # (N, 1, P)
            if m.spatial_norm:  # as the authors: a one-channel BatchNorm of the logits
                stats = (m.spatial_bn_running_mean, m.spatial_bn_running_var, m.spatial_bn_weight, m.spatial_bn_bias)
                logits = F.batch_norm(logits, *stats, training=m.training, momentum=0.1, eps=1e-5)
            y = y * DF.spatial_attention(logits, m.tau, m.gamma).view((x.shape[0], 1, *x.shape[2:]))
        return y.movedim(1, -1) if m.channels_last else y


def naive_like(model: nn.Module) -> nn.Module:
    """``model`` with every DyReLUA/B/C module wrapped in :class:`NaiveDyReLU` (parameters shared)."""
    for name, child in list(model.named_children()):
        if isinstance(child, (DyReLUA, DyReLUB, DyReLUC)):
            setattr(model, name, NaiveDyReLU(child))
        else:
            naive_like(child)
    return model


def write_json(data: dict, path: str | os.PathLike | None) -> None:
    text = json.dumps(data, indent=1, sort_keys=False)
    if path is None:
        print(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")


def fmt_shape(shape: Iterable[int]) -> str:
    return "×".join(str(s) for s in shape)
