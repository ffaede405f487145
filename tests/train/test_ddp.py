"""torchrun with 2 CPU processes (gloo) trains the same parameters as one process with the same global batch.

Condition: the network has no BatchNorm. BatchNorm normalises with per-rank batch statistics under DDP
(B images per rank instead of 2B), so its results legitimately differ from one process with batch 2B.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest
import torch

from dyrelu.train import load_checkpoint, read_metrics

JOB = textwrap.dedent(
    """
    import sys

    import torch
    from torch import nn

    from dyrelu import DyReLUB
    from dyrelu.data import make_synthetic
    from dyrelu.train import TrainConfig, fit


    def main(out, batch_size):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), DyReLUB(8), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.0), nn.Linear(8, 4),
        )
        train = make_synthetic(64, num_classes=4, image_size=8)
        train.pad, train.flip = 1, True  # augmentation depends on the image, not on the rank that draws it
        test = make_synthetic(20, num_classes=4, image_size=8, train=False)
        config = TrainConfig(
            model="no-bn", epochs=2, batch_size=batch_size, lr=0.05, warmup_epochs=0.5, threads=1, tensorboard=False
        )
        return fit(config, out, model=model, train_set=train, test_set=test)


    if __name__ == "__main__":
        main(sys.argv[1], int(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(JOB)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*launch, str(script), str(tmp_path / "ddp"), "8"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    spec = importlib.util.spec_from_file_location("ddp_job", script)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    single = job.main(tmp_path / "single", 16)

    ddp = load_checkpoint(tmp_path / "ddp")
    assert ddp["world_size"] == 2 and len(ddp["rng"]) == 2 and ddp["scheduler"]["last_step"] == 8
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["config.json", "last.pt", "metrics.csv"]
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    for got, want in zip(read_metrics(tmp_path / "ddp"), single.metrics, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-4)
        assert got["train_acc"] == want["train_acc"] and got["test_acc"] == want["test_acc"]
