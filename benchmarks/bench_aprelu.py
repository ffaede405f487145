"""APReLU's training step: the module as it is against the plain formula, in a whole network, side by side.

``dyrelu.APReLU`` computes ``min(x, 0)`` as ``x - max(x, 0)`` and its context as sums divided by the spatial size;
the plain formula (``clamp(x, max=0)``, means; what the module computed before) gives the same values, and its
backward pass runs clamp's comparison and ``where`` and divides full-size gradients. ``mobilenetv2_035`` on
1×28×28 inputs (batch 128, ``small_input``, 10 classes), as in the converged grid: ReLU, APReLU and APReLU with
every activation computed by the plain formula (the same parameters), their training steps (forward,
cross-entropy, backward, SGD) and inference batches timed in turn in one process (``time_side_by_side``),
medians over rounds.

Usage::

    python benchmarks/bench_aprelu.py                          # JSON to docs/benchmarks/aprelu_step.json
    python benchmarks/bench_aprelu.py --rounds 2 --steps 1 --out -
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from _common import metadata, write_json
from torch import Tensor, nn

from dyrelu import APReLU
from dyrelu.analysis.timing import time_side_by_side
from dyrelu.models import create_model


class PlainAPReLU(nn.Module):
    """An :class:`~dyrelu.APReLU` computed by the plain formula (parameters shared with ``inner``)."""

    def __init__(self, inner: APReLU) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        m = self.inner
        positive, negative = torch.relu(x), torch.clamp(x, max=0)
        dims = tuple(range(2, x.dim()))
        context = torch.cat([positive.mean(dims), negative.mean(dims)], dim=1)
        hidden = torch.relu(m._norm(F.linear(context, m.fc1_weight, m.fc1_bias), 1))
        alpha = torch.sigmoid(m._norm(F.linear(hidden, m.fc2_weight, m.fc2_bias), 2))
        return positive + alpha.view(alpha.shape + (1,) * len(dims)) * negative


def plain_like(model: nn.Module) -> nn.Module:
    """``model`` with every APReLU wrapped in :class:`PlainAPReLU`."""
    for name, child in list(model.named_children()):
        if isinstance(child, APReLU):
            setattr(model, name, PlainAPReLU(child))
        else:
            plain_like(child)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks/aprelu_step.json", help="JSON file; '-' prints it")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    images, labels = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))

    def build(act: str) -> nn.Module:
        torch.manual_seed(0)
        return create_model("mobilenetv2_035", act=act, num_classes=10, in_chans=1, small_input=True)

    models = {"relu": build("relu"), "aprelu": build("aprelu"), "aprelu_plain": plain_like(build("aprelu"))}
    times = time_side_by_side(models, images, labels, rounds=args.rounds, steps=args.steps, threads=args.threads)
    base = times["relu"]
    results = {
        name: {
            "train_step_s": t.train_seconds,
            "eval_batch_s": t.eval_seconds,
            "train_vs_relu": t.train_seconds / base.train_seconds,
            "train_rounds_s": list(t.train),
        }
        for name, t in times.items()
    }
    results["aprelu_plain"]["train_vs_aprelu"] = times["aprelu_plain"].train_seconds / times["aprelu"].train_seconds
    data = {"meta": metadata(args.threads, sys.argv), "batch": args.batch, "model": "mobilenetv2_035", **results}
    write_json(data, None if args.out == "-" else args.out)
    for name, r in results.items():
        print(f"{name}: train step {r['train_step_s']:.3f} s ({r['train_vs_relu']:.2f}× ReLU)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
