"""Users' images: one sub-folder per class, loaded once into memory at a fixed size."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dyrelu.data.dataset import DataError, ImageDataset

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_TRAIN_NAMES = ("train",)
_TEST_NAMES = ("val", "test")


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _split_dirs(root: Path, train: bool) -> Path | None:
    """``root/train`` or ``root/val`` (``root/test``) when the folder is split, else None."""
    if not any((root / name).is_dir() for name in _TRAIN_NAMES):
        return None
    for name in _TRAIN_NAMES if train else _TEST_NAMES:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root} has a train/ folder but no val/ or test/ folder for evaluation")


def _read_image(path: Path, size: int, mode: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return data.view(size, size, len(mode)).permute(2, 0, 1)


def _scan(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = [d.name for d in _class_dirs(folder)]
    if not classes:
        raise DataError(
            f"no class folders in {folder}: expected one sub-folder per class (for example {folder}/cat/1.png)"
        )
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        samples.extend((p, label) for p in files)
    if not samples:
        raise DataError(f"no images in the class folders of {folder} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return classes, samples


def _grayscale(samples: list[tuple[Path, int]]) -> bool:
    from PIL import Image

    for path, _ in samples[:64]:
        try:
            with Image.open(path) as img:
                if img.mode not in ("L", "1", "I;16", "I"):
                    return False
        except OSError:
            return False
    return True


def load_image_folder(
    root: str | os.PathLike,
    train: bool = True,
    image_size: int = 32,
    test_fraction: float = 0.1,
    channels: int | None = None,
) -> ImageDataset:
    """Images in one sub-folder per class, resized to ``image_size`` squares and kept as uint8.

    Two layouts: ``root/train/<class>/*`` with ``root/val/<class>/*`` (or ``test/``), or
    ``root/<class>/*``, of which a deterministic ``test_fraction`` of each class is the test set.
    Classes are the sub-folder names in sorted order.

    Args:
        root: the folder.
        train: the training split, else the test split.
        image_size: the side of the square images (bilinear resize).
        test_fraction: the held-out part of each class when ``root`` is not split.
        channels: 1 (grayscale) or 3 (RGB); ``None`` means 1 if the images are grayscale, else 3.

    Raises:
        DataError: no class folders, no images, an unreadable image, or splits with different classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: expected one sub-folder per class")
    split = _split_dirs(root, train)
    if split is not None:
        classes, samples = _scan(split)
        train_classes = [d.name for d in _class_dirs(root / "train")]
        if classes != train_classes:
            raise DataError(f"the classes of {split} ({classes}) differ from those of {root / 'train'}")
    else:
        classes, samples = _scan(root)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"expected test_fraction in (0, 1), got {test_fraction}")
        generator = torch.Generator().manual_seed(0)
        chosen = []
        for label in range(len(classes)):
            members = [s for s in samples if s[1] == label]
            order = torch.randperm(len(members), generator=generator)
            held = set(order[: round(test_fraction * len(members))].tolist())
            chosen.extend(s for i, s in enumerate(members) if (i in held) != train)
        samples = chosen
    if channels not in (None, 1, 3):
        raise ValueError(f"expected channels 1, 3 or None, got {channels}")
    mode = "L" if (channels == 1 or (channels is None and _grayscale(samples))) else "RGB"
    if samples:
        images = torch.stack([_read_image(path, image_size, mode) for path, _ in samples])
    else:
        images = torch.empty(0, len(mode), image_size, image_size, dtype=torch.uint8)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageDataset(images, labels, classes, name=f"folder:{root.name}", pad=max(image_size // 8, 1), flip=True)
