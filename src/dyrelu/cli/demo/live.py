"""The demo's live part: train each activation briefly with the recipe, read its dynamics, draw them, time it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from dyrelu.cli._common import RESUME_GRID, print_line, user_errors, want_progress

__all__ = ["LABELS", "draw_dynamics", "time_steps", "train"]

LABELS = {"relu": "ReLU", "dyrelu_a": "DY-ReLU-A", "dyrelu_b": "DY-ReLU-B", "dyrelu_c": "DY-ReLU-C"}

#: Training images over which the BatchNorm statistics are recomputed before each evaluation (precise BN).
PRECISE_BN_IMAGES = 1024


def _config(args: argparse.Namespace, act: str):
    from dyrelu.train import TrainConfig

    return TrainConfig(
        model=args.model,
        act=act,
        small_input=args.small_input,
        data="fashion-mnist",
        data_dir=str(args.data_dir) if args.data_dir is not None else None,
        data_fraction=args.data_fraction,
        eval_fraction=args.eval_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=min(1.0, args.epochs / 4),
        precise_bn=PRECISE_BN_IMAGES,
        seed=args.seed,
        threads=args.threads,
        tensorboard=False,
    )


def train(args: argparse.Namespace, act: str) -> tuple[dict[str, Any], Any]:
    """Train (or resume) the demo's network with ``act``: its row of the results and the fit's result."""
    from dyrelu.analysis import is_static, profile_model

    label = LABELS.get(act, act)
    print(
        f"== {label}: {args.model} on {args.data_fraction:g} of Fashion-MNIST's training set, "
        f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}",
        flush=True,
    )
    with user_errors(checkpoint=args.out / act, resume=RESUME_GRID):
        result = fit_run(args, act)
    last = result.metrics[-1]
    profile = profile_model(result.model, (1, result.config.in_chans, 28, 28))
    dynamics = {key: last.get(key) for key in ("dyn_median", "dyn_max", "dyn_b_median")}
    row = {
        "act": act,
        "label": label,
        "test_acc": last["test_acc"],
        "test_loss": last["test_loss"],
        "params": int(profile.params),
        "madds": int(profile.madds),
        **dynamics,
        "static": is_static(dynamics),
        "train_seconds": sum(row["epoch_seconds"] for row in result.metrics),
        "epochs": len(result.metrics),
    }
    return row, result


def fit_run(args: argparse.Namespace, act: str):
    from dyrelu.train import fit

    return fit(_config(args, act), args.out / act, resume=True, log=print_line, progress=want_progress(args))


def draw_dynamics(args: argparse.Namespace, act: str, model: torch.nn.Module, count: int = 256) -> dict[str, Any]:
    """Draw the dynamics of a trained DY-ReLU network on its first ``count`` test images in ``OUT/<act>-dynamics``."""
    from dyrelu.analysis import visualize_dynamics
    from dyrelu.data import create_dataset, normalize_batch
    from dyrelu.train import load_checkpoint

    norm = load_checkpoint(args.out / act)["normalization"]
    test = create_dataset("fashion-mnist", args.data_dir, train=False)
    images = normalize_batch(test.images[:count], tuple(norm["mean"]), tuple(norm["std"]))
    return visualize_dynamics(
        model.cpu().eval(),
        images,
        args.out / f"{act}-dynamics",
        points_per_layer=2048,
        meta={"checkpoint": str(args.out / act / "last.pt"), "images": f"the first {count} test images"},
    )


def time_steps(args: argparse.Namespace, acts: list[str], rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """Seconds per training step and per evaluation batch of fresh networks with each of ``acts``, interleaved in
    this process (:func:`dyrelu.analysis.timing.time_side_by_side`): the medians over ``rounds``."""
    from dyrelu.analysis.timing import time_side_by_side
    from dyrelu.models import create_model
    from dyrelu.train import create_optimizer

    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch_size, 1, 28, 28, generator=generator).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator)
    models, optimizers = {}, {}
    for act in acts:
        model = create_model(args.model, act=act, num_classes=10, in_chans=1, small_input=args.small_input)
        models[act] = model.to(memory_format=torch.channels_last)
        optimizers[act] = create_optimizer(models[act], "sgd", args.lr, 5e-4, hyper_weight_decay=False)
    times = time_side_by_side(
        models, images, labels, optimizers=optimizers, rounds=rounds, steps=steps, threads=args.threads
    )
    return {act: {"train": t.train_seconds, "eval": t.eval_seconds} for act, t in times.items()}


def relative(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter in printed lines)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
