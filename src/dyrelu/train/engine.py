"""The training loop: epochs of SGD/AdamW steps, evaluation, metrics and a checkpoint per epoch.

Exact resume: everything random in an epoch is a function of ``(seed, epoch)`` (the data order and
augmentation, see :class:`dyrelu.data.BatchLoader`) or of the generators' states, which each
checkpoint stores together with the model, optimizer, schedule and metrics. A run killed at any point
and resumed from its last checkpoint therefore ends with the same metrics and parameters as an
uninterrupted run with the same seed (on the same machine, thread count and world size).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from dyrelu.data import BatchLoader, DataError, ImageDataset, create_dataset
from dyrelu.train import distributed as D
from dyrelu.train.checkpoint import (
    CheckpointError,
    capture_rng,
    dyrelu_taus,
    load_checkpoint,
    load_taus,
    restore_rng,
    save_checkpoint,
)
from dyrelu.train.config import MODEL_FIELDS, TrainConfig
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

__all__ = ["FitResult", "build_model", "evaluate", "evaluate_checkpoint", "fit", "model_from_checkpoint"]

Log = Callable[[str], None]

# Test-only: seconds to sleep after each training step, so that a test can kill a run mid-epoch.
_STEP_DELAY_ENV = "DYRELU_TEST_STEP_DELAY"
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


def build_model(config: TrainConfig) -> nn.Module:
    """``dyrelu.models.create_model`` with the config's model fields (which must be resolved)."""
    from dyrelu.models import create_model

    return create_model(
        config.model,
        act=config.act,
        num_classes=config.num_classes,
        in_chans=config.in_chans,
        small_input=bool(config.small_input),
        **config.act_kwargs,
    )


def _materialize(model: nn.Module, image_shape: tuple[int, ...]) -> None:
    """Run one forward pass if the model has lazy parameters (channels inferred on first use)."""
    if any(is_lazy(p) for p in model.parameters()):
        was_training = model.training
        with torch.no_grad():
            model.eval()
            model(torch.zeros(2, *image_shape))
        model.train(was_training)


def _uses_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _load_model_state(model: nn.Module, state: dict[str, Any], where: str) -> None:
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
        with _autocast(device, amp):
            logits = model(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += labels.numel()
    D.all_reduce_sum(totals, ctx or D.DistContext())
    loss_sum, correct, count = totals.tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "acc": 100.0 * correct / count, "count": int(totals[2].item())}


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
    delay = float(os.environ.get(_STEP_DELAY_ENV, "0") or 0)
    bar = progress_bar(steps, f"epoch {epoch + 1}/{config.epochs}", progress and ctx.is_main)
    lr = scheduler.get_last_lr()[0]
    for i, (images, labels) in enumerate(loader):
        if config.tau_start is not None:
            set_tau(raw_model, tau_at(scheduler.last_step, steps, config.tau_start, config.tau_epochs, config.tau_end))
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, config.amp):
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
        if delay:
            time.sleep(delay)
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
    train_set = create_dataset(
        config.data, config.data_dir, train=True, fraction=config.data_fraction, fraction_seed=0, **common
    )
    test_set = create_dataset(
        config.data, config.data_dir, train=False, fraction=config.eval_fraction, fraction_seed=0, **common
    )
    return train_set, test_set


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

    Each epoch ends with an evaluation on the test set, a row of ``out_dir/metrics.csv`` and an
    atomically written checkpoint ``out_dir/last.pt`` (rank 0 writes; the others only compute).

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

    The CPU thread count is set from ``config.threads`` while training and restored afterwards.

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
    try:
        return _fit(config, out_dir, resume, model, train_set, test_set, emit, progress, ctx)
    finally:
        torch.set_num_threads(threads)
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
    test_set = ImageDataset(
        test_set.images, test_set.labels, test_set.classes, train_set.mean, train_set.std, test_set.name
    )
    config = _resolve(config, train_set, model is not None)
    if state is not None:
        check_resume(config.to_dict(), state["config"], _FIXED_ON_RESUME, ckpt_path, log)

    seed_everything(config.seed)
    model_given = model is not None
    if model is None:
        model = build_model(config)
    _materialize(model, train_set.image_shape)
    channels_last = _uses_conv2d(model) if config.channels_last is None else config.channels_last
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
    test_loader = BatchLoader(
        test_set,
        config.eval_batch_size or 2 * config.batch_size,
        train=False,
        rank=ctx.rank,
        world_size=ctx.world_size,
        workers=config.workers,
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError(f"the training set {train_set.name} is empty")
    optimizer = create_optimizer(model, config.opt, config.lr, config.weight_decay, config.momentum)
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
        _load_model_state(model, state["model"], str(ckpt_path))
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
                        "taus": dyrelu_taus(raw_model),
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
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
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
    _materialize(model, tuple(state.get("input_shape") or (config.in_chans, 32, 32)))
    _load_model_state(model, state["model"], where)
    load_taus(model, state.get("taus", {}))
    return model.to(device).eval(), state


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
    channels_last = _uses_conv2d(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = BatchLoader(test_set, batch_size, train=False)
    result = evaluate(model, loader, device=device, amp=amp, channels_last=channels_last)
    return {**result, "epoch": state["epoch"], "model": config["model"], "act": config["act"], "data": data}
