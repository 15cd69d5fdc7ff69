"""Where the logger's lines go: one ``os.write`` per line under a lock (or a flushed stream).

SPEC §2: each line reaches the OS when the call returns, whole, never interleaved with another
thread's line, and a failed write never raises into the application.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import sys
import threading
from typing import Any

from logpipe.errors import UsageError


class FdWriter:
    """Writes whole lines to a file descriptor: one ``os.write`` per line under a lock.

    Looping on short writes is under the lock too, so a line larger than the pipe buffer is
    still never interleaved with another thread's line. EPIPE/EBADF (reader gone, stdout
    closed) drop the line: logging must not raise into the application.
    """

    __slots__ = ("_owner", "fd", "lock")

    def __init__(self, fd: int, owner: Any = None) -> None:
        self.fd = fd
        self._owner = owner  # keep the file object alive (and know when its owner closed it)
        self.lock = threading.Lock()

    def write(self, line: bytes) -> None:
        owner = self._owner
        if owner is not None and owner.closed:
            return  # its fd may already belong to another file
        with self.lock:
            try:
                n = os.write(self.fd, line)
            except OSError:
                n = 0  # the loop below retries, waits (EAGAIN) or gives up
            if n == len(line):
                return
            view = memoryview(line)[n:]
            while view:
                try:
                    n = os.write(self.fd, view)
                except InterruptedError:
                    continue
                except BlockingIOError:
                    # someone made the fd non-blocking (asyncio does for pipes): wait, like a
                    # blocking write would, instead of losing the line
                    try:
                        select.select([], [self.fd], [], 1.0)
                    except (OSError, ValueError):
                        return
                    continue
                except OSError:
                    # EPIPE (reader gone), EBADF (stdout closed), ENOSPC, EIO …: the line is lost
                    # either way, and raising would turn a logging problem into an app crash
                    return
                view = view[n:]

    def isatty(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False


class StreamWriter:
    """Writes lines to a file-like object without a usable file descriptor (``io.StringIO``,
    ``io.BytesIO``, a test's capture), flushing after each line."""

    __slots__ = ("_binary", "lock", "stream")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._binary = isinstance(stream, io.RawIOBase | io.BufferedIOBase) or "b" in str(
            getattr(stream, "mode", "")
        )
        self.lock = threading.Lock()

    def write(self, line: bytes) -> None:
        with self.lock:
            try:
                if self._binary:
                    self.stream.write(line)
                else:
                    self.stream.write(line.decode("utf-8", "replace"))
                flush = getattr(self.stream, "flush", None)
                if flush is not None:
                    flush()
            except Exception:  # noqa: BLE001, S110 - a closed or broken stream must not raise into the app
                pass

    def isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except Exception:  # noqa: BLE001
            return False


Writer = FdWriter | StreamWriter


def writer_for(stream: Any) -> Writer:
    """A writer for ``configure(stream=...)``: ``None`` is stdout (fd 1), an int a descriptor."""
    if stream is None:
        return FdWriter(1)
    if isinstance(stream, int) and not isinstance(stream, bool):
        return FdWriter(stream)
    if not callable(getattr(stream, "write", None)):
        raise UsageError(f"stream must be a file object or a file descriptor, not {type(stream).__name__}")
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return StreamWriter(stream)
    with contextlib.suppress(Exception):
        stream.flush()  # what the object buffered so far goes out before our lines
    owner = None if stream in (sys.__stdout__, sys.__stderr__) else stream
    return FdWriter(fd, owner)
