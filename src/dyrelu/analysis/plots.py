"""The figures of :mod:`dyrelu.analysis`, drawn with matplotlib on an Agg canvas (no pyplot, no window)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dyrelu.analysis.dynamics import LayerDynamics, mix_seed

__all__ = [
    "plot_attention",
    "plot_coefficients",
    "plot_dynamic_range",
    "plot_dynamics_grid",
    "plot_samples",
    "plot_scatter",
]


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
                data.append(_subsample(values, max_values, mix_seed(i, k, ord(letter))).numpy())
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


def _check_samples(images: Tensor, labels: Tensor, classes: Sequence[str], ncols: int) -> None:
    """Raise ValueError naming the bad value and the expected one; see :func:`plot_samples`."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected images of shape (N, C, H, W), got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"expected at least one image, got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"expected images with 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"expected uint8 or floating-point images, got {images.dtype}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"expected one label per image ({len(images)}), got {len(labels) if labels.dim() else 0}")
    bad = ((labels < 0) | (labels >= len(classes))).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"expected labels in [0, {len(classes)}) (one per class), got {int(labels[i])} at index {i}")
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"expected ncols to be a positive integer, got {ncols!r}")


def plot_samples(
    images: Tensor,
    labels: Sequence[int] | Tensor,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    ncols: int = 8,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """A grid of images, each titled with its class name: what the data of a task looks like.

    Images are drawn pixel for pixel (no smoothing), one channel with a grey colour map, three as RGB.
    uint8 images span [0, 255]; floating-point ones [0, 1], or, if any value lies outside it (normalised
    images), the range of the whole batch, so that the images keep their brightness relative to each other.

    Args:
        images: ``(N, C, H, W)`` with ``C`` 1 or 3, uint8 or floating point.
        labels: ``N`` class indices.
        classes: the class names; label ``i`` is titled ``classes[i]``.
        path: the PNG file.
        ncols: panels per row (fewer if there are fewer images).
        dpi: the resolution; each panel is an inch wide.
        title: the figure's title (``None``: none).

    Returns:
        The path of the PNG file.

    Raises:
        ValueError: ``images`` is not ``(N, C, H, W)`` with ``N >= 1``, 1 or 3 channels and uint8 or floating
            point values; ``labels`` is not one index per image in ``[0, len(classes))``; ``ncols < 1``.

    Example:
        >>> import tempfile
        >>> from dyrelu.data import make_synthetic
        >>> ds = make_synthetic(6, num_classes=3, image_size=8, channels=1)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = plot_samples(ds.images, ds.labels, ds.classes, Path(folder) / "samples.png", ncols=3)
        ...     path.name, path.read_bytes()[:4]
        ('samples.png', b'\\x89PNG')
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).detach().cpu()
    _check_samples(images, labels, classes, ncols)
    pictures = images.detach().cpu().float()
    if images.dtype == torch.uint8:
        pictures = pictures / 255.0
    elif float(pictures.min()) < 0.0 or float(pictures.max()) > 1.0:
        pictures = _unit(pictures)
    rows, cols = _grid(len(images), ncols)
    # Square panels an inch wide; _panels puts 0.3 of a panel between columns, 0.55 between rows (the titles).
    top, margin = (0.6 if title else 0.3), 0.1
    width = margin + 0.15 + cols + 0.3 * (cols - 1)
    height = top + margin + rows + 0.55 * (rows - 1)
    fig, axes = _panels(rows, cols, width, height, top=top, left=margin, bottom=margin)
    grey = images.shape[1] == 1
    for ax, picture, label in zip(axes, pictures, labels.tolist(), strict=False):
        shown = picture[0] if grey else picture.permute(1, 2, 0)
        ax.imshow(shown.numpy(), cmap="gray" if grey else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(str(classes[label]), fontsize=8, pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(images) :]:
        ax.remove()
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.12 / height)
    return _save(fig, path, dpi)
