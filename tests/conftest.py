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


def dyrelu_reference(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None = None):
    """The naive formulation of the public implementations: a ``K``-times expanded tensor, then max.

    The tests' reference for :func:`dyrelu.functional.piecewise_max` (same arguments).
    """
    spatial = x.dim() - 2
    a = a.reshape(a.shape[:2] + (1,) * spatial + a.shape[-1:]).to(x.dtype)
    b = b.reshape(b.shape[:2] + (1,) * spatial + b.shape[-1:]).to(x.dtype)
    y = (x.unsqueeze(-1) * a + b).max(dim=-1).values
    return y if scale is None else y * scale


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests, restored after (``pytestmark = pytest.mark.usefixtures(...)``).

    Their inputs are tiny: a second thread only adds contention on the shared 2-core machines, and a test
    elsewhere that sets the thread count without restoring it must not slow these down.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
