"""``dyrelu visualize``: what the DY-ReLU layers of a trained network do (figures and a JSON summary).

With ``--samples N`` it draws instead the first N images of a dataset with their labels (no checkpoint).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dyrelu.cli import CLIError
from dyrelu.cli._common import add_data_args, data_kwargs, positive, user_errors

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``visualize`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "visualize",
        help="plot what the DY-ReLU layers of a checkpoint learned (input vs output, coefficients, π), "
        "or a dataset's images (--samples)",
        description=(
            "Run the network of CHECKPOINT over NUM_IMAGES images of its test set (or of --data) chosen with "
            "--seed, record the input, output and coefficients of every DY-ReLU layer, and write to OUT: "
            "scatter.png (input vs output per layer, coloured by image), coefficients.png (slopes and intercepts "
            "per piece), dynamic_range.png, attention.png (DY-ReLU-C's spatial attention, if any), "
            "dynamics_grid.png (a few layers, for a README) and summary.json. The dynamic range of a layer is "
            "the mean over channels and pieces of the standard deviation across images of its coefficients "
            "(0: a static activation). With --samples N and no checkpoint, write instead OUT/samples.png: the "
            "first N images of the --split of --data as stored (before augmentation and normalisation), each "
            "titled with its class, and print its path. The same arguments give the same files."
        ),
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a checkpoint file or a training run's folder (required unless --samples is given)",
    )
    parser.add_argument(
        "--samples",
        type=positive(),
        default=None,
        metavar="N",
        help="draw the first N images of --data with their classes into OUT/samples.png instead (no checkpoint)",
    )
    add_data_args(parser, for_eval=True)
    parser.add_argument(
        "--split", choices=("test", "train"), default="test", help="which split the images come from (default test)"
    )
    parser.add_argument("--num-images", type=positive(), default=128, help="images to run (default 128)")
    parser.add_argument(
        "--points", type=positive(), default=4096, help="input/output samples per layer in the scatter (default 4096)"
    )
    parser.add_argument("--grid-layers", type=positive(), default=6, help="layers in dynamics_grid.png (default 6)")
    parser.add_argument("--attention-images", type=positive(), default=4, help="images in attention.png (default 4)")
    parser.add_argument("--batch-size", type=positive(), default=64, help="images per forward pass (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="chooses the images and the samples (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _load_images(args: argparse.Namespace, state: dict[str, Any]):
    """The normalised images, chosen from the data with ``args.seed``, and a description of the data."""
    import torch

    from dyrelu.data import DataError, create_dataset, normalize_batch

    config = state["config"]
    extra = data_kwargs(args)
    if args.data is None:
        name = config["data"]
        data_dir = args.data_dir if args.data_dir is not None else config.get("data_dir")
        kwargs = {**config.get("data_kwargs", {}), **extra}
    else:
        name, data_dir, kwargs = args.data, args.data_dir, extra
    dataset = create_dataset(name, data_dir, train=args.split == "train", augment=False, **kwargs)
    expected = config.get("in_chans")
    if expected is not None and dataset.image_shape[0] != expected:
        raise DataError(
            f"the checkpoint's model takes {expected}-channel images, the data {name} has {dataset.image_shape[0]}"
        )
    if len(dataset) == 0:
        raise DataError(f"the {args.split} split of {name} has no images")
    count = min(args.num_images, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count]
    norm = state.get("normalization") or {"mean": dataset.mean, "std": dataset.std}
    images = normalize_batch(dataset.images[order], tuple(norm["mean"]), tuple(norm["std"]))
    return images, {"data": name, "split": args.split, "data_dir": None if data_dir is None else str(data_dir)}


def _write_samples(args: argparse.Namespace) -> Path:
    """``--samples N``: draw the first N stored images of ``--data`` with their classes into ``OUT/samples.png``."""
    from dyrelu.analysis import plot_samples
    from dyrelu.data import DataError, create_dataset

    if args.checkpoint is not None:
        raise CLIError("--samples draws no checkpoint's data; give --data and leave out --checkpoint")
    if args.data is None:
        raise CLIError("--samples needs --data (there is no checkpoint to take it from)")
    with user_errors():
        dataset = create_dataset(
            args.data, args.data_dir, train=args.split == "train", augment=False, **data_kwargs(args)
        )
        if len(dataset) == 0:
            raise DataError(f"the {args.split} split of {args.data} has no images")
        count = min(args.samples, len(dataset))
        title = f"{args.data} ({args.split} split): the first {count} images and their classes"
        return plot_samples(
            dataset.images[:count], dataset.labels[:count], dataset.classes, args.out / "samples.png", title=title
        )


def run(args: argparse.Namespace) -> int:
    """Write the figures and summary for ``args.checkpoint``, or the grid of ``--samples``.

    User errors raise :class:`CLIError`.
    """
    from dyrelu.analysis import dyrelu_layers, visualize_dynamics
    from dyrelu.data import DataError
    from dyrelu.train import model_from_checkpoint

    if args.samples is not None:
        print(_write_samples(args))
        return 0
    if args.checkpoint is None:
        raise CLIError("--checkpoint is required unless --samples is given")
    with user_errors():
        model, state = model_from_checkpoint(args.checkpoint, device=args.device)
        config = state["config"]
        if not dyrelu_layers(model):
            raise CLIError(
                f"the network in {args.checkpoint} ({config['model']}, act={config['act']!r}) has no DY-ReLU layer; "
                "expected one trained with --act dyrelu_a, dyrelu_b or dyrelu_c"
            )
        try:
            images, data = _load_images(args, state)
        except DataError:
            raise  # user_errors turns it into one line
        except ValueError as err:  # bad data options, e.g. --image-size for Fashion-MNIST
            raise CLIError(str(err).splitlines()[0]) from None
        meta = {
            "checkpoint": str(args.checkpoint),
            "model": config["model"],
            "act": config["act"],
            "epoch": state["epoch"],
            **data,
        }
        try:
            summary = visualize_dynamics(
                model,
                images,
                args.out,
                points_per_layer=args.points,
                grid_panels=args.grid_layers,
                attention_images=args.attention_images,
                batch_size=args.batch_size,
                seed=args.seed,
                meta=meta,
            )
        except ValueError as err:
            raise CLIError(str(err).splitlines()[0]) from None
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{args.checkpoint} ({config['model']}, {config['act']}, epoch {state['epoch']}): "
        f"{len(summary['layers'])} DY-ReLU layers over {summary['num_images']} {data['data']} {data['split']} images"
    )
    width = max(len("layer"), *(len(row["name"]) for row in summary["layers"]))
    print(f"{'layer':<{width}}  var  {'C':>5}  K  {'range a':>9}  {'range b':>9}")
    for row in summary["layers"]:
        print(
            f"{row['name']:<{width}}  {row['variant']:>3}  {row['channels']:>5}  {row['k']}  "
            f"{row['dynamic_range_a']:>9.4g}  {row['dynamic_range_b']:>9.4g}"
        )
    print(f"wrote {', '.join(summary['files'].values())} to {args.out}")
    return 0
