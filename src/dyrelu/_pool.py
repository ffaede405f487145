"""Running a grid's training runs one after another or in a pool of processes, surviving failed runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

__all__ = ["Task", "check_jobs", "run_tasks", "select_todo"]

#: One run: its id, a picklable function and the function's arguments.
Task = tuple[str, Callable[..., Any], tuple[Any, ...]]


def check_jobs(jobs: int) -> None:
    """Raise ``ValueError`` unless ``jobs`` is an integer >= 1."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"expected jobs to be an integer >= 1, got {jobs!r}")


def select_todo(planned: int, todo: list[Any], limit: int | None, log: Callable[[str], None]) -> list[Any]:
    """Log how many of the ``planned`` runs are done; the first ``limit`` of ``todo`` (``None``: all)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"expected limit to be an integer >= 0 or None, got {limit!r}")
    log(f"{planned - len(todo)} of {planned} runs done")
    return todo if limit is None else todo[:limit]


def run_tasks(
    tasks: Sequence[Task], jobs: int, on_done: Callable[[Any], str], log: Callable[[str], None]
) -> tuple[int, int]:
    """Run ``tasks``, ``jobs`` at once (``jobs > 1``: in spawned processes); returns (finished, failed).

    ``on_done`` receives each result in the calling process (so only this process writes the results
    file) and returns the summary logged after ``done <id>:``. A task that raises is logged as
    ``FAILED <id>`` and the others go on: the grid retries it on its next invocation. ``on_done``'s own
    errors are not caught.
    """
    check_jobs(jobs)
    finished = failed = 0

    def finish(run_id: str, result: Any) -> None:
        nonlocal finished
        summary = on_done(result)
        finished += 1
        log(f"done {run_id}: {summary} ({finished}/{len(tasks)})")

    def fail(run_id: str, err: BaseException) -> None:
        nonlocal failed
        failed += 1
        log(f"FAILED {run_id}: {type(err).__name__}: {err}")

    if jobs == 1:
        for run_id, fn, args in tasks:
            log(f"start {run_id}")
            try:
                result = fn(*args)
            except Exception as err:  # one failed run must not stop the grid
                fail(run_id, err)
                continue
            finish(run_id, result)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(fn, *args): run_id for run_id, fn, args in tasks}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as err:  # as above
                    fail(futures[future], err)
                    continue
                finish(futures[future], result)
    if failed:
        log(f"{failed} runs failed; run the command again to retry them")
    return finished, failed
