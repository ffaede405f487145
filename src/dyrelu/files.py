"""Writing result files so that a crash never leaves a half-written one behind, and a failed write says why."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["WriteError", "write_errors", "write_text_atomic"]


class WriteError(OSError):
    """A file could not be written (a full disk, a read-only folder, a quota, ...); the message is one line.

    Raised by the writers of checkpoints, metrics and results (which write to a temporary file and rename
    it, so the previous version of the file is intact when this is raised).

    Args:
        path: the file that could not be written.
        reason: why, in words (the errno text, for example ``"No space left on device"``).
        errno: the ``errno`` number, if known (``err.errno`` is then set as for any ``OSError``).
        what: what the file is, for the message (``"the checkpoint"``); ``None``: just its path.

    Example:
        >>> import errno, os
        >>> err = WriteError("out/last.pt", os.strerror(errno.ENOSPC), errno.ENOSPC, what="the checkpoint")
        >>> str(err)
        'cannot write the checkpoint out/last.pt: No space left on device'
        >>> isinstance(err, OSError), err.errno == errno.ENOSPC
        (True, True)
    """

    def __init__(
        self, path: str | os.PathLike, reason: str, errno: int | None = None, *, what: str | None = None
    ) -> None:
        super().__init__(errno, reason, str(path))
        self.path = Path(path)
        self.reason = reason
        self.what = what

    def __str__(self) -> str:
        what = f"{self.what} " if self.what else ""
        return f"cannot write {what}{self.path}: {self.reason}"

    def __reduce__(self):
        # Crosses process boundaries (a grid's worker processes): rebuild from the same arguments.
        return _rebuild_write_error, (str(self.path), self.reason, self.errno, self.what)


def _rebuild_write_error(path: str, reason: str, errno: int | None, what: str | None) -> WriteError:
    return WriteError(path, reason, errno, what=what)


def _os_error_in(err: BaseException) -> OSError | None:
    """``err`` or the first ``OSError`` it was raised from or during (torch.save reports a failed write as a
    ``RuntimeError`` raised while handling the ``OSError``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _reason(err: OSError) -> str:
    if err.errno is not None:
        return os.strerror(err.errno)
    if err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def write_errors(path: str | os.PathLike, what: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block (or one behind torch's ``RuntimeError``) into :class:`WriteError`.

    Other errors (a bug, an object that cannot be pickled) pass through unchanged.

    Example:
        >>> import errno, os
        >>> with write_errors("out/a.csv"):
        ...     raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        Traceback (most recent call last):
        ...
        dyrelu.files.WriteError: cannot write out/a.csv: Read-only file system
    """
    try:
        yield
    except WriteError:
        raise
    except Exception as err:
        cause = _os_error_in(err)
        if cause is None:
            raise
        raise WriteError(path, _reason(cause), cause.errno, what=what) from err


def write_text_atomic(path: str | os.PathLike, text: str, *, what: str | None = None) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see either the old file or the new one, never a part of it; a failure leaves the old file
    as it was and removes the temporary one. Missing parent folders are created.

    Args:
        path: the file.
        text: its new content.
        what: what the file is, for the message of a :class:`WriteError` (``"the metrics"``).

    Raises:
        WriteError: the file could not be written (a full disk, a read-only folder, ...).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = write_text_atomic(Path(d) / "out" / "a.csv", "x\\n1\\n")
        ...     path.read_text()
        'x\\n1\\n'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with write_errors(path, what):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            _remove_quietly(tmp)
    return path


def _remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists; an error doing so must not hide the one being raised."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
