"""What DY-ReLU learns: the input-output relation, the coefficients and their spread across inputs.

Paper: Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027 (its figure of the input
``x`` against the output ``y`` of DY-ReLU in several layers of a trained network).

:func:`collect_dynamics` runs a network over some images with a forward hook on every DY-ReLU module
(:class:`~dyrelu.DyReLUA`, :class:`~dyrelu.DyReLUB`, :class:`~dyrelu.DyReLUC`, found with
``named_modules``) and records, per layer:

- a seeded subsample of (input, output) pairs, with the image each pair comes from;
- the coefficients ``a``, ``b`` of every image, from the module's own hyper function applied to the
  hooked input;
- for DY-ReLU-C, the spatial attention π of the first images and its statistics over all of them.

:func:`dynamic_range` reduces the coefficients to one number per layer: their spread across inputs (0 for a static
activation); :func:`dynamics_numbers` reduces a network to its median and maximum over layers, which every training
run logs (below :data:`STATIC_THRESHOLD`, the run is static). The ``plot_*`` functions draw PNG files with
matplotlib (imported only when plotting; figures are rendered by the Agg canvas without ``pyplot``, so neither the
global backend nor an interactive session is touched), and :func:`visualize_dynamics` writes the dynamics' figures plus
a JSON summary into a folder; :func:`plot_samples` draws a grid of a dataset's images titled with their classes (what
a task looks like). :mod:`~dyrelu.analysis.cost` counts what a network costs: its parameters and
multiply-adds (:func:`profile_model`), and the activations compared on one network (:func:`compare_acts`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from dyrelu import DyReLUB
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), DyReLUB(8))
    >>> layers = collect_dynamics(net, torch.randn(4, 3, 8, 8), points_per_layer=64)
    >>> [(layer.name, layer.variant, tuple(layer.a.shape)) for layer in layers]
    [('1', 'B', (4, 8, 2))]
    >>> dynamic_range(layers[0].a)  # a fresh DY-ReLU is ReLU for every input: no dynamics
    0.0
"""

from dyrelu.analysis.cost import (
    ActProfile,
    Profile,
    compare_acts,
    count_params,
    format_comparison,
    profile_model,
)
from dyrelu.analysis.dynamics import LayerDynamics, collect_dynamics, dynamic_range, dyrelu_layers, summarize
from dyrelu.analysis.plots import (
    plot_attention,
    plot_coefficients,
    plot_dynamic_range,
    plot_dynamics_grid,
    plot_samples,
    plot_scatter,
)
from dyrelu.analysis.summary import DYNAMICS_COLUMNS, STATIC_THRESHOLD, dynamics_numbers, is_static
from dyrelu.analysis.visualize import FILES, visualize_dynamics

__all__ = [
    "DYNAMICS_COLUMNS",
    "FILES",
    "STATIC_THRESHOLD",
    "ActProfile",
    "LayerDynamics",
    "Profile",
    "collect_dynamics",
    "compare_acts",
    "count_params",
    "dynamic_range",
    "dynamics_numbers",
    "dyrelu_layers",
    "format_comparison",
    "is_static",
    "plot_attention",
    "plot_coefficients",
    "plot_dynamic_range",
    "plot_dynamics_grid",
    "plot_samples",
    "plot_scatter",
    "profile_model",
    "summarize",
    "visualize_dynamics",
]
