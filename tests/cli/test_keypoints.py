"""Tests of ``dyrelu keypoints`` (train, eval, grid, report)."""

from __future__ import annotations

import json

import pytest

from dyrelu.cli import main
from dyrelu.experiments.keypoints import append_keypoint_row
from dyrelu.recipe import DYRELU_C_KWARGS, SCRATCH_DYRELU_KWARGS
from dyrelu.train import read_metrics
from tests.experiments.rows import keypoint_row

TINY = [
    "--items",
    "shapes",
    "--image-size",
    "32",
    "--num-train",
    "32",
    "--num-test",
    "8",
    "--batch-size",
    "16",
    "--head-channels",
    "8",
    "--threads",
    "1",
    "--no-progress",
]


def test_train_eval_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["keypoints", "train", "--out", str(out), *TINY, "--head-act", "dyrelu_c", "--epochs", "1"]
    assert main([*argv, "--head-act-arg", "reduction=4", "--json"]) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final"]
    assert final["epoch"] == 1 and 0.0 <= final["test_ap"] <= 1.0
    assert main(["keypoints", "eval", "--checkpoint", str(out), "--batch-size", "32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ap"] == pytest.approx(final["test_ap"]) and result["head_act"] == "dyrelu_c"
    # --resume keeps the checkpoint's settings (here dyrelu_c, reduction 4) and trains one more epoch
    assert main(["keypoints", "train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert "resumed from" in output and "done: 2 epochs" in output
    assert [row["epoch"] for row in read_metrics(out)] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    expected = {**SCRATCH_DYRELU_KWARGS, **DYRELU_C_KWARGS, "reduction": 4}  # the config records them
    assert config["head_act_kwargs"] == expected and config["items"] == "shapes"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--head-act", "dyrelu_x"], "unknown head activation 'dyrelu_x', expected one of "),
        (["--backbone", "vgg11"], "unknown backbone 'vgg11', expected one of "),
        (["--head-act-arg", "reduction"], "expected --head-act-arg KEY=VALUE, got 'reduction'"),
        (["--head-act", "relu", "--head-act-arg", "k=3"], "bad options {'k': 3} for --head-act relu"),
        (["--image-size", "40"], "expected image_size a multiple of 16, got 40"),
    ],
)
def test_train_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main(["keypoints", "train", "--out", str(tmp_path / "x"), *TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_checkpoint_errors_exit_2(tmp_path, capsys):
    assert main(["keypoints", "eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["keypoints", "train", "--out", str(out), *TINY, "--epochs", "1"]) == 0
    assert main(["keypoints", "train", "--out", str(out), *TINY, "--epochs", "1"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_grid_dry_run_and_report(tmp_path, capsys):
    results = tmp_path / "keypoints.csv"
    assert main(["keypoints", "grid", "--results", str(results), "--seeds", "0,1", "--dry-run"]) == 0
    runs = capsys.readouterr().out.split()
    assert len(runs) == 32 and runs[0] == "mobilenetv2_035-relu-relu-seed0"
    assert main(["keypoints", "report", "--results", str(results)]) == 2
    assert "no results in" in capsys.readouterr().err
    append_keypoint_row(results, keypoint_row("relu", "relu", 0, 0.5, pck=0.7))
    assert main(["keypoints", "grid", "--results", str(results), "--seeds", "0,1", "--dry-run"]) == 0
    assert len(capsys.readouterr().out.split()) == 31
    assert main(["keypoints", "report", "--results", str(results)]) == 0
    assert "| ReLU | ReLU | 1 | 50.00 ± – |" in capsys.readouterr().out  # one seed: no spread
    out = tmp_path / "K1.md"
    assert main(["keypoints", "report", "--results", str(results), "--out", str(out)]) == 0
    assert out.read_text().startswith("## K1: ")
    assert main(["keypoints", "grid", "--results", str(results), "--seeds", "a"]) == 2
    assert "expected comma-separated integer seeds" in capsys.readouterr().err


def test_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit):
        main(["keypoints", "--help"])
    text = capsys.readouterr().out
    assert all(action in text for action in ("train", "eval", "grid", "report"))
