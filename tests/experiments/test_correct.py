"""dyrelu.experiments.correct: the per-image test correctness of a grid's runs, and the paired tests it allows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dyrelu.analysis.paired import mcnemar_p, pack_correct
from dyrelu.data import create_dataset
from dyrelu.experiments import Budget, Claim, Config, append_row, read_results, run_grid
from dyrelu.experiments.correct import (
    CORRECT_COLUMNS,
    RunCorrect,
    backfill_correct,
    correct_path,
    labels_digest,
    paired_notes,
    read_correct,
    record_correct,
)


def test_the_correctness_file_sits_beside_the_results():
    assert correct_path("results/converged.csv") == Path("results/converged_correct.csv")
    assert correct_path(Path("/x/grid.csv")) == Path("/x/grid_correct.csv")


def test_record_and_read_round_trip_and_replace_a_runs_row(tmp_path):
    path = tmp_path / "g_correct.csv"
    a = torch.tensor([True, False, True, True, False])
    record_correct(path, "r1", {"images": 5, "labels": "abc", "correct": pack_correct(a)})
    record_correct(path, "r2", {"images": 5, "labels": "abc", "correct": pack_correct(~a)})
    record_correct(path, "r1", {"images": 5, "labels": "abc", "correct": pack_correct(~a)})
    assert [r["run"] for r in read_results(path)] == ["r2", "r1"]
    assert list(read_results(path)[0]) == list(CORRECT_COLUMNS)
    records = read_correct(path)
    assert records["r1"].labels == "abc" and torch.equal(records["r1"].correct, ~a)
    assert read_correct(tmp_path / "missing.csv") == {}


def test_a_damaged_row_names_its_run(tmp_path):
    path = tmp_path / "g_correct.csv"
    record_correct(path, "r1", {"images": 9, "labels": "abc", "correct": pack_correct(torch.ones(8, dtype=bool))})
    with pytest.raises(ValueError, match="run 'r1' is damaged: expected 2 bytes for 9 images, got 1"):
        read_correct(path)


def test_labels_digest_tells_test_sets_apart():
    labels = torch.arange(10) % 3
    assert labels_digest(labels) == labels_digest(labels.clone()) and len(labels_digest(labels)) == 16
    assert labels_digest(labels) != labels_digest(labels.flip(0))


def _record(run: str, correct: list[bool], labels: str = "L") -> tuple[str, RunCorrect]:
    return run, RunCorrect(run, labels, torch.tensor(correct))


def test_paired_notes_compare_each_configuration_with_relu_seed_by_seed():
    budget = Budget(seeds=(0, 1, 2), name="b")
    claim = Claim("T", "t", "t", (Config("m", "relu"), Config("m", "dyrelu_b", label="DY-B")), budget=budget)
    base = [True] * 20 + [False] * 10
    better = [True] * 20 + [True] * 6 + [False] * 4  # 6 images right only with DY-B
    worse = [False, False] + [True] * 18 + [False] * 10  # 2 only with ReLU
    records = dict(
        [
            _record("m-relu-seed0-b", base),
            _record("m-dyrelu_b-seed0-b", better),
            _record("m-relu-seed1-b", base),
            _record("m-dyrelu_b-seed1-b", worse),
            _record("m-relu-seed2-b", base, labels="other images"),  # not paired: another test set
            _record("m-dyrelu_b-seed2-b", better),
        ]
    )
    (note,) = paired_notes(claim, records)
    assert note.startswith("paired on the same test images (McNemar's exact test, per seed): m DY-B − ReLU: ")
    assert f"seed 0 +20.00 pp (6 vs 0 images right in one only, p = {mcnemar_p(6, 0):.2g})" in note
    assert f"seed 1 -6.67 pp (0 vs 2 images right in one only, p = {mcnemar_p(0, 2):.2g})" in note
    assert "seed 2" not in note
    assert paired_notes(claim, {k: v for k, v in records.items() if "seed0" not in k and "seed1" not in k}) == []
    labelled = Claim("T", "t", "t", (Config("m", "relu", label="fine-tuned"), claim.configs[1]), budget=budget)
    assert "m DY-B − fine-tuned: seed 0 +20.00 pp" in paired_notes(labelled, records)[0]


@pytest.mark.slow
def test_the_grid_records_each_runs_correctness_and_backfill_rebuilds_it(tmp_path):
    budget = Budget(
        data="synthetic",
        epochs=1,
        batch_size=32,
        seeds=(0,),
        extra={"data_kwargs": {"num_samples": 64, "image_size": 8}, "eval_fraction": 0.5},
    )
    claim = Claim("T", "t", "t", (Config("mobilenetv2_035", "relu"),))
    results, runs = tmp_path / "t.csv", tmp_path / "runs"
    assert run_grid(results, runs, claims=[claim], budget=budget, log=lambda _: None) == 1
    (row,) = read_results(results)
    (record,) = read_correct(correct_path(results)).values()
    images = len(create_dataset("synthetic", train=False, fraction=0.5, num_samples=64, image_size=8).labels)
    assert record.run == row["run"] and record.correct.numel() == images  # the images the run was scored on
    assert f"{100 * record.correct.float().mean():.2f}" == row["test_acc"]

    written = correct_path(results).read_text()
    correct_path(results).unlink()
    lines = []
    assert backfill_correct(results, runs, device="cpu", log=lines.append) == 1
    assert correct_path(results).read_text() == written and f"recorded {images} images" in lines[0]
    assert backfill_correct(results, runs, device="cpu", log=lines.append) == 0  # nothing missing

    correct_path(results).unlink()
    results.unlink()
    append_row(results, {**row, "test_acc": "100.00"})  # a row that is not this checkpoint's
    append_row(results, {**row, "run": "gone"})
    lines = []
    assert backfill_correct(results, runs, device="cpu", log=lines.append) == 0
    assert lines[0].startswith(f"{row['run']}: the checkpoint scores") and "the row 100.00 %, skipped" in lines[0]
    assert lines[1].startswith("gone: no checkpoint in")
