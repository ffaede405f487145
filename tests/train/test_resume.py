"""SIGKILL `python -m dyrelu train` in the middle of an epoch; --resume ends exactly as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dyrelu.train import load_checkpoint, read_metrics
from tests.datafiles import write_fashion_mnist

TIMING = ("epoch_seconds", "train_images_per_second")

# `dyrelu train` with a slow training data source: each training batch arrives 0.5 s late, so that the test
# can kill the run in the middle of an epoch. The delay lives here, not in the library's training loop.
_SLOW_TRAIN = """
import sys, time
from dyrelu.cli import main
from dyrelu.data import BatchLoader

batches = BatchLoader.__iter__

def slow_batches(self):
    for batch in batches(self):
        if self.train:
            time.sleep(0.5)
        yield batch

BatchLoader.__iter__ = slow_batches
sys.exit(main(sys.argv[1:]))
"""


def _train_command(data_dir, out, *extra, slow=False):
    return [
        sys.executable,
        *(["-c", _SLOW_TRAIN] if slow else ["-m", "dyrelu"]),
        "train",
        "--out",
        str(out),
        "--model",
        "mobilenetv2_035",  # with dropout: the RNG state must be restored too
        "--act",
        "relu",
        "--data",
        "fashion-mnist",  # with random crops and flips
        "--data-dir",
        str(data_dir),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--seed",
        "7",
        "--threads",
        "1",
        "--no-tensorboard",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = write_fashion_mnist(tmp_path / "data", n_train=96, n_test=32)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The reference runs at the same time as the victim (they only share the CPU, not the results).
    reference = subprocess.Popen(
        _train_command(data, tmp_path / "reference"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    # Six steps per epoch, each batch 0.5 s late: after the first checkpoint appears, epoch 2 runs for at least 3 s.
    victim = subprocess.Popen(
        _train_command(data, tmp_path / "run", slow=True),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "run" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    time.sleep(0.5)  # well inside epoch 2
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert load_checkpoint(checkpoint)["epoch"] == 1, "the kill did not land in epoch 2"
    assert len(read_metrics(tmp_path / "run")) == 1

    # Only --out and --resume: the settings come from the checkpoint.
    resumed = subprocess.run(
        [sys.executable, "-m", "dyrelu", "train", "--out", str(tmp_path / "run"), "--resume", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "after epoch 1: continuing with epoch 2" in resumed.stdout
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out

    rows = [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(tmp_path / "run")]
    expected = [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(tmp_path / "reference")]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows == expected
    got, want = load_checkpoint(tmp_path / "run"), load_checkpoint(tmp_path / "reference")
    assert got["model"].keys() == want["model"].keys()
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    for index, state in want["optimizer"]["state"].items():
        assert torch.equal(got["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
