"""What the training engines share around the model: seeding, CPU threads, the run folder and resuming."""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from dyrelu.files import write_text_atomic
from dyrelu.train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from dyrelu.train.metrics import MetricsWriter

__all__ = [
    "check_finite_loss",
    "check_resume",
    "cpu_cores",
    "open_run",
    "progress_bar",
    "seed_everything",
    "set_cpu_threads",
    "start_run_files",
]


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's and (when installed) NumPy's generators."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed % 2**32)


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_cpu_threads(threads: int | None, device: torch.device, processes: int = 1) -> None:
    """On a CPU device, use ``threads`` intra-op threads (None: this machine's cores shared by ``processes``)."""
    if device.type == "cpu":
        torch.set_num_threads(threads or max(1, cpu_cores() // processes))


def check_resume(
    current: dict[str, Any],
    saved: dict[str, Any],
    fixed: Iterable[str],
    where: os.PathLike | str,
    log: Callable[[str], None],
) -> None:
    """Refuse to resume a checkpoint whose ``fixed`` settings differ from ``current``; log other changes.

    ``current`` and ``saved`` are configurations as dicts (the run's and the checkpoint's). A change of
    ``epochs`` is expected (a run extended) and not logged.

    Raises:
        CheckpointError: naming the setting, the saved value and the new one.
    """
    fixed = tuple(fixed)
    for key in fixed:
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"cannot resume {where}: it was trained with {key}={saved.get(key)!r}, this run has "
                f"{key}={current.get(key)!r} (use the same value or another output folder)"
            )
    for key, value in current.items():
        if key not in fixed and key != "epochs" and saved.get(key, value) != value:
            log(f"note: {key} changed from {saved[key]!r} to {value!r} since the checkpoint")


def open_run(
    out_dir: str | os.PathLike | None, resume: bool, log: Callable[[str], None]
) -> tuple[Path | None, Path | None, dict[str, Any] | None]:
    """The run folder, its checkpoint path and the checkpoint to continue from (``None``: start afresh).

    Raises:
        CheckpointError: ``out_dir`` holds a checkpoint and ``resume`` is false (it is never overwritten),
            or the checkpoint is unreadable.
    """
    if out_dir is None:
        if resume:
            log("nothing to resume")
        return None, None, None
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if not ckpt_path.exists():
        if resume:
            log(f"no checkpoint in {out}; starting from scratch")
        return out, ckpt_path, None
    if not resume:
        raise CheckpointError(f"{out} already holds a checkpoint; resume it (--resume) or choose another output folder")
    return out, ckpt_path, load_checkpoint(ckpt_path)


def start_run_files(
    out: Path | None, config: dict[str, Any], metrics: list[dict[str, Any]], *, tensorboard: bool
) -> MetricsWriter | None:
    """Write ``config.json`` and the metrics so far into ``out``; the writer for the epochs to come.

    After a resume the metrics file is rewritten from the checkpoint's rows, dropping rows of epochs that
    the checkpoint does not hold. ``out=None``: nothing is written.
    """
    if out is None:
        return None
    write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    writer = MetricsWriter(out, tensorboard=tensorboard)
    writer.write(metrics)
    return writer


def check_finite_loss(loss: float, epoch: int, lr: float) -> None:
    """Stop a run whose training loss has diverged, saying what to change.

    Raises:
        FloatingPointError: ``loss`` is NaN or infinite (``epoch`` counts from 0).
    """
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"the training loss is {loss} in epoch {epoch + 1}; lower the learning rate (lr={lr}) or use clip_grad"
        )


def progress_bar(steps: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``steps`` steps, or ``None`` when not ``enabled`` or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True)
