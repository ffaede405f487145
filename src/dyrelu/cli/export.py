"""``dyrelu export``: a checkpoint's network as ONNX (checked with onnxruntime) or a torch.export program."""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from pathlib import Path

from dyrelu.cli import CLIError
from dyrelu.cli._common import positive, user_errors

__all__ = ["add_parser", "run"]

_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (checked with onnxruntime) or torch.export (.pt2)",
        description=(
            "Rebuild the network from CHECKPOINT, export it in eval mode with a dynamic batch dimension, and check "
            "the exported program against the eager model on random images (ONNX: with onnxruntime, if installed). "
            "Input: normalised float32 images (N, C, H, W) as in training; output: logits (N, classes)."
        ),
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint file or a training run's folder")
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="default onnx")
    parser.add_argument("--out", required=True, type=Path, help="the file to write")
    parser.add_argument("--opset", type=positive(), default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--exporter",
        choices=("dynamo", "legacy"),
        default="dynamo",
        help="ONNX: torch.export-based (default) or the legacy TorchScript-based exporter",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the numerical check")
    return parser


def _export_onnx(model, example, out: Path, opset: int | None, exporter: str) -> None:
    """Write ``model`` as ONNX with a dynamic batch dimension (``exporter``: ``dynamo`` or the TorchScript one)."""
    import torch

    kwargs = {"input_names": ["images"], "output_names": ["logits"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporters' notes on tracing and deprecation, not the user's concern
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                model, (example,), str(out), dynamo=True, dynamic_shapes=({0: batch},), verbose=False, **kwargs
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                str(out),
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                **kwargs,
            )


def _check_onnx(path: Path, model, images) -> str:
    """Run the ONNX file with onnxruntime on ``images`` against the eager model; what was checked, in words."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return "not checked: onnxruntime is not installed (pip install onnxruntime)"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    return _compare(got, model, images, "onnxruntime")


def _export_pt2(model, example, out: Path) -> None:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) with a dynamic batch dimension."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(out))


def _check_pt2(path: Path, model, images) -> str:
    """Load the ``.pt2`` program and run it on ``images`` against the eager model; what was checked, in words."""
    import torch

    program = torch.export.load(str(path))
    with torch.no_grad():
        got = program.module()(images)
    return _compare(got, model, images, "torch.export.load")


def _compare(got, model, images, runner: str) -> str:
    """``got`` (the exported program's output, from ``runner``) against the eager model's within the tolerance.

    Raises:
        CLIError: the shapes differ or a value is off by more than the tolerance.
    """
    import torch

    with torch.no_grad():
        want = model(images)
    if got.shape != want.shape or not torch.allclose(got, want, **_TOLERANCE):
        diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
        raise CLIError(
            f"the exported program disagrees with the eager model: {runner} gives shape {tuple(got.shape)}, max "
            f"difference {diff:.3g} (expected {tuple(want.shape)} within atol {_TOLERANCE['atol']} + rtol "
            f"{_TOLERANCE['rtol']} of the eager output)"
        )
    return f"checked with {runner} on {images.shape[0]} images: max difference {(got - want).abs().max().item():.2e}"


def run(args: argparse.Namespace) -> int:
    """Export ``args.checkpoint``; user errors raise :class:`CLIError`."""
    import torch

    from dyrelu.train import model_from_checkpoint

    with user_errors():
        model, state = model_from_checkpoint(args.checkpoint)
    shape = tuple(state.get("input_shape") or ())
    if len(shape) != 3:
        raise CLIError(f"{args.checkpoint} does not record the input shape (C, H, W); it cannot be exported")
    generator = torch.Generator().manual_seed(0)
    # A batch of 2: exporters specialise dimensions of size 1, which would fix the batch size.
    example = torch.randn(2, *shape, generator=generator)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.format == "onnx":
            _export_onnx(model, example, args.out, args.opset, args.exporter)
        else:
            _export_pt2(model, example, args.out)
    except ImportError as err:
        raise CLIError(f"{err} (ONNX export needs onnx and onnxscript: pip install onnx onnxscript)") from None
    except Exception as err:  # the exporters raise many types; the user needs the reason in one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CLIError(f"export to {args.format} failed: {type(err).__name__}: {reason[:300]}") from None
    message = f"wrote {args.out} ({args.format}, input images (N, {', '.join(map(str, shape))}), output logits)"
    if not args.no_check:
        images = torch.randn(3, *shape, generator=generator)
        check = _check_onnx if args.format == "onnx" else _check_pt2
        message += "; " + check(args.out, model, images)
    print(message)
    return 0
