"""Checks of a public API: a sorted, complete ``__all__``, and an import that warns of nothing."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType


def _ruff_order(name: str) -> tuple[bool, bool, str]:
    return not name.isupper(), not name[0].isupper(), name  # constants, classes, functions (ruff's RUF022)


def assert_pinned(*modules: ModuleType) -> None:
    """Each module's ``__all__`` is sorted as ruff sorts it and names only what the module has."""
    for module in modules:
        assert module.__all__ == sorted(module.__all__, key=_ruff_order), module.__name__
        assert all(hasattr(module, name) for name in module.__all__), module.__name__


def assert_clean_import(*names: str, absent: str = "torchvision") -> None:
    """Importing ``names`` in a fresh interpreter warns of nothing and does not import ``absent``."""
    code = (
        f"import sys, warnings; warnings.simplefilter('error'); import {', '.join(names)}; "
        f"assert {absent!r} not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
