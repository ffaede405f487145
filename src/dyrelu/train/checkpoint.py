"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``, checked on load.

A checkpoint is a dict of tensors, dicts, lists and primitives: the model's and optimizer's state,
the schedule's step, the random number generators' states (as tensors and lists), the metrics so
far and the training configuration, which is enough to rebuild the model without the command line.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dyrelu.files import write_errors
from dyrelu.modules import DyReLUC

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "capture_rng",
    "find_checkpoint",
    "load_checkpoint",
    "loaded_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

#: The file name of the latest checkpoint in a run's output folder.
CHECKPOINT_NAME = "last.pt"
_FORMAT = "dyrelu-checkpoint"
# 2: DY-ReLU-C's τ is in the model's state dict (version 1 kept it beside, in "taus").
# 3: DY-ReLU-C normalises its attention logits; older checkpoints ran without (their configs get spatial_norm=False).
_VERSION = 3
_REQUIRED = ("format", "version", "config", "epoch", "model")


class CheckpointError(ValueError):
    """A missing, unreadable, corrupt or mismatched checkpoint; the message is one line."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``.

    A failed write (a full disk, ...) leaves the previous checkpoint intact and removes the temporary
    file; a crash while writing leaves at worst a stray ``.tmp`` file beside it.

    Raises:
        WriteError: the checkpoint could not be written (from :mod:`dyrelu.files`, an ``OSError``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"format": _FORMAT, "version": _VERSION, **state}
    with write_errors(path, "the checkpoint"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):  # must not hide the error being raised
                tmp.unlink(missing_ok=True)
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
    return _upgrade(state)


def loaded_checkpoint(checkpoint: str | os.PathLike | dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``checkpoint`` loaded (a path, or an already loaded checkpoint as is) and how error messages name it.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    if isinstance(checkpoint, dict):
        return checkpoint, "the checkpoint"
    return load_checkpoint(checkpoint), str(checkpoint)


#: The (activation, its options) fields of the configs: classification's TrainConfig, keypoints' KeypointConfig.
_ACT_FIELDS = (("act", "act_kwargs"), ("backbone_act", "backbone_act_kwargs"), ("head_act", "head_act_kwargs"))


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """Bring an older checkpoint to the current version, so that it rebuilds and resumes what it trained.

    Version 1 kept each DY-ReLU-C's τ beside the weights (``taus``, by module name): move it into them.
    Versions 1 and 2 trained DY-ReLU-C without normalising its attention logits: their configs get
    ``spatial_norm=False`` in that activation's options (unless they set it), so the model they rebuild has
    their state dict's keys and computes what they trained.
    """
    taus = state.pop("taus", None) or {}
    model = state["model"]
    if isinstance(model, dict):
        for name, tau in taus.items():
            model.setdefault(f"{name}.temperature" if name else "temperature", torch.tensor(float(tau)))
    config = state["config"]
    if state["version"] < 3 and isinstance(config, dict):
        for act, kwargs in _ACT_FIELDS:
            if str(config.get(act)).lower() == "dyrelu_c":
                config[kwargs] = {"spatial_norm": False, **(config.get(kwargs) or {})}
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
    """Deprecated (removed in dyrelu 0.3): τ is in the state dict; read ``module.tau``."""
    warnings.warn(
        "dyrelu_taus is deprecated: DY-ReLU-C's tau is in the module's state dict (the 'temperature' buffer)",
        DeprecationWarning,
        stacklevel=2,
    )
    return {name: float(m.tau) for name, m in model.named_modules() if isinstance(m, DyReLUC)}


def load_taus(model: nn.Module, taus: dict[str, float]) -> None:
    """Deprecated (removed in dyrelu 0.3): ``load_state_dict`` restores τ; set ``module.tau`` otherwise."""
    warnings.warn(
        "load_taus is deprecated: DY-ReLU-C's tau is in the module's state dict (the 'temperature' buffer), and "
        "load_checkpoint moves the 'taus' of older checkpoints into it",
        DeprecationWarning,
        stacklevel=2,
    )
    modules = dict(model.named_modules())
    for name, tau in taus.items():
        if isinstance(modules.get(name), DyReLUC):
            modules[name].tau = float(tau)
