"""``dyrelu compare``: the grid's runs, their device and precision, and the cost estimate."""

from __future__ import annotations

import pytest

from dyrelu.cli import main
from dyrelu.experiments import PLATEAU_CLAIM, append_row, read_results


@pytest.mark.slow
def test_compare_estimate_writes_the_grids_process_hours(tmp_path, capsys):
    measured = tmp_path / "plateau.csv"
    append_row(measured, {"model": "mobilenetv2_035", "act": "relu", "act_kwargs": "{}", "seconds_per_epoch": 300})
    out = tmp_path / "estimate.csv"
    argv = ["compare", "--claims", "P1", "--estimate", str(out), "--calibrate", str(measured), "--jobs", "2"]
    assert main(argv) == 0
    rows = read_results(out)
    assert [r["config"] for r in rows] == [c.name for c in PLATEAU_CLAIM.configs]
    # the ReLU schedules share one measured network: each epoch costs what it measured; DY-ReLU-B its own
    relu = [r for r, c in zip(rows, PLATEAU_CLAIM.configs, strict=True) if c.act == "relu"]
    assert [r["epoch_seconds"] for r in relu] == ["300"] * len(relu) == ["300"] * 4
    (dyb,) = [r for r, c in zip(rows, PLATEAU_CLAIM.configs, strict=True) if c.act == "dyrelu_b"]
    epochs = sum(dict(c.train_kwargs)["epochs"] for c in PLATEAU_CLAIM.configs if c.act == "relu")  # 3+6+12+24
    total = (epochs * 300 + 24 * float(dyb["epoch_seconds"])) / 3600
    assert float(dyb["epoch_seconds"]) > 0 and float(dyb["process_hours"]) == pytest.approx(
        total - epochs / 12, abs=0.02
    )
    assert sum(float(r["process_hours"]) for r in rows) == pytest.approx(total, abs=0.02)
    assert f"total: {total:.1f} process hours" in capsys.readouterr().out


def test_compare_passes_device_and_precision_to_every_run(tmp_path, monkeypatch):
    import dyrelu.experiments

    seen = {}

    def fake_grid(results, runs_dir, *, claims, budget, jobs, limit, log):
        seen.update(budget.extra, results=str(results), runs_dir=str(runs_dir))
        return 0

    monkeypatch.setattr(dyrelu.experiments, "run_grid", fake_grid)
    out = tmp_path / "gpu"
    argv = ["compare", "--claims", "C1-converged", "--device", "cuda", "--amp", "bf16"]
    assert main([*argv, "--results", str(out / "converged.csv"), "--runs-dir", str(out / "runs")]) == 0
    assert seen["device"] == "cuda" and seen["amp"] == "bf16" and seen["hyper_weight_decay"] is False
    assert seen["results"] == str(out / "converged.csv") and seen["runs_dir"] == str(out / "runs")


def test_compare_backfill_correct_skips_runs_without_a_checkpoint(tmp_path, capsys):
    results = tmp_path / "grid.csv"
    append_row(results, {"run": "mobilenetv2_035-relu-seed0", "epochs": 4, "test_acc": "80.00"})
    argv = ["compare", "--claims", "C1", "--results", str(results), "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--backfill-correct"]) == 0
    out = capsys.readouterr().out
    assert f"mobilenetv2_035-relu-seed0: no checkpoint in {tmp_path / 'runs' / 'mobilenetv2_035-relu-seed0'}" in out
    assert f"recorded 0 runs in {tmp_path / 'grid_correct.csv'}" in out
    assert not (tmp_path / "grid_correct.csv").exists()
