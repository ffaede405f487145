"""Heatmap encoding and decoding: Gaussian targets at sub-pixel keypoints, arg-max with a quarter-pixel shift.

Coordinates are pixels with pixel centres at integers, ``(x, y) = (column, row)``. A heatmap of stride
``s`` has its pixel ``j`` centred on image coordinate ``(j + 0.5) * s - 0.5``, so image coordinate ``x``
is heatmap coordinate ``(x + 0.5) / s - 0.5`` (the centres of the ``s × s`` blocks it summarises).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["decode_heatmaps", "gaussian_heatmaps", "heatmap_to_image", "image_to_heatmap"]


def image_to_heatmap(coords: Tensor, stride: int) -> Tensor:
    """Image pixel coordinates to heatmap pixel coordinates of ``stride``."""
    return (coords + 0.5) / stride - 0.5


def heatmap_to_image(coords: Tensor, stride: int) -> Tensor:
    """Heatmap pixel coordinates of ``stride`` to image pixel coordinates.

    Example:
        >>> heatmap_to_image(image_to_heatmap(torch.tensor([0.0, 5.0, 63.0]), 4), 4).tolist()
        [0.0, 5.0, 63.0]
    """
    return (coords + 0.5) * stride - 0.5


def gaussian_heatmaps(
    keypoints: Tensor, size: tuple[int, int], stride: int, sigma: float, visible: Tensor | None = None
) -> Tensor:
    """Target heatmaps: ``exp(-d² / (2 sigma²))`` around each keypoint, peak 1 at its exact sub-pixel spot.

    Unlike SimpleBaseline, the centre is not rounded to the heatmap grid, so the target is unbiased.
    Keypoints that are not ``visible`` get an all-zero heatmap.

    Args:
        keypoints: ``(x, y)`` in image pixels.
        size: the heatmaps' ``(height, width)``.
        stride: image pixels per heatmap pixel.
        sigma: the Gaussian's standard deviation in heatmap pixels.
        visible: which keypoints are labelled (``None``: all).

    Shape:
        - keypoints: :math:`(N, K, 2)`
        - visible: :math:`(N, K)`
        - output: :math:`(N, K, H_{hm}, W_{hm})`

    Example:
        >>> hm = gaussian_heatmaps(torch.tensor([[[4.5, 2.5]]]), (4, 4), stride=2, sigma=1.0)
        >>> hm.shape, hm[0, 0].argmax().item(), round(hm.max().item(), 4)
        (torch.Size([1, 1, 4, 4]), 6, 1.0)
    """
    if sigma <= 0:
        raise ValueError(f"expected a positive sigma (heatmap pixels), got {sigma}")
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"expected keypoints of shape (N, K, 2), got {tuple(keypoints.shape)}")
    h, w = size
    centres = image_to_heatmap(keypoints.float(), stride)
    xs = torch.arange(w, dtype=torch.float32, device=keypoints.device)
    ys = torch.arange(h, dtype=torch.float32, device=keypoints.device)
    gx = torch.exp(-((xs - centres[..., 0:1]) ** 2) / (2 * sigma**2))  # (N, K, W)
    gy = torch.exp(-((ys - centres[..., 1:2]) ** 2) / (2 * sigma**2))  # (N, K, H)
    heatmaps = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # (N, K, H, W)
    if visible is not None:
        heatmaps = heatmaps * visible.to(heatmaps.dtype)[..., None, None]
    return heatmaps


def decode_heatmaps(heatmaps: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Keypoints and their scores from heatmaps: the arg-max, shifted a quarter pixel toward the higher neighbour.

    The quarter-pixel shift is SimpleBaseline's (and HRNet's) standard refinement: along each axis, when
    the maximum is not on the border, move 0.25 heatmap pixels toward the larger of its two neighbours.
    The score of a keypoint is its heatmap's maximum.

    Args:
        heatmaps: predicted heatmaps.
        stride: image pixels per heatmap pixel.

    Shape:
        - heatmaps: :math:`(N, K, H_{hm}, W_{hm})`
        - output: keypoints :math:`(N, K, 2)` as ``(x, y)`` in image pixels, scores :math:`(N, K)`

    Example:
        >>> hm = torch.zeros(1, 1, 4, 4)
        >>> hm[0, 0, 1, 2], hm[0, 0, 1, 3] = 1.0, 0.5
        >>> coords, scores = decode_heatmaps(hm, stride=2)
        >>> coords.tolist(), scores.tolist()
        ([[[5.0, 2.5]]], [[1.0]])
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"expected heatmaps of shape (N, K, H, W), got {tuple(heatmaps.shape)}")
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.detach().float().flatten(2)  # (N, K, H*W)
    scores, index = flat.max(-1)
    ys, xs = torch.div(index, w, rounding_mode="floor"), index % w
    padded = torch.nn.functional.pad(heatmaps.detach().float(), (1, 1, 1, 1)).flatten(2)  # (N, K, (H+2)*(W+2))

    def at(dy: int, dx: int) -> Tensor:
        return padded.gather(-1, ((ys + 1 + dy) * (w + 2) + xs + 1 + dx).unsqueeze(-1)).squeeze(-1)

    shift_x = torch.where((xs > 0) & (xs < w - 1), torch.sign(at(0, 1) - at(0, -1)) * 0.25, 0.0)
    shift_y = torch.where((ys > 0) & (ys < h - 1), torch.sign(at(1, 0) - at(-1, 0)) * 0.25, 0.0)
    coords = torch.stack([xs.float() + shift_x, ys.float() + shift_y], -1)
    return heatmap_to_image(coords, stride), scores
