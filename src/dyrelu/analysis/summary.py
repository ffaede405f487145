"""A trained network's DY-ReLU dynamics in a few numbers, and the threshold below which a run is static."""

from __future__ import annotations

import statistics
from typing import Any

from torch import Tensor, nn

from dyrelu.analysis.dynamics import collect_dynamics, dyrelu_layers

__all__ = ["DYNAMICS_COLUMNS", "STATIC_THRESHOLD", "dynamics_numbers", "is_static"]

#: Below this median slope dynamic range, a network's DY-ReLU layers count as static.
#:
#: Why 0.01: the dynamic range of the slopes is their standard deviation across inputs. On the active
#: piece (slope about 1) a position's output is ``a(x) * x``, so a spread of ``D`` in ``a`` moves the output
#: by about ``D * |x|`` from one input to the next, a fraction ``D`` of the output's own scale ``|x|``.
#: Below 0.01, the input-dependent part changes the output by less than 1 % of its scale: the run has
#: trained a static piecewise-linear function (a ReLU, for the default init) plus an unused hyper function.
STATIC_THRESHOLD = 0.01

#: The keys of :func:`dynamics_numbers`, as metrics and results-CSV columns.
DYNAMICS_COLUMNS = ("dyn_median", "dyn_max", "dyn_b_median")


def dynamics_numbers(model: nn.Module, images: Tensor, *, batch_size: int = 64) -> dict[str, float] | None:
    """Reduce a network's DY-ReLU layers to three numbers, on fixed images; ``None`` without DY-ReLU layers.

    The slopes' :func:`~dyrelu.analysis.dynamic_range` of every layer over ``images`` (deterministic: eval
    mode, no sampling that matters), then:

    - ``dyn_median``: its median over layers (the run's headline number; compare with
      :data:`STATIC_THRESHOLD`),
    - ``dyn_max``: its maximum over layers,
    - ``dyn_b_median``: the median over layers of the intercepts' dynamic range.

    Args:
        model: a network; runs in eval mode and gets its mode back.
        images: its input, normalised (for example the first 256 test images).
        batch_size: images per forward pass.

    Example:
        >>> import torch
        >>> from dyrelu import DyReLUB
        >>> dynamics_numbers(nn.Sequential(nn.Conv2d(3, 8, 3), DyReLUB(8)), torch.randn(8, 3, 6, 6))
        {'dyn_median': 0.0, 'dyn_max': 0.0, 'dyn_b_median': 0.0}
    """
    if not dyrelu_layers(model):
        return None
    layers = collect_dynamics(model, images, points_per_layer=1, attention_images=0, batch_size=batch_size)
    slopes = [layer.dynamic_range_a for layer in layers]
    intercepts = [layer.dynamic_range_b for layer in layers]
    return {
        "dyn_median": float(statistics.median(slopes)),
        "dyn_max": float(max(slopes)),
        "dyn_b_median": float(statistics.median(intercepts)),
    }


def is_static(numbers: dict[str, Any] | None) -> bool | None:
    """Whether :func:`dynamics_numbers` (or a results row holding them) says static; ``None``: not measured.

    Example:
        >>> is_static({"dyn_median": 0.0008}), is_static({"dyn_median": "0.04"}), is_static({"dyn_median": ""})
        (True, False, None)
    """
    if not numbers:
        return None
    value = numbers.get("dyn_median")
    if value is None or value == "":
        return None
    return float(value) < STATIC_THRESHOLD
