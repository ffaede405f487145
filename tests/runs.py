"""Helpers of the training tests: stop a run after an epoch (as a kill would), compare metrics without timing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class Stop(Exception):
    """Raised by :func:`stop_after`'s log: the run stops right after an epoch's checkpoint."""


def stop_after(epoch: int) -> Callable[[str], None]:
    """A ``log`` for ``fit`` and ``fit_keypoints`` that raises :class:`Stop` on epoch ``epoch``'s line."""

    def log(line: str) -> None:
        if line.startswith(f"epoch {epoch}/"):
            raise Stop

    return log


def without(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` without ``columns`` (the timing, which differs from run to run)."""
    return [{k: v for k, v in row.items() if k not in columns} for row in rows]
