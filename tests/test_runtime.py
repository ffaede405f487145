"""The process set-up helpers shared by the training engines."""

from __future__ import annotations

import random

import pytest
import torch

from dyrelu.train import CheckpointError
from dyrelu.train.runtime import check_resume, seed_everything, set_cpu_threads


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
