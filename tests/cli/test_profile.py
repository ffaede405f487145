"""Tests of ``dyrelu profile``."""

from __future__ import annotations

import json

import pytest

from dyrelu.cli import main


def test_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--model", "mobilenetv2_035", "--input", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mobilenetv2_035: 1×3×64×64 input, 1000 classes"
    assert lines[1].split()[0] == "act"
    assert [line.split()[0] for line in lines[2:]] == ["relu", "dyrelu_a", "dyrelu_b", "dyrelu_c"]
    assert lines[2].split()[2] == "+0.00%"


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["profile", "--model", "resnet10", "--input", "28", "--acts", "relu, dyrelu_b", "--json"]
    assert main([*argv, "--num-classes", "10", "--in-chans", "1", "--small-input"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["input_size"] == [1, 1, 28, 28] and payload["small_input"] is True
    assert [row["act"] for row in payload["rows"]] == ["relu", "dyrelu_b"]
    assert payload["rows"][0]["madds_overhead"] == 0.0 and payload["rows"][1]["madds"] > payload["rows"][0]["madds"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet11"], "unknown model 'resnet11', expected one of "),
        (["--model", "resnet10", "--acts", "relu,dyrelu_x"], "unknown activation 'dyrelu_x' in --acts"),
        (["--model", "resnet10", "--acts", ","], "expected comma-separated activation names"),
        (["--model", "resnet10", "--input", "0"], "expected a positive integer for --input, got 0"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["profile", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"dyrelu profile: error: {message}")
