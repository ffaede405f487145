"""Batches from an in-memory :class:`ImageDataset`: sharded, seeded per epoch, augmented as tensors.

Everything random in an epoch (the order and each image's crop and flip) is a function of
``(seed, epoch)`` alone, and the augmentation of an image does not depend on which batch, worker or
rank it lands in. So a run resumed at an epoch boundary sees exactly the batches of an uninterrupted
run, and N processes with batch B see the same global batches as one process with batch N·B.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dyrelu.data.dataset import ImageDataset

__all__ = ["BatchLoader", "augment_batch", "normalize_batch"]


def augment_batch(images: Tensor, offsets: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Random-crop-with-padding and horizontal flip of a uint8 batch, given each image's draw.

    Args:
        images: uint8 images.
        offsets: the crop's top-left corner in the zero-padded image, each in ``[0, 2 * pad]``.
        flips: whether to flip each image.
        pad: the zero padding on each side.

    Shape:
        - images: :math:`(B, C, H, W)`
        - offsets: :math:`(B, 2)` (row, column)
        - flips: :math:`(B,)`
        - output: :math:`(B, C, H, W)`

    Example:
        >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
        >>> augment_batch(x, torch.tensor([[1, 1]]), torch.tensor([True]), pad=1)[0, 0].tolist()
        [[1, 0], [3, 2]]
    """
    if pad > 0:
        b, _, h, w = images.shape
        padded = F.pad(images, (pad, pad, pad, pad))
        rows = offsets[:, 0:1] + torch.arange(h)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(w)  # (B, W)
        batch = torch.arange(b)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        images = images.permute(0, 3, 1, 2)
    if bool(flips.any()):
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
    return images.contiguous()


def normalize_batch(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 ``(B, C, H, W)`` to float32 ``(x / 255 - mean) / std`` per channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
    return (images.to(torch.float32) - mean_t) * scale


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63)


class _EpochBatches(Dataset):
    """Batch ``i`` of one epoch as a map-style item, so that DataLoader workers can build batches."""

    def __init__(self, loader: BatchLoader, batches: list[Tensor], offsets: Tensor | None, flips: Tensor | None):
        self.dataset = loader.dataset
        self.batches = batches
        self.offsets = offsets
        self.flips = flips

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        ds = self.dataset
        idx = self.batches[i]
        images = ds.images[idx]
        if self.offsets is not None:
            images = augment_batch(images, self.offsets[idx], self.flips[idx], ds.pad)
        return normalize_batch(images, ds.mean, ds.std), ds.labels[idx]


class BatchLoader:
    """Iterate over normalised float batches of an :class:`ImageDataset` (this rank's shard).

    Training (``train=True``): a fresh permutation each epoch (``set_epoch``) split over the ranks as
    :class:`torch.utils.data.DistributedSampler` does (the same sampler with one replica in a single
    process), incomplete last batches dropped, and the dataset's augmentation (random crop with its
    ``pad``, horizontal flip if its ``flip``). Evaluation: dataset order, rank ``r`` taking every
    ``world_size``-th image from ``r`` (nothing padded or repeated, so sums over ranks are exact).

    Args:
        dataset: the images.
        batch_size: images per batch on this rank.
        train: shuffle, augment and drop the last incomplete batch.
        seed: the seed of the per-epoch order and augmentation.
        rank: this process's rank. world_size: the number of processes.
        workers: DataLoader worker processes building the batches (0: in this process). Results do not
            depend on it.
        augment: apply the dataset's augmentation in training.

    Shape:
        - yields: images :math:`(B, C, H, W)` float32, labels :math:`(B,)` int64.

    Example:
        >>> from dyrelu.data import make_synthetic
        >>> loader = BatchLoader(make_synthetic(64, image_size=8), batch_size=16, train=True, seed=1)
        >>> loader.set_epoch(0)
        >>> [tuple(x.shape) for x, _ in loader][:2], len(loader)
        ([(16, 3, 8, 8), (16, 3, 8, 8)], 4)
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        augment: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"expected a positive batch size, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"expected 0 <= rank < world_size, got rank {rank} of {world_size}")
        if workers < 0:
            raise ValueError(f"expected workers >= 0, got {workers}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.workers = workers
        self.augment = augment and train and (dataset.pad > 0 or dataset.flip)
        self.epoch = 0
        self._sampler = (
            DistributedSampler(range(len(dataset)), world_size, rank, shuffle=True, seed=seed) if train else None
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = epoch

    def _indices(self) -> Tensor:
        if self._sampler is None:
            return torch.arange(self.rank, len(self.dataset), self.world_size)
        self._sampler.set_epoch(self.epoch)
        return torch.tensor(list(self._sampler), dtype=torch.int64)

    @property
    def drop_last(self) -> bool:
        shard = math.ceil(len(self.dataset) / self.world_size)
        return self.train and shard >= self.batch_size

    def __len__(self) -> int:
        if self._sampler is not None:
            shard = self._sampler.num_samples
        else:
            shard = len(range(self.rank, len(self.dataset), self.world_size))
        return shard // self.batch_size if self.drop_last else math.ceil(shard / self.batch_size)

    def _draws(self) -> tuple[Tensor | None, Tensor | None]:
        if not self.augment:
            return None, None
        n, pad = len(self.dataset), self.dataset.pad
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        if not self.dataset.flip:
            flips.zero_()
        return offsets, flips

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = self._indices()
        batches = list(indices.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        items = _EpochBatches(self, batches, *self._draws())
        if self.workers == 0:
            return (items[i] for i in range(len(items)))
        return iter(DataLoader(items, batch_size=None, shuffle=False, num_workers=self.workers))
