"""A deterministic keypoint task whose answer needs context: items pasted, scaled and rotated on a noisy canvas.

Each image is a ``image_size``×``image_size`` grey canvas with a smooth random texture and pixel noise,
zero to ``max_distractors`` small items anywhere on it, and one large *target* item drawn last, on top.
The target has :data:`KEYPOINT_NAMES`: the four corners of its own bounding box (in the item's frame,
before rotation) and its intensity centroid. Three things make a keypoint's location a matter of context
rather than of local appearance:

- a bounding-box corner is usually empty background (a T-shirt's top-left corner is beside the
  sleeve), so it is found from the item's extent, not from an edge under it;
- the item is rotated by up to ``max_rotation`` degrees (60 by default), so which corner is the
  "top-left" one depends on the item's orientation, read from its shape (no flips: rotation keeps
  left and right apart once "up" is known);
- distractor items look like the target (same sources, same brightness) but are smaller: the network
  must tell the target from them.

Items come from Fashion-MNIST (``items="fashion-mnist"``; the training split's items for ``split="train"``,
the test split's for ``split="test"``, so test items are unseen) or, with no files needed, from
procedurally drawn shapes with a clear "up" (``items="shapes"``: house, person, tree, T-shirt).

Sample ``i`` of a split is a function of ``(seed, split, i)`` and the task's settings alone (it has its own
random generators), so a set of ``N`` samples is the first ``N`` of any longer one, and nothing is stored:
the set is rendered in memory when asked for (about 0.3 ms per 64×64 sample).

Coordinates are in pixels with pixel centres at integers: ``(x, y) = (column, row)``; the image spans
``[-0.5, size - 0.5]``. Every keypoint lies in ``[margin, size - 1 - margin]`` on both axes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from dyrelu.data.canvas import _BBOX_THRESHOLD, _ITEM_SIZE, draw_background, item_boxes, place_item, render_canvases

__all__ = [
    "ITEM_SOURCES",
    "KEYPOINT_NAMES",
    "KeypointDataset",
    "draw_background",
    "item_boxes",
    "make_keypoint_dataset",
    "place_item",
    "render_canvases",
]

#: The target's keypoints, in the order of the heatmaps.
KEYPOINT_NAMES: tuple[str, ...] = ("top_left", "top_right", "bottom_right", "bottom_left", "centre")
#: Where the items come from.
ITEM_SOURCES: tuple[str, ...] = ("fashion-mnist", "shapes")
_SPLITS = ("train", "test")
_SHAPES_PER_SPLIT = 1000
_CHUNK = 256  # samples rendered per batched grid_sample call
# The normalisation of the images (x / 255 - mean) / std, measured on the default training set.
IMAGE_MEAN, IMAGE_STD = 0.30, 0.22


@dataclass
class KeypointDataset:
    """Images with one target item each and its keypoints, held in memory.

    Args:
        images: grey images, uint8.
        keypoints: ``(x, y)`` of each keypoint in pixels (pixel centres at integers).
        visible: whether each keypoint is labelled (always ``True`` for the generated sets).
        sizes: the target's size for PCK: the longer side of its own bounding box, in pixels.
        areas: the target's area for OKS: width × height of its own bounding box, in pixels².
        name: a short name for messages.

    Shape:
        - images: :math:`(N, 1, H, W)`
        - keypoints: :math:`(N, K, 2)`
        - visible: :math:`(N, K)`
        - sizes, areas: :math:`(N,)`

    Example:
        >>> ds = make_keypoint_dataset(4, image_size=32, items="shapes")
        >>> len(ds), ds.images.shape, ds.keypoints.shape, ds.num_keypoints
        (4, torch.Size([4, 1, 32, 32]), torch.Size([4, 5, 2]), 5)
    """

    images: Tensor
    keypoints: Tensor
    visible: Tensor
    sizes: Tensor
    areas: Tensor
    name: str = "keypoints"

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"{self.name}: expected uint8 images of shape (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.keypoints.dim() != 3 or self.keypoints.shape[0] != n or self.keypoints.shape[2] != 2:
            raise ValueError(f"{self.name}: expected keypoints of shape ({n}, K, 2), got {tuple(self.keypoints.shape)}")
        if self.visible.shape != self.keypoints.shape[:2]:
            raise ValueError(
                f"{self.name}: expected visible of shape {tuple(self.keypoints.shape[:2])}, got "
                f"{tuple(self.visible.shape)}"
            )
        for field_name in ("sizes", "areas"):
            if getattr(self, field_name).shape != (n,):
                raise ValueError(f"{self.name}: expected {field_name} of shape ({n},)")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])

    def subset(self, indices: Tensor | slice) -> KeypointDataset:
        """The samples at ``indices``."""
        return KeypointDataset(
            self.images[indices],
            self.keypoints[indices],
            self.visible[indices],
            self.sizes[indices],
            self.areas[indices],
            self.name,
        )


# -- item sources ---------------------------------------------------------------------------------------------


def _sample_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _draw_shape(g: torch.Generator) -> Tensor:
    """One 28×28 uint8 shape with an unambiguous "up" and a left-right mirror symmetry."""
    n = _ITEM_SIZE
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    kind = int(torch.randint(0, 4, (), generator=g))
    cx = 13.5 + u(-1.5, 1.5)
    top, bottom = u(1.0, 4.0), u(23.0, 26.5)
    height = bottom - top

    def rect(x0: float, x1: float, y0: float, y1: float) -> Tensor:
        return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)

    def triangle(apex: float, base: float, half: float) -> Tensor:  # apex up
        frac = ((yy - apex) / max(base - apex, 1e-3)).clamp(0, 1)
        return (yy >= apex) & (yy <= base) & ((xx - cx).abs() <= frac * half)

    if kind == 0:  # house: a body under a wider roof
        half = u(5.0, 8.0)
        split = top + height * u(0.3, 0.45)
        mask = rect(cx - half, cx + half, split, bottom) | triangle(top, split, half + u(1.0, 3.0))
    elif kind == 1:  # person: head, torso, two legs
        r = u(2.5, 3.8)
        head = (xx - cx) ** 2 + (yy - top - r) ** 2 <= r**2
        hip = top + 2 * r + height * u(0.3, 0.4)
        half = u(3.5, 5.5)
        torso = rect(cx - half, cx + half, top + 2 * r + 0.5, hip)
        gap = u(0.8, 2.0)
        legs = rect(cx - half, cx - gap, hip, bottom) | rect(cx + gap, cx + half, hip, bottom)
        mask = head | torso | legs
    elif kind == 2:  # tree: a triangular canopy on a narrow trunk
        split = top + height * u(0.6, 0.8)
        trunk = u(1.0, 2.0)
        mask = triangle(top, split, u(7.0, 11.0)) | rect(cx - trunk, cx + trunk, split, bottom)
    else:  # T-shirt: wide shoulders with sleeves over a narrower body
        half = u(5.0, 7.0)
        sleeve = top + height * u(0.25, 0.4)
        mask = rect(cx - half - u(3.0, 5.0), cx + half + u(3.0, 5.0), top, sleeve) | rect(
            cx - half, cx + half, top, bottom
        )
    shade = u(150.0, 230.0) + u(10.0, 25.0) * torch.sin(xx * u(0.3, 0.8) + yy * u(0.3, 0.8))  # a little texture
    return (mask.float() * shade).clamp(0, 255).round().to(torch.uint8)


@functools.lru_cache(maxsize=4)
def _item_bank(items: str, split: str, data_dir: str | None) -> tuple[Tensor, Tensor, Tensor]:
    """Item images ``(M, 28, 28)`` uint8, their bounding boxes ``(M, 4)`` (x0, y0, x1, y1) and centroids ``(M, 2)``.

    The bank does not depend on the data seed (like a real dataset's items); items with (almost) nothing
    above the threshold are dropped.
    """
    if items == "fashion-mnist":
        from dyrelu.data import load_fashion_mnist

        images = load_fashion_mnist(data_dir, train=split == "train").images[:, 0]
    else:
        images = torch.stack(
            [
                _draw_shape(torch.Generator().manual_seed(_sample_seed("shape", split, i)))
                for i in range(_SHAPES_PER_SPLIT)
            ]
        )
    keep = (images > _BBOX_THRESHOLD).flatten(1).sum(1) >= 8
    images = images[keep]
    boxes, centroids = item_boxes(images)
    return images.contiguous(), boxes, centroids


# -- rendering (the canvas primitives are in dyrelu.data.canvas; re-exported here) ----------------------------


def _render_chunk(
    seeds: list[int],
    bank: tuple[Tensor, Tensor, Tensor],
    box_list: list[list[float]],
    centroid_list: list[list[float]],
    size: int,
    max_distractors: int,
    max_rotation: float,
    target_scale: tuple[float, float],
    distractor_scale: tuple[float, float],
    margin: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    images_bank, boxes, _ = bank
    n = len(seeds)
    coarse = max(size // 8, 2)
    blobs, noise = torch.empty(n, 1, coarse, coarse), torch.empty(n, 1, size, size)
    levels = torch.empty(n, 3)  # background level, blob and noise amplitudes
    pastes: list[tuple[int, int, int, float, float, float, float, float, float]] = []  # sample, layer, item, ...
    keypoints = torch.empty(n, len(KEYPOINT_NAMES), 2)
    sizes, areas = torch.empty(n), torch.empty(n)
    max_rad = math.radians(max_rotation)
    for i, seed in enumerate(seeds):
        rng = random.Random(seed)  # scalars; random() is reproducible across Python versions

        def u(lo: float, hi: float, rng: random.Random = rng) -> float:
            return lo + (hi - lo) * rng.random()

        def pick(count: int, rng: random.Random = rng) -> int:
            return min(int(rng.random() * count), count - 1)

        blobs[i], noise[i], levels[i] = draw_background(rng, torch.Generator().manual_seed(seed), size)
        target_long = u(*target_scale) * size
        layers = pick(max_distractors + 1)
        for layer in range(layers):
            item = pick(len(box_list))
            placed = place_item(
                rng, box_list[item], u(*distractor_scale) * target_long, u(-math.pi, math.pi), size, 0.0
            )
            pastes.append((i, layer, item, *placed, u(0.6, 1.0)))
        item = pick(len(box_list))
        scale, c, s, tx, ty = place_item(rng, box_list[item], target_long, u(-max_rad, max_rad), size, margin)
        pastes.append((i, layers, item, scale, c, s, tx, ty, u(0.6, 1.0)))
        x0, y0, x1, y1 = box_list[item]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for k, (qx, qy) in enumerate([(x0, y0), (x1, y0), (x1, y1), (x0, y1), tuple(centroid_list[item])]):
            dx, dy = scale * (qx - cx), scale * (qy - cy)
            keypoints[i, k, 0], keypoints[i, k, 1] = tx + c * dx - s * dy, ty + s * dx + c * dy
        w, h = scale * (x1 - x0), scale * (y1 - y0)
        sizes[i], areas[i] = max(w, h), w * h
    return render_canvases(blobs, noise, levels, pastes, images_bank, boxes), keypoints, sizes, areas


def make_keypoint_dataset(
    num_samples: int,
    *,
    split: str = "train",
    seed: int = 0,
    image_size: int = 64,
    items: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    max_distractors: int = 2,
    max_rotation: float = 60.0,
    target_scale: tuple[float, float] = (0.45, 0.75),
    distractor_scale: tuple[float, float] = (0.3, 0.6),
    margin: float = 1.0,
) -> KeypointDataset:
    """Render samples ``0 .. num_samples - 1`` of the keypoint task's ``split`` for ``seed``.

    Args:
        num_samples: N.
        split: ``"train"`` or ``"test"``: different samples, and (Fashion-MNIST) items from that split.
        seed: the data seed; the same arguments always give the same images and keypoints.
        image_size: the canvas side in pixels (at least 16).
        items: ``"fashion-mnist"`` (needs the dataset's files) or ``"shapes"`` (drawn, no files).
        data_dir: the Fashion-MNIST folder (``None``: the system's, see :mod:`dyrelu.data`).
        max_distractors: each image has 0 to this many distractor items, uniformly.
        max_rotation: the target turns by a uniform angle in ``[-max_rotation, max_rotation]`` degrees
            (distractors by any angle).
        target_scale: the range of the target's long side, as a fraction of the canvas side (reduced
            when the rotated item would not fit).
        distractor_scale: the range of a distractor's long side, as a fraction of the target's.
        margin: keypoints stay at least this many pixels inside the outermost pixel centres.

    Returns:
        A :class:`KeypointDataset` with :data:`KEYPOINT_NAMES` keypoints, all visible.

    Raises:
        ValueError: a bad argument (the message names it and the expected values).
        dyrelu.data.DataError: ``items="fashion-mnist"`` and its files are missing.

    Example:
        >>> a = make_keypoint_dataset(3, image_size=32, items="shapes", seed=1)
        >>> b = make_keypoint_dataset(5, image_size=32, items="shapes", seed=1)
        >>> torch.equal(a.images, b.images[:3]) and torch.equal(a.keypoints, b.keypoints[:3])
        True
    """
    _check_arguments(
        num_samples, split, image_size, items, max_distractors, max_rotation, target_scale, distractor_scale, margin
    )
    bank = _item_bank(items, split, None if data_dir is None else str(data_dir))
    box_list, centroid_list = bank[1].tolist(), bank[2].tolist()
    name = f"keypoints-{items}-{split}"
    k = len(KEYPOINT_NAMES)
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    for start in range(0, num_samples, _CHUNK):
        seeds = [_sample_seed("keypoints", seed, split, i) for i in range(start, min(start + _CHUNK, num_samples))]
        parts.append(
            _render_chunk(
                seeds,
                bank,
                box_list,
                centroid_list,
                image_size,
                max_distractors,
                float(max_rotation),
                tuple(target_scale),
                tuple(distractor_scale),
                float(margin),
            )
        )
    if not parts:
        return KeypointDataset(
            torch.empty(0, 1, image_size, image_size, dtype=torch.uint8),
            torch.empty(0, k, 2),
            torch.empty(0, k, dtype=torch.bool),
            torch.empty(0),
            torch.empty(0),
            name,
        )
    images, keypoints, sizes, areas = (torch.cat(column) for column in zip(*parts, strict=True))
    return KeypointDataset(images, keypoints, torch.ones(len(images), k, dtype=torch.bool), sizes, areas, name)


def _check_arguments(
    num_samples: int,
    split: str,
    image_size: int,
    items: str,
    max_distractors: int,
    max_rotation: float,
    target_scale: tuple[float, float],
    distractor_scale: tuple[float, float],
    margin: float,
) -> None:
    """Raise ``ValueError`` naming the first of :func:`make_keypoint_dataset`'s arguments that is out of range."""
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {', '.join(_SPLITS)}")
    if items not in ITEM_SOURCES:
        raise ValueError(f"unknown item source {items!r}, expected one of {', '.join(ITEM_SOURCES)}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"expected num_samples to be an integer >= 0, got {num_samples!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"expected image_size to be an integer >= 16, got {image_size!r}")
    if not isinstance(max_distractors, int) or max_distractors < 0:
        raise ValueError(f"expected max_distractors to be an integer >= 0, got {max_distractors!r}")
    if not 0.0 <= max_rotation <= 180.0:
        raise ValueError(f"expected max_rotation in [0, 180] degrees, got {max_rotation}")
    for name, (lo, hi) in (("target_scale", target_scale), ("distractor_scale", distractor_scale)):
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"expected {name} as (low, high) with 0 < low <= high <= 1, got {(lo, hi)}")
    if not 0.0 <= margin < (image_size - 1) / 4:
        raise ValueError(f"expected margin in [0, {(image_size - 1) / 4}), got {margin}")
