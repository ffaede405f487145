"""A full disk is a message, not a traceback: dyrelu.files.WriteError from every writer, one line at the CLI.

No tmpfs needed: the writes are made to fail (a file object that runs out of space after a few bytes,
as a full disk does under torch.save, or an ``os.replace`` that fails).
"""

from __future__ import annotations

import errno
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from dyrelu.cli import main
from dyrelu.files import WriteError, write_errors, write_text_atomic
from dyrelu.train import MetricsWriter, load_checkpoint, read_metrics, save_checkpoint
from dyrelu.train import checkpoint as checkpoint_module
from tests.cli.test_train import TRAIN

ENOSPC = os.strerror(errno.ENOSPC)


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: the write that does not fit fails with ENOSPC."""

    room = 1024

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, ENOSPC)
        self.room -= size
        return super().write(data)


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> list[Path]:
    """Let ``saves`` checkpoint writes through, then make the disk full; returns the files opened."""
    opened: list[Path] = []

    def fake_open(path, mode="r", *args, **kwargs):
        opened.append(Path(path))
        if len(opened) <= saves:
            return open(path, mode, *args, **kwargs)
        return _FullDisk(path, mode.replace("b", ""))

    monkeypatch.setattr(checkpoint_module, "open", fake_open, raising=False)
    return opened


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the writers --------------------------------------------------------------------------------------------


def test_write_error_is_one_line_oserror_and_pickles():
    err = WriteError("out/last.pt", ENOSPC, errno.ENOSPC, what="the checkpoint")
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == "out/last.pt"
    assert str(err) == f"cannot write the checkpoint out/last.pt: {ENOSPC}"
    assert err.path == Path("out/last.pt") and err.reason == ENOSPC
    again = pickle.loads(pickle.dumps(err))  # it crosses from a grid's worker processes
    assert type(again) is WriteError and str(again) == str(err) and again.errno == errno.ENOSPC


def test_write_errors_finds_the_oserror_behind_torchs_runtimeerror():
    with pytest.raises(WriteError, match=f"cannot write x.pt: {ENOSPC}"), write_errors("x.pt"):
        try:
            raise OSError(errno.ENOSPC, ENOSPC)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None
    with pytest.raises(RuntimeError, match="a bug"), write_errors("x.pt"):  # not a write error: unchanged
        raise RuntimeError("a bug")


def test_save_checkpoint_on_a_full_disk_keeps_the_last_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"config": {}, "epoch": 1, "model": {"w": torch.ones(3)}}, path)
    opened = _fill_disk_after(monkeypatch, saves=0)
    with pytest.raises(WriteError) as info:
        save_checkpoint({"config": {}, "epoch": 2, "model": {"w": torch.zeros(4096)}}, path)
    err = info.value
    assert err.path == path and err.errno == errno.ENOSPC
    assert str(err) == f"cannot write the checkpoint {path}: {ENOSPC}"
    assert opened and opened[0].name.endswith(".tmp")  # torch.save wrote to a temporary file, then failed
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert _files(tmp_path) == ["last.pt"], "the temporary file was left behind"


def test_save_checkpoint_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"config": {}, "epoch": 1, "model": {}}, path)

    def no_rename(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(WriteError, match="Read-only file system"):
        save_checkpoint({"config": {}, "epoch": 2, "model": {}}, path)
    assert load_checkpoint(path)["epoch"] == 1 and _files(tmp_path) == ["last.pt"]


def test_metrics_and_text_files(tmp_path, monkeypatch):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write([{"epoch": 1, "test_acc": 50.0}])

    def full(src, dst):
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError, match=f"cannot write the metrics {tmp_path / 'metrics.csv'}: {ENOSPC}"):
        writer.write([{"epoch": 1, "test_acc": 50.0}, {"epoch": 2, "test_acc": 60.0}])
    assert [row["epoch"] for row in read_metrics(tmp_path)] == [1] and _files(tmp_path) == ["metrics.csv"]
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'a.txt'}: {ENOSPC}"):
        write_text_atomic(tmp_path / "a.txt", "x")


def test_results_row(tmp_path, monkeypatch):
    from dyrelu.experiments import append_row, read_results

    results = tmp_path / "grid.csv"
    append_row(results, {"run_id": "a"}, columns=("run_id",))

    def full(src, dst):
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError, match=f"cannot write {results}: {ENOSPC}"):
        append_row(results, {"run_id": "b"}, columns=("run_id",))
    assert read_results(results) == [{"run_id": "a"}] and _files(tmp_path) == ["grid.csv"]


# -- the command line ---------------------------------------------------------------------------------------


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dyrelu {command}: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_train_on_a_full_disk_says_so_and_resume_finishes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    opened = _fill_disk_after(monkeypatch, saves=1)  # the second checkpoint write fails, as measured
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 2
    ckpt = out / "last.pt"
    line = _one_line_error(capsys, "train")
    assert line == (
        f"dyrelu train: error: cannot write the checkpoint {ckpt}: {ENOSPC}; the last good checkpoint {ckpt} "
        "(epoch 1) is intact; free some space, then rerun with --resume"
    )
    assert len(opened) == 2
    assert load_checkpoint(ckpt)["epoch"] == 1
    assert not [name for name in _files(out) if name.endswith(".tmp")], "the temporary file was left behind"

    monkeypatch.undo()  # space freed
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert "after epoch 1: continuing with epoch 2" in capsys.readouterr().out
    assert load_checkpoint(ckpt)["epoch"] == 2 and [row["epoch"] for row in read_metrics(out)] == [1, 2]

    # Nothing was lost: the same run without the full disk ends with the same metrics.
    reference = tmp_path / "reference"
    assert main([*TRAIN, "--epochs", "2", "--out", str(reference)]) == 0
    assert _untimed(read_metrics(out)) == _untimed(read_metrics(reference))


def _untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "train_images_per_second")} for row in rows]


def test_train_metrics_write_fails(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    replace = os.replace
    metrics_writes = []

    def full_on_second_metrics(src, dst):
        if Path(dst).name == "metrics.csv":
            metrics_writes.append(dst)
            if len(metrics_writes) == 2:
                raise OSError(errno.ENOSPC, ENOSPC)
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", full_on_second_metrics)
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 2
    line = _one_line_error(capsys, "train")
    assert f"cannot write the metrics {out / 'metrics.csv'}: {ENOSPC}" in line
    assert f"the last good checkpoint {out / 'last.pt'} (epoch 1) is intact" in line and "--resume" in line
    assert load_checkpoint(out)["epoch"] == 1 and [row["epoch"] for row in read_metrics(out)] == [1]


def test_train_before_any_checkpoint(tmp_path, monkeypatch, capsys):
    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 2
    line = _one_line_error(capsys, "train")
    assert line == (
        f"dyrelu train: error: cannot write {out / 'config.json'}: Read-only file system; no checkpoint had been "
        "written yet; fix that, then rerun with --resume"
    )


def test_compare_results_row(tmp_path, monkeypatch, capsys):
    import dyrelu.experiments

    def full_grid(results, *args, **kwargs):
        raise WriteError(results, ENOSPC, errno.ENOSPC)

    monkeypatch.setattr(dyrelu.experiments, "run_grid", full_grid)
    results = tmp_path / "grid.csv"
    assert main(["compare", "--claims", "C1", "--results", str(results), "--jobs", "1"]) == 2
    line = _one_line_error(capsys, "compare")
    assert line.startswith(f"dyrelu compare: error: cannot write {results}: {ENOSPC}; free some space, then rerun")
    assert "resume from their checkpoints" in line


def test_main_catches_a_write_error_of_any_command(monkeypatch, capsys):
    import dyrelu.cli.report

    def full(args):
        raise WriteError("report.md", ENOSPC, errno.ENOSPC)

    monkeypatch.setattr(dyrelu.cli.report, "run", full)
    assert main(["report"]) == 2
    assert _one_line_error(capsys, "report") == f"dyrelu report: error: cannot write report.md: {ENOSPC}"
