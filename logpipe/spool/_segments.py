"""The spool's files on disk: the lock, the segment files, the cursor file, the reserve.

The words (item, record, segment, position) are those of :mod:`logpipe.spool._records`. The
*cursor* is the file ``cursor`` = ``{"version":1,"segment":S,"offset":O}``, the position of the
first record not yet done, written atomically.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from logpipe import diagnostics
from logpipe._fsutil import atomic_write, fsync_dir
from logpipe.errors import DiskFullError, SinkError, UsageError
from logpipe.spool._records import HDR_SIZE, MAGIC, Position, walk

SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: the preallocated file whose space is kept for records read but not yet spooled
RESERVE_NAME = "reserve"
#: buffers per ``writev`` call (Linux's IOV_MAX)
_IOV_MAX = 1024


def write_all(fd: int, parts: Sequence[bytes]) -> None:
    """Write ``parts`` one after another at the file position with ``writev`` (the frame headers
    and items go out as they are, never joined into one copy), then fdatasync. A hook tests
    replace to simulate ENOSPC."""
    pending: list[bytes | memoryview] = list(parts)
    at = 0
    while at < len(pending):
        written = os.writev(fd, pending[at:at + _IOV_MAX])
        while at < len(pending) and written >= len(pending[at]):
            written -= len(pending[at])
            at += 1
        if written:  # a short write ended inside this buffer
            pending[at] = memoryview(pending[at])[written:]
    os.fdatasync(fd)


def raise_write_error(directory: str, e: OSError) -> None:
    """An OSError from writing the spool → DiskFullError (transient) or SinkError."""
    if e.errno in DISK_FULL_ERRNOS:
        raise DiskFullError(f"spool {directory}: disk full ({e.strerror}); "
                            "the records were not spooled and are kept in memory") from None
    raise SinkError(f"spool {directory}: cannot write: {e.strerror}") from None


@dataclass(slots=True)
class Recovered:
    """What ``SegmentFiles.recover`` found: segments and sizes, where to start, the cursor read."""

    segments: list[int]
    sizes: dict[int, int]
    start: Position
    cursor: Position | None
    items: int = 0  # records at or after ``start``
    nbytes: int = 0


class SegmentFiles:
    """The files of one spool directory: lock, segments, cursor (all blocking calls)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock_fd: int | None = None

    def path(self, number: int) -> str:
        """The file name of segment ``number``."""
        return os.path.join(self.directory, f"{number:016d}.seg")

    # ---------------------------------------------------------------- lock
    def lock(self) -> None:
        """Create the directory and flock its lock file (one process per spool directory)."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise UsageError(f"spool: cannot use directory {self.directory}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError(f"spool directory {self.directory} is in use by another logpipe process "
                             f"(pid {holder}); give each sink its own --spool-dir") from None
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # a full disk must not stop a restart from recovering
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Drop the flock (closing the descriptor drops it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------- listing and cleaning
    def list_segments(self) -> list[int]:
        """Segment numbers present, ascending; removes temp files a crash left behind."""
        names = sorted(os.listdir(self.directory))
        for name in names:
            if name.startswith(".tmp-"):  # an atomic_write interrupted by a crash
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))
        return sorted(int(m.group(1)) for m in map(SEGMENT_NAME.match, names) if m)

    def remove(self, numbers: list[int]) -> None:
        """Delete segments (already done) and make the deletion durable."""
        for number in numbers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(number))
        if numbers:
            fsync_dir(self.directory)

    def create(self, number: int) -> None:
        """A new empty segment (just ``MAGIC``), durable."""
        fd = os.open(self.path(number), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, [MAGIC])
        finally:
            os.close(fd)
        fsync_dir(self.directory)

    def create_for_writing(self, number: int) -> int:
        """Create segment ``number`` and return a write descriptor; DiskFullError/SinkError."""
        try:
            self.create(number)
            return os.open(self.path(number), os.O_WRONLY)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(self.path(number))
            raise_write_error(self.directory, e)
            raise  # unreachable: raise_write_error always raises

    # ---------------------------------------------------------------- reserve
    def make_reserve(self, nbytes: int) -> bool:
        """Preallocate the ``reserve`` file to ``nbytes`` (durable); False when the disk has no
        room for it (any partial file is removed). Other errors: SinkError."""
        path = os.path.join(self.directory, RESERVE_NAME)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size != nbytes:
                    os.ftruncate(fd, 0)
                    _fill(fd, nbytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.directory)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(path)
            if e.errno in DISK_FULL_ERRNOS:
                return False
            raise SinkError(f"spool {self.directory}: cannot create its reserve: {e.strerror}") from None
        return True

    def release_reserve(self) -> None:
        """Delete the ``reserve`` file: its blocks are free for the records held in memory."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, RESERVE_NAME))
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)

    # ---------------------------------------------------------------- cursor
    def read_cursor(self) -> Position | None:
        """The saved cursor, or None (none yet, or unreadable: everything is sent again)."""
        try:
            with open(os.path.join(self.directory, "cursor"), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            doc = orjson.loads(raw)
            if doc.get("version") != 1:
                raise ValueError("unknown version")
            number, offset = int(doc["segment"]), int(doc["offset"])
        except (ValueError, KeyError, TypeError, AttributeError):
            diagnostics.warning(f"spool {self.directory}: unreadable cursor file; re-sending everything "
                                "still spooled (duplicates possible, nothing lost)")
            return None
        return (number, offset)

    def save_cursor(self, pos: Position, consumed: list[int]) -> None:
        """Delete the ``consumed`` segments, then write the cursor ``pos`` atomically.

        Deleting first is safe — a restart that finds the cursor's segment gone starts at the
        first segment left, which holds only records at or after the cursor (duplicates at
        worst) — and it frees the space the cursor's temp file needs when the disk is full.
        """
        self.remove(consumed)
        doc = orjson.dumps({"version": 1, "segment": pos[0], "offset": pos[1]})
        atomic_write(os.path.join(self.directory, "cursor"), doc, mode=0o600)

    def empty_last(self, number: int, fd: int, older: list[int]) -> None:
        """Everything is done: delete the ``older`` segments, cut segment ``number`` (open for
        writing on ``fd``) back to its magic and save the cursor at its start — the disk space
        of delivered records comes back without a new file (which a full disk may refuse).

        A crash after the cut and before the cursor is saved finds the cursor past the end of
        the segment and starts at its end (everything there was done); nothing may be appended
        until this returns, so no new record can hide behind that old cursor."""
        self.remove(older)
        os.ftruncate(fd, HDR_SIZE)
        os.fdatasync(fd)
        self.save_cursor((number, HDR_SIZE), [])

    # ---------------------------------------------------------------- recovery
    def recover(self) -> Recovered:
        """Find the segments, drop those the cursor passed and torn tails; where to start."""
        segments = self.list_segments()
        cursor = saved = self.read_cursor()
        if cursor is not None:
            # segments wholly before the cursor were consumed; a crash came before their unlink
            before = [s for s in segments if s < cursor[0]]
            for number in before:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(number))
                segments.remove(number)
            if not segments or segments[0] != cursor[0]:
                cursor = None
        if not segments:
            # numbered past the cursor read, even when it was dropped above: a segment numbered
            # below a cursor would be taken as consumed at the next open
            number = max(cursor[0] if cursor else 0, saved[0] if saved else 0) + 1
            self.create(number)
            segments = [number]
        start = cursor if cursor is not None else (segments[0], HDR_SIZE)
        found = Recovered(segments, {}, start, cursor)
        for i, number in enumerate(segments):
            last = i == len(segments) - 1
            from_off = start[1] if number == start[0] else HDR_SIZE
            n, b, size, on_boundary = self.scan(number, from_off, last=last)
            if number == start[0] and not on_boundary:
                # the cursor is not on a record boundary: start the segment over (duplicates, not loss)
                diagnostics.warning(f"spool {self.directory}: cursor does not match segment {number}; "
                                    "re-sending that segment from its start")
                start = (number, HDR_SIZE)
                n, b, size, _ = self.scan(number, HDR_SIZE, last=last)
            if number == start[0] and start[1] > size:
                start = (number, size)
            found.items += n
            found.nbytes += b
            found.sizes[number] = size
        found.start = start
        return found

    # ---------------------------------------------------------------- recovery scan
    def scan(self, number: int, from_off: int, last: bool) -> tuple[int, int, int, bool]:
        """Walk segment ``number``; truncate it at the first bad record.

        Returns (records at or after ``from_off``, their bytes, valid size, whether ``from_off``
        fell on a record boundary).
        """
        path = self.path(number)
        with open(path, "r+b") as f:
            data = f.read()
            if len(data) < HDR_SIZE or data[:HDR_SIZE] != MAGIC:
                if len(data) < HDR_SIZE and MAGIC.startswith(data) and last:
                    # crash while the segment was being created: start it again
                    f.seek(0)
                    f.truncate()
                    f.write(MAGIC)
                    f.flush()
                    os.fdatasync(f.fileno())
                    return 0, 0, HDR_SIZE, from_off == HDR_SIZE
                raise UsageError(f"spool: {path} is not a logpipe spool segment; move it out of "
                                 f"{self.directory}")
            off, records, nbytes, boundary = walk(data, from_off)
            if off < len(data):
                what = "a torn write at the end (crash)" if last else "a corrupt record"
                diagnostics.warning(f"spool {self.directory}: segment {number} has {what}; dropped its "
                                    f"last {len(data) - off} bytes (items never acknowledged by append "
                                    "are lost only in the crash case)")
                f.truncate(off)
                f.flush()
                os.fdatasync(f.fileno())
        if from_off > off:
            boundary = True  # the cursor is past what survived: all of it was done already
        return records, nbytes, off, boundary


def _fill(fd: int, nbytes: int) -> None:
    """Allocate ``nbytes`` real blocks to ``fd`` (posix_fallocate; zeros where unsupported)."""
    if nbytes <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, nbytes)
        return
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    zeros = bytes(1 << 16)
    done = 0
    while done < nbytes:
        done += os.pwrite(fd, zeros[:min(len(zeros), nbytes - done)], done)
