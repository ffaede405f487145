"""The fused CPU kernels of the piecewise maximum, compiled on first use (``piecewise_max.cpp``).

:func:`native_ops` builds the kernels once per machine and torch version with the system's C++
compiler (torch.utils.cpp_extension; about a minute, then cached under ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``) and returns ``torch.ops.dyrelu_native``. When the build fails (no
compiler, say), it warns once and returns None: :mod:`dyrelu._piecewise` then runs its ATen
implementation, which computes the same values more slowly. ``DYRELU_NATIVE=0`` skips the kernels.
``dyrelu build-kernels`` (:func:`build_kernels`) builds them ahead of the first forward pass.

Covered: CPU tensors of float32, float64 and bfloat16 (computed in float32), up to 4 pieces. float16 is
not: c10::Half's conversions do not vectorise, and a float16 kernel measured 2.6x slower than the ATen
path (forward + backward, ``(128, 32, 14, 14)``, 1 thread); CPU autocast uses bfloat16 by default.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import math
import os
import platform
import shutil
import sysconfig
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DTYPES",
    "MAX_PIECES",
    "build_error",
    "build_kernels",
    "clear_recycled",
    "compiler",
    "native_enabled",
    "native_ops",
    "recycling_enabled",
]

_SOURCE = Path(__file__).with_name("piecewise_max.cpp")
# -fopenmp: at::parallel_for splits work over the intra-op threads only where _OPENMP is defined; without it
# (the flags before issue 18) every kernel ran on one thread whatever torch.get_num_threads() said. The
# extension links libgomp.so.1 by its soname, so it shares the OpenMP runtime torch has loaded already.
_CFLAGS = ["-O3", "-march=native", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"tried": False, "ops": None, "error": None}
_log = logging.getLogger("dyrelu")


def native_enabled() -> bool:
    """Whether the environment allows the native kernels (``DYRELU_NATIVE`` is not ``0``)."""
    return os.environ.get("DYRELU_NATIVE", "1").strip() not in ("0", "false", "no", "off")


def _build_signature() -> str:
    """A short hash of what the build depends on: the source, the flags, torch, the CPU's instruction sets.

    Part of the extension's name, so that each combination has its own build folder and a build on disk
    is known to be current.
    """
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    text = f"{_SOURCE.read_text()}|{_CFLAGS}|{_LDFLAGS}|{torch.__version__}|{platform.machine()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@contextlib.contextmanager
def _build_environment():
    """torch's extension builder as we need it: quiet about CUDA (the kernels are CPU only) and able to
    find the ``ninja`` installed next to this Python even when its folder is not on ``PATH``."""
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level, path = torch_log.level, os.environ.get("PATH", "")
    torch_log.setLevel(logging.ERROR)
    scripts = sysconfig.get_path("scripts")
    if scripts and shutil.which("ninja") is None:
        os.environ["PATH"] = os.pathsep.join([scripts, path]) if path else scripts
    try:
        from torch.utils import cpp_extension

        yield cpp_extension
    finally:
        torch_log.setLevel(level)
        os.environ["PATH"] = path


def _is_built(cpp_extension: Any, name: str) -> bool:
    """Whether a build of ``name`` is on disk already (then loading takes a second, not a minute)."""
    try:
        folder = Path(cpp_extension._get_build_directory(name, False))
    except Exception:  # a private helper of torch's: if it changes, just announce every load
        return False
    return (folder / f"{name}.so").exists()


def _build() -> Any:
    name = f"dyrelu_native_{_build_signature()}"
    with _build_environment() as cpp_extension:
        # Visible by default (logging's last-resort handler prints warnings): a silent minute on the first
        # forward pass would look like a hang.
        announce = not _is_built(cpp_extension, name)
        if announce:
            _log.warning("dyrelu: building the native CPU kernels for this machine (once; about a minute)...")
        start = time.perf_counter()
        cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=_CFLAGS,
            extra_ldflags=_LDFLAGS,
            is_python_module=False,
            verbose=False,
        )
        if announce:
            _log.warning("dyrelu: native CPU kernels built in %.0f s", time.perf_counter() - start)
    return torch.ops.dyrelu_native


def native_ops() -> Any:
    """``torch.ops.dyrelu_native`` (building it on the first call), or None where it cannot be had."""
    if not native_enabled():
        return None
    if _STATE["tried"]:
        return _STATE["ops"]
    with _LOCK:
        if not _STATE["tried"]:
            try:
                _STATE["ops"] = _build()
            except Exception as err:  # any build or load failure: fall back, say why once
                _STATE["error"] = str(err).strip() or type(err).__name__
                first = _STATE["error"].splitlines()[0]
                warnings.warn(
                    f"dyrelu: the native CPU kernels could not be built ({first[:200]}); using the slower ATen "
                    "implementation. Set DYRELU_NATIVE=0 to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _STATE["tried"] = True
    return _STATE["ops"]


def build_error() -> str | None:
    """Why the last build failed (the compiler's output, as torch reports it), or None."""
    return _STATE["error"]


def compiler() -> str | None:
    """The C++ compiler torch's extension builder would run (``$CXX``, else ``c++``), if it is on ``PATH``."""
    return shutil.which(os.environ.get("CXX", "c++"))


def build_kernels() -> dict[str, Any]:
    """Build (or load) the kernels now, ahead of the first forward pass: what ``dyrelu build-kernels`` runs.

    Returns ``{"ok", "seconds", "compiler", "error", "disabled"}``; never raises for a failed build.
    """
    start = time.perf_counter()
    ops = native_ops()
    return {
        "ok": ops is not None,
        "seconds": time.perf_counter() - start,
        "compiler": compiler(),
        "error": build_error(),
        "disabled": not native_enabled(),
    }


# -- the glue between dyrelu._piecewise's tensors and the kernels' 3-d layouts ------------------------

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
MAX_PIECES = 4


def _layout(x: torch.Tensor) -> bool | None:
    """Whether the kernels see ``x`` ``(N, C, *S)`` as ``(N, S, C)`` rows (True) or ``(N, C, S)`` planes (False).

    Planes need ``x`` contiguous, rows need channels innermost (channels-last, tokens, ``(N, C)``); where
    both fit, rows win on small maps (a plane loop over few positions is slow). None: neither fits.
    """
    if x.movedim(1, -1).is_contiguous() and (math.prod(x.shape[2:]) < 16 or not x.is_contiguous()):
        return True
    if x.is_contiguous():
        return False
    return None


def _view3(t: torch.Tensor, rows: bool) -> torch.Tensor:
    """``t`` ``(N, C, *S)`` as the kernels' 3-d view (``t`` must have the layout :func:`_layout` chose)."""
    n, c, s = t.shape[0], t.shape[1], math.prod(t.shape[2:])
    return t.movedim(1, -1).view(n, s, c) if rows else t.view(n, c, s)


def _like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor like ``x``: its shape, dtype, device and strides, so the layout :func:`_layout`
    chose for ``x`` (``x`` is dense there), whatever ``torch.set_default_device`` says; the same as the fake
    implementation of ``torch.ops.dyrelu.piecewise_max`` allocates. Large ones come from :func:`_recycled`."""
    if x.numel() * x.element_size() >= _RECYCLE_MIN_BYTES and x.device.type == "cpu" and recycling_enabled():
        return _recycled(x)
    return torch.empty_like(x, memory_format=torch.preserve_format)


# -- recycled memory for the kernels' outputs ------------------------------------------------------------------
#
# A fresh CPU tensor above glibc's mmap threshold (at most 32 MiB, and the large activations of a network are
# above it) is new pages on every call: the kernel's first write page-faults them in and the kernel zeroes
# them, which cost more than the kernel's own pass (mobilenetv2_050, batch 128, all activation sites, 1
# thread: forward 83 ms into fresh outputs, 26 ms into a reused one, benchmarks/bench_sites.py). ReLU runs in
# place and pays nothing. So the forward's output y (and DY-ReLU-C's attention's input gradient) of 1 MiB or
# more are carved from storages kept here, reused once nothing but this cache holds them (the next training
# step, typically): per shape, strides and dtype at most _RECYCLE_PER_KEY of them, for at most
# _RECYCLE_KEYS keys (the least recently used go), _RECYCLE_MAX_BYTES in all. That memory stays with the
# process between steps, as a GPU caching allocator's does; clear_recycled() lets go of it, and
# DYRELU_RECYCLE=0 switches the recycling off.

_RECYCLE_MIN_BYTES = 1 << 20
_RECYCLE_PER_KEY = 16
_RECYCLE_KEYS = 64
_RECYCLE_MAX_BYTES = 2 << 30
_RECYCLE: collections.OrderedDict = collections.OrderedDict()
_RECYCLE_LOCK = threading.Lock()
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)  # private: without it, no recycling


def recycling_enabled() -> bool:
    """Whether the kernels' large outputs reuse memory (``DYRELU_RECYCLE`` is not ``0``)."""
    return _USE_COUNT is not None and os.environ.get("DYRELU_RECYCLE", "1").strip() not in ("0", "false", "no", "off")


def _recycled_bytes() -> int:
    return sum(storage.nbytes() for storages in _RECYCLE.values() for storage in storages)


def _recycled(x: torch.Tensor) -> torch.Tensor:
    """A tensor like ``x`` (dense) on a storage of the cache that nothing else holds, or on a new one it keeps."""
    key = (tuple(x.shape), x.stride(), x.dtype)
    with _RECYCLE_LOCK:
        storages = _RECYCLE.pop(key, [])
        _RECYCLE[key] = storages  # most recently used last
        for storage in storages:
            if _USE_COUNT(storage._cdata) == 1:  # only this cache holds it
                return torch.empty(0, dtype=x.dtype).set_(storage, 0, x.shape, x.stride())
        out = torch.empty_like(x, memory_format=torch.preserve_format)
        while len(_RECYCLE) > _RECYCLE_KEYS:
            _RECYCLE.popitem(last=False)
        storage = out.untyped_storage()
        if len(storages) < _RECYCLE_PER_KEY and _recycled_bytes() + storage.nbytes() <= _RECYCLE_MAX_BYTES:
            storages.append(storage)
        return out


def clear_recycled() -> None:
    """Let go of the recycled storages (their memory returns once no tensor uses it)."""
    with _RECYCLE_LOCK:
        _RECYCLE.clear()


def _usable(x: torch.Tensor, a: torch.Tensor) -> Any:
    if x.device.type != "cpu" or x.dtype not in DTYPES or a.shape[-1] > MAX_PIECES or x.numel() == 0:
        return None
    return native_ops()


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float32 for 16-bit tensors."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _coefficients(a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(N or 1, C or 1, K)`` as the kernels' contiguous ``(K, N or 1, C or 1)`` in ``dtype``."""
    return a.movedim(-1, 0).to(dtype).contiguous()


def _scale(scale: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    return None if scale is None else scale.reshape(x.shape[0], -1).contiguous()


def _pieces(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return _coefficients(a, dtype), _coefficients(b, dtype)


def forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor | None:
    """``scale * max_k(a_k x + b_k)`` by the fused kernel, or None where it does not apply (then use ATen)."""
    ops = _usable(x, a)
    rows = _layout(x) if ops is not None else None
    if rows is None:
        return None
    return _forward(ops, rows, x, *_pieces(a, b, _opmath(x.dtype)), scale)


def _forward(ops: Any, rows: bool, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None):
    """The forward kernel on coefficients already in its layout: contiguous ``(K, N or 1, C or 1)``."""
    y = _like(x)
    ops.forward(_view3(x, rows), a, b, _scale(scale, x), rows, _view3(y, rows))
    return y


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor | None,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] | None:
    """The gradients by the fused kernel, or None where it does not apply.

    Returns ``(grad_x, sum_g, sum_gx, grad_scale)``: ``sum_g`` and ``sum_gx`` are ``(N, C, K)``, the output
    gradient (times the scale) and that times ``x``, summed over the positions where each piece is active;
    the caller reduces them to the coefficients' shape.
    """
    ops = _usable(x, a)
    rows = _layout(x) if ops is not None else None
    if rows is None:
        return None
    grad_x, sums, grad_scale = _backward(ops, rows, grad, x, *_pieces(a, b, _opmath(x.dtype)), scale, needs)
    sum_g = sum_gx = None
    if sums is not None:
        sum_g, sum_gx = sums[0::2].movedim(0, -1), sums[1::2].movedim(0, -1)
    return grad_x, sum_g, sum_gx, grad_scale


def _backward(
    ops: Any,
    rows: bool,
    grad: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor | None,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The backward kernel on coefficients in its layout: ``(grad_x, sums, grad_scale)``, ``sums`` the kernel's
    ``(2K, N, C)`` (row ``2k``: the sum of the gradient over piece ``k``'s positions, ``2k + 1``: of it times x)."""
    x3 = _view3(x, rows)
    grad3 = (grad.movedim(1, -1) if rows else grad).contiguous().view(x3.shape)
    need_x, need_a, need_b, need_scale = needs
    need_coef = need_a or need_b
    # Not recycled: autograd adds the pooling's (and DY-ReLU-C's attention's) gradient into this tensor in place
    # only if nothing else holds its storage, so a recycled one would be added out of place, into fresh memory.
    grad_x = torch.empty_like(x, memory_format=torch.preserve_format) if need_x else None
    sums, gsc = ops.backward(
        grad3,
        x3,
        a,
        b,
        _scale(scale, x),
        rows,
        need_coef,
        need_scale,
        _view3(grad_x, rows) if need_x else x.new_empty(0),
    )
    grad_scale = gsc.view(scale.shape).to(x.dtype) if need_scale else None
    return grad_x, (sums if need_coef else None), grad_scale


# -- the hyper function's coefficients from the last FC's output, in the kernels' layout --------------------------


def residual_usable(x: torch.Tensor, z: torch.Tensor, k: int) -> tuple[Any, bool] | None:
    """``(ops, rows)`` where :func:`residual_forward` applies to ``x`` and the logits ``z``, else None:
    CPU, ``x`` and ``z`` both float32 or both float64, up to :data:`MAX_PIECES` pieces, a layout the kernels take."""
    if x.dtype != z.dtype or x.dtype not in (torch.float32, torch.float64) or k > MAX_PIECES or x.numel() == 0:
        return None
    if x.device.type != "cpu" or z.device.type != "cpu":
        return None
    ops = native_ops()
    rows = _layout(x) if ops is not None else None
    return None if rows is None else (ops, rows)


def coefficients(ops: Any, s: torch.Tensor, init: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """The kernels' ``(2K, N, C')`` coefficients (slopes, then intercepts) from ``s = sigmoid(z)`` ``(N, C' 2K)``:
    ``init + ranges * (2 s - 1)`` (``init``: the K α then the K β; ``ranges``: λ_a K times, then λ_b)."""
    pieces2 = init.numel()
    out = s.new_empty((pieces2, s.shape[0], s.shape[1] // pieces2))
    ops.coefficients(s, init, ranges, out)
    return out


def coefficients_backward(
    ops: Any, sums: torch.Tensor, s: torch.Tensor, init: torch.Tensor, ranges: torch.Tensor
) -> torch.Tensor:
    """The gradient of the logits ``z`` from the backward kernel's ``sums`` ``(2K, N, C')`` and ``s = sigmoid(z)``."""
    out = torch.empty_like(s)
    ops.coefficients_backward(sums.contiguous(), s, init, ranges, out)
    return out
