"""dyrelu.experiments.grid: planning runs, the results CSV, and running a grid resumably in a pool of processes."""

from __future__ import annotations

import operator
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dyrelu.experiments import (
    COLUMNS,
    CONVERGED_CLAIMS,
    DEFAULT_CLAIMS,
    PLATEAU_CLAIM,
    Budget,
    Claim,
    Config,
    append_row,
    pending_runs,
    plan_runs,
    read_results,
    run_grid,
    select_claims,
)
from dyrelu.experiments.grid import run_tasks, select_todo
from tests.experiments.rows import row, write_rows


def _tasks():
    # operator.truediv is picklable by reference, so the same tasks run in spawned processes.
    return [("a", operator.truediv, (1, 2)), ("bad", operator.truediv, (1, 0)), ("c", operator.truediv, (3, 4))]


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_failed_run_is_logged_and_the_others_finish(jobs):
    lines: list[str] = []
    results: list[float] = []

    def record(value: float) -> str:
        results.append(value)
        return f"value {value}"

    assert run_tasks(_tasks(), jobs, record, lines.append) == (2, 1)
    assert sorted(results) == [0.5, 0.75]
    assert "FAILED bad: ZeroDivisionError: division by zero" in lines
    done = sorted(line for line in lines if line.startswith("done"))
    assert [line.rsplit(" (", 1)[0] for line in done] == ["done a: value 0.5", "done c: value 0.75"]
    assert sorted(line.rsplit(" (", 1)[1] for line in done) == ["1/3)", "2/3)"]
    assert lines[-1] == "1 runs failed; run the command again to retry them"
    if jobs == 1:
        assert [line for line in lines if line.startswith("start")] == ["start a", "start bad", "start c"]


def test_errors_of_on_done_are_not_swallowed():
    def record(value: float) -> str:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_tasks(_tasks()[:1], 1, record, lambda line: None)


@pytest.mark.slow
def test_timeout_ends_the_runs_in_flight_with_the_grid(tmp_path):
    # The GPU command (report.GPU_COMMAND) relies on `timeout` ending the spawned runs too, not only the grid.
    pids = tmp_path / "pids"
    task = ("sh", "-c", f"echo $$ >> {pids}; exec sleep 300")
    script = (
        "import subprocess\nfrom dyrelu.experiments.grid import run_tasks\n"
        f"run_tasks([(n, subprocess.call, ({task!r},)) for n in 'ab'], 2, str, print)"
    )
    grid = subprocess.Popen(["timeout", "600", sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # importing torch can take a minute on a busy machine
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert grid.poll() is None and time.monotonic() < deadline, grid.stderr.read().decode()
        time.sleep(0.2)
    grid.send_signal(signal.SIGTERM)  # what timeout sends its command's process group when the time is up
    grid.wait(timeout=60)
    started = pids.read_text().split()
    time.sleep(0.5)
    alive = [p for p in started if Path(f"/proc/{p}").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text()]
    assert not alive


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_jobs_must_be_a_positive_integer(jobs):
    with pytest.raises(ValueError, match="expected jobs to be an integer >= 1"):
        run_tasks([], jobs, str, print)


def test_select_todo_logs_progress_and_applies_the_limit():
    lines: list[str] = []
    assert select_todo(5, ["c", "d", "e"], None, lines.append) == ["c", "d", "e"]
    assert select_todo(5, ["c", "d", "e"], 2, lines.append) == ["c", "d"]
    assert select_todo(5, ["c", "d", "e"], 0, lines.append) == []
    assert lines == ["2 of 5 runs done"] * 3
    for limit in (-1, 1.5, True):
        with pytest.raises(ValueError, match="expected limit to be an integer >= 0 or None"):
            select_todo(5, [], limit, lines.append)


def test_plan_runs_deduplicates_shared_configurations():
    runs = plan_runs(DEFAULT_CLAIMS, seeds=(0, 1, 2))
    ids = [spec.run_id for spec, _ in runs]
    assert len(ids) == len(set(ids))
    baseline = [names for spec, names in runs if spec.run_id == "mobilenetv2_035-relu-seed0"]
    assert baseline == [["C1", "C2", "C3", "C4", "C5", "C7"]]
    # claim by claim (a run belongs to the first claim naming it), seed-major within each claim
    owners = [names[0] for _, names in runs]
    assert owners == sorted(owners, key=[c.name for c in DEFAULT_CLAIMS].index)
    for claim in DEFAULT_CLAIMS:
        seeds = [spec.seed for spec, names in runs if names[0] == claim.name]
        assert seeds == sorted(seeds)
    with pytest.raises(ValueError, match=r"unknown claims \['C9'\]"):
        select_claims(["C9"])


def test_plan_runs_goes_claim_by_claim_and_seed_major_within_a_claim():
    runs = plan_runs(CONVERGED_CLAIMS[:2], seeds=(0, 1, 2), budget_name="converged")
    owners = [names[0] for _, names in runs]
    # every C1 run (the first claim naming it) before any run that only C2 has
    assert owners == sorted(owners, key=["C1-converged", "C2-converged"].index)
    c1 = [spec.seed for spec, names in runs if names[0] == "C1-converged"]
    assert c1 == sorted(c1) and len(c1) == 18
    shared = [names for spec, names in runs if spec.run_id == "mobilenetv2_035-relu-seed0-converged"]
    assert shared == [["C1-converged", "C2-converged"]]


def test_append_row_is_atomic_and_keeps_columns(tmp_path):
    path = tmp_path / "results" / "grid.csv"
    rows = write_rows(path, [row("m", "relu", 0, 90.0), row("m", "dyrelu_b", 0, 91.0)])
    assert [r["act"] for r in rows] == ["relu", "dyrelu_b"]
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert not list(path.parent.glob(".*tmp"))


def test_plateau_configurations_set_their_own_schedule_length(tmp_path):
    lengths = [dict(c.train_kwargs)["epochs"] for c in PLATEAU_CLAIM.configs if c.act == "relu"]
    assert sorted(lengths) == [3, 6, 12, 24] and lengths[0] == 24  # the longest starts first
    # DY-ReLU-B at the longest schedule too, second: the two longest runs share the first two processes
    assert [(c.act, dict(c.train_kwargs)["epochs"]) for c in PLATEAU_CLAIM.configs[:2]] == [
        ("relu", 24),
        ("dyrelu_b", 24),
    ]
    budget = PLATEAU_CLAIM.budget
    results = tmp_path / "plateau.csv"
    first = plan_runs([PLATEAU_CLAIM], budget.seeds, budget.name)[0][0]
    assert first.run_id == "mobilenetv2_035-relu-epochs=24-seed0-converged"
    # a row is done only at the configuration's own length, not at the budget's
    append_row(results, {"run": first.run_id, "epochs": 12, "data_fraction": budget.data_fraction})
    assert first.run_id in {spec.run_id for spec, _ in pending_runs(results, [PLATEAU_CLAIM], budget)}
    append_row(results, {"run": first.run_id, "epochs": 24, "data_fraction": budget.data_fraction})
    assert first.run_id not in {spec.run_id for spec, _ in pending_runs(results, [PLATEAU_CLAIM], budget)}


@pytest.mark.slow
def test_run_grid_runs_once_and_skips_finished_runs(tmp_path):
    budget = Budget(
        data="synthetic",
        epochs=1,
        batch_size=32,
        seeds=(0,),
        extra={"data_kwargs": {"num_samples": 64}, "eval_fraction": 0.5},
    )
    claim = select_claims(["C2"])
    results = tmp_path / "grid.csv"
    assert run_grid(results, tmp_path / "runs", claims=claim, budget=budget, limit=1, log=lambda _: None) == 1
    (row,) = read_results(results)
    assert row["run"] == "mobilenetv2_035-relu-seed0" and row["experiment"] == "C2"
    assert float(row["test_acc"]) >= 0 and int(row["params"]) > 0 and int(row["madds"]) > 0
    assert run_grid(results, tmp_path / "runs", claims=claim, budget=budget, limit=1, log=lambda _: None) == 1
    assert [r["act"] for r in read_results(results)] == ["relu", "dyrelu_a"]


@pytest.mark.slow
def test_a_configurations_epochs_override_the_budget_and_reach_therow(tmp_path):
    claim = Claim("T", "t", "t", (Config.of("mobilenetv2_035", "relu", train={"epochs": 2}),))
    budget = Budget(
        data="synthetic",
        epochs=1,
        batch_size=32,
        seeds=(0,),
        extra={"data_kwargs": {"num_samples": 64, "image_size": 8}, "eval_fraction": 0.5, "amp": "bf16"},
    )
    results = tmp_path / "t.csv"
    assert run_grid(results, tmp_path / "runs", claims=[claim], budget=budget, log=lambda _: None) == 1
    (row,) = read_results(results)
    assert row["epochs"] == "2" and row["run"] == "mobilenetv2_035-relu-epochs=2-seed0"
    assert (row["device"], row["amp"]) == ("cpu", "bf16")
    assert pending_runs(results, [claim], budget) == []
