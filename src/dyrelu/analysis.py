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

:func:`dynamic_range` reduces the coefficients to one number per layer: their spread across inputs
(0 for a static activation). The ``plot_*`` functions draw PNG files with matplotlib (imported only
when plotting; figures are rendered by the Agg canvas without ``pyplot``, so neither the global backend
nor an interactive session is touched), and :func:`visualize_dynamics` writes all of them plus a JSON
summary into a folder.

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

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dyrelu.modules import DyReLUA, DyReLUB, DyReLUC

__all__ = [
    "FILES",
    "LayerDynamics",
    "collect_dynamics",
    "dynamic_range",
    "dyrelu_layers",
    "plot_attention",
    "plot_coefficients",
    "plot_dynamic_range",
    "plot_dynamics_grid",
    "plot_scatter",
    "summarize",
    "visualize_dynamics",
]

_VARIANTS: tuple[tuple[type[nn.Module], str], ...] = ((DyReLUA, "A"), (DyReLUB, "B"), (DyReLUC, "C"))

#: The files :func:`visualize_dynamics` writes (the attention figure only for networks with DY-ReLU-C).
FILES = {
    "scatter": "scatter.png",
    "coefficients": "coefficients.png",
    "dynamic_range": "dynamic_range.png",
    "attention": "attention.png",
    "grid": "dynamics_grid.png",
    "summary": "summary.json",
}


def dyrelu_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The DY-ReLU modules of ``model`` (instances of DyReLUA, DyReLUB or DyReLUC) with their names.

    Args:
        model: any network.

    Returns:
        ``(name, module)`` pairs in ``named_modules`` order (the order of definition, usually depth);
        ``model`` itself is included (name ``""``) when it is a DY-ReLU.

    Example:
        >>> from torch import nn
        >>> from dyrelu import DyReLUB, DyReLUC
        >>> [name for name, _ in dyrelu_layers(nn.Sequential(DyReLUB(4), nn.ReLU(), DyReLUC(4)))]
        ['0', '2']
    """
    return [(name, m) for name, m in model.named_modules() if _variant(m) is not None]


def _variant(module: nn.Module) -> str | None:
    for cls, label in _VARIANTS:
        if isinstance(module, cls):
            return label
    return None


def dynamic_range(coefficients: Tensor) -> float:
    r"""How much DY-ReLU coefficients change with the input: the mean over slots of their spread over inputs.

    For coefficients ``c`` of shape ``(N, C', K)`` (``N`` inputs, ``C'`` channels, ``K`` pieces; ``C' = 1``
    for DY-ReLU-A), the dynamic range is

    .. math::
        D(c) = \frac{1}{C' K} \sum_{j=1}^{C'} \sum_{k=1}^{K}
               \sqrt{\frac{1}{N} \sum_{n=1}^{N} \left(c_{n,j,k} - \bar c_{j,k}\right)^2},
        \qquad \bar c_{j,k} = \frac{1}{N} \sum_{n=1}^{N} c_{n,j,k},

    the population standard deviation across inputs (not the sample one, so that ``N = 1`` gives 0
    rather than NaN), averaged over channels and pieces, computed in float64. It is in the coefficients'
    units (slopes for ``a``, intercepts for ``b``): with the paper's ``λ_a = 1``, ``λ_b = 0.5`` the slopes
    can move by less than 1 and the intercepts by less than 0.5 from their initial values. ``D = 0``
    exactly when every coefficient is the same for all inputs, i.e. the layer acts as a static
    piecewise-linear function (a fresh DY-ReLU, whose last FC is zero, is a static ReLU). A single input
    (``N = 1``) always gives 0: use many images.

    Args:
        coefficients: ``a`` or ``b`` as returned by the modules' ``hyper``, one row per input.

    Returns:
        ``D`` as a Python float, ``>= 0``.

    Shape:
        - coefficients: :math:`(N, C', K)`

    Example:
        >>> dynamic_range(torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]]))  # slopes 1 and 3: std 1; piece 2: 0
        0.5
    """
    if not isinstance(coefficients, Tensor) or coefficients.dim() != 3:
        shape = tuple(coefficients.shape) if isinstance(coefficients, Tensor) else type(coefficients).__name__
        raise ValueError(f"expected coefficients of shape (N, C', K), got {shape}")
    if coefficients.shape[0] == 0:
        raise ValueError(f"expected coefficients of at least one input, got shape {tuple(coefficients.shape)}")
    c = coefficients.detach().to(torch.float64)
    return float(c.std(dim=0, correction=0).mean())


@dataclass
class LayerDynamics:
    """What :func:`collect_dynamics` records for one DY-ReLU layer.

    Args:
        name: the module's name in the network (``named_modules``).
        variant: ``"A"``, ``"B"`` or ``"C"``.
        channels: C, the module's channel count.
        k: K, the number of pieces.
        a: the slopes of every input (for DY-ReLU-C, before the spatial attention scales them).
        b: the intercepts of every input.
        x: the sampled inputs of the activation.
        y: the outputs at the same positions (for DY-ReLU-C, including the attention).
        image: the index of the image (in the images given to :func:`collect_dynamics`) of each sample.
        num_images: N, the number of inputs the layer saw (images times calls per forward pass).
        attention: DY-ReLU-C only: π of the first images.
        attention_stats: DY-ReLU-C only: ``mean``, ``min``, ``max`` of π over all images and positions,
            and ``dynamic_range``: the mean over positions of π's population standard deviation across
            images (``None`` if the layer saw inputs of several spatial sizes).
        tau: DY-ReLU-C only: τ. gamma: DY-ReLU-C only: γ (``None``: HW/3).

    Shape:
        - a, b: :math:`(N, C', K)`, float32, ``C'`` is 1 for DY-ReLU-A and C otherwise
        - x, y, image: :math:`(P,)`
        - attention: :math:`(M, *S)`
    """

    name: str
    variant: str
    channels: int
    k: int
    a: Tensor
    b: Tensor
    x: Tensor
    y: Tensor
    image: Tensor
    num_images: int
    attention: Tensor | None = None
    attention_stats: dict[str, float | None] | None = None
    tau: float | None = None
    gamma: float | None = None

    @property
    def dynamic_range_a(self) -> float:
        """:func:`dynamic_range` of the slopes."""
        return dynamic_range(self.a)

    @property
    def dynamic_range_b(self) -> float:
        """:func:`dynamic_range` of the intercepts."""
        return dynamic_range(self.b)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: name, variant, channels, k, inputs, dynamic ranges and per-piece means/stds.

        ``mean_a[k]`` and ``std_a[k]`` are the mean and population standard deviation of piece ``k``'s
        slope over all inputs and channels (same for ``b``); floats are rounded to 6 significant digits.
        """
        a, b = self.a.to(torch.float64), self.b.to(torch.float64)
        out: dict[str, Any] = {
            "name": self.name,
            "variant": self.variant,
            "channels": self.channels,
            "k": self.k,
            "num_inputs": self.num_images,
            "dynamic_range_a": _round(self.dynamic_range_a),
            "dynamic_range_b": _round(self.dynamic_range_b),
            "mean_a": [_round(v) for v in a.mean(dim=(0, 1)).tolist()],
            "mean_b": [_round(v) for v in b.mean(dim=(0, 1)).tolist()],
            "std_a": [_round(v) for v in a.flatten(0, 1).std(dim=0, correction=0).tolist()],
            "std_b": [_round(v) for v in b.flatten(0, 1).std(dim=0, correction=0).tolist()],
        }
        if self.variant == "C":
            out["tau"] = self.tau
            out["gamma"] = self.gamma
            stats = self.attention_stats or {}
            out["attention"] = {key: None if v is None else _round(v) for key, v in stats.items()}
        return out


def _round(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


class _Recorder:
    """The forward hook of one DY-ReLU module: samples (x, y) pairs and records a, b (and π for C)."""

    def __init__(self, index: int, name: str, module: nn.Module, per_image: int, attention_images: int, seed: int):
        self.index = index
        self.name = name
        self.module = module
        self.variant = _variant(module)
        self.per_image = per_image
        self.attention_images = attention_images
        self.seed = seed
        self.offset = 0  # index of the current batch's first image, set by collect_dynamics
        self.a: list[Tensor] = []
        self.b: list[Tensor] = []
        self.x: list[Tensor] = []
        self.y: list[Tensor] = []
        self.image: list[Tensor] = []
        self.maps: list[Tensor] = []
        self.pi_shape: tuple[int, ...] | None = None
        self.pi_sum: Tensor | None = None
        self.pi_sumsq: Tensor | None = None
        self.pi_count = 0
        self.pi_min = math.inf
        self.pi_max = -math.inf
        self.pi_mixed_sizes = False

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not inputs or not isinstance(inputs[0], Tensor) or not isinstance(output, Tensor):
            return
        x = module._to_channels_first(inputs[0])  # (N, C, *S), as the module's forward sees it
        y = module._to_channels_first(output)
        a, b = module.hyper(x)  # (N, C', K)
        self.a.append(a.detach().float().cpu())
        self.b.append(b.detach().float().cpu())
        self._sample(x.detach(), y.detach())
        if self.variant == "C":
            self._attention(module._scale(x).detach().float().squeeze(1).cpu())  # (N, *S)

    def _sample(self, x: Tensor, y: Tensor) -> None:
        n = x.shape[0]
        flat_x, flat_y = x.reshape(n, -1), y.reshape(n, -1)  # (N, C * prod(S))
        numel = flat_x.shape[1]
        if numel == 0:
            return
        # One generator per (seed, layer, image): the sample of an image does not depend on the batching.
        rows = []
        for i in range(n):
            gen = torch.Generator().manual_seed(_mix(self.seed, self.index, self.offset + i))
            rows.append(torch.randint(numel, (self.per_image,), generator=gen))
        idx = torch.stack(rows).to(x.device)  # (N, per_image)
        self.x.append(flat_x.gather(1, idx).float().flatten().cpu())
        self.y.append(flat_y.gather(1, idx).float().flatten().cpu())
        self.image.append((torch.arange(n) + self.offset).repeat_interleave(self.per_image))

    def _attention(self, pi: Tensor) -> None:
        kept = sum(m.shape[0] for m in self.maps)
        if kept < self.attention_images:
            self.maps.append(pi[: self.attention_images - kept].clone())
        if pi.numel():
            self.pi_min = min(self.pi_min, float(pi.min()))
            self.pi_max = max(self.pi_max, float(pi.max()))
        flat = pi.reshape(pi.shape[0], -1).to(torch.float64)  # (N, P)
        if self.pi_shape is None:
            self.pi_shape = tuple(pi.shape[1:])
            self.pi_sum = torch.zeros(flat.shape[1], dtype=torch.float64)
            self.pi_sumsq = torch.zeros(flat.shape[1], dtype=torch.float64)
        if tuple(pi.shape[1:]) != self.pi_shape:
            self.pi_mixed_sizes = True
            return
        self.pi_sum += flat.sum(0)
        self.pi_sumsq += flat.square().sum(0)
        self.pi_count += flat.shape[0]

    def result(self) -> LayerDynamics:
        module = self.module
        k = int(module.k)
        a, b = torch.cat(self.a), torch.cat(self.b)
        x = torch.cat(self.x) if self.x else torch.zeros(0)
        y = torch.cat(self.y) if self.y else torch.zeros(0)
        image = torch.cat(self.image) if self.image else torch.zeros(0, dtype=torch.int64)
        # Shuffle the points (seeded) so that no image is always drawn on top of the others.
        order = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(_mix(self.seed, self.index, -1)))
        layer = LayerDynamics(
            name=self.name,
            variant=self.variant,
            channels=int(module.channels or 0),
            k=k,
            a=a,
            b=b,
            x=x[order],
            y=y[order],
            image=image[order],
            num_images=a.shape[0],
        )
        if self.variant == "C":
            layer.tau = float(module.tau)
            layer.gamma = None if module.gamma is None else float(module.gamma)
            layer.attention = torch.cat(self.maps) if self.maps else None
            layer.attention_stats = self._attention_stats()
        return layer

    def _attention_stats(self) -> dict[str, float | None]:
        if self.pi_count == 0:
            return {"mean": None, "min": None, "max": None, "dynamic_range": None}
        mean = self.pi_sum / self.pi_count
        var = (self.pi_sumsq / self.pi_count - mean.square()).clamp_min(0.0)
        return {
            "mean": float(mean.mean()),
            "min": self.pi_min,
            "max": self.pi_max,
            "dynamic_range": None if self.pi_mixed_sizes else float(var.sqrt().mean()),
        }


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (a simple polynomial hash; only needs to be deterministic)."""
    h = 1469598103934665603
    for v in values:
        h = (h * 1099511628211 + (v & 0xFFFFFFFFFFFF)) % (2**63 - 1)
    return h


def collect_dynamics(
    model: nn.Module,
    images: Tensor,
    *,
    points_per_layer: int = 4096,
    attention_images: int = 4,
    batch_size: int = 64,
    seed: int = 0,
) -> list[LayerDynamics]:
    """Run ``model`` over ``images`` and record what each of its DY-ReLU layers does.

    A forward hook on every DY-ReLU module (see :func:`dyrelu_layers`) receives its input and output;
    channels-last modules' tensors are moved to channels-first as the module itself does. The hook
    calls the module's ``hyper`` on the input to get the coefficients ``a``, ``b`` of every image, and
    for DY-ReLU-C its ``_scale`` to get the spatial attention π. Of the input and output values, it
    keeps ``ceil(points_per_layer / N)`` positions (channel and location) per image, drawn uniformly with
    replacement by a generator seeded from ``(seed, layer, image index)``: the result depends only on
    the arguments, not on ``batch_size``.

    The model runs in eval mode under ``torch.no_grad`` and gets its previous mode back. A module
    called several times per forward pass contributes one set of coefficients per call; a module the
    forward pass never calls is left out of the result.

    Args:
        model: a network with at least one DY-ReLU module.
        images: the network's input, already normalised; moved to the device of the model's parameters.
        points_per_layer: about how many (x, y) pairs to keep per layer (at least one per image).
        attention_images: how many π maps to keep per DY-ReLU-C layer (the first images).
        batch_size: images per forward pass.
        seed: seeds the subsampling.

    Returns:
        One :class:`LayerDynamics` per DY-ReLU layer that ran, in :func:`dyrelu_layers` order.

    Raises:
        ValueError: ``model`` has no DY-ReLU layer (or none ran), ``images`` is empty, or an argument is
            out of range.

    Shape:
        - images: :math:`(N, *)`, what ``model`` takes, for example :math:`(N, C, H, W)`.
    """
    layers = dyrelu_layers(model)
    if not layers:
        raise ValueError(
            f"expected a network with at least one DY-ReLU layer (DyReLUA, DyReLUB or DyReLUC), found none in "
            f"{type(model).__name__}"
        )
    if not isinstance(images, Tensor) or images.dim() < 2 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected a non-empty batch of images (N, *), got {shape}")
    for arg, value, low in (
        ("points_per_layer", points_per_layer, 1),
        ("attention_images", attention_images, 0),
        ("batch_size", batch_size, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"expected {arg} to be an integer >= {low}, got {value!r}")
    n = images.shape[0]
    per_image = max(1, math.ceil(points_per_layer / n))
    recorders = [
        _Recorder(i, name, module, per_image, attention_images, seed) for i, (name, module) in enumerate(layers)
    ]
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else images.device
    handles = [module.register_forward_hook(rec) for (_, module), rec in zip(layers, recorders, strict=True)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                for rec in recorders:
                    rec.offset = start
                model(images[start : start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    ran = [rec for rec in recorders if rec.a]
    if not ran:
        raise ValueError(
            f"none of the {len(recorders)} DY-ReLU layers of {type(model).__name__} ran on the images: expected "
            "modules that the forward pass calls"
        )
    return [rec.result() for rec in ran]


def summarize(layers: Sequence[LayerDynamics]) -> list[dict[str, Any]]:
    """:meth:`LayerDynamics.summary` of each layer, JSON-ready."""
    return [layer.summary() for layer in layers]


# -- plots --------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, *, constrained: bool = True):
    """A matplotlib Figure on its own Agg canvas: no pyplot, no global backend, no window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _panels(
    rows: int, cols: int, width: float, height: float, *, top: float = 0.5, left: float = 0.5, bottom: float = 0.45
):
    """A figure of ``rows × cols`` axes with fixed margins in inches.

    Constrained layout measures every tick label of every panel and takes most of the drawing time of a
    figure with dozens of panels; fixed margins are enough for panels of the same kind.
    """
    fig = _figure(width, height, constrained=False)
    axes = fig.subplots(
        rows,
        cols,
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": 1.0 - 0.15 / width,
            "bottom": bottom / height,
            "top": 1.0 - top / height,
            "wspace": 0.3,
            "hspace": 0.55,
        },
    )
    return fig, axes.flatten()


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" key: the same data gives the same bytes whatever matplotlib's version.
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    return path


def _spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _limits(values: Tensor) -> tuple[float, float]:
    """The 0.1 % and 99.9 % quantiles, widened a little (a few outliers do not squash the plot)."""
    if values.numel() == 0:
        return -1.0, 1.0
    v = values.to(torch.float64)
    if v.numel() > 1_000_000:
        v = v[:: v.numel() // 1_000_000 + 1]
    lo, hi = (float(q) for q in torch.quantile(v, torch.tensor([0.001, 0.999], dtype=torch.float64)))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _check_layers(layers: Sequence[LayerDynamics]) -> None:
    if not layers:
        raise ValueError("expected at least one LayerDynamics (from collect_dynamics), got none")


def _grid(count: int, ncols: int) -> tuple[int, int]:
    cols = max(1, min(ncols, count))
    return math.ceil(count / cols), cols


def _scatter_panel(ax, layer: LayerDynamics, *, marker_size: float = 1.5) -> None:
    x, y = layer.x, layer.y
    ax.scatter(
        x.numpy(),
        y.numpy(),
        c=layer.image.numpy(),
        cmap="viridis",
        vmin=0,
        vmax=max(int(layer.image.max()) if layer.image.numel() else 1, 1),
        s=marker_size,
        linewidths=0,
        rasterized=True,
    )
    x_lo, x_hi = _limits(x)
    y_lo, y_hi = _limits(y)
    ax.plot([x_lo, 0.0, max(x_hi, 0.0)], [0.0, 0.0, max(x_hi, 0.0)], ls="--", lw=0.7, color="0.4")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(min(y_lo, 0.0), y_hi)
    ax.set_title(f"{layer.name or '(model)'}  [{layer.variant}, C={layer.channels}]", fontsize=7)
    ax.text(
        0.03,
        0.97,
        f"range a {layer.dynamic_range_a:.3g}\nrange b {layer.dynamic_range_b:.3g}",
        transform=ax.transAxes,
        va="top",
        fontsize=6,
        bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.7},
    )
    ax.tick_params(labelsize=6)
    ax.locator_params(nbins=4)
    ax.grid(alpha=0.2)


def plot_scatter(
    layers: Sequence[LayerDynamics], path: str | os.PathLike, *, ncols: int = 6, dpi: int = 80
) -> list[str]:
    """Input against output of each DY-ReLU layer, one panel per layer, points coloured by image.

    The dashed line is ReLU. A static activation draws one curve; a dynamic one a band of curves, one per
    image (the paper's figure). DY-ReLU-C's outputs include the spatial attention, so they spread more.

    Args:
        layers: from :func:`collect_dynamics`.
        path: the PNG file.
        ncols: panels per row.
        dpi: the resolution.

    Returns:
        The names of the layers drawn, one panel each, in order.
    """
    _check_layers(layers)
    rows, cols = _grid(len(layers), ncols)
    fig, axes = _panels(rows, cols, max(2.2 * cols, 4.5), 2.0 * rows + 0.9, top=0.7, bottom=0.6)
    for ax, layer in zip(axes, layers, strict=False):
        _scatter_panel(ax, layer)
    for ax in axes[len(layers) :]:
        ax.remove()
    fig.supxlabel("input x", fontsize=8, y=0.1 / fig.get_figheight())
    fig.supylabel("output y", fontsize=8, x=0.1 / fig.get_figwidth())
    fig.suptitle("DY-ReLU input vs output (colour: image)", fontsize=9)
    _save(fig, path, dpi)
    return [layer.name for layer in layers]


def plot_dynamics_grid(
    layers: Sequence[LayerDynamics],
    path: str | os.PathLike,
    *,
    num_panels: int = 6,
    ncols: int = 3,
    dpi: int = 90,
    title: str | None = None,
) -> list[str]:
    """The README figure: input against output for ``num_panels`` layers spread evenly over the depth.

    Args:
        layers: from :func:`collect_dynamics`.
        path: the PNG file.
        num_panels: how many layers (the first and the last included); all of them if there are fewer.
        ncols: panels per row.
        dpi: the resolution.
        title: the figure's title (``None``: a default).

    Returns:
        The names of the layers drawn, one panel each, in order.
    """
    _check_layers(layers)
    if not isinstance(num_panels, int) or num_panels < 1:
        raise ValueError(f"expected num_panels to be a positive integer, got {num_panels!r}")
    chosen = [layers[i] for i in _spread(len(layers), num_panels)]
    rows, cols = _grid(len(chosen), ncols)
    fig, axes = _panels(rows, cols, 3.2 * cols, 2.9 * rows + 0.5, top=0.6, left=0.55, bottom=0.5)
    for ax, layer in zip(axes, chosen, strict=False):
        _scatter_panel(ax, layer, marker_size=2.0)
        ax.set_xlabel("input x", fontsize=7)
        ax.set_ylabel("output y", fontsize=7)
    for ax in axes[len(chosen) :]:
        ax.remove()
    num_images = max(layer.num_images for layer in chosen)
    fig.suptitle(title or f"DY-ReLU: input vs output over {num_images} images (colour: image)", fontsize=9)
    _save(fig, path, dpi)
    return [layer.name for layer in chosen]


def _subsample(values: Tensor, limit: int, seed: int) -> Tensor:
    if values.numel() <= limit:
        return values
    idx = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(seed))[:limit]
    return values[idx]


def plot_coefficients(
    layers: Sequence[LayerDynamics],
    path: str | os.PathLike,
    *,
    ncols: int = 6,
    dpi: int = 80,
    max_values: int = 20000,
) -> list[str]:
    """The distribution of each piece's slope ``a^k`` and intercept ``b^k`` over images and channels.

    One panel per layer with ``2K`` violins (``a1 .. aK``, then ``b1 .. bK``), each over at most
    ``max_values`` values (a seeded subsample of the ``N × C'`` values). A static layer's violins are
    flat lines at its fixed values spread only over channels.

    Args:
        layers: from :func:`collect_dynamics`.
        path: the PNG file.
        ncols: panels per row.
        dpi: the resolution.
        max_values: values per violin.

    Returns:
        The names of the layers drawn, one panel each, in order.
    """
    _check_layers(layers)
    rows, cols = _grid(len(layers), ncols)
    fig, axes = _panels(rows, cols, max(2.2 * cols, 6.0), 1.9 * rows + 0.9, top=0.9, left=0.4)
    for i, (ax, layer) in enumerate(zip(axes, layers, strict=False)):
        data, labels = [], []
        for coeff, letter in ((layer.a, "a"), (layer.b, "b")):
            for k in range(layer.k):
                values = coeff[..., k].flatten()
                data.append(_subsample(values, max_values, _mix(i, k, ord(letter))).numpy())
                labels.append(f"{letter}{k + 1}")
        positions = list(range(1, len(data) + 1))
        if all(d.size for d in data):
            parts = ax.violinplot(data, positions=positions, showmedians=True, widths=0.8)
            for j, body in enumerate(parts["bodies"]):
                body.set_facecolor("C0" if j < layer.k else "C1")
                body.set_alpha(0.6)
        ax.axhline(0.0, color="0.5", lw=0.5)
        ax.set_xticks(positions, labels, fontsize=6)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{layer.name or '(model)'}  [{layer.variant}]", fontsize=7)
        ax.grid(alpha=0.2, axis="y")
    for ax in axes[len(layers) :]:
        ax.remove()
    fig.suptitle("DY-ReLU coefficients per piece over images and channels\n(a: slopes, b: intercepts)", fontsize=9)
    _save(fig, path, dpi)
    return [layer.name for layer in layers]


def plot_dynamic_range(layers: Sequence[LayerDynamics], path: str | os.PathLike, *, dpi: int = 90) -> list[str]:
    """A bar chart of :func:`dynamic_range` of ``a`` and ``b`` for each layer, in network order.

    Args:
        layers: from :func:`collect_dynamics`.
        path: the PNG file.
        dpi: the resolution.

    Returns:
        The names of the layers drawn (one pair of bars each), in order.
    """
    _check_layers(layers)
    count = len(layers)
    fig = _figure(max(5.0, 0.22 * count + 1.5), 3.4)
    ax = fig.subplots()
    pos = torch.arange(count, dtype=torch.float64).numpy()
    ax.bar(pos - 0.2, [layer.dynamic_range_a for layer in layers], width=0.4, label="slopes a")
    ax.bar(pos + 0.2, [layer.dynamic_range_b for layer in layers], width=0.4, label="intercepts b")
    ax.set_xticks(pos, [f"{layer.name or '(model)'} [{layer.variant}]" for layer in layers], rotation=90, fontsize=6)
    ax.set_ylabel("dynamic range (mean std over inputs)", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.2, axis="y")
    ax.set_title("How much each DY-ReLU layer's coefficients change with the input (0: static)", fontsize=8)
    _save(fig, path, dpi)
    return [layer.name for layer in layers]


def _as_image(t: Tensor) -> Tensor:
    """A model input ``(C, *S)`` as something imshow draws: ``(H, W)`` or ``(H, W, 3)`` scaled to [0, 1]."""
    t = t.detach().float().cpu()
    if t.dim() == 1:  # (C,) has no spatial dims: a 1×C strip
        return _unit(t[None, :])
    if t.dim() == 2:  # (C, L): one row per channel
        return _unit(t)
    while t.dim() > 3:  # 3-D volumes: average over depth
        t = t.mean(1)
    if t.shape[0] == 3:
        return _unit(t).permute(1, 2, 0)
    return _unit(t[0])


def _as_map(pi: Tensor) -> Tensor:
    """π of one image ``(*S)`` as a 2-D map (1-D: a strip; 3-D: mean over depth)."""
    pi = pi.detach().float().cpu()
    if pi.dim() == 1:
        return pi[None, :]
    while pi.dim() > 2:
        pi = pi.mean(0)
    return pi


def _unit(t: Tensor) -> Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


def plot_attention(
    layers: Sequence[LayerDynamics],
    images: Tensor,
    path: str | os.PathLike,
    *,
    num_images: int = 4,
    max_layers: int = 6,
    dpi: int = 80,
) -> list[str]:
    """DY-ReLU-C's spatial attention π next to the input images: one row per image, one column per layer.

    The first column shows the image (its channels min-max scaled; 3 channels as RGB, otherwise the first
    channel); the others show π of up to ``max_layers`` DY-ReLU-C layers spread over the depth, on a
    shared colour scale: from the smallest to the largest π shown, widened to at least 0.02 around its middle
    (π lies in [0, 1]; a uniform map is ``γ / HW``, 1/3 by default, and a near-uniform one should look
    uniform rather than have its rounding noise stretched over the whole scale).

    Args:
        layers: from :func:`collect_dynamics`; only the DY-ReLU-C layers are drawn.
        images: the images given to :func:`collect_dynamics`, in the same order.
        path: the PNG file (not written when there is no DY-ReLU-C layer).
        num_images: rows (at most the number of maps the layers kept).
        max_layers: columns of π.
        dpi: the resolution.

    Returns:
        The names of the DY-ReLU-C layers drawn, one column each; empty if there is none.
    """
    chosen = [layer for layer in layers if layer.variant == "C" and layer.attention is not None]
    if not chosen:
        return []
    chosen = [chosen[i] for i in _spread(len(chosen), max_layers)]
    rows = min(num_images, images.shape[0], *(layer.attention.shape[0] for layer in chosen))
    if rows < 1:
        return []
    cols = 1 + len(chosen)
    shown = torch.cat([layer.attention[:rows].flatten() for layer in chosen])
    lo, hi = float(shown.min()), float(shown.max())
    if hi - lo < 0.02:
        middle = (hi + lo) / 2
        lo, hi = middle - 0.01, middle + 0.01
    fig = _figure(1.6 * cols + 0.6, 1.6 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    mappable = None
    for r in range(rows):
        picture = _as_image(images[r])
        axes[r, 0].imshow(picture.numpy(), cmap="gray" if picture.dim() == 2 else None)
        axes[r, 0].set_ylabel(f"image {r}", fontsize=7)
        for c, layer in enumerate(chosen, start=1):
            mappable = axes[r, c].imshow(_as_map(layer.attention[r]).numpy(), cmap="magma", vmin=lo, vmax=hi)
            if r == 0:
                axes[r, c].set_title(f"{layer.name or '(model)'}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="π")
    fig.suptitle("DY-ReLU-C spatial attention π", fontsize=9)
    _save(fig, path, dpi)
    return [layer.name for layer in chosen]


def visualize_dynamics(
    model: nn.Module,
    images: Tensor,
    out_dir: str | os.PathLike,
    *,
    points_per_layer: int = 4096,
    grid_panels: int = 6,
    attention_images: int = 4,
    batch_size: int = 64,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect the dynamics of every DY-ReLU layer and write the figures and a JSON summary to ``out_dir``.

    Files (see :data:`FILES`): ``scatter.png`` (:func:`plot_scatter`, all layers), ``coefficients.png``
    (:func:`plot_coefficients`), ``dynamic_range.png`` (:func:`plot_dynamic_range`), ``attention.png``
    (:func:`plot_attention`, only with DY-ReLU-C layers), ``dynamics_grid.png``
    (:func:`plot_dynamics_grid`) and ``summary.json`` (the returned dict). The same model, images and
    arguments give the same files.

    Args:
        model: a network with at least one DY-ReLU layer.
        images: its normalised input images.
        out_dir: the output folder (created if needed).
        points_per_layer: (x, y) samples per layer (see :func:`collect_dynamics`).
        grid_panels: layers in the README grid.
        attention_images: images in the attention figure.
        batch_size: images per forward pass.
        seed: seeds the subsampling.
        meta: extra top-level entries for the summary (for example the checkpoint and the data).

    Returns:
        The summary: ``meta``'s entries, ``num_images``, ``seed``, ``points_per_layer``, ``layers`` (one
        :meth:`LayerDynamics.summary` per layer), ``grid_layers`` (the names in the grid) and ``files``
        (kind → file name in ``out_dir``).

    Raises:
        ValueError: no DY-ReLU layer in ``model``, empty ``images`` or an argument out of range.
    """
    layers = collect_dynamics(
        model,
        images,
        points_per_layer=points_per_layer,
        attention_images=attention_images,
        batch_size=batch_size,
        seed=seed,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    plot_scatter(layers, out / FILES["scatter"])
    files["scatter"] = FILES["scatter"]
    plot_coefficients(layers, out / FILES["coefficients"])
    files["coefficients"] = FILES["coefficients"]
    plot_dynamic_range(layers, out / FILES["dynamic_range"])
    files["dynamic_range"] = FILES["dynamic_range"]
    if plot_attention(layers, images, out / FILES["attention"], num_images=attention_images):
        files["attention"] = FILES["attention"]
    grid = plot_dynamics_grid(layers, out / FILES["grid"], num_panels=grid_panels)
    files["grid"] = FILES["grid"]
    files["summary"] = FILES["summary"]
    summary: dict[str, Any] = {
        **(meta or {}),
        "num_images": int(images.shape[0]),
        "seed": seed,
        "points_per_layer": points_per_layer,
        "dynamic_range_definition": (
            "mean over channels and pieces of the population standard deviation across images of the "
            "coefficient (a: slopes, b: intercepts); 0 means a static activation"
        ),
        "layers": summarize(layers),
        "grid_layers": grid,
        "files": files,
    }
    (out / FILES["summary"]).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
