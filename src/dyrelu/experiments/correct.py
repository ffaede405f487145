"""Which test images each run of a grid got right (a file beside its results CSV), and the paired tests it allows.

A results row holds one test accuracy; the spread over seeds measures training randomness on one fixed test set and
cannot say whether a difference is more than that test set's luck. Two runs scored on the same images can:
McNemar's exact test on the images only one of them gets right (:mod:`dyrelu.analysis.paired`). So every finished
run also records, one bit per test image, whether it got the image right: ``results/converged.csv`` has
``results/converged_correct.csv``, one row per run (``run``, ``images``, ``labels``: a digest of the test labels in
order, so that only runs on the same images are paired; ``correct``: :func:`~dyrelu.analysis.paired.pack_correct`).
Runs that finished before the file existed are added from their checkpoints by :func:`backfill_correct`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dyrelu.experiments.grid import Config, RunSpec, _write_csv, read_results

if TYPE_CHECKING:
    import torch

    from dyrelu.experiments.claims import Claim

__all__ = [
    "CORRECT_COLUMNS",
    "RunCorrect",
    "backfill_correct",
    "correct_cells",
    "correct_path",
    "paired_notes",
    "read_correct",
    "record_correct",
]

#: Columns of a grid's per-image correctness file.
CORRECT_COLUMNS = ("run", "images", "labels", "correct")


@dataclass(frozen=True)
class RunCorrect:
    """One run's row of the correctness file: ``labels`` identifies the test images, ``correct`` is one bool each."""

    run: str
    labels: str
    correct: torch.Tensor


def correct_path(results: str | os.PathLike) -> Path:
    """The correctness file beside a results CSV: ``results/converged.csv`` → ``results/converged_correct.csv``."""
    results = Path(results)
    return results.with_name(f"{results.stem}_correct{results.suffix or '.csv'}")


def labels_digest(labels: torch.Tensor) -> str:
    """A short digest of the test labels in order: two runs with the same one were scored on the same images."""
    text = ",".join(str(int(v)) for v in labels.flatten().tolist())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def correct_cells(result: Mapping[str, Any]) -> dict[str, Any]:
    """The correctness file's cells (but ``run``) of :func:`dyrelu.train.correct_on_test_set`'s ``result``."""
    from dyrelu.analysis.paired import pack_correct

    return {
        "images": result["count"],
        "labels": labels_digest(result["labels"]),
        "correct": pack_correct(result["correct"]),
    }


def read_correct(path: str | os.PathLike) -> dict[str, RunCorrect]:
    """The runs of a correctness file by run id (empty when the file does not exist).

    Raises:
        ValueError: a row's bits do not fit its number of images (a damaged file), naming the run.
    """
    from dyrelu.analysis.paired import unpack_correct

    records = {}
    for row in read_results(path):
        try:
            correct = unpack_correct(row["correct"], int(row["images"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: the row of run {row.get('run')!r} is damaged: {err}") from None
        records[row["run"]] = RunCorrect(row["run"], row["labels"], correct)
    return records


def record_correct(path: str | os.PathLike, run: str, cells: Mapping[str, Any]) -> None:
    """Write ``run``'s row (``cells`` from :func:`correct_cells`) into the correctness file atomically, replacing
    an earlier row of the same run."""
    rows = [row for row in read_results(path) if row["run"] != run]
    rows.append({"run": run, **{key: cells[key] for key in CORRECT_COLUMNS[1:]}})
    _write_csv(Path(path), CORRECT_COLUMNS, rows)


def backfill_correct(
    results: str | os.PathLike,
    runs_dir: str | os.PathLike,
    *,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Record the correctness of every run of ``results`` that the correctness file lacks, from its checkpoint in
    ``runs_dir``; returns the number recorded.

    A checkpoint counts as the row's run only when it has finished the row's epochs and scores the row's test
    accuracy (to its two decimals); otherwise, or when it is missing, the run is skipped with a line in the log.
    """
    from dyrelu.train import CHECKPOINT_NAME, correct_on_test_set, load_checkpoint

    path = correct_path(results)
    have = read_correct(path)
    recorded = 0
    for row in read_results(results):
        run = row["run"]
        checkpoint = Path(runs_dir) / run / CHECKPOINT_NAME
        if run in have:
            continue
        if not checkpoint.is_file():
            log(f"{run}: no checkpoint in {checkpoint.parent}, skipped")
            continue
        state = load_checkpoint(checkpoint)
        epoch, fraction = int(state["epoch"]), float(state["config"].get("eval_fraction", 1.0))
        if str(epoch) != row["epochs"]:
            log(f"{run}: the checkpoint is at epoch {epoch}, the row at {row['epochs']}, skipped")
            continue
        result = correct_on_test_set(checkpoint, fraction=fraction, device=device, amp=row.get("amp") or "none")
        if f"{result['acc']:.2f}" != row["test_acc"]:
            log(f"{run}: the checkpoint scores {result['acc']:.2f} %, the row {row['test_acc']} %, skipped")
            continue
        record_correct(path, run, correct_cells(result))
        recorded += 1
        log(f"{run}: recorded {result['count']} images ({result['acc']:.2f} % right) in {path}")
    return recorded


def paired_notes(claim: Claim, records: Mapping[str, RunCorrect]) -> list[str]:
    """One line per configuration of ``claim`` against ReLU on the same model (the claim's ReLU configuration, by
    its label): per seed where both runs are in ``records``, the difference on the same test images and McNemar's
    exact p-value."""
    from dyrelu.analysis.paired import paired_comparison
    from dyrelu.experiments.grid import DEFAULT_BUDGET

    budget = claim.budget or DEFAULT_BUDGET
    notes = []
    for config in claim.configs:
        if config.act == "relu":
            continue
        relu = Config(config.model, "relu")
        baseline = next((c for c in claim.configs if c.name == relu.name), relu)
        parts = []
        for seed in budget.seeds:
            a = records.get(RunSpec(config, seed, budget.name).run_id)
            b = records.get(RunSpec(baseline, seed, budget.name).run_id)
            if a is None or b is None or a.labels != b.labels:
                continue
            c = paired_comparison(a.correct, b.correct)
            parts.append(
                f"seed {seed} {c.diff:+.2f} pp ({c.only_a} vs {c.only_b} images right in one only, p = {c.p_value:.2g})"
            )
        if parts:
            notes.append(
                f"paired on the same test images (McNemar's exact test, per seed): {config.model} {config.display} "
                f"− {baseline.label or 'ReLU'}: {'; '.join(parts)}"
            )
    return notes
