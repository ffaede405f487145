"""Small data files the tests write: Fashion-MNIST's IDX files with random, class-dependent images."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An IDX file of unsigned bytes: magic 0x08 << 8 | ndim, big-endian dims, then the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def write_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """The four Fashion-MNIST files with random but class-dependent 28×28 images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, size=(10, 28, 28))
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.clip(protos[labels] + rng.normal(0, 40, size=(n, 28, 28)), 0, 255)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder
