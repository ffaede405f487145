"""Deprecated alias of :mod:`dyrelu.analysis.cost` (removed in dyrelu 0.3).

The module moved because its name shadowed the standard library's :mod:`profile` wherever the package's own
folder is on the path; import :mod:`dyrelu.analysis.cost` (or its names from :mod:`dyrelu.analysis`) instead.
"""

from __future__ import annotations

import warnings

from dyrelu.analysis.cost import *  # noqa: F403  (the alias re-exports every public name)
from dyrelu.analysis.cost import __all__  # noqa: F401

warnings.warn(
    "dyrelu.profile is deprecated (removed in dyrelu 0.3): import dyrelu.analysis.cost",
    DeprecationWarning,
    stacklevel=2,
)
