"""The `dyrelu` train, eval and export subcommands, run in-process on small data in tmp_path."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from dyrelu.cli import main
from dyrelu.train import load_checkpoint, model_from_checkpoint, read_metrics

TRAIN = [
    "train",
    "--model",
    "mobilenetv2_035",
    "--act",
    "dyrelu_b",
    "--reduction",
    "4",
    "--zero-init-last",  # these tests are about the command line: start as ReLU (the recipe's init diverges here)
    "--data",
    "synthetic",
    "--synthetic-samples",
    "64",
    "--image-size",
    "8",
    "--batch-size",
    "16",
    "--lr",
    "0.05",
    "--threads",
    "1",
    "--no-tensorboard",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained for one epoch, then resumed to two (the output of both calls)."""
    out = tmp_path_factory.mktemp("run")
    outputs = []
    for argv in (
        [*TRAIN, "--epochs", "1", "--out", str(out)],
        ["train", "--out", str(out), "--resume", "--epochs", "2"],
    ):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(argv) == 0
        outputs.append(buffer.getvalue())
    return out, outputs


def test_train_then_resume(trained):
    out, (first, second) = trained
    assert "epoch 1/1" in first and "done: 1 epochs" in first
    assert "resumed from" in second and "after epoch 1: continuing with epoch 2" in second
    rows = read_metrics(out)
    assert [row["epoch"] for row in rows] == [1, 2]
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2
    assert state["config"]["act"] == "dyrelu_b" and state["config"]["act_kwargs"] == {
        "zero_init_last": True,
        "reduction": 4,
    }
    assert state["config"]["epochs"] == 2 and state["config"]["small_input"] is True
    assert json.loads((out / "config.json").read_text())["model"] == "mobilenetv2_035"


def test_eval(trained, capsys):
    out, _ = trained
    assert main(["eval", "--checkpoint", str(out), "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["acc"] == pytest.approx(read_metrics(out)[-1]["test_acc"]) and result["count"] == 16
    argv = ["eval", "--checkpoint", str(out / "last.pt"), "--data", "synthetic", "--synthetic-samples", "40"]
    assert main([*argv, "--threads", "1"]) == 0
    assert "(10 images)" in capsys.readouterr().out


def test_eval_bad_data_option_is_one_line_error(trained, capsys):
    out, _ = trained
    argv = ["eval", "--checkpoint", str(out), "--data", "fashion-mnist", "--image-size", "8", "--threads", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dyrelu eval: error:") and "takes no options" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_export_onnx_checked_with_onnxruntime(trained, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out, _ = trained
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(out), "--format", "onnx", "--out", str(onnx_file)]) == 0
    assert "checked with onnxruntime" in capsys.readouterr().out
    model, _ = model_from_checkpoint(out)
    images = torch.randn(5, 3, 8, 8)  # another batch size than the example: the batch dimension is dynamic
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(images), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_export_torch_export_program(trained, tmp_path, capsys):
    out, _ = trained
    program_file = tmp_path / "model.pt2"
    assert main(["export", "--checkpoint", str(out), "--format", "pt2", "--out", str(program_file)]) == 0
    assert "checked with torch.export.load" in capsys.readouterr().out
    assert program_file.stat().st_size > 0


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dyrelu {command}: error:"), err
    return lines[0]


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, capsys):
    argv = ["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _one_line_error(capsys, "train")
    assert "apt-get install dataset-fashion-mnist" in line and "--data-dir" in line


def test_corrupt_or_missing_checkpoints(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"\x00garbage")
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    assert "corrupt" in _one_line_error(capsys, "eval")
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "no checkpoint at" in _one_line_error(capsys, "export")
    assert main(["train", "--out", str(tmp_path), "--resume", "--data", "synthetic"]) == 2
    assert "corrupt" in _one_line_error(capsys, "train")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
        (["--act", "nosuchact"], "unknown activation 'nosuchact'"),
        (["--act", "relu", "--k", "3"], "for --act relu: ReLU.__init__() got an unexpected keyword argument 'k'"),
        (["--data-fraction", "2"], r"data_fraction in (0, 1], got 2.0"),
    ],
)
def test_bad_options(tmp_path, capsys, extra, expected):
    assert main([*TRAIN, "--epochs", "1", "--out", str(tmp_path), *extra]) == 2
    assert expected in _one_line_error(capsys, "train")


def test_existing_run_is_not_overwritten(trained, capsys):
    out, _ = trained
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 2
    assert "already holds a checkpoint; resume it (--resume)" in _one_line_error(capsys, "train")
    assert main(["train", "--out", str(out), "--resume", "--model", "mobilenetv2_050"]) == 2
    assert "model='mobilenetv2_035'" in _one_line_error(capsys, "train")


def test_recipe_flags_reach_the_run(tmp_path, capsys):
    """The DY-ReLU recipe's flags end up in the run's config, model and metrics (validation, dynamics)."""
    out = tmp_path / "recipe"
    argv = [*TRAIN, "--epochs", "1", "--out", str(out), "--no-zero-init-last", "--act-context", "block"]
    argv += ["--hyper-lr-scale", "0.5", "--no-hyper-weight-decay", "--val-size", "16", "--dynamics-images", "8"]
    assert main(argv) == 0
    config = load_checkpoint(out)["config"]
    assert config["act_kwargs"] == {"reduction": 4, "zero_init_last": False}  # the later flag wins
    assert (config["act_context"], config["hyper_lr_scale"], config["hyper_weight_decay"]) == ("block", 0.5, False)
    assert (config["val_size"], config["dynamics_images"]) == (16, 8)
    model, _ = model_from_checkpoint(out)
    assert type(model.features[2]).__name__ == "BlockContextInvertedResidual"
    row = read_metrics(out)[-1]
    assert {"val_acc", "val_loss", "dyn_median", "dyn_max", "dyn_b_median"} <= set(row)
    assert row["dyn_median"] > 0  # the last FC starts like nn.Linear: the layers are dynamic


def test_eval_against_a_second_checkpoint_compares_them_on_the_same_images(trained, tmp_path, capsys):
    out, _ = trained
    other = tmp_path / "other"
    argv = [*TRAIN, "--seed", "1", "--epochs", "1", "--out", str(other)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    assert main(["eval", "--checkpoint", str(out), "--against", str(other), "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    paired = result["paired"]
    for key, path in (("checkpoint", out), ("against", other)):
        assert result[key]["acc"] == pytest.approx(read_metrics(path)[-1]["test_acc"]) and result[key]["count"] == 16
    assert paired["count"] == 16 and paired["acc_a"] == pytest.approx(result["checkpoint"]["acc"])
    assert paired["acc_b"] == pytest.approx(result["against"]["acc"])
    assert paired["diff"] == pytest.approx(result["checkpoint"]["acc"] - result["against"]["acc"])
    assert main(["eval", "--checkpoint", str(out), "--against", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("A: ") and "right where B is wrong 0, the other way round 0" in text and "p = 1" in text
    # two test sets that differ: refused, not compared image by image
    small = tmp_path / "small"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*TRAIN, "--synthetic-samples", "40", "--epochs", "1", "--out", str(small)]) == 0
    assert main(["eval", "--checkpoint", str(out), "--against", str(small), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "different test images (16 and 10" in err and len(err.splitlines()) == 1
