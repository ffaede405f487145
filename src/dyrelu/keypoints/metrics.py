"""Keypoint metrics: PCK@α and COCO's OKS-based average precision, for one object per image.

What is computed, exactly:

- **PCK@α** (percentage of correct keypoints): a visible keypoint is correct when its predicted
  location is within ``α · size`` pixels of the truth, ``size`` being the object's size (for the
  synthetic task: the longer side of the target item's own bounding box). PCK is the fraction of
  visible keypoints that are correct, over all images and keypoints.
- **OKS** (object keypoint similarity, COCO's formula): for an image,
  ``OKS = mean over visible keypoints i of exp(-d_i² / (2 s² κ²))`` with ``d_i`` the distance between
  prediction and truth, ``s² `` the object's area (COCO: the segment area; here width × height of the
  target's own bounding box) and ``κ`` the per-keypoint constant (COCO's ``κ_i = 2σ_i``, 0.05 to 0.21
  for people; one ``κ`` for all keypoints here, 0.1 by default). Images without visible keypoints have
  no OKS and are left out, as COCO ignores such objects.
- **AP** (COCO's keypoint AP): with one object and one prediction per image, COCO's matching is
  trivial: at an OKS threshold ``t`` the prediction is a true positive when ``OKS >= t``, else a false
  positive (and its object is missed). The predictions of all images are ranked by score (descending,
  ties in image order), giving precision and recall after each; precision is made non-increasing from
  the right, read at the 101 recall levels ``0, 0.01, ..., 1`` (the first rank reaching each level; 0
  where recall never reaches it) and averaged: that is ``AP_t``. ``AP`` is the mean of ``AP_t`` over
  ``t = 0.50, 0.55, ..., 0.95``; ``AP50`` and ``AP75`` are ``AP_t`` at 0.5 and 0.75. ``AP_t`` lies between
  ``f²`` (scores unrelated to correctness) and ``f`` (every hit ranked above every miss), ``f`` being the
  fraction of images with ``OKS >= t``. The score of a prediction is the mean of its heatmaps' maxima.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["OKS_THRESHOLDS", "RECALL_LEVELS", "average_precision", "oks", "oks_ap", "pck"]

#: COCO's OKS thresholds 0.50:0.05:0.95 (as i / 100, exactly rounded).
OKS_THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(50, 100, 5))
#: COCO's 101 recall levels 0:0.01:1 (as i / 100).
RECALL_LEVELS: tuple[float, ...] = tuple(i / 100 for i in range(101))


def _check(pred: Tensor, target: Tensor, per_image: Tensor, name: str, visible: Tensor | None) -> Tensor:
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"expected predictions and targets of the same shape (N, K, 2), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if per_image.shape != pred.shape[:1]:
        raise ValueError(f"expected {name} of shape ({pred.shape[0]},), got {tuple(per_image.shape)}")
    if visible is None:
        return torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"expected visible of shape {tuple(pred.shape[:2])}, got {tuple(visible.shape)}")
    return visible.bool()


def pck(pred: Tensor, target: Tensor, sizes: Tensor, alpha: float = 0.1, visible: Tensor | None = None) -> float:
    """The fraction of visible keypoints within ``alpha * size`` pixels of the truth.

    Args:
        pred: predicted ``(x, y)``.
        target: true ``(x, y)``.
        sizes: each object's size in pixels.
        alpha: the tolerance as a fraction of the size.
        visible: which keypoints count (``None``: all).

    Shape:
        - pred, target: :math:`(N, K, 2)`
        - sizes: :math:`(N,)`
        - visible: :math:`(N, K)`

    Returns:
        PCK in [0, 1] (``nan`` when no keypoint is visible).

    Example:
        >>> pred = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
        >>> pck(pred, torch.zeros(1, 2, 2), torch.tensor([40.0]), alpha=0.1)  # distances 0 and 5, tolerance 4
        0.5
    """
    if alpha <= 0:
        raise ValueError(f"expected a positive alpha, got {alpha}")
    mask = _check(pred, target, sizes, "sizes", visible)
    dist = (pred.double() - target.double()).norm(dim=-1)  # (N, K)
    correct = (dist <= alpha * sizes.double()[:, None]) & mask
    count = int(mask.sum())
    return float(correct.sum()) / count if count else float("nan")


def oks(pred: Tensor, target: Tensor, areas: Tensor, kappa: float = 0.1, visible: Tensor | None = None) -> Tensor:
    """COCO's object keypoint similarity per image: the mean over visible keypoints of ``exp(-d² / (2 s² κ²))``.

    Args:
        pred: predicted ``(x, y)``.
        target: true ``(x, y)``.
        areas: each object's area ``s²`` in pixels².
        kappa: κ, the keypoints' constant (COCO's ``2σ``).
        visible: which keypoints count (``None``: all).

    Shape:
        - pred, target: :math:`(N, K, 2)`
        - areas: :math:`(N,)`
        - visible: :math:`(N, K)`
        - output: :math:`(N,)`, float64, ``nan`` for an image without visible keypoints.

    Example:
        >>> import math
        >>> d = math.sqrt(2 * 100 * 0.1**2 * math.log(2))  # the distance that gives exp(-ln 2) = 0.5
        >>> pred = torch.tensor([[[d, 0.0], [0.0, 0.0]]], dtype=torch.float64)
        >>> oks(pred, torch.zeros(1, 2, 2), torch.tensor([100.0])).tolist()  # the mean of 0.5 and 1
        [0.75]
    """
    if kappa <= 0:
        raise ValueError(f"expected a positive kappa, got {kappa}")
    mask = _check(pred, target, areas, "areas", visible)
    d2 = (pred.double() - target.double()).square().sum(-1)  # (N, K)
    e = torch.exp(-d2 / (2 * areas.double()[:, None].clamp_min(torch.finfo(torch.float64).eps) * kappa**2))
    count = mask.sum(-1)
    total = (e * mask).sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def average_precision(scores: Tensor, hits: Tensor) -> float:
    """COCO's 101-point interpolated AP of ``hits`` ranked by ``scores``, one object and one prediction per image.

    Args:
        scores: each prediction's score.
        hits: whether each prediction is a true positive; the number of objects is ``len(hits)``.

    Shape:
        - scores, hits: :math:`(N,)`

    Example:
        >>> average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, True, False, True]))
        0.6905940594059405
    """
    if scores.shape != hits.shape or scores.dim() != 1:
        raise ValueError(f"expected scores and hits of the same shape (N,), got {tuple(scores.shape)} and {hits.shape}")
    n = len(scores)
    if n == 0:
        return float("nan")
    order = torch.argsort(-scores.double(), stable=True)
    tp = hits[order].double().cumsum(0)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    recall = tp / n
    precision = tp / ranks
    precision = precision.flip(0).cummax(0).values.flip(0)  # non-increasing from the right
    levels = torch.tensor(RECALL_LEVELS, dtype=torch.float64)
    at = torch.searchsorted(recall, levels, side="left")  # first rank whose recall reaches each level
    sampled = torch.where(at < n, precision[at.clamp_max(n - 1)], torch.zeros_like(levels))
    return float(sampled.mean())


def oks_ap(oks_values: Tensor, scores: Tensor, thresholds: tuple[float, ...] = OKS_THRESHOLDS) -> dict[str, float]:
    """COCO keypoint AP from each image's OKS and prediction score (see the module docstring).

    Images whose OKS is ``nan`` (no visible keypoints) are left out.

    Args:
        oks_values: each image's OKS (from :func:`oks`).
        scores: each image's prediction score.
        thresholds: the OKS thresholds to average over (COCO's 0.50:0.05:0.95).

    Shape:
        - oks_values, scores: :math:`(N,)`

    Returns:
        ``{"ap", "ap50", "ap75"}`` in [0, 1] (``ap50``/``ap75`` only when 0.5/0.75 are among the thresholds).

    Example:
        >>> values = torch.tensor([0.9, 0.6, 0.3, 0.8], dtype=torch.float64)
        >>> result = oks_ap(values, torch.tensor([0.9, 0.8, 0.7, 0.6]))
        >>> {key: round(value, 4) for key, value in result.items()}
        {'ap': 0.4111, 'ap50': 0.6906, 'ap75': 0.3812}
    """
    if oks_values.shape != scores.shape or oks_values.dim() != 1:
        raise ValueError(
            f"expected OKS values and scores of the same shape (N,), got {tuple(oks_values.shape)} and "
            f"{tuple(scores.shape)}"
        )
    keep = ~torch.isnan(oks_values)
    values, scores = oks_values[keep].double(), scores[keep]
    per_threshold = {t: average_precision(scores, values >= t) for t in thresholds}
    result = {"ap": sum(per_threshold.values()) / len(per_threshold)}
    for name, t in (("ap50", 0.5), ("ap75", 0.75)):
        if t in per_threshold:
            result[name] = per_threshold[t]
    return result
