"""Datasets for training and evaluation, held in memory as uint8 tensors and augmented as tensors.

Sources: Fashion-MNIST from its IDX files (Debian's package ``dataset-fashion-mnist``), a cluttered
variant of it (the item among distractors on a textured canvas, :mod:`dyrelu.data.cluttered`), CIFAR-10/100
from the python-version pickles, an image folder (one sub-folder per class) and a deterministic
synthetic set. Nothing is downloaded: missing data raises :class:`DataError` saying how to get it.

Example:
    >>> train = create_dataset("synthetic", train=True, num_samples=64)
    >>> loader = BatchLoader(train, batch_size=32, train=True, seed=0)
    >>> images, labels = next(iter(loader))
    >>> images.shape, labels.shape
    (torch.Size([32, 3, 16, 16]), torch.Size([32]))
"""

from __future__ import annotations

import os
from typing import Any

from dyrelu.data.cifar import load_cifar
from dyrelu.data.cluttered import CLUTTERED_OPTIONS, make_cluttered_fashion_mnist
from dyrelu.data.dataset import DataError, ImageDataset, channel_stats, holdout
from dyrelu.data.folder import IMAGE_EXTENSIONS, load_image_folder
from dyrelu.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist, read_idx
from dyrelu.data.loader import BatchLoader, augment_batch, normalize_batch
from dyrelu.data.synthetic import make_synthetic

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_EXTENSIONS",
    "BatchLoader",
    "DataError",
    "ImageDataset",
    "augment_batch",
    "channel_stats",
    "create_dataset",
    "holdout",
    "list_datasets",
    "load_cifar",
    "load_fashion_mnist",
    "load_image_folder",
    "make_cluttered_fashion_mnist",
    "make_synthetic",
    "normalize_batch",
    "read_idx",
]

_DATASETS = ("cifar10", "cifar100", "cluttered-fashion-mnist", "fashion-mnist", "folder", "synthetic")


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`.

    Example:
        >>> list_datasets()
        ['cifar10', 'cifar100', 'cluttered-fashion-mnist', 'fashion-mnist', 'folder', 'synthetic']
    """
    return list(_DATASETS)


def create_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    train: bool = True,
    fraction: float = 1.0,
    fraction_seed: int = 0,
    augment: bool = True,
    **kwargs: Any,
) -> ImageDataset:
    """Load the training or test split of dataset ``name``.

    Args:
        name: one of :func:`list_datasets` (``"fmnist"``, ``"fashion_mnist"`` and ``"cluttered-fmnist"`` are
            accepted too).
        root: the data folder. Fashion-MNIST and its cluttered variant default to :data:`FASHION_MNIST_DIR`;
            CIFAR and folder need it; synthetic ignores it.
        train: the training split, else the test split.
        fraction: keep a deterministic, class-stratified subset of about this fraction (fast runs).
        fraction_seed: the seed choosing that subset.
        augment: keep the dataset's default augmentation (random crop, flip); ``False`` turns it off.
        **kwargs: passed to the source: ``image_size``/``test_fraction``/``channels`` for folder,
            ``num_samples`` (training images; 2048), ``num_test`` (test images; a quarter of
            ``num_samples``), ``num_classes``, ``image_size``, ``channels``, ``noise``, ``seed`` for synthetic;
            ``num_samples`` (training canvases), ``num_test`` (test canvases; both default to one per image of
            the split), ``image_size``, ``num_distractors``, ``seed``, ``max_rotation``, ``target_scale``,
            ``distractor_scale`` for cluttered-fashion-mnist (see :func:`make_cluttered_fashion_mnist`).

    Raises:
        DataError: the data is missing or malformed (the message says how to get it).
        ValueError: unknown ``name`` or bad arguments.
    """
    key = str(name).lower().replace("_", "-")
    aliases = {"fmnist": "fashion-mnist", "cluttered-fmnist": "cluttered-fashion-mnist"}
    key = {**aliases, "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key == "fashion-mnist":
        _no_kwargs(key, kwargs)
        ds = load_fashion_mnist(root, train=train)
    elif key == "cluttered-fashion-mnist":
        # Like synthetic: num_samples sizes the training split, num_test the test split.
        num_train, num_test = kwargs.pop("num_samples", None), kwargs.pop("num_test", None)
        unknown = sorted(set(kwargs) - set(CLUTTERED_OPTIONS))
        if unknown:
            expected = sorted({*CLUTTERED_OPTIONS, "num_test"})
            raise ValueError(f"unknown options {unknown} for dataset {key!r}, expected some of {', '.join(expected)}")
        ds = make_cluttered_fashion_mnist(root, train=train, num_samples=num_train if train else num_test, **kwargs)
    elif key in ("cifar10", "cifar100"):
        _no_kwargs(key, kwargs)
        if root is None:
            raise DataError(f"{key} needs a data folder (--data-dir) holding the python-version pickles")
        ds = load_cifar(root, key, train=train)
    elif key == "folder":
        if root is None:
            raise DataError("folder needs a data folder (--data-dir) with one sub-folder per class")
        ds = load_image_folder(root, train=train, **kwargs)
    elif key == "synthetic":
        # num_samples is the training set's size; the test set is a quarter of it unless num_test says.
        num_train = kwargs.pop("num_samples", 2048)
        num_test = kwargs.pop("num_test", max(num_train // 4, 1))
        ds = make_synthetic(num_train if train else num_test, train=train, **kwargs)
    else:
        raise ValueError(f"unknown dataset {name!r}, expected one of {', '.join(_DATASETS)}")
    if fraction != 1.0:
        ds = ds.fraction(fraction, seed=fraction_seed)
    if not augment:
        ds.pad, ds.flip = 0, False
    return ds


def _no_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise ValueError(f"dataset {name!r} takes no options, got {sorted(kwargs)}")
