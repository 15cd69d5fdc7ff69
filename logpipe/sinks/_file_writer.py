"""One ``<service>.log`` of the file sink, as its writer sees it: open for appending, append a
block of whole lines under the shared writer lock, retry a full disk, fsync, let go.

The sink (:mod:`logpipe.sinks.file`) decides *where* lines go — which service file, when to
rotate; this module owns *how* bytes reach one file without ever leaving a split line:

- every append holds a **shared** ``flock`` on the file and first checks that the path still
  names the open inode — else ``logpipe rotate`` renamed it: reopen and append there
  (:meth:`LogFile.write_locked`);
- a failed write is cut back off the file (``ftruncate`` to where it began), so no partial
  line is left and every earlier batch stays intact; ``ENOSPC``/``EDQUOT`` are retried for
  :data:`DISK_FULL_RETRY_SECONDS` (the disk may be freed — multilog pauses instead of
  dropping), then :class:`~logpipe.errors.DiskFullError`; ``EFBIG`` fails at once
  (:func:`file_error` words each case).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from logpipe import diagnostics, rotate
from logpipe.errors import DiskFullError, SinkConfigError, SinkError

#: How long a full disk (ENOSPC/EDQUOT) is retried before the sink fails.
DISK_FULL_RETRY_SECONDS = 30.0

_FULL = (errno.ENOSPC, errno.EDQUOT)


class LogFile:
    """One open ``<service>.log``: its descriptor, identity, size and the UTC day it started."""

    __slots__ = ("day", "dirty", "fd", "key", "path", "rotate_after", "size")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.key: tuple[int, int] = (0, 0)  # (dev, inode) of the open file
        self.size = 0
        self.day = 0  # rotate.utc_day of when the file was started
        self.dirty = False  # written since the last fsync
        self.rotate_after = 0.0  # monotonic time before which a failed rotation is not retried

    def open(self, daily: bool) -> None:
        """(Re)open :attr:`path` for appending; learn its size and the UTC day it was started
        (a fresh file is marked created now; with ``daily``, an old one is asked when)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise file_error(self.path, exc, "open") from None
        st = os.fstat(fd)
        now = time.time()
        self.fd, self.key, self.size, self.dirty = fd, (st.st_dev, st.st_ino), st.st_size, False
        started = None
        if st.st_size == 0:
            with contextlib.suppress(OSError, AttributeError):
                started = float(os.getxattr(fd, rotate.CREATED_XATTR))
            if started is None:
                rotate.mark_created(fd, now)
        elif daily:
            started = rotate.file_started(self.path)
        self.day = rotate.utc_day(started if started is not None else now)

    def reopen(self, daily: bool) -> None:
        """fsync and close the open file, then open whatever the path names now."""
        self.close()
        self.open(daily)

    def close(self) -> None:
        """fsync (if written) and close; the object can be opened again."""
        if self.fd < 0:
            return
        self.fsync()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1

    def moved(self) -> bool:
        """Whether the path no longer names the open file (renamed or deleted under us)."""
        try:
            cur = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (cur.st_dev, cur.st_ino) != self.key

    def fsync(self) -> None:
        """fsync what was written since the last one; a failure is one loud line, not fatal."""
        if not self.dirty:
            return
        try:
            os.fsync(self.fd)
        except OSError as exc:
            # the bytes are in the page cache and the next write would report a lasting
            # error; an fsync failure (EIO) is still worth a loud line, never silence
            diagnostics.error(f"file sink: fsync of {self.path} failed: {exc.strerror}",
                              key=f"fsync:{self.path}")
        self.dirty = False

    def write_locked(self, data: bytes, daily: bool) -> None:
        """Append ``data`` (whole lines) under the shared writer lock, to the file the path
        names now."""
        while True:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            if not self.moved():
                break
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.reopen(daily)  # rotated by `logpipe rotate`: continue in the fresh file
        try:
            self._write_all(data)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _write_all(self, data: bytes) -> None:
        fd = self.fd
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        full_since: float | None = None
        delay = 0.05
        while view:
            try:
                view = view[os.write(fd, view):]
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                # cut the partial batch back off: no split line is ever left in the file
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                if exc.errno not in _FULL:
                    raise file_error(self.path, exc, "write") from None
                now = time.monotonic()
                if full_since is None:
                    full_since = now
                    diagnostics.warning(f"file sink: disk full writing {self.path}; retrying for "
                                        f"{DISK_FULL_RETRY_SECONDS:g}s", key=f"file-full:{self.path}")
                if now - full_since >= DISK_FULL_RETRY_SECONDS:
                    raise file_error(self.path, exc, "write") from None
                time.sleep(delay)  # the I/O thread's back-off while the disk is full
                delay = min(delay * 2, 1.0)
                view = memoryview(data)
        self.size = start + len(data)
        self.dirty = True


def file_error(path: str, exc: OSError, what: str) -> SinkError:
    """The sink's one-line error for an OSError while it could not ``what`` (open/write)
    ``path``: a full disk or file size limit, a permission problem, or anything else."""
    if exc.errno in _FULL:
        return DiskFullError(f"file sink: disk full, cannot {what} {path} ({exc.strerror}); "
                             "everything written before is kept")
    if exc.errno == errno.EFBIG:
        return DiskFullError(f"file sink: {path} reached the file size limit (EFBIG), cannot "
                             f"{what} it; everything written before is kept")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SinkConfigError(f"file sink: cannot {what} {path}: {exc.strerror}")
    return SinkError(f"file sink: cannot {what} {path}: {exc.strerror}")
