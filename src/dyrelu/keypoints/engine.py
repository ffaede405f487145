"""Keypoint training and evaluation, with :mod:`dyrelu.train`'s checkpoints, metrics, optimizers and schedules.

A run writes what a classification run writes: ``out_dir/last.pt`` after every epoch (atomic, loadable
with ``torch.load(weights_only=True)``), ``out_dir/metrics.csv`` (one row per epoch, rewritten
atomically) and ``out_dir/config.json``. Resume is exact: the batch order of an epoch is a function of
``(seed, epoch)``, the data is a function of the config, and the checkpoint holds the model, optimizer,
schedule and random generators; a run stopped after any epoch and resumed ends with the same metrics
and weights as an uninterrupted one (same machine, same thread count).

The loss is the mean squared error between predicted and Gaussian target heatmaps (SimpleBaseline's);
the evaluation decodes the heatmaps (arg-max, quarter-pixel shift) and reports PCK@α, the mean OKS and
COCO's OKS AP (see :mod:`dyrelu.keypoints.metrics` for exactly what is computed). Each epoch's row also
holds its wall time and its CPU time (the process's, all threads): on a shared machine the CPU time of a
one-thread run is what the epoch costs on a dedicated core.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dyrelu.keypoints.config import KEYPOINT_MODEL_FIELDS, TASK_FIELDS, KeypointConfig
from dyrelu.keypoints.heatmaps import decode_heatmaps, gaussian_heatmaps
from dyrelu.keypoints.metrics import oks, oks_ap, pck
from dyrelu.keypoints.model import KeypointNet
from dyrelu.keypoints.synthetic import IMAGE_MEAN, IMAGE_STD, KEYPOINT_NAMES, KeypointDataset, make_keypoint_dataset
from dyrelu.train.checkpoint import (
    CheckpointError,
    capture_rng,
    dyrelu_taus,
    load_checkpoint,
    load_taus,
    restore_rng,
    save_checkpoint,
)
from dyrelu.train.optim import create_optimizer
from dyrelu.train.runtime import (
    check_finite_loss,
    check_resume,
    open_run,
    progress_bar,
    seed_everything,
    set_cpu_threads,
    start_run_files,
)
from dyrelu.train.schedule import WarmupCosine, set_tau, tau_at

__all__ = [
    "KeypointFitResult",
    "build_keypoint_model",
    "evaluate_keypoint_checkpoint",
    "evaluate_keypoints",
    "fit_keypoints",
    "keypoint_datasets",
    "keypoint_model_from_checkpoint",
]

Log = Callable[[str], None]

#: The ``task`` entry of a keypoint checkpoint (classification checkpoints have none).
TASK = "keypoints"
_FIXED_ON_RESUME = (*KEYPOINT_MODEL_FIELDS, *TASK_FIELDS, "opt", "batch_size")


@dataclass
class KeypointFitResult:
    """What :func:`fit_keypoints` returns: the trained model, the config and the metrics of every epoch."""

    model: nn.Module
    config: KeypointConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_epoch: int | None = None


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


def _batches(dataset: KeypointDataset, batch_size: int, order: Tensor | None, drop_last: bool) -> Iterator[Tensor]:
    indices = order if order is not None else torch.arange(len(dataset))
    stop = len(indices) - len(indices) % batch_size if drop_last else len(indices)
    for start in range(0, stop, batch_size):
        yield indices[start : start + batch_size]


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 4_242) % (2**63))
    return torch.randperm(n, generator=generator)


def _to_input(images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
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
    for idx in _batches(dataset, batch_size, None, drop_last=False):
        heatmaps = model(_to_input(dataset.images[idx], device, channels_last)).float()
        target = gaussian_heatmaps(
            dataset.keypoints[idx].to(device), heatmaps.shape[-2:], stride, sigma, dataset.visible[idx].to(device)
        )
        loss_sum += float(F.mse_loss(heatmaps, target, reduction="sum")) / heatmaps[0].numel()
        coords, maxima = decode_heatmaps(heatmaps, stride)
        preds.append(coords.cpu())
        scores.append(maxima.mean(-1).cpu())
    n = len(dataset)
    if n == 0:
        return {"loss": float("nan"), "pck": float("nan"), "oks": float("nan"), "ap": float("nan"), "count": 0}
    pred = torch.cat(preds)
    per_image = oks(pred, dataset.keypoints, dataset.areas, oks_kappa, dataset.visible)
    return {
        "loss": loss_sum / n,
        "pck": pck(pred, dataset.keypoints, dataset.sizes, pck_alpha, dataset.visible),
        "oks": float(per_image.nanmean()),
        **oks_ap(per_image, torch.cat(scores)),
        "count": n,
    }


def _check_task(state: dict[str, Any], where: str) -> None:
    if state.get("task") != TASK:
        raise CheckpointError(
            f"{where} is not a keypoint checkpoint (expected one written by `dyrelu keypoints train`; "
            "classification checkpoints are evaluated with `dyrelu eval`)"
        )


def fit_keypoints(
    config: KeypointConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    train_set: KeypointDataset | None = None,
    test_set: KeypointDataset | None = None,
    log: Log | None = None,
    progress: bool = False,
) -> KeypointFitResult:
    """Train a :class:`KeypointNet` on the synthetic keypoint task, evaluating after each epoch.

    Args:
        config: the run's settings.
        out_dir: where ``last.pt``, ``metrics.csv`` and ``config.json`` go (``None``: nothing is written).
        resume: continue from ``out_dir/last.pt`` if it exists (else start afresh). Without it, an existing
            checkpoint there is an error rather than being overwritten.
        train_set: the training set (``None``: :func:`keypoint_datasets`).
        test_set: the evaluation set (``None``: :func:`keypoint_datasets`).
        log: receives one line per event (resume, epoch summary). ``None``: silent.
        progress: show a tqdm progress bar per epoch (if tqdm is installed).

    Returns:
        :class:`KeypointFitResult` with the trained model and the metrics of every epoch (resumed ones included).

    Raises:
        CheckpointError: the checkpoint to resume is unreadable, not a keypoint checkpoint or of another setting.
        dyrelu.data.DataError: Fashion-MNIST's files are missing (``items="fashion-mnist"``).

    Example:
        >>> cfg = KeypointConfig(items="shapes", image_size=32, num_train=32, num_test=8, batch_size=16, threads=1)
        >>> [row["epoch"] for row in fit_keypoints(cfg.replace(epochs=1)).metrics]
        [1]
    """
    emit: Log = log or (lambda line: None)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    set_cpu_threads(config.threads, device)
    out, ckpt_path, state = open_run(out_dir, resume, emit)
    if state is not None:
        _check_task(state, str(ckpt_path))
        check_resume(config.to_dict(), state["config"], _FIXED_ON_RESUME, ckpt_path, emit)

    if train_set is None or test_set is None:
        default_train, default_test = keypoint_datasets(config)
        train_set = train_set or default_train
        test_set = test_set or default_test

    seed_everything(config.seed)
    model = build_keypoint_model(config).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"expected at least batch_size={config.batch_size} training images, got {len(train_set)}")
    optimizer = create_optimizer(model, config.opt, config.lr, config.weight_decay, config.momentum)
    scheduler = WarmupCosine(
        optimizer,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        min_lr=config.min_lr,
    )
    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:300]
            raise CheckpointError(f"the state in {ckpt_path} does not fit this run: {detail}") from None
        load_taus(model, state.get("taus", {}))
        metrics = list(state.get("metrics", []))
        start_epoch = int(state["epoch"])
        if state.get("rng"):
            restore_rng(state["rng"][0])
        emit(f"resumed from {ckpt_path} after epoch {start_epoch}: continuing with epoch {start_epoch + 1}")

    writer = start_run_files(out, config.to_dict(), metrics, tensorboard=config.tensorboard)
    if start_epoch >= config.epochs:
        emit(f"{start_epoch} epochs done already (epochs={config.epochs}); nothing to train")
    eval_args = {
        "sigma": config.sigma,
        "pck_alpha": config.pck_alpha,
        "oks_kappa": config.oks_kappa,
        "batch_size": config.eval_batch_size or 2 * config.batch_size,
        "device": device,
        "channels_last": config.channels_last,
    }
    try:
        for epoch in range(start_epoch, config.epochs):
            started, cpu_started = time.perf_counter(), time.process_time()
            train = _train_epoch(model, train_set, optimizer, scheduler, config, device, epoch, progress)
            train_seconds = time.perf_counter() - started
            check_finite_loss(train["loss"], epoch, config.lr)
            test = evaluate_keypoints(model, test_set, **eval_args)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train["loss"],
                "test_loss": test["loss"],
                "test_ap": test["ap"],
                "test_ap50": test["ap50"],
                "test_ap75": test["ap75"],
                "test_pck": test["pck"],
                "test_oks": test["oks"],
                "lr": train["lr"],
                "epoch_seconds": time.perf_counter() - started,
                "epoch_cpu_seconds": time.process_time() - cpu_started,
                "train_images_per_second": train["images"] / max(train_seconds, 1e-9),
            }
            if config.tau_start is not None:
                row["tau"] = tau_at(
                    scheduler.last_step, steps_per_epoch, config.tau_start, config.tau_epochs, config.tau_end
                )
            metrics.append(row)
            if writer is not None:
                writer.write(metrics)
                save_checkpoint(
                    {
                        "task": TASK,
                        "config": config.to_dict(),
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": [capture_rng()],
                        "metrics": metrics,
                        "taus": dyrelu_taus(model),
                        "input_shape": [1, config.image_size, config.image_size],
                        "keypoint_names": list(KEYPOINT_NAMES),
                        "normalization": {"mean": [IMAGE_MEAN], "std": [IMAGE_STD]},
                    },
                    ckpt_path,
                )
            emit(
                f"epoch {epoch + 1}/{config.epochs}: train loss {train['loss']:.3e} | test AP "
                f"{100 * test['ap']:.2f} AP50 {100 * test['ap50']:.2f} PCK@{config.pck_alpha:g} "
                f"{100 * test['pck']:.2f} | lr {train['lr']:.3g} | {row['epoch_seconds']:.1f}s"
            )
    finally:
        if writer is not None:
            writer.close()
    return KeypointFitResult(
        model.eval(),
        config,
        metrics,
        ckpt_path if ckpt_path is not None and ckpt_path.exists() else None,
        start_epoch if state is not None else None,
    )


def _train_epoch(
    model: KeypointNet,
    dataset: KeypointDataset,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosine,
    config: KeypointConfig,
    device: torch.device,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    model.train()
    steps = len(dataset) // config.batch_size
    bar = progress_bar(steps, f"epoch {epoch + 1}/{config.epochs}", progress)
    loss_sum, images = 0.0, 0
    lr = scheduler.get_last_lr()[0]
    order = _epoch_order(len(dataset), config.seed, epoch)
    for idx in _batches(dataset, config.batch_size, order, drop_last=True):
        if config.tau_start is not None:
            set_tau(model, tau_at(scheduler.last_step, steps, config.tau_start, config.tau_epochs, config.tau_end))
        heatmaps = model(_to_input(dataset.images[idx], device, config.channels_last))
        target = gaussian_heatmaps(
            dataset.keypoints[idx].to(device),
            heatmaps.shape[-2:],
            model.heatmap_stride,
            config.sigma,
            dataset.visible[idx].to(device),
        )
        loss = F.mse_loss(heatmaps.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(idx)
        images += len(idx)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"loss": loss_sum / max(images, 1), "lr": lr, "images": images}


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
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    _check_task(state, where)
    try:
        config = KeypointConfig.from_dict(state["config"])
        model = build_keypoint_model(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot rebuild the model of {where}: {err}") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"the weights in {where} do not fit the model: {detail}") from None
    load_taus(model, state.get("taus", {}))
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
