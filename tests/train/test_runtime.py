"""The process set-up helpers shared by the training engines."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from dyrelu.train import CheckpointError
from dyrelu.train.checkpoint import save_checkpoint
from dyrelu.train.runtime import (
    check_finite_loss,
    check_resume,
    open_run,
    progress_bar,
    seed_everything,
    set_cpu_threads,
    start_run_files,
)


def test_seed_everything_repeats_python_and_torch_streams():
    seed_everything(7)
    first = (random.random(), torch.rand(3))
    seed_everything(7)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_set_cpu_threads_sets_and_ignores_other_devices():
    before = torch.get_num_threads()
    try:
        set_cpu_threads(1, torch.device("cpu"))
        assert torch.get_num_threads() == 1
        set_cpu_threads(3, torch.device("meta"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_check_resume_refuses_fixed_changes_and_logs_the_others(tmp_path):
    saved = {"model": "a", "lr": 0.1, "epochs": 2}
    lines: list[str] = []
    check_resume({"model": "a", "lr": 0.2, "epochs": 4}, saved, ("model",), tmp_path, lines.append)
    assert lines == ["note: lr changed from 0.1 to 0.2 since the checkpoint"]
    with pytest.raises(CheckpointError, match=r"trained with model='a', this run has model='b'"):
        check_resume({"model": "b", "lr": 0.1, "epochs": 2}, saved, ("model",), tmp_path, lines.append)


def test_open_run_starts_afresh_refuses_to_overwrite_and_resumes(tmp_path):
    lines: list[str] = []
    assert open_run(None, False, lines.append) == (None, None, None)
    assert open_run(None, True, lines.append) == (None, None, None)
    out, ckpt, state = open_run(tmp_path / "run", True, lines.append)
    assert (out, ckpt, state) == (tmp_path / "run", tmp_path / "run" / "last.pt", None)
    assert lines == ["nothing to resume", f"no checkpoint in {out}; starting from scratch"]
    save_checkpoint({"epoch": 3, "config": {}, "model": {}}, ckpt)
    with pytest.raises(CheckpointError, match="already holds a checkpoint; resume it"):
        open_run(out, False, lines.append)
    assert open_run(out, True, lines.append)[2]["epoch"] == 3
    assert len(lines) == 2


def test_start_run_files_writes_the_config_and_the_rows_so_far(tmp_path):
    assert start_run_files(None, {"lr": 0.1}, [], tensorboard=False) is None
    out = tmp_path / "new" / "run"
    writer = start_run_files(out, {"lr": 0.1}, [{"epoch": 1, "loss": 0.5}], tensorboard=False)
    try:
        assert json.loads((out / "config.json").read_text()) == {"lr": 0.1}
        assert (out / "metrics.csv").read_text().splitlines() == ["epoch,loss", "1,0.5"]
    finally:
        writer.close()


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_check_finite_loss_names_the_epoch_and_the_learning_rate(loss):
    check_finite_loss(0.25, 0, 0.1)
    with pytest.raises(FloatingPointError, match=r"in epoch 3; lower the learning rate \(lr=0.1\)"):
        check_finite_loss(loss, 2, 0.1)


def test_progress_bar_only_when_enabled():
    assert progress_bar(10, "epoch 1/2", False) is None
    bar = progress_bar(10, "epoch 1/2", True)
    assert bar is not None and bar.total == 10
    bar.close()
