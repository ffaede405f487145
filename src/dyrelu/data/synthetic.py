"""A deterministic, learnable synthetic image set for tests and smoke runs (no files needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dyrelu.data.dataset import ImageDataset

__all__ = ["make_synthetic"]


def make_synthetic(
    num_samples: int = 1024,
    num_classes: int = 10,
    image_size: int = 16,
    channels: int = 3,
    noise: float = 0.35,
    seed: int = 0,
    train: bool = True,
) -> ImageDataset:
    """Images of class-dependent smooth patterns plus noise, reproducible from ``seed``.

    Each class has a prototype (low-resolution random pattern, upsampled), shared by the train and
    test splits of the same ``seed``; a sample is its prototype, shifted by up to 2 pixels, scaled in
    contrast and mixed with Gaussian noise. A small CNN learns it to high accuracy in a few epochs.

    Args:
        num_samples: N, the number of images (classes in turn, then shuffled).
        num_classes: the number of classes.
        image_size: the side of the square images.
        channels: C.
        noise: the noise's standard deviation relative to the patterns' range.
        seed: selects the prototypes; the train and test splits draw different samples from it.
        train: which split.

    Example:
        >>> ds = make_synthetic(8, num_classes=2, image_size=8, channels=1)
        >>> ds.images.shape, ds.images.dtype, ds.labels.tolist() == make_synthetic(8, 2, 8, 1).labels.tolist()
        (torch.Size([8, 1, 8, 8]), torch.uint8, True)
    """
    if num_samples < 0 or num_classes < 1 or image_size < 4 or channels < 1:
        raise ValueError(
            f"expected num_samples >= 0, num_classes >= 1, image_size >= 4 and channels >= 1, got {num_samples}, "
            f"{num_classes}, {image_size}, {channels}"
        )
    protos_gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=protos_gen)
    protos = F.interpolate(coarse, size=(image_size, image_size), mode="bicubic", align_corners=False)  # (K, C, H, W)
    samples_gen = torch.Generator().manual_seed(seed * 2 + (1 if train else 2) + 1_000_003)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=samples_gen)]
    images = protos[labels]
    shifts = torch.randint(-2, 3, (num_samples, 2), generator=samples_gen)
    if num_samples:
        images = torch.stack([img.roll(tuple(s.tolist()), dims=(1, 2)) for img, s in zip(images, shifts, strict=True)])
    contrast = 0.7 + 0.6 * torch.rand(num_samples, 1, 1, 1, generator=samples_gen)
    images = (images - 0.5) * contrast + 0.5 + noise * torch.randn(images.shape, generator=samples_gen)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    classes = [f"class_{i}" for i in range(num_classes)]
    return ImageDataset(images, labels, classes, name="synthetic", pad=0, flip=False)
