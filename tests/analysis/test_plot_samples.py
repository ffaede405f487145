"""dyrelu.analysis.plot_samples: a grid of a dataset's images titled with their classes."""

from __future__ import annotations

import pytest
import torch

from dyrelu.analysis import plot_samples
from dyrelu.data import make_synthetic

CLASSES = ("zero", "one", "two", "three")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def gray() -> tuple[torch.Tensor, torch.Tensor]:
    ds = make_synthetic(10, num_classes=4, image_size=12, channels=1)
    return ds.images, ds.labels


def test_writes_a_png_of_the_grid(gray, tmp_path) -> None:
    images, labels = gray
    path = plot_samples(images, labels, CLASSES, tmp_path / "sub" / "samples.png", ncols=4, dpi=50)
    assert path == tmp_path / "sub" / "samples.png"
    width, height = png_size(path.read_bytes())
    assert width > height > 0  # 4 columns, 3 rows of square panels
    wide = plot_samples(images, labels, CLASSES, tmp_path / "wide.png", ncols=10, dpi=50)
    w10, h10 = png_size(wide.read_bytes())
    assert w10 > width and h10 < height  # one row of ten


def test_rgb_float_and_list_labels(tmp_path) -> None:
    ds = make_synthetic(3, num_classes=4, image_size=8, channels=3)
    floats = ds.images.float() / 255
    path = plot_samples(floats, ds.labels.tolist(), CLASSES, tmp_path / "rgb.png", dpi=40)
    assert path.stat().st_size > 0
    # images outside [0, 1] (normalised ones) are scaled by the batch's range
    normalised = (floats - 0.5) / 0.25
    assert plot_samples(normalised, ds.labels, CLASSES, tmp_path / "norm.png", dpi=40).stat().st_size > 0


def test_same_input_same_bytes(gray, tmp_path) -> None:
    images, labels = gray
    first = plot_samples(images, labels, CLASSES, tmp_path / "a.png", dpi=40).read_bytes()
    second = plot_samples(images.clone(), labels.clone(), list(CLASSES), tmp_path / "b.png", dpi=40).read_bytes()
    assert first == second


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": torch.zeros(2, 8, 8, dtype=torch.uint8)}, r"images of shape \(N, C, H, W\), got \(2, 8, 8\)"),
        ({"images": torch.zeros(0, 1, 8, 8, dtype=torch.uint8)}, r"at least one image, got \(0, 1, 8, 8\)"),
        ({"images": torch.zeros(2, 2, 8, 8, dtype=torch.uint8)}, r"1 \(grey\) or 3 \(RGB\) channels, got 2"),
        ({"images": torch.zeros(2, 1, 8, 8, dtype=torch.int64)}, r"uint8 or floating-point images, got torch.int64"),
        ({"labels": [0, 1, 2]}, r"one label per image \(2\), got 3"),
        ({"labels": [0, 4]}, r"labels in \[0, 4\) \(one per class\), got 4 at index 1"),
        ({"labels": [-1, 0]}, r"labels in \[0, 4\) \(one per class\), got -1 at index 0"),
        ({"ncols": 0}, "expected ncols to be a positive integer, got 0"),
    ],
)
def test_errors_name_the_bad_value(tmp_path, change: dict, message: str) -> None:
    args = {"images": torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "labels": [0, 1], "ncols": 8, **change}
    with pytest.raises(ValueError, match=message):
        plot_samples(args["images"], args["labels"], CLASSES, tmp_path / "bad.png", ncols=args["ncols"])
    assert not (tmp_path / "bad.png").exists()
