"""dyrelu.keypoints: the generator, heatmaps, metrics, model, training and checkpoints of the keypoint task."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dyrelu import DyReLUB, DyReLUC
from dyrelu.analysis import DYNAMICS_COLUMNS, dynamics_numbers
from dyrelu.data import FASHION_MNIST_DIR
from dyrelu.keypoints import (
    KEYPOINT_NAMES,
    KeypointConfig,
    KeypointNet,
    average_precision,
    build_keypoint_model,
    decode_heatmaps,
    evaluate_keypoint_checkpoint,
    evaluate_keypoints,
    fit_keypoints,
    gaussian_heatmaps,
    keypoint_datasets,
    keypoint_model_from_checkpoint,
    make_keypoint_dataset,
    oks,
    oks_ap,
    pck,
)
from dyrelu.keypoints.synthetic import IMAGE_MEAN, IMAGE_STD
from dyrelu.train import CheckpointError, TrainConfig, fit, read_metrics
from tests.pins import assert_clean_import, assert_pinned
from tests.runs import Stop, stop_after, without

TIMING = ("epoch_seconds", "epoch_cpu_seconds", "train_images_per_second")
TINY = {
    "items": "shapes",
    "image_size": 32,
    "num_train": 64,
    "num_test": 16,
    "batch_size": 16,
    "head_channels": 16,
    "threads": 1,
}


def tiny(**changes) -> KeypointConfig:
    return KeypointConfig(**{**TINY, "epochs": 1, **changes})


def without_timing(rows):
    return without(rows, TIMING)


def test_public_api_is_pinned_and_imports_no_vision_package():
    import dyrelu.keypoints

    assert_pinned(dyrelu.keypoints)
    assert_clean_import("dyrelu.keypoints")


# -- the generator ---------------------------------------------------------------------------------------------
def test_generator_is_deterministic_and_prefix_stable():
    a = make_keypoint_dataset(6, image_size=32, items="shapes", seed=3)
    b = make_keypoint_dataset(9, image_size=32, items="shapes", seed=3)
    for name in ("images", "keypoints", "visible", "sizes", "areas"):
        assert torch.equal(getattr(a, name), getattr(b, name)[:6]), name
    other_seed = make_keypoint_dataset(6, image_size=32, items="shapes", seed=4)
    test_split = make_keypoint_dataset(6, image_size=32, items="shapes", seed=3, split="test")
    assert not torch.equal(a.images, other_seed.images) and not torch.equal(a.images, test_split.images)
    assert a.images.dtype == torch.uint8 and a.keypoints.shape == (6, len(KEYPOINT_NAMES), 2)
    assert bool(a.visible.all())


@pytest.mark.parametrize("size", [16, 32, 64])
def test_keypoints_stay_inside_the_image(size):
    ds = make_keypoint_dataset(200, image_size=size, items="shapes", max_rotation=180.0, margin=1.0)
    assert float(ds.keypoints.min()) >= 1.0 - 1e-4 and float(ds.keypoints.max()) <= size - 2.0 + 1e-4
    # the corners are the target's box: opposite sides have the box's width and height
    corners = ds.keypoints[:, :4]
    width = (corners[:, 1] - corners[:, 0]).norm(dim=-1)
    height = (corners[:, 3] - corners[:, 0]).norm(dim=-1)
    assert torch.allclose(torch.maximum(width, height), ds.sizes, atol=1e-3)
    assert torch.allclose(width * height, ds.areas, rtol=1e-4)
    centroid = ds.keypoints[:, 4]  # the centroid lies inside the box: within the corners' range
    assert bool(((centroid >= corners.amin(1) - 1e-3) & (centroid <= corners.amax(1) + 1e-3)).all())


def test_rotation_zero_keeps_the_box_upright():
    ds = make_keypoint_dataset(20, image_size=32, items="shapes", max_rotation=0.0)
    top_left, top_right, bottom_right, bottom_left = ds.keypoints[:, :4].unbind(1)
    assert torch.allclose(top_left[:, 1], top_right[:, 1], atol=1e-4)
    assert torch.allclose(top_left[:, 0], bottom_left[:, 0], atol=1e-4)
    assert bool((bottom_right > top_left).all())


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_items():
    ds = make_keypoint_dataset(4, image_size=32, items="fashion-mnist", split="test")
    assert ds.images.shape == (4, 1, 32, 32) and float(ds.keypoints.max()) <= 30.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "val"}, "unknown split 'val', expected one of train, test"),
        ({"items": "mnist"}, "unknown item source 'mnist', expected one of fashion-mnist, shapes"),
        ({"image_size": 8}, "expected image_size to be an integer >= 16, got 8"),
        ({"max_rotation": 270}, r"expected max_rotation in \[0, 180\] degrees, got 270"),
        ({"target_scale": (0.8, 0.5)}, "expected target_scale as"),
    ],
)
def test_generator_errors_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_keypoint_dataset(2, **{"items": "shapes", **kwargs})


# -- heatmaps and metrics -----------------------------------------------------------------------------------------
def test_heatmaps_round_trip_within_a_quarter_pixel():
    gen = torch.Generator().manual_seed(0)
    keypoints = torch.rand(8, 5, 2, generator=gen) * 48 + 8  # off the heatmaps' border pixels (no shift there)
    for stride in (2, 4):
        hm = gaussian_heatmaps(keypoints, (64 // stride, 64 // stride), stride, sigma=1.5)
        coords, scores = decode_heatmaps(hm, stride)
        assert float((coords - keypoints).abs().max()) <= 0.25 * stride + 1e-4
        assert bool((scores > 0.7).all())
    hidden = gaussian_heatmaps(keypoints[:1], (16, 16), 4, 1.5, visible=torch.tensor([[True, False, True, True, True]]))
    assert float(hidden[0, 1].abs().max()) == 0.0 and float(hidden[0, 0].max()) > 0.7


def test_pck_oks_and_ap_match_hand_computed_values():
    target = torch.zeros(2, 2, 2)
    pred = torch.tensor([[[3.0, 4.0], [0.0, 1.0]], [[0.0, 6.0], [8.0, 0.0]]])  # distances 5, 1 / 6, 8
    sizes = torch.tensor([50.0, 70.0])  # tolerances 5 and 7 at alpha 0.1
    assert pck(pred, target, sizes, alpha=0.1) == 0.75  # 5 <= 5, 1 <= 5, 6 <= 7, 8 > 7
    assert pck(pred, target, sizes, alpha=0.1, visible=torch.tensor([[True, True], [False, True]])) == 2 / 3
    areas = torch.tensor([100.0, 400.0])
    expected = [
        (math.exp(-25 / (2 * 100 * 0.01)) + math.exp(-1 / (2 * 100 * 0.01))) / 2,
        (math.exp(-36 / (2 * 400 * 0.01)) + math.exp(-64 / (2 * 400 * 0.01))) / 2,
    ]
    values = oks(pred, target, areas, kappa=0.1)
    assert values.dtype == torch.float64 and values.tolist() == pytest.approx(expected, rel=1e-12)
    only_first = oks(pred, target, areas, kappa=0.1, visible=torch.tensor([[True, False], [False, False]]))
    assert only_first[0].item() == pytest.approx(math.exp(-12.5)) and math.isnan(only_first[1].item())
    # AP: ranked hits T, T, F, T -> precision envelope 1, 1, .75, .75 at recall .25, .5, .5, .75;
    # 51 recall levels (0 to .50) at 1, 25 levels (.51 to .75) at .75, 25 levels above .75 at 0
    hits = torch.tensor([True, True, False, True])
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), hits) == pytest.approx((51 + 25 * 0.75) / 101)
    assert average_precision(torch.tensor([0.6, 0.7, 0.8, 0.9]), hits.flip(0)) == pytest.approx((51 + 18.75) / 101)
    # OKS AP: thresholds .50-.60 hit T,T,F,T; .65-.80 hit T,F,F,T (26 levels at 1, 25 at .5);
    # .85-.90 hit T,F,F,F (26 levels at 1); .95 none
    per = oks_ap(torch.tensor([0.9, 0.6, 0.3, 0.8], dtype=torch.float64), torch.tensor([0.9, 0.8, 0.7, 0.6]))
    expected_ap = (3 * (51 + 18.75) + 4 * (26 + 12.5) + 2 * 26) / 101 / 10
    assert per["ap"] == pytest.approx(expected_ap) and per["ap75"] == pytest.approx(38.5 / 101)
    perfect = oks_ap(torch.ones(5, dtype=torch.float64), torch.rand(5))
    assert perfect == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}
    with_missing = oks_ap(torch.tensor([1.0, float("nan")], dtype=torch.float64), torch.tensor([0.5, 0.9]))
    assert with_missing["ap"] == 1.0


def test_metric_errors():
    with pytest.raises(ValueError, match=r"expected sizes of shape \(2,\), got \(3,\)"):
        pck(torch.zeros(2, 5, 2), torch.zeros(2, 5, 2), torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        oks(torch.zeros(2, 5, 2), torch.zeros(2, 4, 2), torch.ones(2))
    with pytest.raises(ValueError, match="positive kappa"):
        oks(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.ones(1), kappa=0.0)


def test_evaluating_an_empty_set_gives_every_metric_as_nan():
    model = build_keypoint_model(KeypointConfig(items="shapes", image_size=32))
    result = evaluate_keypoints(model, make_keypoint_dataset(0, image_size=32, items="shapes"))
    assert set(result) == {"loss", "pck", "oks", "ap", "ap50", "ap75", "count"} and result["count"] == 0
    assert all(math.isnan(result[key]) for key in result if key != "count")


# -- the network ----------------------------------------------------------------------------------------------
def test_keypoint_net_shapes_and_activation_sites():
    net = KeypointNet(5, backbone_act="dyrelu_b", head_act="dyrelu_c", output_stride=8, head_layers=2, head_channels=8)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 5, 16, 16) and net.heatmap_stride == 2
    assert sum(isinstance(m, DyReLUC) for m in net.head.modules()) == 2
    assert not any(isinstance(m, DyReLUC) for m in net.backbone.modules())
    assert any(isinstance(m, DyReLUB) for m in net.backbone.modules())
    resnet = KeypointNet(3, backbone="resnet10", head_layers=1, head_channels=8, output_stride=16)
    assert resnet(torch.randn(1, 1, 32, 32)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"cannot be cut at output_stride=64, expected one of \[2, 4, 8, 16, 32\]"):
        KeypointNet(5, output_stride=64, head_layers=2)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*head_layers = 8"):
        KeypointNet(5, output_stride=4, head_layers=3)


# -- training, checkpoints, resume ----------------------------------------------------------------------------
def test_fit_one_epoch_and_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = tiny(epochs=2, head_act="dyrelu_c", tau_start=5.0, tau_epochs=1.0)
    full = fit_keypoints(cfg, tmp_path / "full")
    assert [row["epoch"] for row in full.metrics] == [1, 2]
    with pytest.raises(Stop):  # killed right after the first epoch's checkpoint
        fit_keypoints(cfg, tmp_path / "split", log=stop_after(1))
    state = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert state["task"] == "keypoints" and state["epoch"] == 1 and state["scheduler"]["last_step"] == 4
    lines = []
    resumed = fit_keypoints(cfg, tmp_path / "split", resume=True, log=lines.append)
    assert any("resumed" in line and "after epoch 1" in line for line in lines) and resumed.resumed_epoch == 1
    assert without_timing(resumed.metrics) == without_timing(full.metrics)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    rows = read_metrics(tmp_path / "split")
    assert rows == resumed.metrics
    assert {"test_ap", "test_ap50", "test_pck", "test_oks", "test_loss", "train_loss", "tau"} <= set(rows[0])
    assert set(DYNAMICS_COLUMNS) <= set(rows[0])  # resumed dynamics equal the uninterrupted run's (above)
    assert 0.0 <= rows[-1]["test_ap"] <= 1.0 and 0.0 <= rows[-1]["test_pck"] <= 1.0
    # the checkpoint alone rebuilds the network: same evaluation
    model, state = keypoint_model_from_checkpoint(tmp_path / "split")
    assert [m.tau for m in model.modules() if isinstance(m, DyReLUC)] == [pytest.approx(1.0)] * 2
    assert "taus" not in state  # τ is in the model's state dict
    # A checkpoint of dyrelu 0.1 (format 1) kept τ beside the weights, in "taus": it still loads with its τ.
    old = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    names = [k.removesuffix(".temperature") for k in old["model"] if k.endswith(".temperature")]
    old["model"] = {k: v for k, v in old["model"].items() if not k.endswith(".temperature")}
    old.update(version=1, taus=dict.fromkeys(names, 1.0))
    torch.save(old, tmp_path / "old.pt")
    old_model, _ = keypoint_model_from_checkpoint(tmp_path / "old.pt")
    assert len(names) == 2 and [m.tau for m in old_model.modules() if isinstance(m, DyReLUC)] == [1.0, 1.0]
    again = evaluate_keypoint_checkpoint(tmp_path / "split", batch_size=32, device="cpu", threads=1)
    assert again["ap"] == pytest.approx(rows[-1]["test_ap"]) and again["pck"] == pytest.approx(rows[-1]["test_pck"])


def test_fit_restores_the_thread_count():
    threads = torch.get_num_threads()
    fit_keypoints(tiny(threads=threads + 1))
    assert torch.get_num_threads() == threads
    few = make_keypoint_dataset(8, image_size=32, items="shapes")
    with pytest.raises(ValueError, match="expected at least batch_size"):  # also when the run fails
        fit_keypoints(tiny(threads=threads + 1), train_set=few, test_set=few)
    assert torch.get_num_threads() == threads


def test_fit_logs_the_dynamics_of_dyrelu_layers_only(tmp_path):
    cfg = tiny(head_act="dyrelu_b", dynamics_images=8)
    result = fit_keypoints(cfg, tmp_path / "dy")
    (row,) = result.metrics
    assert set(DYNAMICS_COLUMNS) <= set(read_metrics(tmp_path / "dy")[0])
    assert 0.0 <= row["dyn_median"] <= row["dyn_max"] and row["dyn_b_median"] >= 0.0
    # the first 8 test images, normalised as the network is fed: the final model gives the same numbers
    images = (keypoint_datasets(cfg)[1].images[:8].float() / 255.0 - IMAGE_MEAN) / IMAGE_STD
    assert dynamics_numbers(result.model, images) == {key: row[key] for key in DYNAMICS_COLUMNS}
    assert fit_keypoints(cfg).metrics[0] | dict.fromkeys(TIMING) == row | dict.fromkeys(TIMING)  # deterministic
    for config in (tiny(), cfg.replace(dynamics_images=0)):  # no DY-ReLU layer; not asked for
        assert not set(DYNAMICS_COLUMNS) & set(fit_keypoints(config).metrics[0])
    with pytest.raises(ValueError, match="expected dynamics_images an integer >= 0, got -1"):
        tiny(dynamics_images=-1)


def test_checkpoint_errors(tmp_path):
    fit_keypoints(tiny(), tmp_path / "kp")
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        fit_keypoints(tiny(), tmp_path / "kp")
    with pytest.raises(CheckpointError, match="head_act='relu', this run has head_act='dyrelu_a'"):
        fit_keypoints(tiny(epochs=2, head_act="dyrelu_a"), tmp_path / "kp", resume=True)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    train = TrainConfig(
        model="tiny", data="synthetic", data_kwargs={"num_samples": 32, "image_size": 8, "num_classes": 4}, epochs=1
    )
    fit(train.replace(batch_size=16, threads=1, tensorboard=False), tmp_path / "cls", model=net)
    with pytest.raises(CheckpointError, match="not a keypoint checkpoint"):
        keypoint_model_from_checkpoint(tmp_path / "cls")
    state = torch.load(tmp_path / "kp" / "last.pt", weights_only=True)
    state["model"] = {name: value[..., :1] if value.dim() else value for name, value in state["model"].items()}
    with pytest.raises(CheckpointError, match="the weights in the checkpoint do not fit the model"):
        keypoint_model_from_checkpoint(state)
