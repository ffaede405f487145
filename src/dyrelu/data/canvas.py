"""Canvases: grey textured images with items pasted on them, scaled, turned and moved, rendered in batches.

A *canvas* is an ``S``×``S`` grey uint8 image: a random grey level plus a smooth blob field (a coarse
random grid upsampled bicubically) and pixel noise, with 28×28 uint8 *items* (Fashion-MNIST images or
drawn shapes) pasted on it layer by layer, each scaled, turned about the centre of its bounding box and
moved. The keypoint task (:mod:`dyrelu.keypoints.synthetic`) and cluttered Fashion-MNIST
(:mod:`dyrelu.data.cluttered`) both draw their images with these primitives: they decide what goes where,
this module draws it.

- :func:`item_boxes`: each item's bounding box (its pixels above the item threshold) and intensity centroid;
- :func:`place_item`: a scale and a position, drawn from a ``random.Random``, that keep a turned item's
  box inside the canvas;
- :func:`draw_background`: one canvas's random background (blob field, pixel noise and three levels);
- :func:`render_canvases`: a batch of canvases from their backgrounds and pastes, every pasted item
  resampled in one batched ``grid_sample``; an item blends in with its intensity as alpha or, with
  ``opaque``, hides what lies under it.

Determinism: nothing here draws from a global random state. :func:`place_item` and
:func:`draw_background` draw from the generators they are given (a ``random.Random`` for scalars, whose
``random()`` is reproducible across Python versions, and a ``torch.Generator`` for tensors), and
:func:`item_boxes` and :func:`render_canvases` are functions of their inputs alone; a caller that seeds
one pair of generators per canvas gets the same images for the same seeds.

Coordinates are in pixels with pixel centres at integers: ``(x, y) = (column, row)``; a canvas spans
``[-0.5, S - 0.5]``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["draw_background", "item_boxes", "place_item", "render_canvases"]

_ITEM_SIZE = 28
_BBOX_THRESHOLD = 25  # uint8 intensity above which a pixel belongs to the item


def item_boxes(images: Tensor) -> tuple[Tensor, Tensor]:
    """Bounding boxes ``(x0, y0, x1, y1)`` of the pixels above the item threshold, and intensity centroids ``(x, y)``.

    An item with no pixel above the threshold gets an empty box (``x0 > x1``); callers drop or replace it.

    Shape:
        - images: :math:`(M, 28, 28)` uint8
        - output: :math:`(M, 4)` and :math:`(M, 2)`, float32, in the item's pixels
    """
    mask = images > _BBOX_THRESHOLD
    idx = torch.arange(_ITEM_SIZE)
    cols, rows = mask.any(1), mask.any(2)  # (M, 28) each
    big = _ITEM_SIZE + 1
    x0 = torch.where(cols, idx, big).amin(1)
    x1 = torch.where(cols, idx, -1).amax(1)
    y0 = torch.where(rows, idx, big).amin(1)
    y1 = torch.where(rows, idx, -1).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    weights = images.float()
    total = weights.sum((1, 2))
    cx = (weights.sum(1) * idx).sum(1) / total
    cy = (weights.sum(2) * idx).sum(1) / total
    return boxes, torch.stack([cx, cy], 1)


def place_item(
    rng: random.Random, box: Sequence[float], long_side: float, theta: float, size: int, margin: float
) -> tuple[float, float, float, float, float]:
    """Scale and translation putting ``box``'s corners inside the canvas: ``(scale, cos, sin, tx, ty)``.

    The item's long side is ``long_side`` pixels, reduced if the rotated box would not fit; ``theta`` is
    the rotation in radians; ``(tx, ty)``, where the box's centre goes, is drawn uniformly from ``rng``
    among the positions that keep the rotated box at least ``margin`` pixels inside the outermost pixel
    centres.
    """
    x0, y0, x1, y1 = box
    c, s = math.cos(theta), math.sin(theta)
    hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
    corners = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]  # around the box centre, at scale 1
    xs = [c * x - s * y for x, y in corners]
    ys = [s * x + c * y for x, y in corners]
    room = size - 1 - 2 * margin
    span_x, span_y = max(max(xs) - min(xs), 1e-6), max(max(ys) - min(ys), 1e-6)
    scale = min(long_side / max(x1 - x0, y1 - y0, 1.0), room / span_x, room / span_y)
    lo_x, hi_x = margin - scale * min(xs), size - 1 - margin - scale * max(xs)
    lo_y, hi_y = margin - scale * min(ys), size - 1 - margin - scale * max(ys)
    tx = lo_x + max(hi_x - lo_x, 0.0) * rng.random()
    ty = lo_y + max(hi_y - lo_y, 0.0) * rng.random()
    return scale, c, s, tx, ty


def draw_background(rng: random.Random, g: torch.Generator, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """One canvas's random background: a coarse blob field, pixel noise and three levels.

    Returns ``(blob, noise, levels)`` for :func:`render_canvases`: ``blob`` :math:`(1, c, c)` with
    ``c = max(size // 8, 2)`` and ``noise`` :math:`(1, size, size)` standard normal from ``g``; ``levels``
    :math:`(3,)` from ``rng``: the background's grey level, the blobs' and the noise's amplitudes.
    """
    coarse = max(size // 8, 2)
    blob = torch.randn(1, coarse, coarse, generator=g)
    noise = torch.randn(1, size, size, generator=g)
    levels = torch.tensor([lo + (hi - lo) * rng.random() for lo, hi in ((0.1, 0.35), (0.04, 0.12), (0.02, 0.07))])
    return blob, noise, levels


def render_canvases(
    blobs: Tensor,
    noise: Tensor,
    levels: Tensor,
    pastes: Sequence[tuple[int, int, int, float, float, float, float, float, float]],
    items: Tensor,
    boxes: Tensor,
    *,
    opaque: bool = False,
) -> Tensor:
    """Textured canvases with items pasted on them, layer by layer, as uint8 images.

    The background is ``levels[:, 0] + levels[:, 1] * bicubic(blobs) + levels[:, 2] * noise`` (see
    :func:`draw_background`). Each paste ``(sample, layer, item, scale, cos, sin, tx, ty, brightness)``
    resamples ``items[item]`` (bilinear) so that the centre of ``boxes[item]`` lands at ``(tx, ty)``,
    turned by the angle of ``(cos, sin)`` and scaled by ``scale`` (see :func:`place_item`), and blends it
    with the item's intensity ``a`` as alpha: ``canvas * (1 - a) + a * brightness`` (the keypoint task);
    with ``opaque``, the item covers what lies under it wherever its intensity reaches the item threshold
    and shows its own intensity: ``canvas * (1 - m) + m * a * brightness``, ``m = min(a / threshold, 1)``.
    Lower layers are drawn first, so a higher layer is on top.

    Shape:
        - blobs: :math:`(N, 1, c, c)`, noise: :math:`(N, 1, S, S)`, levels: :math:`(N, 3)`
        - items: :math:`(M, 28, 28)` uint8, boxes: :math:`(M, 4)`
        - output: :math:`(N, 1, S, S)` uint8
    """
    size = noise.shape[-1]
    smooth = F.interpolate(blobs, size=(size, size), mode="bicubic", align_corners=False)
    canvas = levels[:, 0, None, None, None] + levels[:, 1, None, None, None] * smooth
    canvas += levels[:, 2, None, None, None] * noise
    if pastes:
        # One batched resampling of every pasted item: canvas pixel p <- source q = c + R^T (p - t) / scale.
        table = torch.tensor([p[3:] for p in pastes], dtype=torch.float32)  # (M, 6): scale, cos, sin, tx, ty, bright
        which = torch.tensor([p[2] for p in pastes])
        b = boxes[which]
        scale, cos, sin, tx, ty = (table[:, j, None] for j in range(5))  # (M, 1) each
        coords = torch.arange(size, dtype=torch.float32)
        grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
        dx, dy = grid_x.reshape(1, -1) - tx, grid_y.reshape(1, -1) - ty  # (M, P)
        qx = (b[:, 0:1] + b[:, 2:3]) / 2 + (cos * dx + sin * dy) / scale
        qy = (b[:, 1:2] + b[:, 3:4]) / 2 + (-sin * dx + cos * dy) / scale
        grid = (torch.stack([qx, qy], -1) * (2 / (_ITEM_SIZE - 1)) - 1).view(len(pastes), size, size, 2)
        alpha = F.grid_sample(
            items[which].unsqueeze(1).float() / 255, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )  # (M, 1, H, W)
        samples = torch.tensor([p[0] for p in pastes])
        layer_of = torch.tensor([p[1] for p in pastes])
        for layer in range(int(layer_of.max()) + 1):  # in drawing order: bottom layer first
            at = (layer_of == layer).nonzero().flatten()
            if len(at) == 0:
                continue
            a, idx = alpha[at], samples[at]
            if opaque:  # a higher item hides a lower one, also where it is darker than the item below
                cover = (a * (255 / _BBOX_THRESHOLD)).clamp(max=1)
                canvas[idx] = canvas[idx] * (1 - cover) + cover * a * table[at, 5, None, None, None]
            else:
                canvas[idx] = canvas[idx] * (1 - a) + a * table[at, 5, None, None, None]
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8)
