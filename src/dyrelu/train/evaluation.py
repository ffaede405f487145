"""Building a network from a training config, evaluating it, and rebuilding it from a checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from dyrelu.data import BatchLoader, DataError, ImageDataset, create_dataset
from dyrelu.train import distributed as D
from dyrelu.train.checkpoint import CheckpointError, loaded_checkpoint
from dyrelu.train.config import TrainConfig

__all__ = [
    "build_model",
    "evaluate",
    "evaluate_checkpoint",
    "model_from_checkpoint",
    "recompute_batchnorm",
    "upgrade_model",
]


def build_model(config: TrainConfig) -> nn.Module:
    """``dyrelu.models.create_model`` with the config's model fields (which must be resolved)."""
    from dyrelu.models import create_model

    return create_model(
        config.model,
        act=config.act,
        num_classes=config.num_classes,
        in_chans=config.in_chans,
        small_input=bool(config.small_input),
        act_context=config.act_context,
        **config.act_kwargs,
    )


def materialize(model: nn.Module, image_shape: tuple[int, ...]) -> None:
    """Run one forward pass if the model has lazy parameters (channels inferred on first use)."""
    if any(is_lazy(p) for p in model.parameters()):
        was_training = model.training
        with torch.no_grad():
            model.eval()
            model(torch.zeros(2, *image_shape))
        model.train(was_training)


def uses_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def amp_autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_model_state(model: nn.Module, state: dict[str, Any], where: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = " ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
        raise CheckpointError(f"the weights in {where} do not fit the model: {detail[:300]}") from None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    *,
    device: torch.device | str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
    ctx: D.DistContext | None = None,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (percent) of ``model`` over ``loader``, summed over ranks.

    Args:
        model: the network; put in eval mode and left there.
        loader: an evaluation :class:`~dyrelu.data.BatchLoader` (this rank's shard).
        device: where the model is.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast.
        channels_last: feed NHWC inputs.
        ctx: the process group context (``None``: a single process).

    Returns:
        ``{"loss": ..., "acc": ..., "count": ...}`` over all ranks' images.
    """
    device = torch.device(device)
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            logits = model(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += labels.numel()
    D.all_reduce_sum(totals, ctx or D.DistContext())
    loss_sum, correct, count = totals.tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "acc": 100.0 * correct / count, "count": int(totals[2].item())}


def batchnorm_subset(dataset: ImageDataset, count: int) -> ImageDataset:
    """``count`` images of ``dataset`` spread evenly over it (all of them when it holds fewer), for
    :func:`recompute_batchnorm`: a fixed set, whatever the order of the classes in the dataset."""
    total = len(dataset.labels)
    index = torch.linspace(0, total - 1, min(count, total)).round().long().unique()
    return dataclasses.replace(dataset, images=dataset.images[index], labels=dataset.labels[index])


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module,
    loader: BatchLoader,
    *,
    device: torch.device | str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
) -> int:
    """Replace the running statistics of ``model``'s BatchNorm layers by their exact average over ``loader``'s
    batches, computed with the current weights ("precise BatchNorm").

    Why: in evaluation a BatchNorm layer normalises with running averages that training accumulated over its last
    few dozen steps, while the weights before it kept moving. At a high learning rate early in training the two
    disagree: a short run can evaluate at chance with a test loss in the hundreds while the same weights, normalised
    with statistics of their own, are fine. Forward passes over a few hundred training images (no augmentation)
    fix that in a second. Only the BatchNorm layers run in training mode (no dropout, no random draw); other
    normalisations (DY-ReLU-C's attention norm) keep their running averages. Training itself never reads the
    running statistics, so a run's steps are the same with or without this.

    Args:
        model: the network; left in eval mode.
        loader: the batches (for example a :class:`~dyrelu.data.BatchLoader` with ``train=False`` over a fixed
            subset of the training set).
        device, amp, channels_last: as for :func:`evaluate`.

    Returns:
        The number of BatchNorm layers recomputed (0: nothing to do; the model is untouched).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    device = torch.device(device)
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts alike
        m.train()
    try:
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with amp_autocast(device, amp):
                model(images)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return len(norms)


def model_from_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint alone, in eval mode.

    Args:
        checkpoint: a path (file or run folder) or an already loaded checkpoint.
        device: where the model goes.

    Returns:
        ``(model, checkpoint)``.

    Raises:
        CheckpointError: the checkpoint is unreadable, or its weights do not fit its model.
    """
    state, where = loaded_checkpoint(checkpoint)
    try:
        config = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"the training config in {where} is invalid: {err}") from None
    if state.get("custom_model"):
        raise CheckpointError(
            f"{where} holds a network built outside dyrelu.models (model={config.model!r}); rebuild that network "
            "and load checkpoint['model'] into it"
        )
    try:
        model = build_model(config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"cannot rebuild the model of {where}: {err}") from None
    materialize(model, tuple(state.get("input_shape") or (config.in_chans, 32, 32)))
    load_model_state(model, state["model"], where)
    return model.to(device).eval(), state


def upgrade_model(config: TrainConfig, image_shape: tuple[int, ...]) -> nn.Module:
    """The network ``config`` trains, started from the weights of ``config.init_from`` (see :class:`TrainConfig`).

    Args:
        config: a resolved config with ``init_from`` set.
        image_shape: ``(C, H, W)`` of the training images (the example input of the conversion).

    Raises:
        CheckpointError: the checkpoint is unreadable, or its network is not ``config``'s (another model,
            number of classes or input), or its activation cannot become ``config.act``.
    """
    from dyrelu.convert import convert

    source, state = model_from_checkpoint(config.init_from)
    saved = TrainConfig.from_dict(state["config"])
    where = str(config.init_from)
    for name in ("model", "num_classes", "in_chans", "small_input"):
        if getattr(saved, name) != getattr(config, name):
            raise CheckpointError(
                f"cannot start from {where}: its {name} is {getattr(saved, name)!r}, expected {getattr(config, name)!r}"
            )
    act = str(config.act).lower()
    if saved.act == act and saved.act_kwargs == config.act_kwargs and saved.act_context == config.act_context:
        return source.train()
    if saved.act != "relu" or act not in ("dyrelu_a", "dyrelu_b", "dyrelu_c") or config.act_context != "input":
        raise CheckpointError(
            f"cannot start a {act} network (act_context={config.act_context!r}) from {where}, a {saved.act} one "
            f"with {saved.act_kwargs}: expected the same activation and options, or ReLU to upgrade to a DY-ReLU "
            "reading its own input"
        )
    kwargs = dict(config.act_kwargs)
    example = torch.zeros(2, *image_shape)
    convert(source, act[-1].upper(), k=int(kwargs.pop("k", 2)), example_input=example, **kwargs)
    return source.train()


def checkpoint_on_test_set(
    checkpoint: str | os.PathLike,
    data: str | None,
    data_dir: str | os.PathLike | None,
    data_kwargs: dict[str, Any] | None,
    fraction: float,
    batch_size: int,
    device: str | None,
) -> tuple[nn.Module, dict[str, Any], BatchLoader, bool, str]:
    """The network of ``checkpoint`` and a loader of its test set (the arguments of :func:`evaluate_checkpoint`)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, state = model_from_checkpoint(checkpoint, device=device)
    config = state["config"]
    if data is None:
        data = config["data"]
        data_dir = data_dir if data_dir is not None else config["data_dir"]
        data_kwargs = config["data_kwargs"] if data_kwargs is None else data_kwargs
    test_set = create_dataset(data, data_dir, train=False, fraction=fraction, **(data_kwargs or {}))
    norm = state.get("normalization")
    if norm:
        test_set = ImageDataset(test_set.images, test_set.labels, test_set.classes, norm["mean"], norm["std"], data)
    expected = config["in_chans"]
    if test_set.image_shape[0] != expected:
        raise DataError(
            f"the checkpoint's model takes {expected}-channel images, the data {data} has {test_set.image_shape[0]}"
        )
    if test_set.num_classes > config["num_classes"]:
        raise DataError(f"the data {data} has {test_set.num_classes} classes, the model {config['num_classes']}")
    channels_last = uses_conv2d(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model, state, BatchLoader(test_set, batch_size, train=False), channels_last, data


def evaluate_checkpoint(
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
    """Evaluate a checkpoint on the test split of its own dataset or of another one.

    Args:
        checkpoint: a checkpoint file or run folder.
        data: a dataset name (``None``: the one it was trained on, with its folder and options).
        data_dir: the data folder (``None``: the training run's, when ``data`` is ``None``).
        data_kwargs: the data source's options (``None``: the training run's, when ``data`` is ``None``).
        fraction: evaluate on a deterministic fraction of the test set.
        batch_size: images per step.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast.

    Returns:
        ``{"loss", "acc", "count", "epoch", "model", "act", "data"}``.
    """
    model, state, loader, channels_last, data = checkpoint_on_test_set(
        checkpoint, data, data_dir, data_kwargs, fraction, batch_size, device
    )
    result = evaluate(model, loader, device=device_of(model), amp=amp, channels_last=channels_last)
    return {**result, **identity(state, data)}


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def identity(state: dict[str, Any], data: str) -> dict[str, Any]:
    config = state["config"]
    return {"epoch": state["epoch"], "model": config["model"], "act": config["act"], "data": data}
