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
