"""Process set-up shared by the training engines: seeding, CPU threads, and the resume check."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from typing import Any

import torch

from dyrelu.train.checkpoint import CheckpointError

__all__ = ["check_resume", "cpu_cores", "seed_everything", "set_cpu_threads"]


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
