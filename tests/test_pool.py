"""dyrelu._pool: a grid's runs, serially or in processes, with failed runs logged and skipped."""

from __future__ import annotations

import operator

import pytest

from dyrelu._pool import run_tasks, select_todo


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
