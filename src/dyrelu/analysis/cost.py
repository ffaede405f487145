"""What a network costs: parameters and multiply-adds (MAdds), and the activations compared on one network.

MAdds are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix
products and convolutions (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``, attention) at two
FLOPs per multiply-add; ``MAdds = FLOPs / 2``, the convention of the MobileNet and DY-ReLU papers
(MobileNetV2 ×1.0 at 224×224: 300M MAdds). We add the matrix-vector products it leaves out (``mv``,
``addmv``, ``dot``), which ``torch.matmul`` with a vector operand dispatches to (DY-ReLU-C's spatial
convolution is one).

What is and is not counted for DY-ReLU:
    - counted: the hyper function's two fully connected layers (``addmm``) and DY-ReLU-C's spatial
      1×1 convolution C→1 (a matrix product, ``C·H·W`` MAdds per sample).
    - not counted: elementwise work, as for every activation, ReLU included: the global average pool,
      the sigmoid, the ``K`` multiply-adds and the maximum of the piecewise function per element, and
      DY-ReLU-C's softmax. These are memory-bound, not multiply-adds of a matrix product; the papers'
      MAdds leave them out too. Speed is measured by the benchmarks, not by this count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ActProfile", "Profile", "compare_acts", "count_params", "format_comparison", "profile_model"]

DEFAULT_ACTS: tuple[str, ...] = ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")


@dataclasses.dataclass(frozen=True)
class Profile:
    """Cost of one forward pass.

    Attributes:
        params: the number of parameters (shared parameters counted once).
        madds: the multiply-adds of the convolutions and matrix products for ``input_size``.
        input_size: the input shape the MAdds are for, batch included.
    """

    params: int
    madds: int
    input_size: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ActProfile:
    """One row of :func:`compare_acts`: a model's cost with activation ``act``.

    Attributes:
        act: the activation's registry name.
        params: parameters of the model with that activation.
        madds: multiply-adds for one image.
        params_overhead: the extra parameters relative to the baseline activation, in percent.
        madds_overhead: the extra MAdds relative to the baseline activation, in percent.
    """

    act: str
    params: int
    madds: int
    params_overhead: float
    madds_overhead: float


def _mv_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _addmv_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


def _extra_flop_formulas() -> dict:
    aten = torch.ops.aten
    return {aten.mv: _mv_flop, aten.addmv: _addmv_flop, aten.dot: _dot_flop}


def count_params(model: nn.Module) -> int:
    """The number of parameters of ``model`` (shared parameters counted once).

    Example:
        >>> count_params(nn.Linear(4, 2))
        10
    """
    return sum(p.numel() for p in model.parameters())


def profile_model(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> Profile:
    """Parameters and MAdds of ``model`` for one forward pass on an input of shape ``input_size``.

    The forward pass runs in eval mode (restored afterwards), without gradients, on zeros of the
    parameters' device and dtype. On the ``meta`` device nothing is computed: the count needs shapes
    only. Lazy modules are materialised by the pass before their parameters are counted.

    Args:
        model: the model.
        input_size: the input shape, batch included; the MAdds are for the whole batch.

    Returns:
        A :class:`Profile`.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
        >>> profile_model(model, (1, 3, 8, 8))  # conv: 8·6·6 outputs × 27, linear: 288 × 10
        Profile(params=3114, madds=10656, input_size=(1, 3, 8, 8))
    """
    from torch.utils.flop_counter import FlopCounterMode

    input_size = tuple(int(s) for s in input_size)
    if not input_size or any(s < 1 for s in input_size):
        raise ValueError(f"expected an input size of positive ints, batch included, got {input_size}")
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.get_default_dtype()
    x = torch.zeros(input_size, device=device, dtype=dtype)

    training = model.training
    model.eval()  # batch norm in training mode fails on a single sample with 1×1 positions
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas()) as counter:
            model(x)
    finally:
        model.train(training)
    return Profile(params=count_params(model), madds=counter.get_total_flops() // 2, input_size=input_size)


def _overhead(value: int, base: int) -> float:
    return 100.0 * (value - base) / base if base else 0.0


def compare_acts(
    model: str,
    acts: Sequence[str] = DEFAULT_ACTS,
    *,
    input_size: int | tuple[int, int] = 224,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    baseline: str = "relu",
    device: torch.device | str = "meta",
) -> list[ActProfile]:
    """The cost of model ``model`` with each activation of ``acts``, relative to ``baseline``.

    Each model is built with :func:`dyrelu.models.create_model` on ``device`` (by default ``meta``:
    no memory is allocated and nothing is computed, so ResNet-50 takes well under a second) and
    profiled for one image of ``in_chans × input_size``.

    Args:
        model: a registered model name (see :func:`dyrelu.models.list_models`).
        acts: registered activation names (see :func:`dyrelu.list_acts`), one row each.
        input_size: the image side, or ``(height, width)``.
        num_classes: the classifier's outputs.
        in_chans: the image channels.
        small_input: build the models' small-input stem (see :func:`dyrelu.models.create_model`).
        baseline: the activation the overheads are relative to (profiled too if not in ``acts``).
        device: where the models are built and run.

    Returns:
        One :class:`ActProfile` per activation, in the order of ``acts``.

    Example:
        >>> rows = compare_acts("mobilenetv2_035", ["relu", "dyrelu_b"], input_size=64)
        >>> [row.act for row in rows], rows[0].madds_overhead, rows[1].madds_overhead > 0
        (['relu', 'dyrelu_b'], 0.0, True)
    """
    from dyrelu.models import create_model

    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    shape = (1, in_chans, *input_size)
    acts = list(acts)
    if not acts:
        raise ValueError("expected at least one activation name in acts, got none")

    def profile(act: str) -> Profile:
        with torch.device(device):
            net = create_model(model, act, num_classes=num_classes, in_chans=in_chans, small_input=small_input)
        return profile_model(net, shape)

    profiles = {act: profile(act) for act in dict.fromkeys([*acts, baseline])}
    base = profiles[baseline]
    return [
        ActProfile(
            act=act,
            params=profiles[act].params,
            madds=profiles[act].madds,
            params_overhead=_overhead(profiles[act].params, base.params),
            madds_overhead=_overhead(profiles[act].madds, base.madds),
        )
        for act in acts
    ]


def format_comparison(rows: Sequence[ActProfile], baseline: str = "relu") -> str:
    """An aligned plain-text table of :func:`compare_acts` rows (params and MAdds in millions).

    Example:
        >>> print(format_comparison([ActProfile("relu", 3_504_872, 300_774_272, 0.0, 0.0)]))
        act   params (M)  vs relu  MAdds (M)  vs relu
        relu       3.505   +0.00%     300.77   +0.00%
    """
    header = ["act", "params (M)", f"vs {baseline}", "MAdds (M)", f"vs {baseline}"]
    body = [
        [
            row.act,
            f"{row.params / 1e6:.3f}",
            f"{row.params_overhead:+.2f}%",
            f"{row.madds / 1e6:.2f}",
            f"{row.madds_overhead:+.2f}%",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = []
    for line in [header, *body]:
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)
