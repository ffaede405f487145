"""The piecewise maximum's autograd function and its eager ATen forward and backward.

:func:`dyrelu.functional.piecewise_max` calls :class:`PiecewiseMax`. Forward and backward first try the
fused native kernels of :mod:`dyrelu._native` and otherwise run the ATen implementation here, which
works blockwise in place and saves only ``x`` and the coefficients for backward. Captured graphs
(torch.compile, torch.export, tracing) get plain out-of-place operations instead.

Edge values: an infinite ``x`` (fp16 overflow, say) takes the limit ``x -> +-inf``. A zero slope (or
scale) times ``+-inf`` contributes 0, not NaN, so that ReLU's pieces give ``torch.relu``'s values and
gradients at ``+-inf``; the gradient goes to the piece active for all ``x`` large enough (the largest slope
towards +inf, the smallest towards -inf; for equal slopes the larger intercept; ties to the later piece).
A NaN ``x`` gives NaN, with the earlier piece's gradient (``torch.relu``'s 1). The slopes' gradients sum
``grad * x``: not finite where ``x`` is not. The out-of-place formulation (:func:`_forward_exact`,
:func:`_backward_parts`) handles all of this with ``torch.where`` (which a compiler fuses); the
eager CPU blocks compute as for finite ``x`` and hand a block to it only when they see the case: a NaN in
the forward's block, a sum of ``grad * x`` that is not finite in the backward's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dyrelu import _native

__all__ = ["PiecewiseMax", "forward_max", "kernel_in_graph", "residual_max", "spatial_mean", "tracing"]


# grad where self > threshold, else 0 (a NaN in self keeps grad); a float comparison fused with the select,
# much faster on CPU than a bool mask and torch.where.
_threshold_backward = torch.ops.aten.threshold_backward
_threshold_backward_out = torch.ops.aten.threshold_backward.grad_input


def _pieces(c: Tensor, spatial: int) -> list[Tensor]:
    """The K pieces of ``(N, C', K)`` coefficients, each as a contiguous ``(N, C', 1, ..., 1)``.

    Contiguous matters: with channels-last input the channels are the innermost loop, and a piece
    strided by K there keeps the CPU kernels from vectorising (5-10x slower elementwise passes).
    """
    pieces = c.movedim(-1, 0).contiguous()  # (K, N, C')
    return list(pieces.reshape(pieces.shape + (1,) * spatial).unbind(0))


def tracing() -> bool:
    """Whether a graph is being captured (torch.compile, torch.export, TorchScript tracing).

    Captured graphs get plain out-of-place operations: the compiler fuses them anyway, and ``out=``
    variants in an exported graph make autograd reject the exported program.
    """
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def forward_max(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None = None, functional: bool = False) -> Tensor:
    """``scale * max_k(a_k x + b_k)``: out-of-place when ``functional`` or tracing, else :func:`_forward_eager`."""
    if not (functional or tracing()):
        return _forward_eager(x, a, b, scale)
    return _forward_exact(x, a, b, scale)


def _infinite(t: Tensor) -> Tensor:
    """``t.isinf()`` as inductor vectorises it on CPU (``isinf`` itself made the compiled step 1.7x slower)."""
    return t.abs() == math.inf


def _times(factor: Tensor, t: Tensor) -> Tensor:
    """``factor * t`` where a zero factor (a slope, a scale) times an infinite ``t`` is 0, the limit, not NaN."""
    return torch.where((factor == 0) & _infinite(t), 0.0, factor * t)


def _forward_exact(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None = None) -> Tensor:
    """``scale * max_k(a_k x + b_k)`` out-of-place, exact at infinite ``x`` (see the module's doc).

    A ``torch.where`` per piece; inductor fuses it (on channels-first maps at no cost; channels-last
    forward + backward took 1.4x as long, measured; taking the zero slopes out of the coefficients instead,
    as the native kernel does, and clamping took 2.7x).
    """
    spatial = x.dim() - 2
    slopes, intercepts = _pieces(a, spatial), _pieces(b, spatial)
    y = _times(slopes[0], x) + intercepts[0]
    for k in range(1, len(slopes)):
        y = torch.maximum(y, _times(slopes[k], x) + intercepts[k])
    return y if scale is None else _times(scale, y)


# The eager kernels below are sequences of ATen operations. On CPU they run block by block over the
# samples, blocks of about this many elements per intra-op thread (1 MiB of float32), so that the
# temporaries and the several passes over a block stay in cache: in memory traffic the sequence then
# costs about what one fused kernel would (read x and the gradient, write the result). A full-size
# temporary would also cost its allocation, which for large tensors means page-faulting fresh memory on
# every call.
_BLOCK_ELEMENTS = 1 << 18


def _blocks(x: Tensor) -> list[slice]:
    """Slices of the batch dim to process one after the other (one slice off CPU: GPUs need no blocking)."""
    n = x.shape[0]
    per_sample = math.prod(x.shape[1:])
    if x.device.type != "cpu" or n <= 1 or per_sample == 0:
        return [slice(0, n)]
    size = max(1, _BLOCK_ELEMENTS * torch.get_num_threads() // per_sample)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _any_nan(t: Tensor) -> bool:
    """Whether the (CPU) block ``t`` has a NaN: one reducing pass over it (in cache), no temporary."""
    return t.numel() > 0 and math.isnan(t.amax().item())


def _sample_rows(t: Tensor | None, block: slice) -> Tensor | None:
    """Rows ``block`` of a tensor with N or 1 rows (all of them when shared over the samples)."""
    return t if t is None or t.shape[0] == 1 else t[block]


def _rows(coefficients: Tensor, block: slice) -> tuple[Tensor, ...]:
    """The pieces ``(N or 1, C', 1, ...)`` stacked in ``coefficients`` ``(J, N or 1, C', 1, ...)``, rows ``block``
    (all rows when shared over the samples)."""
    return (coefficients if coefficients.shape[1] == 1 else coefficients[:, block]).unbind(0)


def _affine_into(out: Tensor, x: Tensor, slope: Tensor, intercept: Tensor) -> Tensor:
    """``out = slope * x + intercept`` with per-channel ``slope``, ``intercept`` broadcast over the positions."""
    if x.stride(1) == 1:  # channels innermost (channels-last memory, tokens): addcmul vectorises
        return torch.addcmul(intercept, x, slope, out=out)
    # Positions innermost: there addcmul with two broadcast operands runs a scalar loop (3-8x slower).
    return torch.mul(x, slope, out=out).add_(intercept)


def _max_terms(slopes: list[Tensor], intercepts: list[Tensor]) -> Tensor:
    """The coefficients :func:`_max_into` uses, stacked."""
    if len(slopes) == 2:
        return torch.stack([intercepts[0], slopes[0] - slopes[1], intercepts[1], slopes[1]])
    return torch.stack([*intercepts, *slopes])


def _max_into(out: Tensor, x: Tensor, terms: tuple[Tensor, ...], num_pieces: int, scratch: Tensor | None) -> None:
    """``out = max_k(a_k x + b_k)`` in place for one block, ``terms`` from :func:`_max_terms` (sliced);
    ``scratch``, block-sized, is needed for K > 2."""
    if num_pieces == 2:
        # max(a0 x + b0, a1 x + b1) = a1 x + max((a0 - a1) x + b0, b1): three passes, no temporary, and
        # exact for ReLU's pieces x and 0.
        b0, slope_diff, b1, a1 = terms
        _affine_into(out, x, slope_diff, b0)
        torch.maximum(out, b1, out=out)
        out.addcmul_(x, a1)
        return
    intercepts, slopes = terms[:num_pieces], terms[num_pieces:]
    _affine_into(out, x, slopes[0], intercepts[0])
    for slope, intercept in zip(slopes[1:], intercepts[1:], strict=True):
        torch.maximum(out, _affine_into(scratch, x, slope, intercept), out=out)


def _forward_eager(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None) -> Tensor:
    """:func:`forward_max` in place into one output tensor, block by block (see ``_BLOCK_ELEMENTS``).

    A block with a NaN result (a NaN input, or ``0 * inf`` at an infinite one) is computed again by
    :func:`_forward_exact`; off the CPU, where looking at a block would wait for the device, all of it is.
    """
    y = _native.forward(x, a, b, scale)
    if y is not None:
        return y
    if x.device.type != "cpu":
        return _forward_exact(x, a, b, scale)
    if x.dim() == 2:
        return _forward_eager(x.unsqueeze(-1), a, b, scale).squeeze(-1)
    spatial = x.dim() - 2
    slopes, intercepts = _pieces(a, spatial), _pieces(b, spatial)
    terms = _max_terms(slopes, intercepts)
    y = torch.empty_like(x)
    blocks = _blocks(x)
    scratch = torch.empty_like(x[blocks[0]]) if len(slopes) > 2 else None
    for block in blocks:
        out, xb = y[block], x[block]
        _max_into(out, xb, _rows(terms, block), len(slopes), None if scratch is None else scratch[: len(out)])
        if scale is not None:
            out.mul_(scale[block])
        if _any_nan(out):
            out.copy_(_forward_exact(xb, _sample_rows(a, block), _sample_rows(b, block), _sample_rows(scale, block)))
    return y


def _spatial_sum(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``(N, C, *S)`` summed over the spatial dims to ``(N, C)`` in ``dtype`` (a new tensor)."""
    return t.sum(tuple(range(2, t.dim())), dtype=dtype) if t.dim() > 2 else t.to(dtype, copy=True)


def _to_coefficient_shape(grad: Tensor, like: Tensor) -> Tensor:
    """Per-sample, per-channel gradients ``(N, C, K)`` summed to the coefficients' ``(N or 1, C or 1, K)``."""
    dims = [d for d in (0, 1) if like.shape[d] == 1 and grad.shape[d] != 1]
    grad = grad.sum(dims, keepdim=True) if dims else grad
    return grad.to(like.dtype)


def _coefficient_grads(
    total: Tensor, total_x: Tensor, piece: list[Tensor], piece_x: list[Tensor], a: Tensor
) -> tuple[Tensor, Tensor]:
    """``grad_a``, ``grad_b`` from the sums of ``g x`` and ``g`` over all positions and over each piece's
    positions (all pieces but the last, which gets the rest)."""
    grad_b = torch.stack([*piece, total - sum(piece)] if piece else [total], dim=-1)  # (N, C, K)
    grad_a = torch.stack([*piece_x, total_x - sum(piece_x)] if piece_x else [total_x], dim=-1)
    return _to_coefficient_shape(grad_a, a), _to_coefficient_shape(grad_b, a)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _limit_piece(a: Tensor, b: Tensor, direction: float) -> Tensor:
    """Per sample and channel ``(N, C', 1)``, the piece active for all x large enough towards ``direction * inf``:
    the largest ``direction * slope``, then the largest intercept, then the later piece."""
    key = a * direction
    best = key == key.amax(-1, keepdim=True)
    best = best & (b == torch.where(best, b, -math.inf).amax(-1, keepdim=True))
    index = torch.arange(a.shape[-1], device=a.device)
    return torch.where(best, index, -1).amax(-1, keepdim=True)


def _backward_parts(grad: Tensor, x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None, needs: tuple[bool, ...]):
    """:func:`_backward` before the coefficients' reduction: ``grad_x``, the sums and ``grad_scale``.

    The sums (None unless ``a`` or ``b`` needs a gradient) are ``(total, total_x, piece, piece_x)``: per sample
    and channel ``(N, C)`` in the accumulation dtype, the output gradient (times the scale) and that times
    ``x``, over all positions and over each piece's (all pieces but the last).
    """
    need_x, need_a, need_b, need_scale = needs
    spatial = x.dim() - 2
    slopes, intercepts = _pieces(a, spatial), _pieces(b, spatial)
    grad_z = grad if scale is None else grad * scale
    hs: list[Tensor] = []
    if len(slopes) == 2:
        # piece 0 is active where (a0 - a1) x + (b0 - b1) > 0; at infinite x and equal slopes the intercepts decide
        diff = _times(slopes[0] - slopes[1], x) + (intercepts[0] - intercepts[1])
        hs = [_threshold_backward(grad_z, diff, 0)]
    elif len(slopes) > 2:
        best = x * slopes[0] + intercepts[0]
        hs = [grad_z]
        for k in range(1, len(slopes)):
            value = x * slopes[k] + intercepts[k]
            stays = best - value  # > 0 where the earlier best stays
            taken = grad_z - _threshold_backward(grad_z, stays, 0) if k < len(slopes) - 1 else None
            hs = [_threshold_backward(h, stays, 0) for h in hs]
            if taken is not None:
                hs.append(taken)
            best = torch.maximum(best, value)
        # at infinite x (where the values above are NaN or tie) the piece active in the limit
        infinite, up = _infinite(x), x > 0
        top = _limit_piece(a, b, 1.0).reshape(a.shape[:2] + (1,) * spatial)
        bottom = _limit_piece(a, b, -1.0).reshape(a.shape[:2] + (1,) * spatial)
        hs = [
            torch.where(infinite, torch.where(torch.where(up, top == k, bottom == k), grad_z, 0.0), h)
            for k, h in enumerate(hs)
        ]
    grad_x = sums = grad_scale = None
    if need_x:
        grad_x = grad_z * slopes[-1]
        for h, slope in zip(hs, slopes, strict=False):
            grad_x = grad_x + h * (slope - slopes[-1])
    if need_a or need_b:
        acc = _accumulation_dtype(x.dtype)
        sums = (
            _spatial_sum(grad_z, acc),
            _spatial_sum(grad_z * x, acc),
            [_spatial_sum(h, acc) for h in hs],
            [_spatial_sum(h * x, acc) for h in hs],
        )
    if need_scale:
        grad_scale = (grad * _forward_exact(x, a, b)).sum(1, keepdim=True)
    return grad_x, sums, grad_scale


def _backward(grad: Tensor, x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None, needs: tuple[bool, ...]):
    """Gradients of ``scale * max_k(a_k x + b_k)`` with differentiable, out-of-place operations.

    Used for double backward and inside captured graphs (where the compiler fuses the passes), and by the
    eager backward off the CPU and for blocks with non-finite values. ``hs[k]`` is the output gradient
    where piece ``k`` is active, for all pieces but the last; ``threshold_backward`` selects it with a float
    comparison. On ties the later piece wins, so that the ReLU configuration (pieces ``x`` and ``0``) has
    gradient 0 at ``x == 0`` as torch.relu has; where a comparison is NaN the earlier piece keeps the
    gradient, and the NaN reaches the coefficients' gradients. Infinite x: see the module's doc.
    """
    grad_x, sums, grad_scale = _backward_parts(grad, x, a, b, scale, needs)
    grad_a = grad_b = None
    if sums is not None:
        grad_a, grad_b = _coefficient_grads(*sums, a)
    return grad_x, grad_a, grad_b, grad_scale


def _backward_eager(grad: Tensor, x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None, needs: tuple[bool, ...]):
    """:func:`_backward` for plain eager mode: the same formulas, not differentiable, block by block.

    Per block of samples (see ``_BLOCK_ELEMENTS``), the masked gradients ``hs`` and the products live in
    block-sized scratch buffers; the only full-size allocation is the input gradient. Where the fused
    native kernel applies (:mod:`dyrelu._native`: CPU; float32, float64, bfloat16) it does all of this in one pass.
    A block with a non-finite value goes to :func:`_backward_parts` (seen at no cost in the sums of
    ``grad * x``; without them, for K > 2, by a sum over the block's ``x``), and so does all of ``x`` off the CPU.
    """
    native = _native.backward(grad, x, a, b, scale, needs)
    if native is not None:
        grad_x, sum_g, sum_gx, grad_scale = native
        grad_a = grad_b = None
        if sum_g is not None:
            grad_a, grad_b = _to_coefficient_shape(sum_gx, a), _to_coefficient_shape(sum_g, a)
        return grad_x, grad_a, grad_b, grad_scale
    if x.device.type != "cpu":  # no blocks, and no look at the values (it would wait for the device)
        return _backward(grad, x, a, b, scale, needs)
    if x.dim() == 2:
        grad_x, grad_a, grad_b, _ = _backward_eager(grad.unsqueeze(-1), x.unsqueeze(-1), a, b, None, needs)
        return None if grad_x is None else grad_x.squeeze(-1), grad_a, grad_b, None
    need_x, need_a, need_b, need_scale = needs
    spatial = x.dim() - 2
    dims = tuple(range(2, x.dim()))
    slopes, intercepts = _pieces(a, spatial), _pieces(b, spatial)
    num_pieces = len(slopes)
    acc = _accumulation_dtype(x.dtype)
    n, channels = x.shape[:2]
    need_coef = need_a or need_b
    blocks = _blocks(x)

    def scratch() -> Tensor:
        return torch.empty_like(x[blocks[0]])

    grad_x = torch.empty_like(x) if need_x else None
    # sums[0] = Σ g, sums[1] = Σ g x, and for the pieces but the last sums[2 + 2k] = Σ h_k, sums[3 + 2k] = Σ h_k x
    sums = x.new_empty((2 * num_pieces, n, channels), dtype=acc) if need_coef else None
    grad_scale = x.new_empty((n, 1, *x.shape[2:]), dtype=acc) if need_scale else None
    grad_z_buf = scratch() if scale is not None else None
    product = scratch() if need_coef or need_scale else None
    hs_buf = [scratch() for _ in range(num_pieces - 1)]
    if num_pieces > 2:
        best, value, stays = scratch(), scratch(), scratch()

    # Stacked coefficients, sliced once per block: the pieces, then for the input gradient the slope
    # differences to the last piece, then (K = 2) the mask's (a0 - a1, b0 - b1).
    coefs = torch.stack(
        [*slopes, *intercepts, *(slope - slopes[-1] for slope in slopes[:-1])]
        + ([slopes[0] - slopes[1], intercepts[0] - intercepts[1]] if num_pieces == 2 else [])
    )
    terms = _max_terms(slopes, intercepts) if need_scale else None
    for block in blocks:
        m = block.stop - block.start
        xb, gb = x[block], grad[block]
        rows = _rows(coefs, block)
        a_b, b_b = rows[:num_pieces], rows[num_pieces : 2 * num_pieces]
        slope_diffs = rows[2 * num_pieces : 3 * num_pieces - 1]
        grad_z = gb
        if scale is not None:
            if need_scale:
                z = product[:m]
                _max_into(z, xb, _rows(terms, block), num_pieces, hs_buf[0][:m] if num_pieces > 2 else None)
                torch.sum(z.mul_(gb), 1, keepdim=True, dtype=acc, out=grad_scale[block])
            grad_z = torch.mul(gb, scale[block], out=grad_z_buf[:m])
        hs = [h[:m] for h in hs_buf]
        if num_pieces == 2:
            # grad_z where piece 0 is active: (a0 - a1) x + (b0 - b1) > 0
            _affine_into(hs[0], xb, rows[-2], rows[-1])
            _threshold_backward_out(grad_z, hs[0], 0, grad_input=hs[0])
        elif num_pieces > 2:
            best_b, value_b, stays_b = best[:m], value[:m], stays[:m]
            _affine_into(best_b, xb, a_b[0], b_b[0])
            for k in range(1, num_pieces):
                _affine_into(value_b, xb, a_b[k], b_b[k])
                torch.sub(best_b, value_b, out=stays_b)  # > 0 where the earlier best stays
                if k < num_pieces - 1:  # piece k takes grad_z where it is not below the best so far
                    _threshold_backward_out(grad_z, stays_b, 0, grad_input=hs[k]).neg_().add_(grad_z)
                for j in range(k):
                    _threshold_backward_out(grad_z if k == 1 else hs[j], stays_b, 0, grad_input=hs[j])
                torch.maximum(best_b, value_b, out=best_b)
        if need_coef:
            torch.sum(grad_z, dims, dtype=acc, out=sums[0, block])
            torch.sum(torch.mul(grad_z, xb, out=product[:m]), dims, dtype=acc, out=sums[1, block])
            for k, h in enumerate(hs):
                torch.sum(h, dims, dtype=acc, out=sums[2 + 2 * k, block])
                torch.sum(torch.mul(h, xb, out=product[:m]), dims, dtype=acc, out=sums[3 + 2 * k, block])
        if need_x:
            out = torch.mul(grad_z, a_b[-1], out=grad_x[block])
            for h, slope_diff in zip(hs, slope_diffs, strict=True):
                out.addcmul_(h, slope_diff)
        # Non-finite x: K = 2 gets the input gradient right as it is (a NaN mask keeps the earlier piece, whose
        # slope is the same where equal slopes make it NaN), but not always the pieces' sums; K > 2 neither.
        if need_coef:
            redo = not math.isfinite(sums[1, block].sum().item())
        else:
            redo = num_pieces > 2 and need_x and not math.isfinite(xb.sum(dtype=acc).item())
        if redo or (need_scale and _any_nan(grad_scale[block])):
            _backward_block_exact(block, gb, xb, a, b, scale, needs, grad_x, sums, grad_scale)

    grad_a = grad_b = None
    if need_coef:
        grad_a, grad_b = _coefficient_grads(sums[0], sums[1], list(sums[2::2]), list(sums[3::2]), a)
    if grad_scale is not None:
        grad_scale = grad_scale.to(x.dtype)
    return grad_x, grad_a, grad_b, grad_scale


def _backward_block_exact(block, grad, x, a, b, scale, needs, grad_x, sums, grad_scale) -> None:
    """One block of :func:`_backward_eager` again by :func:`_backward_parts`, into its outputs."""
    rows = [_sample_rows(t, block) for t in (a, b, scale)]
    block_grad_x, block_sums, block_grad_scale = _backward_parts(grad, x, *rows, needs)
    if grad_x is not None:
        grad_x[block] = block_grad_x
    if sums is not None:
        total, total_x, piece, piece_x = block_sums
        sums[0, block], sums[1, block] = total, total_x
        for k, (h, hx) in enumerate(zip(piece, piece_x, strict=True)):
            sums[2 + 2 * k, block], sums[3 + 2 * k, block] = h, hx
    if grad_scale is not None:
        grad_scale[block] = block_grad_scale


class PiecewiseMax(torch.autograd.Function):
    """``y = s * max_k(a_k x + b_k)`` saving only ``x``, ``a``, ``b`` and ``s`` for backward.

    The backward recomputes which piece is active. It is differentiable (double backward works: the
    choice of piece is piecewise constant in the inputs); when no graph of the backward is needed it
    runs a faster, non-differentiable eager version of the same formulas.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, a, b, scale)
        return forward_max(x, a, b, scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, a, b, scale = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad)
        if torch.is_grad_enabled() or tracing():
            return _backward(grad, x, a, b, scale, needs)
        return _backward_eager(grad, x, a, b, scale, needs)


# -- the native kernel as an operator that torch.compile keeps in its graphs --------------------------------
#
# torch.ops.dyrelu.piecewise_max and its backward run the eager implementation above (the fused kernel where
# it applies, else the ATen sequence) as opaque operators with fake implementations (output shapes and
# strides: empty_like(x), as the kernel allocates) and a registered autograd formula, so that a compiled
# graph calls the kernel without a graph break. Exporters do not get them: torch.export and ONNX trace the
# out-of-place ATen formulation (forward_max with functional=True), which any runtime can run.


@torch.library.custom_op("dyrelu::piecewise_max", mutates_args=(), device_types="cpu")
def _kernel_op(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None) -> Tensor:
    """``scale * max_k(a_k x + b_k)`` by the native kernel (the ATen sequence where it does not apply)."""
    return _forward_eager(x, a, b, scale)


@_kernel_op.register_fake
def _kernel_op_fake(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None) -> Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("dyrelu::piecewise_max_backward", mutates_args=(), device_types="cpu")
def _kernel_op_backward(
    grad: Tensor, x: Tensor, a: Tensor, b: Tensor, scale: Tensor | None, needs: list[bool]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The gradients of :func:`_kernel_op` for ``x``, ``a``, ``b``, ``scale``; an empty tensor where not needed."""
    grads = _backward_eager(grad, x, a, b, scale, tuple(needs))
    grad_x, grad_a, grad_b, grad_scale = (g if need else None for g, need in zip(grads, needs, strict=True))
    return (
        x.new_empty(0) if grad_x is None else grad_x,
        # the coefficients' gradients can be views of one buffer: operator outputs must not alias
        x.new_empty(0) if grad_a is None else grad_a.clone(memory_format=torch.contiguous_format),
        x.new_empty(0) if grad_b is None else grad_b.clone(memory_format=torch.contiguous_format),
        x.new_empty(0) if grad_scale is None else grad_scale.contiguous(),
    )


@_kernel_op_backward.register_fake
def _kernel_op_backward_fake(grad, x, a, b, scale, needs):
    need_x, need_a, need_b, need_scale = needs
    return (
        torch.empty_like(x) if need_x else x.new_empty(0),
        a.new_empty(a.shape) if need_a else x.new_empty(0),
        b.new_empty(b.shape) if need_b else x.new_empty(0),
        x.new_empty(scale.shape) if need_scale else x.new_empty(0),
    )


def _kernel_op_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _kernel_op_grad(ctx, grad: Tensor):
    x, a, b, scale = ctx.saved_tensors
    needs = [bool(need) for need in ctx.needs_input_grad]
    grads = torch.ops.dyrelu.piecewise_max_backward(grad, x, a, b, scale, needs)
    return tuple(g if need else None for g, need in zip(grads, needs, strict=True))


_kernel_op.register_autograd(_kernel_op_grad, setup_context=_kernel_op_setup)

# Whether torch.compile calls the kernel (True) or compiles the ATen formulation (False); None: the default,
# the faster of the two in a compiled training step (docs/benchmarks.md).
COMPILE_WITH_KERNEL: bool | None = None
_COMPILE_WITH_KERNEL_DEFAULT = True


@torch.compiler.assume_constant_result
def _kernel_available() -> bool:
    """Whether the native kernels are built (building them now if need be): a constant in captured graphs."""
    return _native.native_ops() is not None


def kernel_in_graph(x: Tensor, a: Tensor) -> bool:
    """Whether the graph being compiled calls the native kernel (``torch.ops.dyrelu.piecewise_max``).

    Only under torch.compile (not torch.export, ONNX or TorchScript tracing: exporters get the ATen
    formulation), for what the kernel covers (CPU; float32, float64, bfloat16; up to 4 pieces), and when
    :data:`COMPILE_WITH_KERNEL` (or its default) says so. torch < 2.6 has no ``torch.compiler.is_exporting``
    to tell export from compile: there it is always the ATen formulation.
    """
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    if is_exporting is None or not torch.compiler.is_compiling() or is_exporting() or torch.jit.is_tracing():
        return False
    wanted = _COMPILE_WITH_KERNEL_DEFAULT if COMPILE_WITH_KERNEL is None else COMPILE_WITH_KERNEL
    covered = x.device.type == "cpu" and x.dtype in _native.DTYPES and a.shape[-1] <= _native.MAX_PIECES
    return wanted and covered and _kernel_available()


class _SpatialMean(torch.autograd.Function):
    """Mean over the spatial dims whose backward is a broadcast view of the ``(N, C)`` gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return torch.mean(x, dim=tuple(range(2, x.dim())), dtype=dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = (grad / ctx.shape[2:].numel()).to(ctx.dtype)
        return grad.reshape(grad.shape + (1,) * (len(ctx.shape) - 2)).expand(ctx.shape), None


def spatial_mean(x: Tensor, dtype: torch.dtype) -> Tensor:
    """The hyper function's context: ``(N, C, *S)`` averaged over the positions, in ``dtype``.

    torch.mean's backward materialises a full-size gradient (an allocation plus a pass); this one hands
    autograd a broadcast view, which it adds in place to the piecewise maximum's input gradient.
    """
    if x.dim() == 2:
        return x.to(dtype)
    if tracing() or not (torch.is_grad_enabled() and x.requires_grad):
        return torch.mean(x, dim=tuple(range(2, x.dim())), dtype=dtype)
    return _SpatialMean.apply(x, dtype)


# -- the coefficients and the piecewise maximum in one autograd node (eager mode, native kernels) -----------------


class _ResidualMax(torch.autograd.Function):
    """``y = scale * max_k(a_k x + b_k)`` with ``a``, ``b`` from the hyper function's last FC output ``z``
    (``a = α + λ_a (2σ(z) − 1)``, ``b`` likewise), as one node: the coefficients go straight into the kernels'
    layout, and the backward turns the kernel's per-piece sums into the gradient of ``z`` in one pass.

    Saved: ``x``, ``z`` and the scale (``σ(z)`` and the coefficients are recomputed in backward: two passes
    over ``(N, C' 2K)``, less than keeping them). A backward that builds a graph (double backward)
    differentiates the out-of-place formulation instead.
    """

    @staticmethod
    def forward(ctx, x, z, scale, init, ranges, k, ops, rows):
        coef = _native.coefficients(ops, torch.sigmoid(z), init, ranges)
        y = _native._forward(ops, rows, x, coef[:k], coef[k:], scale)
        ctx.save_for_backward(x, z, scale)
        ctx.constants = (init, ranges, k, ops, rows)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, z, scale = ctx.saved_tensors
        init, ranges, k, ops, rows = ctx.constants
        need_x, need_z, need_scale = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: differentiable formulas (double backward)
            grads = _residual_max_graph(grad, x, z, scale, init, ranges, k, (need_x, need_z, need_scale))
            return (*grads, None, None, None, None, None)
        s = torch.sigmoid(z)
        coef = _native.coefficients(ops, s, init, ranges)
        grad_x, sums, grad_scale = _native._backward(
            ops, rows, grad, x, coef[:k], coef[k:], scale, (need_x, need_z, need_z, need_scale)
        )
        grad_z = None
        if need_z:
            if sums.shape[-1] != coef.shape[-1]:  # one function for all channels (DY-ReLU-A)
                sums = sums.sum(-1, keepdim=True)
            grad_z = _native.coefficients_backward(ops, sums, s, init, ranges)
        return grad_x, grad_z, grad_scale, None, None, None, None, None


def _residual_coefficients(z: Tensor, init: Tensor, ranges: Tensor, n: int, k: int) -> tuple[Tensor, Tensor]:
    """``a``, ``b`` ``(N, C', K)`` from ``z`` with differentiable operations, as dyrelu.functional computes them."""
    residual = torch.sigmoid(torch.where(z.isnan(), 0.0, z)).mul(2.0).sub(1.0).view(n, -1, 2 * k)
    delta_a, delta_b = residual.split(k, dim=-1)
    return init[:k] + ranges[:k] * delta_a, init[k:] + ranges[k:] * delta_b


def _residual_max_graph(grad, x, z, scale, init, ranges, k, needs):
    inputs = [t for t, need in zip((x, z, scale), needs, strict=True) if need]
    with torch.enable_grad():
        a, b = _residual_coefficients(z, init, ranges, x.shape[0], k)
        y = PiecewiseMax.apply(x, a, b, scale)
    found = iter(torch.autograd.grad(y, inputs, grad, create_graph=True, allow_unused=True))
    return tuple(next(found) if need else None for need in needs)


def residual_max(x: Tensor, z: Tensor, init: Tensor, ranges: Tensor, k: int, scale: Tensor | None) -> Tensor | None:
    """``scale * max_k(a_k x + b_k)`` with the coefficients of the hyper function's last FC output ``z``
    ``(N, C' 2K)``: ``a = init[:K] + ranges[:K] (2σ(z) − 1)``, ``b`` from the other K columns (a NaN ``z``: the
    static pieces), in one autograd node on the native kernels; None where they do not apply (eager CPU
    float32 or float64, ``z`` of ``x``'s dtype): then compute the coefficients and call piecewise_max."""
    if tracing():
        return None
    found = _native.residual_usable(x, z, k)
    if found is None or (scale is not None and scale.dtype != x.dtype):
        return None
    return _ResidualMax.apply(x, z, scale, init, ranges, k, *found)
