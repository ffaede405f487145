"""All the figures of a trained network's DY-ReLU layers and a JSON summary, written into one folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from dyrelu.analysis.dynamics import collect_dynamics, summarize
from dyrelu.analysis.plots import (
    plot_attention,
    plot_coefficients,
    plot_dynamic_range,
    plot_dynamics_grid,
    plot_scatter,
)
from dyrelu.files import write_text_atomic

__all__ = ["FILES", "visualize_dynamics"]

#: The files :func:`visualize_dynamics` writes (the attention figure only for networks with DY-ReLU-C).
FILES = {
    "scatter": "scatter.png",
    "coefficients": "coefficients.png",
    "dynamic_range": "dynamic_range.png",
    "attention": "attention.png",
    "grid": "dynamics_grid.png",
    "summary": "summary.json",
}


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
    write_text_atomic(out / FILES["summary"], json.dumps(summary, indent=2) + "\n")
    return summary
