"""Per-epoch metrics: a CSV file rewritten atomically each epoch, and TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from dyrelu.files import write_text_atomic

__all__ = ["METRICS_NAME", "MetricsWriter", "read_metrics"]

#: The file name of the metrics table in a run's output folder.
METRICS_NAME = "metrics.csv"


class MetricsWriter:
    """Writes the whole metrics history to ``out_dir/metrics.csv`` (and new rows to TensorBoard).

    The CSV is rewritten from the history each epoch, so after ``--resume`` it holds exactly the rows
    of the checkpoint's epochs, even if the process died between writing the CSV and the checkpoint.

    Args:
        out_dir: the run's output folder.
        tensorboard: log the scalars to ``out_dir/tb`` too, if TensorBoard is installed.
    """

    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / METRICS_NAME
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tb"))

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the CSV with ``history`` (one dict per epoch) and log its last row to TensorBoard.

        Raises:
            WriteError: the CSV could not be written; the previous one is intact.
        """
        if not history:
            return
        columns = list(history[0])
        for row in history[1:]:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        write_text_atomic(self.path, buffer.getvalue(), what="the metrics")
        if self._tb is not None:
            last = history[-1]
            for key, value in last.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, global_step=last["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt(value: Any) -> Any:
    # repr() of a float round-trips exactly, so a CSV compares equal iff the metrics are equal.
    return repr(value) if isinstance(value, float) else value


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics CSV (or a run folder's ``metrics.csv``) back, numbers as int/float."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
