"""The demo's tables, learning curves and result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dyrelu.files import write_text_atomic

__all__ = ["accuracy_table", "plot_curves", "speed_table", "write_results"]


def _count(value: int | None) -> str:
    """A count in thousands or millions (``n/a`` for ``None``)."""
    if value is None:
        return "n/a"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}K"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    rule = "|" + "|".join("---:" if i else ":---" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(cells) + " |" for cells in rows)])


def _dynamics(row: dict[str, Any]) -> tuple[str, str]:
    """The slope range cell (median / max over layers) and the layers' state (dynamic or static)."""
    if row.get("dyn_median") is None:
        return "–", "–"
    return f"{row['dyn_median']:.3g} / {row['dyn_max']:.3g}", "static" if row["static"] else "dynamic"


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the live runs: accuracy, loss, size and the DY-ReLU layers' dynamics."""
    header = ["activation", "test acc (%)", "test loss", "params", "MAdds", "slope range median / max", "layers"]
    cells = [
        [
            row["label"],
            f"{row['test_acc']:.2f}",
            f"{row['test_loss']:.3f}",
            _count(row["params"]),
            _count(row["madds"]),
            *_dynamics(row),
        ]
        for row in rows
    ]
    return _markdown(header, cells)


def speed_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the side-by-side timing: ms per training step and evaluation batch, and vs the first."""
    base = rows[0]
    header = ["activation", "train step (ms)", f"× {base['label']}", "eval batch (ms)", f"× {base['label']}"]
    cells = [
        [
            row["label"],
            f"{1e3 * row['train_step_seconds']:.1f}",
            f"{row['train_step_seconds'] / base['train_step_seconds']:.2f}",
            f"{1e3 * row['eval_batch_seconds']:.1f}",
            f"{row['eval_batch_seconds'] / base['eval_batch_seconds']:.2f}",
        ]
        for row in rows
    ]
    return _markdown(header, cells)


def plot_curves(runs: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """The accuracy and loss curves of every run, train and test, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for label, metrics in runs.items():
        epochs = [row["epoch"] for row in metrics]
        (line,) = ax_acc.plot(epochs, [row["test_acc"] for row in metrics], marker="o", label=f"{label} test")
        color = line.get_color()
        ax_acc.plot(epochs, [row["train_acc"] for row in metrics], ls="--", color=color, label=f"{label} train")
        ax_loss.plot(epochs, [row["train_loss"] for row in metrics], ls="--", color=color, label=f"{label} train")
        ax_loss.plot(epochs, [row["test_loss"] for row in metrics], marker="o", color=color, label=f"{label} test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (train: with label smoothing)")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out: Path, results: dict[str, Any], markdown: str) -> list[Path]:
    """``out/results.json`` and ``out/results.md``, each written atomically; the paths written."""
    json_path = write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    md_path = write_text_atomic(out / "results.md", markdown)
    return [json_path, md_path]
