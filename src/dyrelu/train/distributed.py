"""Process groups for ``torchrun``: gloo on CPU, NCCL on GPU; one process is the usual case."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_gather_object", "all_reduce_sum", "barrier", "cleanup", "setup"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def setup(device: str | None = None) -> DistContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else a single process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). With CUDA each process takes
            the GPU of its ``LOCAL_RANK``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device 'cpu'")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"expected device 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if device.startswith("cuda"):
        dev = torch.device("cuda", local_rank if world_size > 1 or device == "cuda" else int(device.split(":")[1]))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns_group = True
    return DistContext(rank, local_rank, world_size, local_world_size, dev, owns_group)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it (a caller's own group stays)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over the processes in place (a no-op in a single process)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
