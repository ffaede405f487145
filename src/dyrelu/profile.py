"""Deprecated alias of :mod:`dyrelu.analysis.cost` (removed in dyrelu 0.3).

The module moved because its name shadowed the standard library's :mod:`profile` wherever the package's own
folder is on the path; import :mod:`dyrelu.analysis.cost` (or its names from :mod:`dyrelu.analysis`) instead.
Each name read from here warns once per place it is read, and is the one of :mod:`dyrelu.analysis.cost`.
"""

from __future__ import annotations

import warnings
from typing import Any

from dyrelu.analysis import cost as _cost

__all__ = _cost.__all__  # served by __getattr__, with a warning


def __getattr__(name: str) -> Any:
    if name in _cost.__all__:
        warnings.warn(
            f"dyrelu.profile is deprecated (removed in dyrelu 0.3): import {name} from dyrelu.analysis.cost",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_cost, name)
    raise AttributeError(f"module 'dyrelu.profile' has no attribute {name!r}")
