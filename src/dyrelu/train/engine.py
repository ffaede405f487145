"""Image classification: the task :func:`fit` trains with the shared loop of :mod:`dyrelu.train.loop`.

The task's part: the data (a dataset by name or given, the validation images held out, the data fraction), the
network (built from the config, given, or upgraded from a trained one), cross-entropy with label smoothing and
top-1 accuracy, DistributedDataParallel under ``torchrun``. The loop's part: the optimizer and schedule, the
epochs, the metrics, a checkpoint per epoch and exact resume (the batch order and augmentation of an epoch are a
function of ``(seed, epoch)``, see :class:`dyrelu.data.BatchLoader`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dyrelu.analysis.dynamics import dyrelu_layers
from dyrelu.analysis.summary import dynamics_numbers
from dyrelu.data import BatchLoader, DataError, ImageDataset, create_dataset, holdout, normalize_batch
from dyrelu.train import distributed as D
from dyrelu.train.config import MODEL_FIELDS, TrainConfig
from dyrelu.train.evaluation import (
    amp_autocast,
    batchnorm_subset,
    build_model,
    evaluate,
    materialize,
    recompute_batchnorm,
    upgrade_model,
    uses_conv2d,
)
from dyrelu.train.loop import EpochClock, FitResult, Training, preserved_runtime, run_epochs
from dyrelu.train.runtime import check_resume, open_run, progress_bar, seed_everything, set_cpu_threads
from dyrelu.train.schedule import set_tau

__all__ = ["FitResult", "fit"]

Log = Callable[[str], None]

# Fields that may not change on --resume: they define the network and the optimizer's state layout.
_FIXED_ON_RESUME = (*MODEL_FIELDS, "opt")


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
        metrics of every epoch (resumed ones included); with ``config.init_from``, also ``start``: the test (and
        validation) loss and accuracy and the dynamics before the first step (the network as converted), logged
        and kept in every checkpoint.

    Raises:
        DataError: the data is missing or malformed.
        CheckpointError: the checkpoint to resume is unreadable or belongs to another model.
    """
    ctx = D.setup(config.device)
    emit: Log = log if (log is not None and ctx.is_main) else (lambda line: None)
    try:
        with preserved_runtime():
            return _fit(config, out_dir, resume, model, train_set, test_set, emit, progress, ctx)
    finally:
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
    train_set, val_set, test_set = _datasets(config, train_set, test_set)
    config = _resolve(config, train_set, model is not None)
    if state is not None:
        # Through TrainConfig, so that fields added since the checkpoint read as their defaults.
        saved = TrainConfig.from_dict(state["config"]).to_dict()
        check_resume(config.to_dict(), saved, _FIXED_ON_RESUME, ckpt_path, log)

    seed_everything(config.seed)
    task = _Classification(config, ctx, _network(config, model, state is not None, train_set, ctx), model is not None)
    # Initialisation is identical on every rank; dropout and the like differ per rank.
    torch.manual_seed(config.seed + ctx.rank)
    task.set_data(train_set, val_set, test_set, progress)
    training = Training.create(config, task.model, task.steps_per_epoch, ctx, fp16=config.amp == "fp16")
    if state is not None:
        training.restore(state, ckpt_path, log)
    task.start(training)
    if config.init_from is not None and state is None:
        # the network as it starts (converted, for an upgrade): what the fine-tune changes, and a check of exactness
        training.start = task.evaluate_start()
        log(task.start_summary(training.start))
    run_epochs(training, task, out, ckpt_path, log)
    return training.result(ckpt_path)


def _datasets(
    config: TrainConfig, train_set: ImageDataset | None, test_set: ImageDataset | None
) -> tuple[ImageDataset, ImageDataset | None, ImageDataset]:
    """The training, validation and test images: the config's data unless given, the test set normalised with the
    training set's statistics."""
    if train_set is None or test_set is None:
        loaded_train, loaded_test = _load_data(config)
        train_set = loaded_train if train_set is None else train_set
        test_set = loaded_test if test_set is None else test_set
    train_set, val_set = _split_train(config, train_set)
    test_set = ImageDataset(
        test_set.images, test_set.labels, test_set.classes, train_set.mean, train_set.std, test_set.name
    )
    return train_set, val_set, test_set


def _network(
    config: TrainConfig, model: nn.Module | None, resuming: bool, train_set: ImageDataset, ctx: D.DistContext
) -> nn.Module:
    """The network to train, on its device: ``model``, the upgrade of ``config.init_from`` or a fresh one."""
    if model is None and config.init_from is not None and not resuming:
        model = upgrade_model(config, train_set.image_shape)
    elif model is None:  # a resumed upgrade loads its own weights into the same network
        model = build_model(config)
    materialize(model, train_set.image_shape)
    model.to(ctx.device)
    if uses_conv2d(model) if config.channels_last is None else config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class _Classification:
    """The classification task of the shared loop: cross-entropy and top-1 accuracy over data-parallel ranks."""

    def __init__(self, config: TrainConfig, ctx: D.DistContext, model: nn.Module, model_given: bool) -> None:
        self.config, self.ctx, self.model, self.model_given = config, ctx, model, model_given
        self.channels_last = uses_conv2d(model) if config.channels_last is None else config.channels_last
        self.network: nn.Module = model  # what the steps run: the model, or its DistributedDataParallel wrapper

    def set_data(
        self, train_set: ImageDataset, val_set: ImageDataset | None, test_set: ImageDataset, progress: bool
    ) -> None:
        """This rank's loaders of the training, validation and test images, and the dynamics' images."""
        config, ctx = self.config, self.ctx
        self.train_set, self.progress = train_set, progress
        self.train_loader = BatchLoader(
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

        self.test_loader = eval_loader(test_set)
        self.val_loader = None if val_set is None else eval_loader(val_set)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise DataError(f"the training set {train_set.name} is empty")
        self.dynamics_images = _dynamics_images(config, self.model, test_set)
        # every rank recomputes BatchNorm statistics over the same images: their buffers stay equal
        self.bn_loader = (
            BatchLoader(batchnorm_subset(train_set, config.precise_bn), config.batch_size, train=False)
            if config.precise_bn
            else None
        )

    def start(self, training: Training) -> None:
        """Take over ``training`` (resumed or fresh); wrap the model for DistributedDataParallel when distributed."""
        self.training = training
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of steps; the mean loss and accuracy over every rank's images."""
        config, ctx, training = self.config, self.ctx, self.training
        self.train_loader.set_epoch(epoch)
        self.network.train()
        steps = len(self.train_loader)
        totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, count
        bar = progress_bar(steps, f"epoch {epoch + 1}/{config.epochs}", self.progress and ctx.is_main)
        lr = training.lr
        for i, (images, labels) in enumerate(self.train_loader):
            training.set_step_tau()
            images = images.to(ctx.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(ctx.device, non_blocking=True)
            with amp_autocast(ctx.device, config.amp):
                logits = self.network(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            lr = training.step(loss)
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

    def _evaluate(self, loader: BatchLoader) -> dict[str, float]:
        config = self.config
        return evaluate(
            self.model, loader, device=self.ctx.device, amp=config.amp, channels_last=self.channels_last, ctx=self.ctx
        )

    def evaluate(self, epoch: int, train: dict[str, float], clock: EpochClock, tau: float | None) -> dict[str, Any]:
        """The test (and validation) loss and accuracy, with the temperature the next step will use."""
        if tau is not None:
            # Evaluate (and save) with the temperature that the next step would use: τ_end once annealed.
            set_tau(self.model, tau)
        if self.bn_loader is not None:
            config = self.config
            recompute_batchnorm(
                self.model, self.bn_loader, device=self.ctx.device, amp=config.amp, channels_last=self.channels_last
            )
        test = self._evaluate(self.test_loader)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "lr": train["lr"],
            "epoch_seconds": clock.seconds(),
            "train_images_per_second": clock.images_per_second(train["images"]),
        }
        if self.val_loader is not None:
            val = self._evaluate(self.val_loader)
            row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
        return row

    def evaluate_start(self) -> dict[str, Any]:
        """The test (and validation) loss and accuracy before the first step, and the DY-ReLU layers' dynamics.

        The BatchNorm statistics are the network's own (not recomputed) and nothing random is drawn: the training
        that follows is the one without this evaluation.
        """
        test = self._evaluate(self.test_loader)
        row: dict[str, Any] = {"test_loss": test["loss"], "test_acc": test["acc"]}
        if self.val_loader is not None:
            val = self._evaluate(self.val_loader)
            row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
        if self.dynamics_images is not None:
            row.update(dynamics_numbers(self.model, self.dynamics_images))
        return row

    def start_summary(self, row: dict[str, Any]) -> str:
        """The log line of :meth:`evaluate_start`."""
        val = f" | val acc {row['val_acc']:.2f}%" if "val_acc" in row else ""
        dyn = f" | slope range {row['dyn_median']:.3g}" if "dyn_median" in row else ""
        return (
            f"before the first step, from {self.config.init_from}: test loss {row['test_loss']:.4f} acc "
            f"{row['test_acc']:.2f}%{val}{dyn}"
        )

    def checkpoint(self) -> dict[str, Any]:
        """What rebuilding the network and its inputs needs besides the config."""
        train_set = self.train_set
        return {
            "input_shape": list(train_set.image_shape),
            "classes": list(train_set.classes),
            "normalization": {"mean": list(train_set.mean), "std": list(train_set.std)},
            "world_size": self.ctx.world_size,
            "custom_model": self.model_given,
        }

    def summary(self, row: dict[str, Any]) -> str:
        """The epoch's log line."""
        return (
            f"epoch {row['epoch']}/{self.config.epochs}: train loss {row['train_loss']:.4f} acc "
            f"{row['train_acc']:.2f}% | test loss {row['test_loss']:.4f} acc {row['test_acc']:.2f}% | lr "
            f"{row['lr']:.3g} | {row['epoch_seconds']:.1f}s"
        )
