"""`dyrelu demo`: the committed converged results, a live run with its dynamics, the speed side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dyrelu.cli import main
from dyrelu.experiments import append_row
from tests.datafiles import write_fashion_mnist


def _converged_csv(path):
    for seed in (0, 1):
        append_row(
            path,
            {
                "experiment": "C1-converged",
                "run": f"mobilenetv2_025-relu-seed{seed}-converged",
                "model": "mobilenetv2_025",
                "act": "relu",
                "act_kwargs": "{}",
                "seed": seed,
                "epochs": 12,
                "data_fraction": 1.0,
                "batch_size": 128,
                "test_acc": 92.5 + seed,
                "params": 250778,
                "madds": 7835920,
                "train_seconds": 4000,
                "seconds_per_epoch": 333,
                "device": "cpu",
                "amp": "none",
            },
        )
    return path


@pytest.mark.slow
def test_demo_shows_the_converged_results_trains_draws_and_times(tmp_path, capsys):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=32, n_test=16)
    out, results = tmp_path / "demo", _converged_csv(tmp_path / "converged.csv")
    for epochs, val in ((12, 93.5), (24, 94.24)):  # the plateau study, beside the grid's results
        append_row(tmp_path / "plateau.csv", {"run": f"p{epochs}", "act": "relu", "epochs": epochs, "val_acc": val})
    argv = ["demo", "--data-dir", str(data), "--epochs", "1", "--data-fraction", "1", "--batch-size", "16"]
    argv += ["--threads", "1", "--out", str(out), "--results", str(results), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    part1, rest = printed.split("== 2. A live run")
    part2, part3 = rest.split("== 3. The speed, side by side in this process")
    assert "not re-run here" in part1 and "2 runs on cpu" in part1
    assert "| mobilenetv2_025 | relu | 2 | 93.00 ± 0.71 |" in part1
    assert "Not at convergence: mobilenetv2_035 with ReLU gains 0.74 pp of validation accuracy from 12" in part1
    assert "| ReLU |" in part2 and "| DY-ReLU-B |" in part2 and "median slope range over layers" in part2
    assert "| ReLU | " in part3 and " | 1.00 | " in part3 and "taking turns within each round" in part3
    saved = json.loads((out / "results.json").read_text())
    assert [row["act"] for row in saved["rows"]] == ["relu", "dyrelu_b"]
    relu, dyrelu = saved["rows"]
    assert dyrelu["params"] > relu["params"] and relu["dyn_median"] is None and dyrelu["static"] in (True, False)
    assert relu["train_step_seconds"] > 0 and dyrelu["eval_batch_seconds"] > 0
    assert saved["converged"]["runs"] == 2 and "C1-converged" in saved["converged"]["verdicts"]
    assert "BatchNorm statistics recomputed" in saved["settings"]
    figures = [Path(name) for name in saved["figures"]["dyrelu_b"]]
    assert out / "dyrelu_b-dynamics" / "scatter.png" in figures and all(f.stat().st_size > 0 for f in figures)
    assert (out / "curves.png").stat().st_size > 0 and "## Speed" in (out / "results.md").read_text()
    assert not list(out.glob(".*.tmp"))  # written through temporary files, none left behind
    assert main(argv) == 0
    assert "nothing to train" in capsys.readouterr().out  # a second demo reuses the finished runs


def test_demo_without_the_converged_results_says_where_they_are(tmp_path, capsys, monkeypatch):
    from dyrelu.cli import demo

    monkeypatch.setattr(demo.live, "train", lambda args, act: (_ for _ in ()).throw(SystemExit("stop after part 1")))
    argv = ["demo", "--out", str(tmp_path / "demo"), "--results", str(tmp_path / "missing.csv")]
    with pytest.raises(SystemExit, match="stop after part 1"):
        main(argv)
    assert f"no converged results at {tmp_path / 'missing.csv'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--acts", " , "], "expected comma-separated activation names in --acts"),
        (["--data-fraction", "1.5"], "expected --data-fraction in (0, 1], got 1.5"),
    ],
)
def test_bad_options_are_named(tmp_path, capsys, extra, expected):
    assert main(["demo", "--out", str(tmp_path), *extra]) == 2
    assert expected in capsys.readouterr().err
