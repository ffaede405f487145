"""Which test images a trained network gets right, and two networks compared on the same images."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from dyrelu.data import BatchLoader, DataError
from dyrelu.train.evaluation import amp_autocast, checkpoint_on_test_set, device_of, identity

__all__ = ["compare_checkpoints", "correct_on_test_set"]


@torch.no_grad()
def _correct(model: nn.Module, loader: BatchLoader, amp: str, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether ``model`` classifies each image of ``loader`` right, and the labels, in the loader's order."""
    device = device_of(model)
    model.eval()
    correct, labels = [], []
    for images, target in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with amp_autocast(device, amp):
            logits = model(images)
        correct.append(logits.argmax(1).cpu() == target.cpu())
        labels.append(target.cpu())
    return torch.cat(correct), torch.cat(labels)


def correct_on_test_set(
    checkpoint: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    data_kwargs: dict[str, Any] | None = None,
    fraction: float = 1.0,
    batch_size: int = 256,
    device: str | None = None,
    amp: str = "none",
) -> dict[str, Any]:
    """Whether the network of ``checkpoint`` gets each test image right, in the test set's order.

    The arguments are :func:`~dyrelu.train.evaluate_checkpoint`'s.

    Returns:
        ``{"correct": BoolTensor, "labels": LongTensor, "acc", "count", "epoch", "model", "act", "data"}``.
    """
    model, state, loader, channels_last, name = checkpoint_on_test_set(
        checkpoint, data, data_dir, data_kwargs, fraction, batch_size, device
    )
    right, labels = _correct(model, loader, amp, channels_last)
    count = right.numel()
    acc = 100.0 * float(right.sum()) / max(count, 1)
    return {"correct": right, "labels": labels, "acc": acc, "count": count, **identity(state, name)}


def compare_checkpoints(
    checkpoint: str | os.PathLike,
    against: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    data_kwargs: dict[str, Any] | None = None,
    fraction: float = 1.0,
    batch_size: int = 256,
    device: str | None = None,
    amp: str = "none",
) -> dict[str, Any]:
    """Score two checkpoints on the same test images and test whether their difference is more than the test set's
    luck (:func:`dyrelu.analysis.paired.paired_comparison`: McNemar's exact test).

    The arguments are :func:`~dyrelu.train.evaluate_checkpoint`'s; each network reads the images with its own
    normalization.

    Returns:
        ``{"checkpoint": {...}, "against": {...}, "paired": PairedComparison}``: each network's accuracy and
        identity, and the paired comparison of ``checkpoint`` (A) with ``against`` (B).

    Raises:
        DataError: the two are evaluated on different images (another dataset, test set or fraction).
    """
    from dyrelu.analysis.paired import paired_comparison

    options = {
        "data": data,
        "data_dir": data_dir,
        "data_kwargs": data_kwargs,
        "fraction": fraction,
        "batch_size": batch_size,
        "device": device,
        "amp": amp,
    }
    a = correct_on_test_set(checkpoint, **options)
    b = correct_on_test_set(against, **options)
    if not torch.equal(a["labels"], b["labels"]):
        raise DataError(
            f"{checkpoint} and {against} are evaluated on different test images ({a['count']} and {b['count']}, "
            f"{a['data']} and {b['data']}): expected the same set (pass --data to evaluate both on one dataset)"
        )
    paired = paired_comparison(a.pop("correct"), b.pop("correct"))
    a.pop("labels"), b.pop("labels")
    return {"checkpoint": a, "against": b, "paired": paired}
