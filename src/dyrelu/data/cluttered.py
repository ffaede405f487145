"""Cluttered Fashion-MNIST: classify the large item on a textured canvas among smaller distractor items.

The paper argues that DY-ReLU's hyper function helps because it encodes the input's *global context*:
ImageNet photographs differ wildly from one another, while Fashion-MNIST items are centred, upright and
alike, so a per-image activation has little to adapt to there. This set restores some of that variety
with the canvas machinery it shares with the keypoint task (:mod:`dyrelu.data.canvas`): canvas ``i`` of
a split holds the split's Fashion-MNIST image ``i mod M`` (the *target*, ``M`` images in the split),
scaled and turned, on a smooth random texture with pixel noise, among ``num_distractors`` smaller items
drawn from the other images of the same split; its label is the target's class.

What a canvas holds (``image_size`` S, 32 by default):

- a grey background: a random level in [0.1, 0.35] plus a smooth blob field and pixel noise;
- ``num_distractors`` (2) distractors: other images of the same split, chosen uniformly, each turned by
  any angle, with a long side (of the item's own bounding box) of ``distractor_scale`` (0.3-0.6) times
  the target's, anywhere on the canvas and possibly under the target;
- the target, drawn last: its long side ``target_scale`` (0.55-0.85) times S, less if the turned item
  would not fit, turned by at most ``max_rotation`` (30) degrees, always wholly inside the canvas.

Items are drawn opaque (``render_canvases(..., opaque=True)``): an item shows its own Fashion-MNIST
intensity times a brightness in [0.6, 1] (the same range for target and distractors, so brightness gives
nothing away) and hides what lies under it wherever its intensity reaches the keypoint task's item
threshold. (The keypoint task blends with the intensity as alpha instead; there a distractor under a
mid-grey target shows through it, which would put a second item's pixels inside the one to classify.)

Why the task is well-posed: exactly one item is the target, and it is identifiable from the image alone:
it is the largest item (its long side is at least ``1 / distractor_scale[1]`` times any distractor's,
1.67× by default; validation keeps ``distractor_scale`` below 1), it lies on top and whole inside the
canvas (never occluded, never cut), and it is near upright where distractors take any angle. Finding it
needs the whole canvas (the sizes of all items compared), which is the context the paper's hyper function
reads; its class is then as well defined as in Fashion-MNIST itself. Distractors may share the target's
class; that does not change the answer. The task is harder than Fashion-MNIST: besides the clutter, dim
items (light garments are dark in Fashion-MNIST's negated images) stand out less from the texture than
from a black background, though their outlines show.

Splits never mix: training canvases use only the training images (target and distractors), test canvases
only the test images. Canvas ``i`` is a function of ``(seed, split, i)`` and the split's images alone
(its own random generators), so the same arguments give byte-identical images, and ``num_samples=N``
gives the first N canvases of any longer set. The whole set is rendered in memory when asked for, in
batched chunks; nothing is cached on disk: 60,000 training canvases of 32×32 take about 10 s on one
thread, a small fraction of one training epoch on them.

Augmentation defaults: horizontal flips (a mirrored item keeps its class, and mirroring keeps which item
is the largest and on top), no random crop (placement is already random, and a crop could cut the target,
which the generator keeps whole).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dyrelu.data.canvas import draw_background, item_boxes, place_item, render_canvases
from dyrelu.data.dataset import DataError, ImageDataset
from dyrelu.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["CLUTTERED_OPTIONS", "make_cluttered_fashion_mnist"]

#: The options of :func:`make_cluttered_fashion_mnist` besides ``root`` and ``train``.
CLUTTERED_OPTIONS: tuple[str, ...] = (
    "distractor_scale",
    "image_size",
    "max_rotation",
    "num_distractors",
    "num_samples",
    "seed",
    "target_scale",
)
# Statistics of the default training set (60,000 canvases of 32×32, seed 0; scaled to [0, 1]): fixed, so
# that both splits and every subset normalise alike.
_MEAN, _STD = (0.2975,), (0.1885,)
_CHUNK = 1024  # canvases rendered per batched call
_FULL_BOX = (0.0, 0.0, 27.0, 27.0)  # the box of an item with no pixel above the threshold: the whole frame


def _canvas_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed per canvas, stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.blake2b(f"cluttered/{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _plan(
    seeds: Sequence[int],
    targets: Sequence[int],
    box_list: Sequence[Sequence[float]],
    size: int,
    num_distractors: int,
    max_rotation: float,
    target_scale: tuple[float, float],
    distractor_scale: tuple[float, float],
) -> tuple[list[tuple[Tensor, Tensor, Tensor]], list[tuple[int, int, int, float, float, float, float, float, float]]]:
    """The random draws of a chunk: each canvas's background and its pastes for ``render_canvases``.

    Canvas ``i`` of the chunk gets ``targets[i]`` on layer ``num_distractors`` (on top) and distractors on
    layers ``0 .. num_distractors - 1``, other items than the target. The target is placed first, so that
    the distractors' sizes are relative to its actual (fitted) long side.
    """
    count = len(box_list)
    max_rad = math.radians(max_rotation)
    backgrounds = []
    pastes: list[tuple[int, int, int, float, float, float, float, float, float]] = []
    for i, (seed, target) in enumerate(zip(seeds, targets, strict=True)):
        rng = random.Random(seed)  # scalars; random() is reproducible across Python versions

        def u(lo: float, hi: float, rng: random.Random = rng) -> float:
            return lo + (hi - lo) * rng.random()

        backgrounds.append(draw_background(rng, torch.Generator().manual_seed(seed), size))
        box = box_list[target]
        placed = place_item(rng, box, u(*target_scale) * size, u(-max_rad, max_rad), size, 0.0)
        target_long = placed[0] * max(box[2] - box[0], box[3] - box[1], 1.0)
        pastes.append((i, num_distractors, target, *placed, u(0.6, 1.0)))
        for layer in range(num_distractors):
            other = min(int(rng.random() * (count - 1)), count - 2)
            other += other >= target  # any item but the target
            long_side = u(*distractor_scale) * target_long
            placed = place_item(rng, box_list[other], long_side, u(-math.pi, math.pi), size, 0.0)
            pastes.append((i, layer, other, *placed, u(0.6, 1.0)))
    return backgrounds, pastes


def make_cluttered_fashion_mnist(
    root: str | os.PathLike | None = None,
    *,
    train: bool = True,
    num_samples: int | None = None,
    image_size: int = 32,
    num_distractors: int = 2,
    seed: int = 0,
    max_rotation: float = 30.0,
    target_scale: tuple[float, float] = (0.55, 0.85),
    distractor_scale: tuple[float, float] = (0.3, 0.6),
) -> ImageDataset:
    """Canvases ``0 .. num_samples - 1`` of cluttered Fashion-MNIST's training or test split.

    See :mod:`dyrelu.data.cluttered` for what a canvas holds and why its label is well defined.
    Building the full training set (60,000 canvases, 32×32, 2 distractors) took about 10 s with one
    thread on a busy 2-core machine (19 s at 48×48), the test set (10,000) 1-2 s; the images do not
    depend on the thread count.

    Args:
        root: the Fashion-MNIST folder (``None``: :data:`~dyrelu.data.FASHION_MNIST_DIR`).
        train: the training split (canvases from training images only), else the test split.
        num_samples: the number of canvases N; ``None``: one per image of the split. Canvas ``i``'s
            target is image ``i mod M`` of the split's ``M`` images.
        image_size: the canvas side S in pixels (at least 16).
        num_distractors: distractor items per canvas (0 gives the target alone on the texture).
        seed: the data seed; the same arguments always give the same images.
        max_rotation: the target turns by a uniform angle in ``[-max_rotation, max_rotation]`` degrees.
        target_scale: the range of the target's long side, as a fraction of S.
        distractor_scale: the range of a distractor's long side, as a fraction of the target's; below 1,
            so that the target stays the largest item.

    Returns:
        An :class:`~dyrelu.data.ImageDataset` of 1×S×S uint8 canvases with the target's class as label,
        Fashion-MNIST's classes, fixed normalisation statistics, horizontal flips and no crop.

    Shape:
        - images: :math:`(N, 1, S, S)`
        - labels: :math:`(N,)`

    Raises:
        DataError: the Fashion-MNIST files are missing (the message says how to get them) or the split
            has too few images.
        ValueError: a bad option (the message names it and the expected values).

    Example:
        >>> ds = make_cluttered_fashion_mnist(train=False, num_samples=4)  # doctest: +SKIP
        >>> ds.images.shape, ds.labels.tolist()  # doctest: +SKIP
        (torch.Size([4, 1, 32, 32]), [9, 2, 1, 1])
    """
    _check_options(num_samples, image_size, num_distractors, seed, max_rotation, target_scale, distractor_scale)
    split = "train" if train else "test"
    name = f"cluttered-fashion-mnist-{split}"
    source = load_fashion_mnist(root, train=train)
    items, item_labels = source.images[:, 0].contiguous(), source.labels
    count = len(items)
    num = count if num_samples is None else num_samples
    if num and count == 0:
        raise DataError(f"{name}: the Fashion-MNIST {split} split holds no images, expected at least 1")
    if num and num_distractors and count < 2:
        raise DataError(
            f"{name}: {num_distractors} distractors need other images of the {split} split, but it holds {count}"
        )
    boxes, _ = item_boxes(items)
    empty = boxes[:, 0] > boxes[:, 2]  # nothing above the threshold: place the whole frame
    boxes[empty] = torch.tensor(_FULL_BOX)
    box_list = boxes.tolist()
    targets = [i % count for i in range(num)] if num else []
    parts = []
    for start in range(0, num, _CHUNK):
        stop = min(start + _CHUNK, num)
        seeds = [_canvas_seed(seed, split, i) for i in range(start, stop)]
        backgrounds, pastes = _plan(
            seeds,
            targets[start:stop],
            box_list,
            image_size,
            num_distractors,
            float(max_rotation),
            tuple(target_scale),
            tuple(distractor_scale),
        )
        blobs, noise, levels = (torch.stack(column) for column in zip(*backgrounds, strict=True))
        parts.append(render_canvases(blobs, noise, levels, pastes, items, boxes, opaque=True))
    images = torch.cat(parts) if parts else torch.empty(0, 1, image_size, image_size, dtype=torch.uint8)
    labels = item_labels[torch.tensor(targets, dtype=torch.int64)]
    return ImageDataset(images, labels, FASHION_MNIST_CLASSES, _MEAN, _STD, name=name, pad=0, flip=True)


def _check_options(
    num_samples: Any,
    image_size: Any,
    num_distractors: Any,
    seed: Any,
    max_rotation: Any,
    target_scale: Any,
    distractor_scale: Any,
) -> None:
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if num_samples is not None and (not is_int(num_samples) or num_samples < 0):
        raise ValueError(f"expected num_samples to be an integer >= 0 or None, got {num_samples!r}")
    if not is_int(image_size) or image_size < 16:
        raise ValueError(f"expected image_size to be an integer >= 16, got {image_size!r}")
    if not is_int(num_distractors) or num_distractors < 0:
        raise ValueError(f"expected num_distractors to be an integer >= 0, got {num_distractors!r}")
    if not is_int(seed):
        raise ValueError(f"expected seed to be an integer, got {seed!r}")
    if isinstance(max_rotation, bool) or not isinstance(max_rotation, int | float) or not 0 <= max_rotation <= 180:
        raise ValueError(f"expected max_rotation in [0, 180] degrees, got {max_rotation!r}")
    for option, value, top in (("target_scale", target_scale, "<= 1"), ("distractor_scale", distractor_scale, "< 1")):
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            lo = hi = math.nan
        if not (0 < lo <= hi <= 1) or (option == "distractor_scale" and hi >= 1):
            raise ValueError(f"expected {option} as (low, high) with 0 < low <= high {top}, got {value!r}")
