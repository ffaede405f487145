"""dyrelu.data.cluttered: cluttered Fashion-MNIST canvases from small IDX files written here."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dyrelu.cli import main
from dyrelu.data import FASHION_MNIST_CLASSES, DataError, create_dataset, list_datasets, make_cluttered_fashion_mnist
from dyrelu.data.canvas import item_boxes
from dyrelu.data.cluttered import _plan
from tests.datafiles import write_fashion_mnist, write_idx

NAME = "cluttered-fashion-mnist"
TALL, WIDE = 1, 8  # the hand-made items' labels: a vertical bar ("Trouser") and a horizontal one ("Bag")


def write_bars(folder: Path, n_train: int = 12, n_test: int = 6) -> Path:
    """Fashion-MNIST files whose items are solid bars: even images vertical (TALL), odd ones horizontal (WIDE)."""
    folder.mkdir(parents=True, exist_ok=True)
    tall = np.zeros((28, 28), dtype=np.uint8)
    tall[:, 12:16] = 255
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.stack([tall if i % 2 == 0 else tall.T for i in range(n)])
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.array([TALL if i % 2 == 0 else WIDE for i in range(n)]))
    return folder


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=40, n_test=20)


def test_registered():
    assert NAME in list_datasets()


def test_shapes_dtypes_and_defaults(fmnist):
    train = create_dataset(NAME, fmnist, train=True, image_size=24)
    test = create_dataset(NAME, fmnist, train=False, image_size=24)
    assert train.images.shape == (40, 1, 24, 24) and train.images.dtype == torch.uint8
    assert test.images.shape == (20, 1, 24, 24)
    assert train.labels.dtype == torch.int64 and tuple(train.classes) == FASHION_MNIST_CLASSES
    # One canvas per image of the split, the target being image i: the labels are the split's own.
    assert train.labels.tolist() == [i % 10 for i in range(40)] and test.labels.tolist() == [i % 10 for i in range(20)]
    assert len(train.mean) == len(train.std) == 1 and train.mean == test.mean and train.std == test.std
    assert (train.pad, train.flip) == (0, True)
    assert create_dataset(NAME, fmnist, augment=False, image_size=24).flip is False
    # The default canvas is 32×32; more canvases than images cycle through the images as targets.
    more = create_dataset(NAME, fmnist, num_samples=50, num_test=3)
    assert more.images.shape == (50, 1, 32, 32) and more.labels.tolist() == [i % 40 % 10 for i in range(50)]
    assert len(create_dataset(NAME, fmnist, train=False, num_samples=50, num_test=3)) == 3
    empty = create_dataset(NAME, fmnist, num_samples=0)
    assert empty.images.shape == (0, 1, 32, 32) and empty.labels.shape == (0,)


def test_deterministic_prefix_and_seeded(fmnist):
    a = make_cluttered_fashion_mnist(fmnist, image_size=20)
    b = make_cluttered_fashion_mnist(fmnist, image_size=20)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    head = make_cluttered_fashion_mnist(fmnist, image_size=20, num_samples=7)
    assert torch.equal(head.images, a.images[:7])
    other = make_cluttered_fashion_mnist(fmnist, image_size=20, seed=1)
    assert torch.equal(other.labels, a.labels) and not torch.equal(other.images, a.images)
    with_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(make_cluttered_fashion_mnist(fmnist, image_size=20).images, a.images)
    finally:
        torch.set_num_threads(with_threads)


def test_splits_use_only_their_own_images(tmp_path):
    """Train canvases do not change when the test files change, and the other way round."""
    first = write_fashion_mnist(tmp_path / "first", n_train=30, n_test=12, seed=0)
    second = write_fashion_mnist(tmp_path / "second", n_train=30, n_test=12, seed=1)
    mixed = tmp_path / "mixed"  # the first's training files, the second's test files
    mixed.mkdir()
    for path in first.glob("train-*"):
        shutil.copy(path, mixed / path.name)
    for path in second.glob("t10k-*"):
        shutil.copy(path, mixed / path.name)

    def images(root: Path, train: bool) -> torch.Tensor:
        return create_dataset(NAME, root, train=train, image_size=20).images

    assert torch.equal(images(mixed, True), images(first, True))
    assert torch.equal(images(mixed, False), images(second, False))
    assert not torch.equal(images(mixed, False), images(first, False))


def _longest_run(mask: torch.Tensor) -> torch.Tensor:
    """The longest run of ``True`` along the last dimension, per image: ``(N, H, W)`` -> ``(N,)``."""
    run = best = torch.zeros(mask.shape[:-1], dtype=torch.int64)
    for k in range(mask.shape[-1]):
        run = (run + 1) * mask[..., k]
        best = torch.maximum(best, run)
    return best.amax(-1)


def test_label_is_the_class_of_the_largest_item(tmp_path):
    """Hand-made items: vertical bars (TALL) and horizontal bars (WIDE); the target is upright and largest.

    Items are at least 0.6 bright and drawn opaque, so the target's long side is an unbroken line of at
    least 26 bright pixels (0.55 × 48). Across it, the target is at most 7 pixels thick and a distractor
    (at most 0.3 of its length) at most 14 long, and the texture is rarely as bright: the direction of the
    only line of 25 bright pixels gives the label.
    """
    data = write_bars(tmp_path)
    options = dict(image_size=48, max_rotation=0.0, num_distractors=3, distractor_scale=(0.2, 0.3))
    for train in (True, False):  # 12 training and 6 test items, 40 canvases each
        ds = create_dataset(NAME, data, train=train, num_samples=40, num_test=40, **options)
        bright = ds.images[:, 0] >= 140  # (N, H, W)
        long_columns = _longest_run(bright.transpose(1, 2)) >= 25
        long_rows = _longest_run(bright) >= 25
        assert (long_columns ^ long_rows).all()
        assert ds.labels.tolist() == [TALL if tall else WIDE for tall in long_columns.tolist()]
        assert ds.labels.tolist() == [TALL if i % 2 == 0 else WIDE for i in range(40)]


def test_the_plan_keeps_the_target_on_top_and_largest(fmnist):
    """The random draws: target i on the top layer, distractors other items, at most 0.6 of its long side."""
    images = create_dataset("fashion-mnist", fmnist).images[:, 0]
    boxes = item_boxes(images)[0].tolist()
    seeds, targets = list(range(100, 164)), [i % 40 for i in range(64)]
    backgrounds, pastes = _plan(seeds, targets, boxes, 32, 3, 30.0, (0.55, 0.85), (0.3, 0.6))
    assert len(backgrounds) == 64 and len(pastes) == 64 * 4

    def long_side(paste) -> float:
        x0, y0, x1, y1 = boxes[paste[2]]
        return paste[3] * max(x1 - x0, y1 - y0)

    for i, target in enumerate(targets):
        mine = [p for p in pastes if p[0] == i]
        top = max(mine, key=lambda p: p[1])
        assert top[1] == 3 and top[2] == target
        assert sorted(p[1] for p in mine) == [0, 1, 2, 3]
        assert all(p[2] != target and long_side(p) <= 0.6 * long_side(top) + 1e-6 for p in mine if p is not top)
        assert top[4] >= math.cos(math.radians(30)) - 1e-9 and long_side(top) <= 0.85 * 32 + 1e-6  # turned <= 30°


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 8}, "image_size to be an integer >= 16, got 8"),
        ({"image_size": "32"}, "image_size to be an integer >= 16, got '32'"),
        ({"num_distractors": -1}, "num_distractors to be an integer >= 0, got -1"),
        ({"num_distractors": 1.5}, "num_distractors to be an integer >= 0, got 1.5"),
        ({"seed": "a"}, "seed to be an integer, got 'a'"),
        ({"num_samples": -2}, "num_samples to be an integer >= 0 or None, got -2"),
        ({"num_samples": True}, "num_samples to be an integer >= 0 or None, got True"),
        ({"max_rotation": 200}, r"max_rotation in \[0, 180\] degrees, got 200"),
        ({"target_scale": (0.9, 0.5)}, r"target_scale as \(low, high\) with 0 < low <= high <= 1, got \(0.9, 0.5\)"),
        ({"target_scale": (0.5, 1.2)}, r"target_scale .* got \(0.5, 1.2\)"),
        ({"target_scale": 0.5}, r"target_scale .* got 0.5"),
        ({"distractor_scale": (0.3, 1.0)}, r"distractor_scale as \(low, high\) with 0 < low <= high < 1, got"),
        ({"colour": "red"}, r"unknown options \['colour'\] for dataset 'cluttered-fashion-mnist', expected some of"),
    ],
)
def test_options_are_validated(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):  # before any file is read
        create_dataset(NAME, tmp_path / "nowhere", **options)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        create_dataset(NAME, tmp_path / "nowhere")
    assert "apt-get install dataset-fashion-mnist" in str(info.value) and "--data-dir" in str(info.value)


def test_distractors_need_other_images(tmp_path):
    data = write_fashion_mnist(tmp_path, n_train=1, n_test=1)
    with pytest.raises(DataError, match="2 distractors need other images of the train split, but it holds 1"):
        create_dataset(NAME, data)
    assert len(create_dataset(NAME, data, num_distractors=0, num_samples=3)) == 3


def test_cli_trains_on_it(fmnist, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", NAME, "--data-dir", str(fmnist), "--image-size", "16", "--model", "mobilenetv2_035"]
    argv += ["--act", "dyrelu_b", "--epochs", "1", "--batch-size", "20", "--threads", "1", "--out", str(out)]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*argv, "--no-tensorboard", "--no-progress"]) == 0
    assert "epoch 1/1" in buffer.getvalue()
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == NAME and config["data_kwargs"] == {"image_size": 16}


def test_blank_items_are_placed_as_the_whole_frame(tmp_path):
    """An image with nothing above the item threshold still gets its canvas (and its label)."""
    tmp_path.mkdir(exist_ok=True)
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1, 4:20, 6:22] = 200
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.array([4, 5, 6]))
    ds = create_dataset(NAME, tmp_path, image_size=16)
    assert ds.labels.tolist() == [4, 5, 6] and ds.images.shape == (3, 1, 16, 16)
