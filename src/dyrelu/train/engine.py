"""The training loop: epochs of SGD/AdamW steps, evaluation, metrics and a checkpoint per epoch.

Exact resume: everything random in an epoch is a function of ``(seed, epoch)`` (the data order and
augmentation, see :class:`dyrelu.data.BatchLoader`) or of the generators' states, which each
checkpoint stores together with the model, optimizer, schedule and metrics. A run killed at any point
and resumed from its last checkpoint therefore ends with the same metrics and parameters as an
uninterrupted run with the same seed (on the same machine, thread count and world size).
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
from dyrelu.data import BatchLoader, DataError, ImageDataset, create_dataset, holdout, normalize_batch
from dyrelu.train import distributed as D
from dyrelu.train.checkpoint import CheckpointError, capture_rng, restore_rng, save_checkpoint
from dyrelu.train.config import MODEL_FIELDS, TrainConfig
from dyrelu.train.evaluation import (
    amp_autocast,
    build_model,
    evaluate,
    load_model_state,
    materialize,
    upgrade_model,
    uses_conv2d,
)
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

__all__ = ["FitResult", "fit"]

Log = Callable[[str], None]

# Fields that may not change on --resume: they define the network and the optimizer's state layout.
_FIXED_ON_RESUME = (*MODEL_FIELDS, "opt")


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model (unwrapped), the resolved config and the metrics."""

    model: nn.Module
    config: TrainConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_epoch: int | None = None


def _train_epoch(
    model: nn.Module,
    raw_model: nn.Module,
    loader: BatchLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosine,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    ctx: D.DistContext,
    channels_last: bool,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    model.train()
    device = ctx.device
    steps = len(loader)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    bar = progress_bar(steps, f"epoch {epoch + 1}/{config.epochs}", progress and ctx.is_main)
    lr = scheduler.get_last_lr()[0]
    for i, (images, labels) in enumerate(loader):
        if config.tau_start is not None:
            set_tau(raw_model, tau_at(scheduler.last_step, steps, config.tau_start, config.tau_epochs, config.tau_end))
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with amp_autocast(device, config.amp):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.clip_grad is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(raw_model.parameters(), config.clip_grad)
        lr = scheduler.get_last_lr()[0]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            totals[0] += loss.detach().double() * labels.numel()
            totals[1] += (logits.argmax(1) == labels).sum()
            totals[2] += labels.numel()
        if bar is not None:
            bar.update(1)
            if i % 10 == 0 or i == steps - 1:
                bar.set_postfix(loss=f"{totals[0].item() / max(totals[2].item(), 1):.4f}", lr=f"{lr:.3g}")
    if bar is not None:
        bar.close()
    D.all_reduce_sum(totals, ctx)
    loss_sum, correct, count = totals.tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "acc": 100.0 * correct / count, "lr": lr, "images": count}


def _resolve(config: TrainConfig, train_set: ImageDataset, model_given: bool) -> TrainConfig:
    channels, height, width = train_set.image_shape
    changes: dict[str, Any] = {}
    if config.num_classes is None:
        changes["num_classes"] = train_set.num_classes
    elif config.num_classes < train_set.num_classes:
        raise DataError(
            f"num_classes={config.num_classes} but the data {train_set.name} has {train_set.num_classes} classes"
        )
    if config.in_chans is None:
        changes["in_chans"] = channels
    elif config.in_chans != channels and not model_given:
        raise DataError(f"in_chans={config.in_chans} but the images of {train_set.name} have {channels} channels")
    if config.small_input is None:
        changes["small_input"] = max(height, width) <= 64
    return config.replace(**changes) if changes else config


def _load_data(config: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    common = {"augment": config.augment, **config.data_kwargs}
    train_set = create_dataset(config.data, config.data_dir, train=True, **common)
    test_set = create_dataset(
        config.data, config.data_dir, train=False, fraction=config.eval_fraction, fraction_seed=0, **common
    )
    return train_set, test_set


def _split_train(config: TrainConfig, train_set: ImageDataset) -> tuple[ImageDataset, ImageDataset | None]:
    """The validation images held out first (fixed for every seed and fraction), then the data fraction."""
    val_set = None
    if config.val_size:
        train_set, val_set = holdout(train_set, config.val_size, seed=0)
        val_set.name = f"{train_set.name} (validation)"
    return train_set.fraction(config.data_fraction, seed=0), val_set


def _dynamics_images(config: TrainConfig, model: nn.Module, test_set: ImageDataset) -> torch.Tensor | None:
    """The first ``config.dynamics_images`` test images, normalised, if the model has DY-ReLU layers."""
    if not config.dynamics_images or not dyrelu_layers(model):
        return None
    images = test_set.images[: config.dynamics_images]
    return normalize_batch(images, test_set.mean, test_set.std)


def fit(
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    model: nn.Module | None = None,
    train_set: ImageDataset | None = None,
    test_set: ImageDataset | None = None,
    log: Log | None = None,
    progress: bool = False,
) -> FitResult:
    """Train and evaluate a network; in a ``torchrun`` launch, with DistributedDataParallel.

    Each epoch ends with an evaluation on the test set (and on the validation images held out with
    ``config.val_size``: ``val_acc``), the DY-ReLU layers' dynamics (``dyn_median``, ``dyn_max``, ``dyn_b_median``
    on the first ``config.dynamics_images`` test images; networks with DY-ReLU only), a row of
    ``out_dir/metrics.csv`` and an atomically written checkpoint ``out_dir/last.pt`` (rank 0 writes; the others only
    compute).

    Args:
        config: the run's settings (``None`` fields are resolved from the data).
        out_dir: where the checkpoint, metrics and ``config.json`` go (``None``: nothing is written,
            and ``resume`` is impossible).
        resume: continue from ``out_dir/last.pt`` if it exists (else start afresh). Without it, an
            existing checkpoint there is an error rather than being overwritten.
        model: train this network instead of ``dyrelu.models.create_model(config.model, ...)``; its
            checkpoints then need the same network to be rebuilt.
        train_set: the training images (``None``: ``config.data``).
        test_set: the evaluation images (``None``: ``config.data``'s test split). Its normalisation is
            replaced by the training set's.
        log: receives one line per event (resume, epoch summary); rank 0 only. ``None``: silent.
        progress: show a tqdm progress bar per epoch (rank 0, if tqdm is installed).

    The CPU thread count is set from ``config.threads`` while training, and cuDNN made deterministic
    (``torch.backends.cudnn.benchmark = False``, ``deterministic = True``); both are restored afterwards.

    Returns:
        :class:`FitResult` with the trained model (unwrapped from DDP), the resolved config and the
        metrics of every epoch (resumed ones included).

    Raises:
        DataError: the data is missing or malformed.
        CheckpointError: the checkpoint to resume is unreadable or belongs to another model.
    """
    ctx = D.setup(config.device)
    emit: Log = log if (log is not None and ctx.is_main) else (lambda line: None)
    threads = torch.get_num_threads()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        return _fit(config, out_dir, resume, model, train_set, test_set, emit, progress, ctx)
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        D.cleanup(ctx)


def _fit(
    config: TrainConfig,
    out_dir: str | os.PathLike | None,
    resume: bool,
    model: nn.Module | None,
    train_set: ImageDataset | None,
    test_set: ImageDataset | None,
    log: Log,
    progress: bool,
    ctx: D.DistContext,
) -> FitResult:
    if config.amp == "fp16" and ctx.device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
    set_cpu_threads(config.threads, ctx.device, ctx.local_world_size)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True

    out, ckpt_path, state = open_run(out_dir, resume, log)

    if train_set is None or test_set is None:
        loaded_train, loaded_test = _load_data(config)
        train_set = loaded_train if train_set is None else train_set
        test_set = loaded_test if test_set is None else test_set
    train_set, val_set = _split_train(config, train_set)
    test_set = ImageDataset(
        test_set.images, test_set.labels, test_set.classes, train_set.mean, train_set.std, test_set.name
    )
    config = _resolve(config, train_set, model is not None)
    if state is not None:
        # Through TrainConfig, so that fields added since the checkpoint read as their defaults.
        saved = TrainConfig.from_dict(state["config"]).to_dict()
        check_resume(config.to_dict(), saved, _FIXED_ON_RESUME, ckpt_path, log)

    seed_everything(config.seed)
    model_given = model is not None
    if model is None and config.init_from is not None and state is None:
        model = upgrade_model(config, train_set.image_shape)
    elif model is None:  # a resumed upgrade loads its own weights into the same network
        model = build_model(config)
    materialize(model, train_set.image_shape)
    channels_last = uses_conv2d(model) if config.channels_last is None else config.channels_last
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # Initialisation is identical on every rank; dropout and the like differ per rank.
    torch.manual_seed(config.seed + ctx.rank)

    train_loader = BatchLoader(
        train_set,
        config.batch_size,
        train=True,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        workers=config.workers,
    )

    def eval_loader(dataset: ImageDataset) -> BatchLoader:
        batch = config.eval_batch_size or 2 * config.batch_size
        return BatchLoader(
            dataset, batch, train=False, rank=ctx.rank, world_size=ctx.world_size, workers=config.workers
        )

    test_loader = eval_loader(test_set)
    val_loader = None if val_set is None else eval_loader(val_set)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError(f"the training set {train_set.name} is empty")
    dyn_images = _dynamics_images(config, model, test_set)
    optimizer = optimizer_from_config(model, config)
    scheduler = WarmupCosine(
        optimizer,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        min_lr=config.min_lr,
    )
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.amp == "fp16")

    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    if state is not None:
        load_model_state(model, state["model"], str(ckpt_path))
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"the optimizer state in {ckpt_path} does not fit this run: {err}") from None
        metrics = list(state.get("metrics", []))
        start_epoch = int(state["epoch"])
        rng = state.get("rng") or []
        if len(rng) == ctx.world_size:
            restore_rng(rng[ctx.rank])
        else:
            log(f"note: the checkpoint was written by {len(rng)} processes, this run has {ctx.world_size}")
        log(f"resumed from {ckpt_path} after epoch {start_epoch}: continuing with epoch {start_epoch + 1}")

    raw_model = model
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )

    writer = start_run_files(out if ctx.is_main else None, config.to_dict(), metrics, tensorboard=config.tensorboard)
    if start_epoch >= config.epochs:
        log(f"{start_epoch} epochs done already (epochs={config.epochs}); nothing to train")

    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            train_loader.set_epoch(epoch)
            train = _train_epoch(
                model,
                raw_model,
                train_loader,
                optimizer,
                scheduler,
                scaler,
                config,
                ctx,
                channels_last,
                epoch,
                progress,
            )
            train_seconds = time.perf_counter() - started
            check_finite_loss(train["loss"], epoch, config.lr)
            tau = None
            if config.tau_start is not None:
                # Evaluate (and save) with the temperature that the next step would use: τ_end once annealed.
                tau = tau_at(scheduler.last_step, steps_per_epoch, config.tau_start, config.tau_epochs, config.tau_end)
                set_tau(raw_model, tau)
            test = evaluate(
                raw_model, test_loader, device=ctx.device, amp=config.amp, channels_last=channels_last, ctx=ctx
            )
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train["loss"],
                "train_acc": train["acc"],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "lr": train["lr"],
                "epoch_seconds": time.perf_counter() - started,
                "train_images_per_second": train["images"] / max(train_seconds, 1e-9),
            }
            if val_loader is not None:
                val = evaluate(
                    raw_model, val_loader, device=ctx.device, amp=config.amp, channels_last=channels_last, ctx=ctx
                )
                row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            if dyn_images is not None:
                row.update(dynamics_numbers(raw_model, dyn_images))
            if tau is not None:
                row["tau"] = tau
            metrics.append(row)
            rng_states = D.all_gather_object(capture_rng(), ctx)
            if writer is not None:
                writer.write(metrics)
                save_checkpoint(
                    {
                        "config": config.to_dict(),
                        "epoch": epoch + 1,
                        "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "rng": rng_states,
                        "metrics": metrics,
                        "input_shape": list(train_set.image_shape),
                        "classes": list(train_set.classes),
                        "normalization": {"mean": list(train_set.mean), "std": list(train_set.std)},
                        "world_size": ctx.world_size,
                        "custom_model": model_given,
                    },
                    ckpt_path,
                )
            log(
                f"epoch {epoch + 1}/{config.epochs}: train loss {train['loss']:.4f} acc {train['acc']:.2f}% | "
                f"test loss {test['loss']:.4f} acc {test['acc']:.2f}% | lr {train['lr']:.3g} | "
                f"{row['epoch_seconds']:.1f}s"
            )
        D.barrier(ctx)
    finally:
        if writer is not None:
            writer.close()
    return FitResult(
        raw_model.eval(),
        config,
        metrics,
        ckpt_path if ckpt_path is not None and ckpt_path.exists() else None,
        start_epoch if state is not None else None,
    )
