"""The keypoint network and data of a :class:`KeypointConfig`, their evaluation, and rebuilding from a checkpoint."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dyrelu.keypoints.config import KeypointConfig
from dyrelu.keypoints.heatmaps import decode_heatmaps, gaussian_heatmaps
from dyrelu.keypoints.metrics import oks, oks_ap, pck
from dyrelu.keypoints.model import KeypointNet
from dyrelu.keypoints.synthetic import IMAGE_MEAN, IMAGE_STD, KEYPOINT_NAMES, KeypointDataset, make_keypoint_dataset
from dyrelu.train.checkpoint import CheckpointError, loaded_checkpoint
from dyrelu.train.evaluation import load_model_state
from dyrelu.train.runtime import set_cpu_threads

__all__ = [
    "TASK",
    "build_keypoint_model",
    "check_task",
    "evaluate_keypoint_checkpoint",
    "evaluate_keypoints",
    "keypoint_datasets",
    "keypoint_model_from_checkpoint",
]

#: The ``task`` entry of a keypoint checkpoint (classification checkpoints have none).
TASK = "keypoints"


def build_keypoint_model(config: KeypointConfig) -> KeypointNet:
    """The :class:`KeypointNet` of ``config``'s model fields."""
    return KeypointNet(
        len(KEYPOINT_NAMES),
        backbone=config.backbone,
        backbone_act=config.backbone_act,
        head_act=config.head_act,
        backbone_act_kwargs=config.backbone_act_kwargs,
        head_act_kwargs=config.head_act_kwargs,
        in_chans=1,
        output_stride=config.output_stride,
        head_layers=config.head_layers,
        head_channels=config.head_channels,
        small_input=config.small_input,
    )


@functools.lru_cache(maxsize=4)
def _dataset(num: int, split: str, seed: int, size: int, items: str, data_dir: str | None, dis: int, rot: float):
    # Cached per process: the runs of a grid worker share their data.
    return make_keypoint_dataset(
        num,
        split=split,
        seed=seed,
        image_size=size,
        items=items,
        data_dir=data_dir,
        max_distractors=dis,
        max_rotation=rot,
    )


def _common(config: KeypointConfig) -> tuple:
    return (
        config.data_seed,
        config.image_size,
        config.items,
        config.data_dir,
        config.max_distractors,
        float(config.max_rotation),
    )


def _test_set(config: KeypointConfig) -> KeypointDataset:
    return _dataset(config.num_test, "test", *_common(config))


def keypoint_datasets(config: KeypointConfig) -> tuple[KeypointDataset, KeypointDataset]:
    """The training and test sets of ``config`` (rendered once per process and cached)."""
    return _dataset(config.num_train, "train", *_common(config)), _test_set(config)


def _normalize(images: Tensor) -> Tensor:
    return (images.float() / 255.0 - IMAGE_MEAN) / IMAGE_STD


def batches(dataset: KeypointDataset, batch_size: int, order: Tensor | None, drop_last: bool) -> Iterator[Tensor]:
    indices = order if order is not None else torch.arange(len(dataset))
    stop = len(indices) - len(indices) % batch_size if drop_last else len(indices)
    for start in range(0, stop, batch_size):
        yield indices[start : start + batch_size]


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 4_242) % (2**63))
    return torch.randperm(n, generator=generator)


def to_input(images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    x = _normalize(images).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def evaluate_keypoints(
    model: KeypointNet,
    dataset: KeypointDataset,
    *,
    sigma: float = 1.5,
    pck_alpha: float = 0.1,
    oks_kappa: float = 0.1,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> dict[str, float]:
    """Heatmap loss, PCK, mean OKS and OKS AP of ``model`` on ``dataset``.

    Args:
        model: the network (put in eval mode and left there).
        dataset: the images and their keypoints.
        sigma: the target Gaussians' standard deviation (heatmap pixels), for the loss.
        pck_alpha: PCK's tolerance as a fraction of the item's size.
        oks_kappa: OKS's κ.
        batch_size: images per step.
        device: where the model is.
        channels_last: feed NHWC inputs.

    Returns:
        ``{"loss", "pck", "oks", "ap", "ap50", "ap75", "count"}``; PCK, OKS and AP in [0, 1].
    """
    device = torch.device(device)
    model.eval()
    stride = model.heatmap_stride
    loss_sum, preds, scores = 0.0, [], []
    for idx in batches(dataset, batch_size, None, drop_last=False):
        heatmaps = model(to_input(dataset.images[idx], device, channels_last)).float()
        target = gaussian_heatmaps(
            dataset.keypoints[idx].to(device), heatmaps.shape[-2:], stride, sigma, dataset.visible[idx].to(device)
        )
        loss_sum += float(F.mse_loss(heatmaps, target, reduction="sum")) / heatmaps[0].numel()
        coords, maxima = decode_heatmaps(heatmaps, stride)
        preds.append(coords.cpu())
        scores.append(maxima.mean(-1).cpu())
    n = len(dataset)
    if n == 0:
        nan = float("nan")
        return {"loss": nan, "pck": nan, "oks": nan, "ap": nan, "ap50": nan, "ap75": nan, "count": 0}
    pred = torch.cat(preds)
    per_image = oks(pred, dataset.keypoints, dataset.areas, oks_kappa, dataset.visible)
    return {
        "loss": loss_sum / n,
        "pck": pck(pred, dataset.keypoints, dataset.sizes, pck_alpha, dataset.visible),
        "oks": float(per_image.nanmean()),
        **oks_ap(per_image, torch.cat(scores)),
        "count": n,
    }


def check_task(state: dict[str, Any], where: str) -> None:
    if state.get("task") != TASK:
        raise CheckpointError(
            f"{where} is not a keypoint checkpoint (expected one written by `dyrelu keypoints train`; "
            "classification checkpoints are evaluated with `dyrelu eval`)"
        )


def keypoint_model_from_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[KeypointNet, dict[str, Any]]:
    """Rebuild the trained keypoint network from a checkpoint alone, in eval mode.

    Args:
        checkpoint: a path (file or run folder) or an already loaded checkpoint.
        device: where the model goes.

    Returns:
        ``(model, checkpoint)``.

    Raises:
        CheckpointError: unreadable, not a keypoint checkpoint, or its weights do not fit its model.
    """
    state, where = loaded_checkpoint(checkpoint)
    check_task(state, where)
    try:
        config = KeypointConfig.from_dict(state["config"])
        model = build_keypoint_model(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot rebuild the model of {where}: {err}") from None
    load_model_state(model, state["model"], where)
    return model.to(device).eval(), state


def evaluate_keypoint_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    num_test: int | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate a keypoint checkpoint on its task's test split.

    Args:
        checkpoint: a checkpoint file or run folder.
        num_test: test images (``None``: the training run's).
        data_dir: the Fashion-MNIST folder (``None``: the training run's).
        batch_size: images per step.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        threads: CPU threads (``None``: the available cores).

    Returns:
        :func:`evaluate_keypoints`'s result with ``epoch``, ``backbone``, ``backbone_act`` and ``head_act``.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, state = keypoint_model_from_checkpoint(checkpoint, device=device)
    config = KeypointConfig.from_dict(state["config"])
    changes: dict[str, Any] = {"threads": threads}
    if num_test is not None:
        changes["num_test"] = num_test
    if data_dir is not None:
        changes["data_dir"] = str(data_dir)
    config = config.replace(**changes)
    set_cpu_threads(config.threads, torch.device(device))
    test_set = _test_set(config)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    result = evaluate_keypoints(
        model,
        test_set,
        sigma=config.sigma,
        pck_alpha=config.pck_alpha,
        oks_kappa=config.oks_kappa,
        batch_size=batch_size,
        device=device,
        channels_last=config.channels_last,
    )
    return {
        **result,
        "epoch": state["epoch"],
        "backbone": config.backbone,
        "backbone_act": config.backbone_act,
        "head_act": config.head_act,
    }
