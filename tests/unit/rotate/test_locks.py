"""rotate/locks.py: one rotation run per directory — a second waits, then fails with LockBusy."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logpipe import rotate
from tests._rotate_helpers import (
    json_lines,
    read_bytes,
    rotated_of,
    run_rotate,
    write_lines,
)
from tests.helpers import wait_for


def test_second_concurrent_run_waits_then_fails_with_lockbusy(tmp_path: Path) -> None:
    """While another run holds DIR/.logpipe-rotate.lock, `logpipe rotate` waits
    LOGPIPE_ROTATE_LOCK_WAIT seconds and exits 3 with a one-line message, changing nothing; when
    the lock is released during its wait, it proceeds."""
    log = tmp_path / "api.log"
    write_lines(log, json_lines(100))
    fd = os.open(tmp_path / rotate.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t0 = time.monotonic()
        res = run_rotate(str(log), env={rotate.LOCK_WAIT_ENV: "0.5"})
        assert res.returncode == 3
        assert time.monotonic() - t0 >= 0.5
        assert res.stderr.startswith("logpipe: another logpipe rotate is running in ")
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert rotated_of(log) == []

        proc = subprocess.Popen([sys.executable, "-m", "logpipe", "rotate", str(log)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, rotate.LOCK_WAIT_ENV: "20"})
        lock_path = str(tmp_path / rotate.LOCK_NAME)

        def at_the_lock() -> bool:
            # it has opened DIR/.logpipe-rotate.lock (and polls flock on it)
            try:
                fds = os.listdir(f"/proc/{proc.pid}/fd")
            except OSError:
                return False
            for fd_name in fds:
                try:
                    if os.readlink(f"/proc/{proc.pid}/fd/{fd_name}") == lock_path:
                        return True
                except OSError:
                    continue
            return False

        wait_for(at_the_lock, 20, message="second run reached the lock")
        assert proc.poll() is None and rotated_of(log) == []  # waiting, nothing changed
    finally:
        os.close(fd)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(rotated_of(log)) == 1


def test_two_real_runs_at_once_rotate_once(tmp_path: Path) -> None:
    """Two `logpipe rotate` processes started together on the same file: one rotates, the other
    waits for the lock and finds only the fresh empty file — no name collision, bytes intact."""
    log = tmp_path / "api.log"
    write_lines(log, json_lines(200_000))  # ~20 MB: the first run holds the lock a while
    original = log.read_bytes()
    procs = [subprocess.Popen([sys.executable, "-m", "logpipe", "rotate", str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rotated = rotated_of(log)
    assert len(rotated) == 1 and rotated[0].compressed
    assert read_bytes(rotated[0].path) == original



def test_lock_wait_comes_from_the_env_and_a_bad_value_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``LOGPIPE_ROTATE_LOCK_WAIT`` sets the wait (negative → 0), unset → 10 s; a value that is
    not a number is a UsageError naming the variable."""
    from logpipe.errors import UsageError
    from logpipe.rotate import locks

    assert locks.lock_wait_seconds() == locks.LOCK_WAIT_SECONDS == 10.0
    monkeypatch.setenv(locks.LOCK_WAIT_ENV, "2.5")
    assert locks.lock_wait_seconds() == 2.5
    monkeypatch.setenv(locks.LOCK_WAIT_ENV, "-1")
    assert locks.lock_wait_seconds() == 0.0
    monkeypatch.setenv(locks.LOCK_WAIT_ENV, "soon")
    with pytest.raises(UsageError, match="LOGPIPE_ROTATE_LOCK_WAIT='soon'"):
        locks.lock_wait_seconds()


def test_dir_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    """``dir_lock`` holds ``DIR/.logpipe-rotate.lock``: a second holder (another open file
    description) gets LockBusy after its wait; once the first leaves, it gets the lock."""
    from logpipe.rotate import locks

    with locks.dir_lock(str(tmp_path), wait=0):
        assert (tmp_path / locks.LOCK_NAME).exists()
        with pytest.raises(locks.LockBusy, match="another logpipe rotate is running"), \
                locks.dir_lock(str(tmp_path), wait=0.05):
            pass
    with locks.dir_lock(str(tmp_path), wait=0):
        pass
