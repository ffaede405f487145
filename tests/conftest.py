"""Shared fixtures: seeded, deterministic tests; per-dtype tolerances."""

from __future__ import annotations

import pytest
import torch

# One intra-op thread: the suite's tensors are small, and CI machines are shared; with two threads on
# two busy cores the same tests ran 5-10x slower.
torch.set_num_threads(1)

TOLERANCES = {
    torch.float64: {"atol": 1e-12, "rtol": 1e-10},
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 5e-2, "rtol": 5e-2},
}


def tol(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances for comparing results computed in ``dtype``."""
    return TOLERANCES[dtype]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
