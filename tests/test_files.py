"""dyrelu.files: atomic writes."""

from __future__ import annotations

import os

import pytest

from dyrelu.files import write_text_atomic


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    assert write_text_atomic(path, "a\n1\n") == path
    assert path.read_text() == "a\n1\n"
    write_text_atomic(str(path), "a\n2\n")
    assert path.read_text() == "a\n2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.csv"]


def test_failure_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    path.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
