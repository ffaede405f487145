"""Fashion-MNIST (and any MNIST-like set) from its IDX files, gzip-compressed or not."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch
from torch import Tensor

from dyrelu.data.dataset import DataError, ImageDataset

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "load_fashion_mnist", "read_idx"]

#: Where Debian's package ``dataset-fashion-mnist`` installs the four IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Statistics of the 60k training images (scaled to [0, 1]).
_FMNIST_MEAN, _FMNIST_STD = (0.2860,), (0.3530,)

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = (
    "install Debian's package with `apt-get install dataset-fashion-mnist` (it puts them in "
    f"{FASHION_MNIST_DIR}), or point --data-dir at a folder that holds them"
)


def read_idx(path: str | os.PathLike, ndim: int) -> Tensor:
    """Read an IDX file of unsigned bytes (``.gz`` or raw) with ``ndim`` dimensions into a uint8 tensor.

    The format: two zero bytes, the type code ``0x08`` (unsigned byte), the number of dimensions, one
    big-endian uint32 per dimension, then the data in C order.

    Args:
        path: the file.
        ndim: the expected number of dimensions (3 for images, 1 for labels).

    Raises:
        DataError: the file is not a complete IDX file of ``ndim`` unsigned-byte dimensions.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {err} (expected an IDX file, optionally gzip-compressed)") from None
    expected_magic = 0x0800 | ndim
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is too short for an IDX header ({len(raw)} bytes); the file is truncated")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes: magic number 0x{magic:08x}, "
            f"expected 0x{expected_magic:08x}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    body = memoryview(raw)[4 + 4 * ndim :]
    if len(body) != count:
        raise DataError(
            f"{path} holds {len(body)} data bytes, expected {count} for dimensions {dims}; the file is truncated "
            "or corrupt"
        )
    if count == 0:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def load_fashion_mnist(root: str | os.PathLike | None = None, train: bool = True) -> ImageDataset:
    """Fashion-MNIST's training (60k) or test (10k) set, 1×28×28 uint8, from its IDX files.

    Args:
        root: the folder with ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
            ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (uncompressed files work
            too); ``None`` means :data:`FASHION_MNIST_DIR`.
        train: the training set, else the test set.

    Raises:
        DataError: files missing or malformed; the message says how to install them.
    """
    root = Path(root if root is not None else FASHION_MNIST_DIR)
    stems = _FILES[train]
    found = [_find(root, stem) for stem in stems]
    if any(p is None for p in found):
        missing = ", ".join(stem + ".gz" for stem, p in zip(stems, found, strict=True) if p is None)
        raise DataError(f"Fashion-MNIST not found in {root}: missing {missing}; {_HOW_TO_GET}")
    images = read_idx(found[0], 3)
    labels = read_idx(found[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{found[0]} holds {images.shape[0]} images but {found[1]} holds {labels.shape[0]} labels")
    if labels.numel() and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{found[1]} holds label {int(labels.max())}, expected labels 0-9")
    return ImageDataset(
        images.unsqueeze(1).contiguous(),
        labels.to(torch.int64),
        FASHION_MNIST_CLASSES,
        _FMNIST_MEAN,
        _FMNIST_STD,
        name="fashion-mnist",
        pad=2,
        flip=True,
    )
