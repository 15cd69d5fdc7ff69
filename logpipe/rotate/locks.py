"""The rotation locks: one run per directory (``DIR/.logpipe-rotate.lock``), waits bounded."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from logpipe.errors import LockBusy, RotateError, UsageError

#: Lock file (one rotation run per directory at a time); a dot file so no glob matches it.
LOCK_NAME = ".logpipe-rotate.lock"
#: How long a second ``logpipe rotate`` waits for the lock before LockBusy (exit 3).
LOCK_WAIT_SECONDS = 10.0
LOCK_WAIT_ENV = "LOGPIPE_ROTATE_LOCK_WAIT"


def lock_wait_seconds() -> float:
    """:data:`LOCK_WAIT_SECONDS`, or ``$LOGPIPE_ROTATE_LOCK_WAIT`` when set."""
    env = os.environ.get(LOCK_WAIT_ENV)
    if env:
        try:
            return max(0.0, float(env))
        except ValueError:
            raise UsageError(f"{LOCK_WAIT_ENV}={env!r} is not a number of seconds") from None
    return LOCK_WAIT_SECONDS


def _flock_wait(fd: int, how: int, wait: float | None) -> bool:
    """flock with a deadline (None: wait forever). True when acquired."""
    deadline = None if wait is None else time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@contextlib.contextmanager
def dir_lock(directory: str, wait: float | None) -> Iterator[None]:
    """Hold ``DIR/.logpipe-rotate.lock`` exclusively; LockBusy after ``wait`` seconds."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RotateError(f"cannot create the rotation lock {path}: {exc.strerror}") from None
    try:
        if not _flock_wait(fd, fcntl.LOCK_EX, wait):
            raise LockBusy(f"another logpipe rotate is running in {directory} (it holds {path}); "
                           f"waited {wait:g}s, try again later")
        yield
    finally:
        os.close(fd)
