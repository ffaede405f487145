"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``, checked on load.

A checkpoint is a dict of tensors, dicts, lists and primitives: the model's and optimizer's state,
the schedule's step, the random number generators' states (as tensors and lists), the metrics so
far and the training configuration, which is enough to rebuild the model without the command line.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dyrelu.modules import DyReLUC

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "capture_rng",
    "dyrelu_taus",
    "find_checkpoint",
    "load_checkpoint",
    "load_taus",
    "restore_rng",
    "save_checkpoint",
]

#: The file name of the latest checkpoint in a run's output folder.
CHECKPOINT_NAME = "last.pt"
_FORMAT = "dyrelu-checkpoint"
_VERSION = 1
_REQUIRED = ("format", "version", "config", "epoch", "model")


class CheckpointError(ValueError):
    """A missing, unreadable, corrupt or mismatched checkpoint; the message is one line."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``.

    A crash while writing leaves the previous checkpoint intact (and at worst a stray ``.tmp`` file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"format": _FORMAT, "version": _VERSION, **state}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def find_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/last.pt`` when ``path`` is a run's output folder."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Args:
        path: the file, or a run's output folder holding ``last.pt``.
        map_location: where the tensors go.

    Raises:
        CheckpointError: the file is missing, unreadable, corrupt or not a dyrelu checkpoint.
    """
    path = find_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a file written by `dyrelu train` (OUT/last.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt or not a checkpoint ({reason[:200]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a dyrelu training checkpoint (expected a file written by `dyrelu train`)")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    if state["version"] > _VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['version']}; this dyrelu reads up to {_VERSION}, upgrade it"
        )
    return state


def capture_rng() -> dict[str, Any]:
    """The states of Python's, NumPy's (if installed) and torch's (CPU and CUDA) generators, as tensors/lists."""
    state: dict[str, Any] = {"python": _python_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype("int64")),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`capture_rng`'s result."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        np_state = state["numpy"]
        keys = np_state["keys"].numpy().astype("uint32")
        np.random.set_state(
            (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
        )


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def dyrelu_taus(model: nn.Module) -> dict[str, float]:
    """The temperature of each DY-ReLU-C (a plain attribute, not in the state dict) by module name."""
    return {name: float(m.tau) for name, m in model.named_modules() if isinstance(m, DyReLUC)}


def load_taus(model: nn.Module, taus: dict[str, float]) -> None:
    """Set the temperatures saved by :func:`dyrelu_taus` on the DY-ReLU-C modules of the same names."""
    modules = dict(model.named_modules())
    for name, tau in taus.items():
        if isinstance(modules.get(name), DyReLUC):
            modules[name].tau = float(tau)
