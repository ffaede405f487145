"""dyrelu.analysis: hooks, coefficients, the dynamic range, the figures and the JSON summary."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from dyrelu import DyReLUA, DyReLUB, DyReLUC
from dyrelu.analysis import (
    FILES,
    collect_dynamics,
    dynamic_range,
    dyrelu_layers,
    plot_attention,
    plot_coefficients,
    plot_dynamic_range,
    plot_dynamics_grid,
    plot_scatter,
    visualize_dynamics,
)
from dyrelu.data import make_synthetic, normalize_batch

MAX_PNG_BYTES = 300_000


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        DyReLUB(8),
        nn.Conv2d(8, 8, 3, padding=1),
        DyReLUC(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    ds = make_synthetic(24, num_classes=4, image_size=8, channels=3)
    return normalize_batch(ds.images, ds.mean, ds.std)


@pytest.fixture(scope="module")
def trained(images: torch.Tensor) -> nn.Sequential:
    """The tiny network after a few SGD steps on synthetic images (the coefficients then depend on the input)."""
    torch.manual_seed(0)
    net = tiny_net()
    labels = make_synthetic(24, num_classes=4, image_size=8, channels=3).labels
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(net(images), labels).backward()
        opt.step()
    return net.eval()


def perturbed(module: nn.Module, std: float = 0.5) -> nn.Module:
    """``module`` with a random last FC: its coefficients now depend on the input."""
    with torch.no_grad():
        module.fc2_weight.normal_(0.0, std, generator=torch.Generator().manual_seed(1))
    return module


def test_dyrelu_layers_finds_every_variant_in_order() -> None:
    net = nn.Sequential(DyReLUA(4), nn.ReLU(), nn.Sequential(DyReLUB(4), DyReLUC(4)))
    assert [name for name, _ in dyrelu_layers(net)] == ["0", "2.0", "2.1"]
    assert dyrelu_layers(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())) == []


def test_collect_shapes_and_indices(trained: nn.Sequential, images: torch.Tensor) -> None:
    layers = collect_dynamics(trained, images, points_per_layer=100, attention_images=3, batch_size=10)
    assert [(layer.name, layer.variant, layer.channels, layer.k) for layer in layers] == [
        ("1", "B", 8, 2),
        ("3", "C", 8, 2),
    ]
    per_image = -(-100 // 24)
    for layer in layers:
        assert layer.a.shape == layer.b.shape == (24, 8, 2) and layer.num_images == 24
        assert layer.x.shape == layer.y.shape == layer.image.shape == (24 * per_image,)
        assert torch.equal(layer.image.bincount(minlength=24), torch.full((24,), per_image))
    assert layers[0].attention is None and layers[0].attention_stats is None
    assert layers[1].attention.shape == (3, 8, 8)
    stats = layers[1].attention_stats
    assert 0.0 <= stats["min"] <= stats["mean"] <= stats["max"] <= 1.0 and stats["dynamic_range"] > 0


def test_coefficients_are_the_modules_own(trained: nn.Sequential, images: torch.Tensor) -> None:
    layers = collect_dynamics(trained, images, points_per_layer=24)
    with torch.no_grad():
        first = trained[0](images)
        a, b = trained[1].hyper(first)
        pi = trained[3]._scale(trained[2](trained[1](first)))
    torch.testing.assert_close(layers[0].a, a)
    torch.testing.assert_close(layers[0].b, b)
    torch.testing.assert_close(layers[1].attention, pi[:4, 0])


def test_samples_are_input_output_pairs() -> None:
    """A fresh DY-ReLU-B is ReLU, so every sampled output is the ReLU of its input."""
    net = nn.Sequential(nn.Conv2d(3, 6, 3), DyReLUB(6))
    (layer,) = collect_dynamics(net, torch.randn(5, 3, 7, 7), points_per_layer=500)
    assert torch.equal(layer.y, layer.x.clamp_min(0))
    assert layer.dynamic_range_a == 0.0 and layer.dynamic_range_b == 0.0


def test_channels_last_module() -> None:
    """Tokens (N, L, C) into a channels-last DY-ReLU: coefficients from the input moved to (N, C, L)."""
    act = perturbed(DyReLUB(8, channels_last=True))
    net = nn.Sequential(nn.Linear(4, 8), act)
    tokens = torch.randn(6, 5, 4)
    (layer,) = collect_dynamics(net, tokens, points_per_layer=60)
    with torch.no_grad():
        a, b = act.hyper(net[0](tokens).movedim(-1, 1))
        expected = net(tokens)
    torch.testing.assert_close(layer.a, a)
    torch.testing.assert_close(layer.b, b)
    assert layer.a.shape == (6, 8, 2)
    assert bool(torch.isin(layer.y, expected.flatten()).all())


def test_deterministic_and_independent_of_batching(trained: nn.Sequential, images: torch.Tensor) -> None:
    one = collect_dynamics(trained, images, points_per_layer=200, batch_size=24, seed=3)
    two = collect_dynamics(trained, images, points_per_layer=200, batch_size=5, seed=3)
    other = collect_dynamics(trained, images, points_per_layer=200, batch_size=24, seed=4)
    for a, b, c in zip(one, two, other, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.image, b.image)
        torch.testing.assert_close(a.a, b.a)
        assert not torch.equal(a.x, c.x)


def test_restores_the_training_mode(images: torch.Tensor) -> None:
    net = tiny_net().train()
    collect_dynamics(net, images, points_per_layer=10)
    assert net.training and not net._forward_hooks and not net[1]._forward_hooks


@pytest.mark.parametrize("cls", [DyReLUA, DyReLUB, DyReLUC])
def test_dynamic_range_zero_when_static_positive_when_dynamic(cls: type[nn.Module]) -> None:
    x = torch.randn(16, 3, 6, 6)
    fresh = nn.Sequential(nn.Conv2d(3, 8, 3), cls(8))
    (static,) = collect_dynamics(fresh, x, points_per_layer=32)
    assert static.dynamic_range_a < 1e-7 and static.dynamic_range_b < 1e-7
    assert static.dynamic_range_a == 0.0 and static.dynamic_range_b == 0.0  # the last FC is zero: exactly
    perturbed(fresh[1])
    (dynamic,) = collect_dynamics(fresh, x, points_per_layer=32)
    assert dynamic.dynamic_range_a > 1e-3 and dynamic.dynamic_range_b > 1e-3
    assert dynamic.a.shape == (16, 1 if cls is DyReLUA else 8, 2)


def test_dynamic_range_reference_values_and_errors() -> None:
    c = torch.tensor([[[1.0, 0.0], [2.0, 5.0]], [[3.0, 0.0], [2.0, 1.0]]])  # (N=2, C=2, K=2)
    # population stds across the 2 inputs: (1, 0) for channel 0, (0, 2) for channel 1 -> mean 0.75
    assert dynamic_range(c) == pytest.approx(0.75)
    assert dynamic_range(c[:1]) == 0.0
    with pytest.raises(ValueError, match=r"expected coefficients of shape \(N, C', K\), got \(2, 4\)"):
        dynamic_range(c.flatten(1))
    with pytest.raises(ValueError, match="at least one input"):
        dynamic_range(c[:0])


def test_errors_name_the_bad_value(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"at least one DY-ReLU layer .* found none in Sequential"):
        collect_dynamics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), images)
    with pytest.raises(ValueError, match=r"non-empty batch of images \(N, \*\), got \(0, 3, 8, 8\)"):
        collect_dynamics(tiny_net(), images[:0])
    with pytest.raises(ValueError, match="expected points_per_layer to be an integer >= 1, got 0"):
        collect_dynamics(tiny_net(), images, points_per_layer=0)
    with pytest.raises(ValueError, match="expected num_panels to be a positive integer, got 0"):
        plot_dynamics_grid(collect_dynamics(tiny_net(), images[:2]), "unused.png", num_panels=0)


def test_plots_one_panel_per_layer(trained: nn.Sequential, images: torch.Tensor, tmp_path) -> None:
    layers = collect_dynamics(trained, images, points_per_layer=200)
    names = ["1", "3"]
    assert plot_scatter(layers, tmp_path / "s.png") == names
    assert plot_coefficients(layers, tmp_path / "c.png") == names
    assert plot_dynamic_range(layers, tmp_path / "d.png") == names
    assert plot_attention(layers, images, tmp_path / "a.png") == ["3"]  # DY-ReLU-C only
    deep = [dataclasses.replace(layers[i % 2], name=f"L{i}") for i in range(8)]
    assert plot_dynamics_grid(deep, tmp_path / "g.png", num_panels=6) == ["L0", "L1", "L3", "L4", "L6", "L7"]
    assert plot_dynamics_grid(layers, tmp_path / "g1.png", num_panels=1) == ["1"]
    assert plot_attention(layers[:1], images, tmp_path / "none.png") == []
    assert not (tmp_path / "none.png").exists()
    for name in ("s", "c", "d", "a", "g", "g1"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < MAX_PNG_BYTES


def test_visualize_writes_files_and_summary(trained: nn.Sequential, images: torch.Tensor, tmp_path) -> None:
    summary = visualize_dynamics(trained, images, tmp_path / "viz", points_per_layer=300, meta={"run": "tiny"})
    out = tmp_path / "viz"
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())
    assert all((out / name).stat().st_size < MAX_PNG_BYTES for name in FILES.values())
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert saved["run"] == "tiny" and saved["num_images"] == 24 and saved["seed"] == 0
    assert saved["grid_layers"] == ["1", "3"] and saved["files"]["attention"] == "attention.png"
    layers = collect_dynamics(trained, images, points_per_layer=300)
    for row, layer in zip(saved["layers"], layers, strict=True):
        assert {key: row[key] for key in ("name", "variant", "channels", "k", "num_inputs")} == {
            "name": layer.name,
            "variant": layer.variant,
            "channels": 8,
            "k": 2,
            "num_inputs": 24,
        }
        assert row["dynamic_range_a"] == pytest.approx(layer.dynamic_range_a, rel=1e-5)
        assert row["dynamic_range_b"] == pytest.approx(layer.dynamic_range_b, rel=1e-5)
        assert row["mean_a"] == pytest.approx(layer.a.mean(dim=(0, 1)).tolist(), rel=1e-5, abs=1e-9)
        assert len(row["mean_b"]) == len(row["std_a"]) == len(row["std_b"]) == 2
    assert "attention" not in saved["layers"][0]
    assert saved["layers"][1]["tau"] == 10.0 and saved["layers"][1]["gamma"] is None
    assert set(saved["layers"][1]["attention"]) == {"mean", "min", "max", "dynamic_range"}
    # the same arguments give the same files
    visualize_dynamics(trained, images, tmp_path / "again", points_per_layer=300, meta={"run": "tiny"})
    for name in FILES.values():
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_import_pulls_neither_matplotlib_nor_the_cli() -> None:
    code = "import sys, dyrelu.analysis; print('matplotlib' in sys.modules, 'dyrelu.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_layers_that_do_not_run_are_left_out(images: torch.Tensor) -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.used = DyReLUB(8)
            self.unused = DyReLUC(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(self.conv(x))

    net = Skips()
    assert [layer.name for layer in collect_dynamics(net, images, points_per_layer=8)] == ["used"]
    del net.used
    net.forward = lambda x: net.conv(x)
    with pytest.raises(ValueError, match="none of the 1 DY-ReLU layers of Skips ran on the images"):
        collect_dynamics(net, images)
