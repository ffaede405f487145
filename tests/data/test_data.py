"""dyrelu.data: the loaders on small files written here, their error messages, the batch loader."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dyrelu.data import (
    FASHION_MNIST_DIR,
    BatchLoader,
    DataError,
    ImageDataset,
    augment_batch,
    create_dataset,
    list_datasets,
    load_cifar,
    load_fashion_mnist,
    load_image_folder,
    make_synthetic,
    read_idx,
)
from tests.datafiles import write_fashion_mnist, write_idx


# -- writers of small datasets (CIFAR, image folders; Fashion-MNIST's in tests.datafiles) ----------------
def _cifar_batch(n: int, label_key: str, num_classes: int, rng) -> dict:
    return {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key.encode(): [int(v) for v in rng.integers(0, num_classes, size=n)],
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def write_cifar10(root: Path, per_batch: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(_cifar_batch(per_batch, "labels", 10, rng), f, protocol=2)
    names = [n.encode() for n in ("airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return root


def write_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 5, size=(12, 10), mode="RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")
    return root


# -- Fashion-MNIST (IDX) ---------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.gz" if compress else "a"), array, compress)
    assert torch.equal(read_idx(path, 3), torch.from_numpy(array))


def test_load_fashion_mnist(tmp_path):
    write_fashion_mnist(tmp_path, n_train=30, n_test=12)
    train = load_fashion_mnist(tmp_path, train=True)
    test = load_fashion_mnist(tmp_path, train=False)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (12, 1, 28, 28)
    assert train.labels.tolist() == [i % 10 for i in range(30)]
    assert train.num_classes == 10 and train.classes[9] == "Ankle boot"
    assert train.pad == 2 and train.flip
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())[16:]
    assert train.images.flatten().tolist() == list(raw)


def test_fashion_mnist_uncompressed_files(tmp_path):
    write_fashion_mnist(tmp_path / "gz", n_train=10, n_test=10)
    for path in (tmp_path / "gz").iterdir():
        (tmp_path / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    assert len(load_fashion_mnist(tmp_path, train=True)) == 10


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "train-images-idx3-ubyte.gz" in message and "\n" not in message


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda b: b[:4] + b"\x00" * 4, "truncated"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic number"),
        (lambda b: b[:-5], "truncated or corrupt"),
    ],
)
def test_fashion_mnist_malformed(tmp_path, corrupt, expected):
    write_fashion_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(corrupt(gzip.decompress(path.read_bytes()))))
    with pytest.raises(DataError, match=expected):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_not_gzip(tmp_path):
    write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=r"cannot read .*t10k-labels"):
        load_fashion_mnist(tmp_path, train=False)


def test_fashion_mnist_count_mismatch(tmp_path):
    write_fashion_mnist(tmp_path, n_train=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(9))
    with pytest.raises(DataError, match=r"10 images but .* 9 labels"):
        load_fashion_mnist(tmp_path)


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST")
def test_real_fashion_mnist_test_set():
    test = create_dataset("fashion-mnist", train=False)
    assert test.images.shape == (10000, 1, 28, 28)
    assert test.labels.bincount().tolist() == [1000] * 10


# -- CIFAR -----------------------------------------------------------------------------------------
def test_load_cifar10(tmp_path):
    write_cifar10(tmp_path, per_batch=6)
    train = load_cifar(tmp_path, "cifar10", train=True)
    test = load_cifar(tmp_path / "cifar-10-batches-py", "cifar10", train=False)  # the folder itself works too
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    assert train.classes[1] == "car" and train.pad == 4
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    # rows hold the red plane, then green, then blue, each row-major
    assert torch.equal(train.images[0, 1].flatten(), torch.from_numpy(first[b"data"][0, 1024:2048]))
    assert train.labels[:6].tolist() == first[b"labels"]


def test_load_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 8), ("test", 4)):
        with open(folder / name, "wb") as f:
            pickle.dump(_cifar_batch(n, "fine_labels", 100, rng), f)  # current protocol: numpy's _frombuffer
    ds = create_dataset("cifar100", tmp_path, train=True)
    assert ds.images.shape == (8, 3, 32, 32) and ds.num_classes == 100


def test_cifar_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py not found .*https://www.cs.toronto.edu/~kriz/cifar"):
        load_cifar(tmp_path)
    with pytest.raises(DataError, match="--data-dir"):
        create_dataset("cifar10")


def test_cifar_refuses_code_in_pickles(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar(tmp_path, train=False)


def test_cifar_malformed_batch(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        load_cifar(tmp_path, train=False)


# -- image folder ----------------------------------------------------------------------------------
def test_image_folder_split_layout(tmp_path):
    write_image_folder(tmp_path / "train", per_class=4)
    write_image_folder(tmp_path / "val", per_class=2)
    train = load_image_folder(tmp_path, train=True, image_size=8)
    val = load_image_folder(tmp_path, train=False, image_size=8)
    assert train.images.shape == (8, 3, 8, 8) and val.images.shape == (4, 3, 8, 8)
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0] * 4 + [1] * 4


def test_image_folder_holdout_is_deterministic_and_disjoint(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b", "c"), per_class=10, mode="L")
    train = load_image_folder(tmp_path, train=True, image_size=10, test_fraction=0.2)
    test = load_image_folder(tmp_path, train=False, image_size=10, test_fraction=0.2)
    assert train.image_shape == (1, 10, 10)  # grayscale files give one channel
    assert len(train) == 24 and len(test) == 6 and test.labels.bincount().tolist() == [2, 2, 2]
    again = load_image_folder(tmp_path, train=False, image_size=10, test_fraction=0.2)
    assert torch.equal(test.images, again.images)
    train_set = {bytes(img.flatten().tolist()) for img in train.images}
    assert not any(bytes(img.flatten().tolist()) in train_set for img in test.images)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_image_folder(tmp_path / "empty")
    write_image_folder(tmp_path / "bad" / "train", per_class=2)
    write_image_folder(tmp_path / "bad" / "val", classes=("cat", "dog", "emu"), per_class=2)
    with pytest.raises(DataError, match="differ from those of"):
        load_image_folder(tmp_path / "bad", train=False)
    (tmp_path / "bad" / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_image_folder(tmp_path / "bad", train=True)


# -- synthetic, subsets, registry --------------------------------------------------------------------
def test_synthetic_is_deterministic_and_split():
    a = make_synthetic(64, num_classes=4, image_size=8, seed=3)
    b = make_synthetic(64, num_classes=4, image_size=8, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, make_synthetic(64, num_classes=4, image_size=8, seed=4).images)
    assert not torch.equal(a.images, make_synthetic(64, num_classes=4, image_size=8, seed=3, train=False).images)
    assert a.labels.bincount().tolist() == [16] * 4


def test_synthetic_classes_are_separable():
    train = make_synthetic(400, num_classes=4, image_size=8, seed=0)
    test = make_synthetic(100, num_classes=4, image_size=8, seed=0, train=False)
    means = torch.stack([train.images[train.labels == k].float().mean(0) for k in range(4)])
    dists = ((test.images.float()[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (dists.argmin(1) == test.labels).float().mean() > 0.6  # nearest class mean beats chance (0.25)


def test_fraction_is_stratified_and_deterministic():
    ds = make_synthetic(200, num_classes=10, image_size=4)
    sub = ds.fraction(0.1, seed=1)
    assert len(sub) == 20 and sub.labels.bincount().tolist() == [2] * 10
    assert torch.equal(sub.images, ds.fraction(0.1, seed=1).images)
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        ds.fraction(0.0)


def test_create_dataset_names_and_errors():
    assert set(list_datasets()) == {
        "cifar10",
        "cifar100",
        "cluttered-fashion-mnist",
        "fashion-mnist",
        "folder",
        "synthetic",
    }
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        create_dataset("imagenet")
    ds = create_dataset("synthetic", num_samples=40, num_test=8, image_size=6, channels=1)
    assert ds.images.shape == (40, 1, 6, 6)
    assert len(create_dataset("synthetic", train=False, num_samples=40)) == 10


def test_dataset_validation():
    with pytest.raises(DataError, match="expected labels in"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 5]), ["a", "b"])
    with pytest.raises(DataError, match="uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])


# -- batches and augmentation ------------------------------------------------------------------------
def test_augment_batch_matches_a_per_image_reference():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8, generator=gen)
    pad = 2
    offsets = torch.randint(0, 2 * pad + 1, (6, 2), generator=gen)
    flips = torch.tensor([True, False, True, False, False, True])
    got = augment_batch(images, offsets, flips, pad)
    for img, (dy, dx), flip, out in zip(images, offsets.tolist(), flips, got, strict=True):
        padded = torch.nn.functional.pad(img, (pad,) * 4)
        want = padded[:, dy : dy + 5, dx : dx + 7]
        assert torch.equal(out, want.flip(-1) if flip else want)


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_is_a_function_of_seed_and_epoch():
    ds = make_synthetic(64, image_size=8)
    ds.pad, ds.flip = 2, True
    a = _batches(BatchLoader(ds, 16, train=True, seed=5), 1)
    b = _batches(BatchLoader(ds, 16, train=True, seed=5), 1)
    c = _batches(BatchLoader(ds, 16, train=True, seed=5), 2)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])
    images = torch.cat([x for x, _ in a])
    assert images.dtype == torch.float32 and abs(images.mean()) < 0.5


def test_two_ranks_see_the_global_batches_of_one_process():
    ds = make_synthetic(70, image_size=6)
    ds.pad, ds.flip = 1, True
    single = _batches(BatchLoader(ds, 10, train=True, seed=2), 3)
    ranks = [_batches(BatchLoader(ds, 5, train=True, seed=2, rank=r, world_size=2), 3) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 7
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        key = lambda imgs, labels: sorted(  # noqa: E731
            (int(lab), img.flatten().tolist()) for img, lab in zip(imgs, labels, strict=True)
        )
        assert key(x, y) == key(torch.cat([x0, x1]), torch.cat([y0, y1]))


def test_eval_shards_cover_the_set_once():
    ds = make_synthetic(23, image_size=4)
    labels = [torch.cat([y for _, y in BatchLoader(ds, 4, train=False, rank=r, world_size=3)]) for r in range(3)]
    assert sum(len(lab) for lab in labels) == 23
    assert sorted(torch.cat(labels).tolist()) == sorted(ds.labels.tolist())


def test_drop_last_and_len():
    ds = make_synthetic(50, image_size=4)
    assert len(BatchLoader(ds, 16, train=True)) == 3
    assert len(BatchLoader(ds, 16, train=False)) == 4
    assert len(BatchLoader(ds, 64, train=True)) == 1  # fewer images than a batch: keep the one partial batch


def test_workers_give_the_same_batches():
    ds = make_synthetic(48, image_size=6)
    ds.pad, ds.flip = 1, True
    inline = _batches(BatchLoader(ds, 16, train=True, seed=1), 0)
    workers = _batches(BatchLoader(ds, 16, train=True, seed=1, workers=1), 0)
    assert all(torch.equal(x, y) and torch.equal(a, b) for (x, a), (y, b) in zip(inline, workers, strict=True))
