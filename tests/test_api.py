"""The public API is pinned; importing the package is silent; the README example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dyrelu

README = Path(__file__).resolve().parents[1] / "README.md"


def test_public_api_is_pinned():
    assert dyrelu.__all__ == sorted(dyrelu.__all__)
    for name in ("DyReLUA", "DyReLUB", "DyReLUC", "convert", "create_act", "list_acts", "functional"):
        assert name in dyrelu.__all__, name
    for name in dyrelu.__all__:
        assert hasattr(dyrelu, name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", dyrelu.__version__)


def test_import_emits_no_warning_and_needs_only_torch():
    code = (
        "import sys, warnings; warnings.simplefilter('error'); import dyrelu; "
        "assert 'torchvision' not in sys.modules and 'timm' not in sys.modules, 'core imports vision packages'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_readme_lists_every_registered_activation():
    row = next(line for line in README.read_text().splitlines() if "the activation registry:" in line)
    listed = set(re.split(r"[,/ ]+", row.split("the activation registry:")[1].strip(" |")))
    assert listed == set(dyrelu.list_acts())


def _api_table_names() -> set[str]:
    """The top-level names in the first column of the README's "Public API" table (``dyrelu.X``, ``X(...)``)."""
    section = README.read_text().split("\n## Public API\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")][1:]
    names = set()
    for row in rows:
        for code in re.findall(r"`([^`]+)`", row.split("|")[1]):
            name = code.split("(")[0].strip()
            names.add(name.removeprefix("dyrelu."))
    return names


def test_readme_api_table_names_exactly_the_public_api():
    listed = _api_table_names()
    assert listed, "README has no Public API table"
    assert not listed - set(dyrelu.__all__), (
        f"in the README's API table but not in dyrelu.__all__: {listed - set(dyrelu.__all__)}"
    )
    assert not set(dyrelu.__all__) - listed, (
        f"in dyrelu.__all__ but not in the README's API table: {set(dyrelu.__all__) - listed}"
    )
