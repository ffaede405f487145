"""CIFAR-10 and CIFAR-100 from the "python version" pickle layout of the official archives."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from dyrelu.data.dataset import DataError, ImageDataset

__all__ = ["load_cifar"]

_LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": "labels",
        "meta": ("batches.meta", "label_names"),
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "archive": "cifar-10-python.tar.gz",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "labels": "fine_labels",
        "meta": ("meta", "fine_label_names"),
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
        "archive": "cifar-100-python.tar.gz",
    },
}

# The batches are pickles of dicts of numpy arrays, lists and bytes; nothing else may be constructed,
# so that a crafted file cannot run code. numpy 2 renamed numpy.core to numpy._core (the old name warns).
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core.") :]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy._core."):
            try:
                return super().find_class(module, name)
            except ImportError:  # numpy < 2
                return super().find_class("numpy.core." + module[len("numpy._core.") :], name)
        return super().find_class(module, name)


def _load_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _SafeUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise DataError(f"cannot read {path}: {err} (expected a CIFAR python-version pickle)") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}, expected a dict (a CIFAR python-version batch)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def _folder(root: Path, layout: dict) -> Path:
    for candidate in (root / layout["folder"], root):
        if all((candidate / name).is_file() for name in layout["train"] + layout["test"]):
            return candidate
    files = ", ".join(layout["train"] + layout["test"])
    raise DataError(
        f"{layout['folder']} not found in {root}: expected the files {files} in {root / layout['folder']} or in "
        f"{root}; download {layout['archive']} (python version) from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "extract it and point --data-dir at the folder that holds it"
    )


def load_cifar(root: str | os.PathLike, name: str = "cifar10", train: bool = True) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 (fine labels), 3×32×32 uint8, from the python-version pickles.

    Args:
        root: the folder that holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``), or that folder.
        name: ``"cifar10"`` or ``"cifar100"``.
        train: the training set (50k), else the test set (10k).

    Raises:
        DataError: files missing or malformed.
    """
    if name not in _LAYOUT:
        raise ValueError(f"unknown CIFAR variant {name!r}, expected one of {sorted(_LAYOUT)}")
    layout = _LAYOUT[name]
    folder = _folder(Path(root), layout)
    images, labels = [], []
    for batch_name in layout["train" if train else "test"]:
        path = folder / batch_name
        batch = _load_batch(path)
        if "data" not in batch or layout["labels"] not in batch:
            raise DataError(f"{path}: expected keys 'data' and {layout['labels']!r}, got {sorted(map(str, batch))}")
        data = torch.as_tensor(batch["data"])
        if data.dtype != torch.uint8 or data.dim() != 2 or data.shape[1] != 3 * 32 * 32:
            got = f"{data.dtype} of shape {tuple(data.shape)}"
            raise DataError(f"{path}: expected 'data' as uint8 of shape (N, 3072), got {got}")
        batch_labels = torch.as_tensor(list(batch[layout["labels"]]), dtype=torch.int64)
        if batch_labels.shape != (data.shape[0],):
            raise DataError(f"{path}: {data.shape[0]} images but {len(batch_labels)} labels")
        images.append(data.view(-1, 3, 32, 32))
        labels.append(batch_labels)
    classes = _class_names(folder, layout, name)
    return ImageDataset(
        torch.cat(images),
        torch.cat(labels),
        classes,
        layout["mean"],
        layout["std"],
        name=name,
        pad=4,
        flip=True,
    )


def _class_names(folder: Path, layout: dict, name: str) -> list[str]:
    meta_file, key = layout["meta"]
    count = 10 if name == "cifar10" else 100
    if (folder / meta_file).is_file():
        meta = _load_batch(folder / meta_file)
        names = meta.get(key)
        if isinstance(names, list) and len(names) == count:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(count)]
