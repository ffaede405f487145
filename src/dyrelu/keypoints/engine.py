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
one-thread run is what the epoch costs on a dedicated core. For networks with DY-ReLU layers it holds their
dynamics too (``dyn_median``, ``dyn_max``, ``dyn_b_median`` of :func:`dyrelu.analysis.dynamics_numbers`, on the
first ``config.dynamics_images`` test images, fed as training feeds them; measured after the epoch's timing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dyrelu.analysis.dynamics import dyrelu_layers
from dyrelu.analysis.summary import dynamics_numbers
from dyrelu.keypoints.config import KEYPOINT_MODEL_FIELDS, TASK_FIELDS, KeypointConfig
from dyrelu.keypoints.evaluation import (
    TASK,
    batches,
    build_keypoint_model,
    check_task,
    epoch_order,
    evaluate_keypoints,
    keypoint_datasets,
    to_input,
)
from dyrelu.keypoints.heatmaps import gaussian_heatmaps
from dyrelu.keypoints.model import KeypointNet
from dyrelu.keypoints.synthetic import IMAGE_MEAN, IMAGE_STD, KEYPOINT_NAMES, KeypointDataset
from dyrelu.train.checkpoint import CheckpointError, capture_rng, restore_rng, save_checkpoint
from dyrelu.train.optim import optimizer_from_config
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

__all__ = ["KeypointFitResult", "fit_keypoints"]

Log = Callable[[str], None]

_FIXED_ON_RESUME = (*KEYPOINT_MODEL_FIELDS, *TASK_FIELDS, "opt", "batch_size")


@dataclass
class KeypointFitResult:
    """What :func:`fit_keypoints` returns: the trained model, the config and the metrics of every epoch."""

    model: nn.Module
    config: KeypointConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_epoch: int | None = None


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

    The CPU thread count is set from ``config.threads`` while training and restored afterwards.

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
    threads = torch.get_num_threads()
    try:
        return _fit_keypoints(config, out_dir, resume, train_set, test_set, log, progress)
    finally:
        torch.set_num_threads(threads)


def _fit_keypoints(
    config: KeypointConfig,
    out_dir: str | os.PathLike | None,
    resume: bool,
    train_set: KeypointDataset | None,
    test_set: KeypointDataset | None,
    log: Log | None,
    progress: bool,
) -> KeypointFitResult:
    emit: Log = log or (lambda line: None)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    set_cpu_threads(config.threads, device)
    out, ckpt_path, state = open_run(out_dir, resume, emit)
    if state is not None:
        check_task(state, str(ckpt_path))
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
    optimizer = optimizer_from_config(model, config)
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
    dyn_images = _dynamics_images(config, model, test_set, device)
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
            if dyn_images is not None:
                row.update(dynamics_numbers(model, dyn_images))
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


def _dynamics_images(
    config: KeypointConfig, model: nn.Module, test_set: KeypointDataset, device: torch.device
) -> torch.Tensor | None:
    """The first ``config.dynamics_images`` test images as the model takes them, if it has DY-ReLU layers."""
    if not config.dynamics_images or not dyrelu_layers(model) or len(test_set) == 0:
        return None
    return to_input(test_set.images[: config.dynamics_images], device, config.channels_last)


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
    order = epoch_order(len(dataset), config.seed, epoch)
    for idx in batches(dataset, config.batch_size, order, drop_last=True):
        if config.tau_start is not None:
            set_tau(model, tau_at(scheduler.last_step, steps, config.tau_start, config.tau_epochs, config.tau_end))
        heatmaps = model(to_input(dataset.images[idx], device, config.channels_last))
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
