"""Keypoint training: the task :func:`fit_keypoints` trains with the shared loop of :mod:`dyrelu.train.loop`.

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
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dyrelu.analysis.dynamics import dyrelu_layers
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
from dyrelu.train.distributed import DistContext
from dyrelu.train.loop import EpochClock, FitResult, Training, preserved_runtime, run_epochs
from dyrelu.train.runtime import check_resume, open_run, progress_bar, seed_everything, set_cpu_threads

__all__ = ["KeypointFitResult", "fit_keypoints"]

Log = Callable[[str], None]

_FIXED_ON_RESUME = (*KEYPOINT_MODEL_FIELDS, *TASK_FIELDS, "opt", "batch_size")


class KeypointFitResult(FitResult):
    """What :func:`fit_keypoints` returns: the trained model, the config and the metrics of every epoch."""


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
    with preserved_runtime():
        return _fit_keypoints(config, out_dir, resume, train_set, test_set, log or (lambda line: None), progress)


def _fit_keypoints(
    config: KeypointConfig,
    out_dir: str | os.PathLike | None,
    resume: bool,
    train_set: KeypointDataset | None,
    test_set: KeypointDataset | None,
    log: Log,
    progress: bool,
) -> KeypointFitResult:
    ctx = DistContext(device=torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    set_cpu_threads(config.threads, ctx.device)
    out, ckpt_path, state = open_run(out_dir, resume, log)
    if state is not None:
        check_task(state, str(ckpt_path))
        check_resume(config.to_dict(), state["config"], _FIXED_ON_RESUME, ckpt_path, log)

    if train_set is None or test_set is None:
        default_train, default_test = keypoint_datasets(config)
        train_set = train_set or default_train
        test_set = test_set or default_test

    seed_everything(config.seed)
    model = build_keypoint_model(config).to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"expected at least batch_size={config.batch_size} training images, got {len(train_set)}")
    training = Training.create(config, model, steps_per_epoch, ctx)
    if state is not None:
        training.restore(state, ckpt_path, log)
    run_epochs(training, _Keypoints(training, train_set, test_set, progress), out, ckpt_path, log)
    return training.result(ckpt_path, KeypointFitResult)


class _Keypoints:
    """The keypoint task of the shared loop: heatmap MSE against Gaussian targets; AP, PCK and OKS on the test set."""

    def __init__(
        self, training: Training, train_set: KeypointDataset, test_set: KeypointDataset, progress: bool
    ) -> None:
        self.training, self.train_set, self.test_set, self.progress = training, train_set, test_set, progress
        self.config: KeypointConfig = training.config
        self.model: KeypointNet = training.model
        self.device = training.ctx.device
        self.dynamics_images = _dynamics_images(self.config, self.model, test_set, self.device)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of steps over the epoch's order of the training images; the mean loss."""
        config, model, dataset, training = self.config, self.model, self.train_set, self.training
        model.train()
        bar = progress_bar(training.steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", self.progress)
        loss_sum, images = 0.0, 0
        lr = training.lr
        order = epoch_order(len(dataset), config.seed, epoch)
        for idx in batches(dataset, config.batch_size, order, drop_last=True):
            training.set_step_tau()
            heatmaps = model(to_input(dataset.images[idx], self.device, config.channels_last))
            target = gaussian_heatmaps(
                dataset.keypoints[idx].to(self.device),
                heatmaps.shape[-2:],
                model.heatmap_stride,
                config.sigma,
                dataset.visible[idx].to(self.device),
            )
            loss = F.mse_loss(heatmaps.float(), target)
            lr = training.step(loss)
            loss_sum += float(loss.detach()) * len(idx)
            images += len(idx)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return {"loss": loss_sum / max(images, 1), "lr": lr, "images": images}

    def evaluate(self, epoch: int, train: dict[str, float], clock: EpochClock, tau: float | None) -> dict[str, Any]:
        """Loss, AP, PCK and OKS on the test set, with the temperature of the epoch's last step."""
        config = self.config
        test = evaluate_keypoints(
            self.model,
            self.test_set,
            sigma=config.sigma,
            pck_alpha=config.pck_alpha,
            oks_kappa=config.oks_kappa,
            batch_size=config.eval_batch_size or 2 * config.batch_size,
            device=self.device,
            channels_last=config.channels_last,
        )
        return {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "test_loss": test["loss"],
            **{f"test_{key}": test[key] for key in ("ap", "ap50", "ap75", "pck", "oks")},
            "lr": train["lr"],
            "epoch_seconds": clock.seconds(),
            "epoch_cpu_seconds": clock.cpu_seconds(),
            "train_images_per_second": clock.images_per_second(train["images"]),
        }

    def checkpoint(self) -> dict[str, Any]:
        """What rebuilding the network and reading its heatmaps needs besides the config."""
        size = self.config.image_size
        return {
            "task": TASK,
            "input_shape": [1, size, size],
            "keypoint_names": list(KEYPOINT_NAMES),
            "normalization": {"mean": [IMAGE_MEAN], "std": [IMAGE_STD]},
        }

    def summary(self, row: dict[str, Any]) -> str:
        """The epoch's log line."""
        return (
            f"epoch {row['epoch']}/{self.config.epochs}: train loss {row['train_loss']:.3e} | test AP "
            f"{100 * row['test_ap']:.2f} AP50 {100 * row['test_ap50']:.2f} PCK@{self.config.pck_alpha:g} "
            f"{100 * row['test_pck']:.2f} | lr {row['lr']:.3g} | {row['epoch_seconds']:.1f}s"
        )


def _dynamics_images(
    config: KeypointConfig, model: nn.Module, test_set: KeypointDataset, device: torch.device
) -> torch.Tensor | None:
    """The first ``config.dynamics_images`` test images as the model takes them, if it has DY-ReLU layers."""
    if not config.dynamics_images or not dyrelu_layers(model) or len(test_set) == 0:
        return None
    return to_input(test_set.images[: config.dynamics_images], device, config.channels_last)
