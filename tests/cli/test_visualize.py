"""Tests of ``dyrelu visualize`` on tiny checkpoints written by ``dyrelu.train.fit``, and of its ``--samples`` mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dyrelu.cli import main
from dyrelu.train import TrainConfig, fit
from tests.datafiles import write_fashion_mnist

DATA = {"num_samples": 32, "num_test": 16, "num_classes": 4, "image_size": 8}
RESNET10_SITES = 9  # the stem's activation and two per basic block


def train(out: Path, act: str) -> Path:
    config = TrainConfig(
        model="resnet10",
        act=act,
        data="synthetic",
        data_kwargs=DATA,
        epochs=1,
        batch_size=16,
        threads=1,
        tensorboard=False,
    )
    return fit(config, out).checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {act: train(root / act, act) for act in ("dyrelu_c", "relu")}


def test_writes_figures_and_summary(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "viz"
    argv = ["visualize", "--checkpoint", str(runs["dyrelu_c"].parent), "--num-images", "6", "--points", "120"]
    assert main([*argv, "--out", str(out)]) == 0
    names = {"scatter.png", "coefficients.png", "dynamic_range.png", "attention.png", "dynamics_grid.png"}
    assert {p.name for p in out.iterdir()} == names | {"summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["act"], summary["data"], summary["split"]) == (
        "resnet10",
        "dyrelu_c",
        "synthetic",
        "test",
    )
    assert summary["num_images"] == 6 and summary["epoch"] == 1
    assert len(summary["layers"]) == RESNET10_SITES
    assert all(row["variant"] == "C" and row["k"] == 2 and row["num_inputs"] == 6 for row in summary["layers"])
    assert len(summary["grid_layers"]) == 6 and summary["grid_layers"][0] == summary["layers"][0]["name"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"{RESNET10_SITES} DY-ReLU layers over 6 synthetic test images")
    assert len(lines) == 2 + RESNET10_SITES + 1 and lines[-1].startswith("wrote scatter.png")


def test_json_output(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["visualize", "--checkpoint", str(runs["dyrelu_c"]), "--num-images", "3", "--points", "30"]
    assert main([*argv, "--grid-layers", "2", "--split", "train", "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "summary.json").read_text())
    assert printed["split"] == "train" and len(printed["grid_layers"]) == 2


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "no checkpoint at "),
        ("relu", "has no DY-ReLU layer; expected one trained with --act dyrelu_a, dyrelu_b or dyrelu_c"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, message: str
) -> None:
    checkpoint = tmp_path / "nothing.pt" if which == "missing" else runs["relu"]
    assert main(["visualize", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "viz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("dyrelu visualize: error: ")
    assert message in captured.err
    assert not (tmp_path / "viz").exists()


def test_wrong_data_options_are_one_line(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    argv = ["visualize", "--checkpoint", str(runs["dyrelu_c"]), "--data", "synthetic", "--image-size", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image_size >= 4" in err


def test_samples_need_no_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tmp"
    assert main(["visualize", "--samples", "4", "--data", "synthetic", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["samples.png"]
    assert (out / "samples.png").read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out == f"{out / 'samples.png'}\n"


def test_samples_of_the_cluttered_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=12, n_test=6)
    argv = ["visualize", "--samples", "8", "--data", "cluttered-fashion-mnist", "--data-dir", str(data)]
    assert main([*argv, "--split", "train", "--image-size", "24", "--out", str(tmp_path / "viz")]) == 0
    first = (tmp_path / "viz" / "samples.png").read_bytes()
    assert capsys.readouterr().out.strip() == str(tmp_path / "viz" / "samples.png")
    # more samples than the split holds: all of them; the same arguments give the same bytes
    assert main([*argv, "--split", "test", "--samples", "50", "--out", str(tmp_path / "test")]) == 0
    assert main([*argv, "--split", "train", "--image-size", "24", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "samples.png").read_bytes() == first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--checkpoint is required unless --samples is given"),
        (["--samples", "4"], "--samples needs --data (there is no checkpoint to take it from)"),
        (["--samples", "4", "--data", "synthetic", "--checkpoint", "run"], "--samples draws no checkpoint's"),
        (["--samples", "4", "--data", "synthetic", "--image-size", "2"], "image_size >= 4"),
    ],
)
def test_samples_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["visualize", *argv, "--out", str(tmp_path / "viz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("dyrelu visualize: error: ") and message in captured.err
    assert not (tmp_path / "viz").exists()
