"""The file sink's one-file writer (``sinks/_file_writer.py``): appends follow the path after a
rename, a full disk is retried and the failed batch cut back, errors are one clear line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from logpipe.errors import DiskFullError, SinkConfigError, SinkError
from logpipe.sinks import _file_writer
from logpipe.sinks._file_writer import LogFile, file_error


def test_append_after_a_rename_goes_to_the_fresh_file(tmp_path: Path) -> None:
    """When the path was renamed away (cron rotation), the next append lands in a new file at
    the path, and the renamed file keeps only what was written before."""
    path = tmp_path / "api.log"
    log = LogFile(str(path))
    log.open(daily=False)
    log.write_locked(b"one\n", daily=False)
    assert not log.moved()
    os.rename(path, tmp_path / "api.log.1")
    assert log.moved()
    log.write_locked(b"two\n", daily=False)
    log.close()
    assert (tmp_path / "api.log.1").read_bytes() == b"one\n"
    assert path.read_bytes() == b"two\n"
    assert log.size == 4 and log.fd == -1


def test_full_disk_is_retried_then_fails_leaving_no_partial_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC is retried for DISK_FULL_RETRY_SECONDS, then DiskFullError; what was half written
    is cut back off, so the file holds only whole earlier lines."""
    path = tmp_path / "api.log"
    log = LogFile(str(path))
    log.open(daily=False)
    log.write_locked(b"kept\n", daily=False)
    calls = []
    real_write = os.write

    def half_then_full(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:3]))  # a partial line reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_file_writer, "DISK_FULL_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(_file_writer.os, "write", half_then_full)
    with pytest.raises(DiskFullError, match="disk full, cannot write"):
        log.write_locked(b"lost line\n", daily=False)
    monkeypatch.undo()
    assert len(calls) >= 3  # retried, not failed at the first ENOSPC
    log.close()
    assert path.read_bytes() == b"kept\n"


@pytest.mark.parametrize(("code", "kind", "words"), [
    (errno.ENOSPC, DiskFullError, "disk full"),
    (errno.EFBIG, DiskFullError, "file size limit"),
    (errno.EACCES, SinkConfigError, "cannot open"),
    (errno.EIO, SinkError, "cannot open"),
])
def test_file_error_names_the_cause_in_one_line(code: int, kind: type, words: str) -> None:
    """Each OSError becomes the sink's one-line error of the right kind, naming the file."""
    err = file_error("/d/api.log", OSError(code, os.strerror(code)), "open")
    assert type(err) is kind
    assert words in str(err) and "/d/api.log" in str(err) and "\n" not in str(err)
