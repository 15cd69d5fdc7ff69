"""The ``file`` sink: ``DIR/<service>.log`` NDJSON, rotated by the writer itself, zstd off the write path.

Rotation is done here, by the only writer, at line boundaries — multilog/svlogd semantics
(research/collector.md §5): a file is cut before the first line that would take it past
``--max-size`` (a single longer line gets a file of its own) and, with ``--daily``, at the first
write of each UTC day. The rename goes through :mod:`logpipe.rotate` under the file's writer
lock, so ``logpipe rotate`` from cron can rotate the same files safely: each batch is appended
while holding a *shared* ``flock`` on the file, after checking that the path still names the
open inode (else the file was rotated by cron: reopen). While idle, the same check runs every
second, so a renamed file is let go of within a second.

Rotated files are compressed with zstd by one background thread (streaming, temp name,
verified, then renamed — :func:`logpipe.rotate.compress_rotated`), which also applies
``--retain``; it takes the directory's rotation lock per file, like ``logpipe rotate``.

Durability (fsync policy): a batch counts as **delivered once it is written to the OS** (the
page cache). That survives the sink's own crash or ``kill -9`` — the failure a log pipeline
must survive — and costs nothing per batch; it is what Vector's and Filebeat's file outputs do.
On top of that, written files are fsynced every :data:`FSYNC_INTERVAL` seconds, before a
rotated file is renamed, and at close — so an OS crash or power cut can lose at most about the
last second.

The directory gets the marker file ``.logpipe-sink`` (``feedback.SINK_DIR_MARKER``), so a
collector never ingests what this sink writes, even when a glob covers it.

Errors: ``ENOSPC``/``EDQUOT`` are retried for :data:`DISK_FULL_RETRY_SECONDS` (the disk may be
freed — multilog pauses instead of dropping), then :class:`DiskFullError`; ``EFBIG`` (a file
size limit) fails at once. A failed batch is cut back off the file, so no partial line is left
and every earlier batch stays intact.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from logpipe import diagnostics, rotate
from logpipe.errors import DiskFullError, SinkConfigError, SinkError, UsageError
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks._file_compressor import Compressor

if TYPE_CHECKING:
    from logpipe.sinks import SinkOptions

try:
    from logpipe.feedback import SINK_DIR_MARKER
except ImportError:  # pragma: no cover - feedback.py is another helper's module
    SINK_DIR_MARKER = ".logpipe-sink"

#: Seconds between fsyncs of files written since the last one.
FSYNC_INTERVAL = 1.0
#: Seconds between checks, while idle, that the path still names the open file (cron rotation).
IDLE_CHECK_INTERVAL = 1.0
#: Open log files kept; the least recently written is closed beyond this (EMFILE guard).
MAX_OPEN_FILES = 128
#: How long a full disk (ENOSPC/EDQUOT) is retried before the sink fails.
DISK_FULL_RETRY_SECONDS = 30.0
#: File-name budget for a service (the name gets ``.log`` and a rotation suffix on top).
MAX_NAME = 100
UNKNOWN_SERVICE = "unknown"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FULL = (errno.ENOSPC, errno.EDQUOT)


def safe_service(value: Any) -> str:
    """A service name → a safe file-name stem: ``[A-Za-z0-9._-]`` only (so no ``/`` and no
    traversal), no leading dot (no hidden files, no ``..``), at most :data:`MAX_NAME` chars;
    missing or empty → ``unknown``."""
    if value is None:
        return UNKNOWN_SERVICE
    text = value if isinstance(value, str) else str(value)
    name = _UNSAFE.sub("_", text[: MAX_NAME * 4]).lstrip(".")[:MAX_NAME].rstrip(".")
    return name or UNKNOWN_SERVICE


class _Log:
    """One open ``<service>.log``."""

    __slots__ = ("day", "dirty", "fd", "key", "path", "rotate_after", "size")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.key: tuple[int, int] = (0, 0)
        self.size = 0
        self.day = 0
        self.dirty = False
        self.rotate_after = 0.0


@dataclass(frozen=True, slots=True)
class FileConfig:
    """The file sink's settings, built by the CLI (``--dir``/``file:DIR``, ``--max-size``,
    ``--daily``, ``--retain``, ``--no-compress``, or their ``LOGPIPE_FILE_*`` variables)."""

    directory: str | None = None
    max_size: int | None = None
    daily: bool = False
    retain: int | None = None
    compress: bool = True


class FileSink(Sink):
    """Writes ``DIR/<service>.log`` (NDJSON), self-rotating; see the module docstring."""

    name = "file"

    def __init__(self, directory: str, *, max_size: int | None = None, daily: bool = False,
                 retain: int | None = None, compress: bool = True, state_dir: str = "") -> None:
        self.directory = os.path.abspath(directory)
        self.max_size = max_size
        self.daily = daily
        self.retain = retain
        self.compress = compress
        self.state_dir = state_dir
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logpipe-file")
        self._logs: collections.OrderedDict[str, _Log] = collections.OrderedDict()
        self._names: dict[Any, str] = {}
        self._compressor: Compressor | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_fsync = time.monotonic()
        self.records = 0
        self.bytes = 0
        self.rotations = 0

    @classmethod
    def from_options(cls, options: SinkOptions) -> FileSink:
        """``--dir`` (required), ``--max-size``, ``--daily``, ``--retain``, ``--no-compress``."""
        cfg = options.file or FileConfig()
        if not cfg.directory:
            raise UsageError("the file sink needs a directory: --dir DIR (or LOGPIPE_FILE_DIR, "
                             "or --to file:DIR)")
        return cls(cfg.directory, max_size=cfg.max_size, daily=cfg.daily, retain=cfg.retain,
                   compress=cfg.compress, state_dir=options.state_dir)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the directory and its marker (a health check of the real path)."""
        await asyncio.get_running_loop().run_in_executor(self._io, self._start_sync)
        self._compressor = Compressor(self.compress, self.retain, self.state_dir)
        self._ticker = asyncio.create_task(self._tick_forever(), name="file-sink-tick")

    def _start_sync(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except FileExistsError:
            raise SinkConfigError(f"file sink: {self.directory} exists and is not a directory") from None
        except OSError as exc:
            raise SinkConfigError(f"file sink: cannot create {self.directory}: {exc.strerror}") from None
        marker = os.path.join(self.directory, SINK_DIR_MARKER)
        if not os.path.exists(marker):
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                return
            except OSError as exc:
                raise SinkConfigError(f"file sink: cannot write in {self.directory}: {exc.strerror}"
                                      ) from None
            try:
                os.write(fd, b"Written by a logpipe file sink; logpipe collect never ingests "
                             b"files in this directory.\n")
            finally:
                os.close(fd)

    async def write(self, batch: Batch) -> Outcome:
        """Append the batch (grouped by service) in the I/O thread; delivered once in the OS."""
        await asyncio.get_running_loop().run_in_executor(self._io, self._write_sync, batch)
        self.records += len(batch)
        return Outcome.DELIVERED

    async def close(self) -> None:
        """fsync and close every file, then let the compressor finish what is queued."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._close_all)
        if self._compressor is not None:
            await asyncio.to_thread(self._compressor.finish)
        self._io.shutdown(wait=True)

    def summary(self) -> str | None:
        """Counts for the end of a run."""
        c = self._compressor
        text = (f"file: {self.records} records ({self.bytes} bytes) to {self.directory}, "
                f"{self.rotations} rotations")
        if c is not None and c.compressed:
            text += f", {c.compressed} compressed ({c.bytes_in} -> {c.bytes_out} bytes)"
        return text

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_CHECK_INTERVAL)
            try:
                await loop.run_in_executor(self._io, self._tick)
            except RuntimeError:
                return  # executor shut down
            except OSError as exc:  # keep ticking: the next batch reports a lasting problem
                diagnostics.error(f"file sink: background check failed: {exc}", key="file-tick")

    # --- the I/O thread ---------------------------------------------------------------------------
    def _tick(self) -> None:
        """fsync what was written; let go of files that were rotated away under us."""
        fsync_due = time.monotonic() - self._last_fsync >= FSYNC_INTERVAL
        for key, log in list(self._logs.items()):
            if fsync_due and log.dirty:
                self._fsync(log)
            try:
                cur = os.stat(log.path)
                moved = (cur.st_dev, cur.st_ino) != log.key
            except FileNotFoundError:
                moved = True
            if moved:
                self._fsync(log)
                os.close(log.fd)
                del self._logs[key]
        if fsync_due:
            self._last_fsync = time.monotonic()

    def _fsync(self, log: _Log) -> None:
        if log.dirty:
            try:
                os.fsync(log.fd)
            except OSError as exc:
                # the bytes are in the page cache and the next write would report a lasting
                # error; an fsync failure (EIO) is still worth a loud line, never silence
                diagnostics.error(f"file sink: fsync of {log.path} failed: {exc.strerror}",
                                  key=f"fsync:{log.path}")
            log.dirty = False

    def _close_all(self) -> None:
        for log in self._logs.values():
            self._fsync(log)
            with contextlib.suppress(OSError):
                os.close(log.fd)
        self._logs.clear()

    def _write_sync(self, batch: Batch) -> None:
        lines = batch.encoded()
        services = [rec.get("service") for rec in batch.records]
        first = services[0] if services else None
        if first.__class__ is str and services.count(first) == len(services):
            self._append(self._log_for(self._name(first)), lines)  # one service: no regrouping
            return
        groups: dict[Any, list[bytes]] = {}
        for svc, line in zip(services, lines, strict=True):
            if svc.__class__ is not str:
                svc = None if svc is None else repr(svc)
            group = groups.get(svc)
            if group is None:
                groups[svc] = group = []
            group.append(line)
        for svc, group in groups.items():
            self._append(self._log_for(self._name(svc)), group)

    def _name(self, svc: Any) -> str:
        name = self._names.get(svc)
        if name is None:
            name = safe_service(svc)
            if len(self._names) < 10000:  # bounded cache of service → file stem
                self._names[svc] = name
        return name

    def _log_for(self, name: str) -> _Log:
        log = self._logs.get(name)
        if log is not None:
            self._logs.move_to_end(name)
            return log
        log = _Log(os.path.join(self.directory, name + ".log"))
        self._open(log, first=True)
        self._logs[name] = log
        while len(self._logs) > MAX_OPEN_FILES:
            _, old = self._logs.popitem(last=False)
            self._fsync(old)
            os.close(old.fd)
        return log

    def _open(self, log: _Log, first: bool = False) -> None:
        """(Re)open ``log.path`` for appending; learn its size and the UTC day it was started."""
        try:
            fd = os.open(log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._error(log.path, exc, "open") from None
        st = os.fstat(fd)
        now = time.time()
        log.fd, log.key, log.size, log.dirty = fd, (st.st_dev, st.st_ino), st.st_size, False
        started = None
        if st.st_size == 0:
            with contextlib.suppress(OSError, AttributeError):
                started = float(os.getxattr(fd, rotate.CREATED_XATTR))
            if started is None:
                rotate.mark_created(fd, now)
        elif self.daily:
            started = rotate.file_started(log.path)
        log.day = rotate.utc_day(started if started is not None else now)
        if first and self._compressor is not None:
            self._compressor.submit(log.path)  # leftovers of an earlier run: compress, retain

    def _reopen(self, log: _Log) -> None:
        self._fsync(log)
        with contextlib.suppress(OSError):
            os.close(log.fd)
        log.fd = -1
        self._open(log)

    def _append(self, log: _Log, lines: list[bytes]) -> None:
        n = len(lines)
        remaining = sum(map(len, lines)) + n
        i = 0
        while i < n:
            if log.fd < 0:
                self._open(log)
            if (self.daily and log.size > 0 and log.day != rotate.utc_day(time.time())
                    and time.monotonic() >= log.rotate_after):
                self._rotate(log)
            limit = self.max_size
            if limit is None or log.size + remaining <= limit or time.monotonic() < log.rotate_after:
                j, nbytes = n, remaining
            else:
                room = limit - log.size
                j, nbytes = i, 0
                while j < n:
                    ln = len(lines[j]) + 1
                    if nbytes + ln > room:
                        break
                    nbytes += ln
                    j += 1
                if j == i:
                    if log.size > 0:
                        self._rotate(log)
                        continue
                    j, nbytes = i + 1, len(lines[i]) + 1  # one line longer than --max-size
            part = lines if (i == 0 and j == n) else lines[i:j]
            self._write_locked(log, b"\n".join(part) + b"\n")
            remaining -= nbytes
            i = j

    def _rotate(self, log: _Log) -> None:
        try:
            rotated = rotate.rotate_locked_fd(log.path, log.fd)
        except OSError as exc:
            log.rotate_after = time.monotonic() + 60.0  # keep writing to the same file; retry later
            diagnostics.warning(f"file sink: cannot rotate {log.path}: {exc.strerror}; "
                                "retrying in a minute", key=f"file-rotate:{log.path}")
            return
        self._reopen(log)
        if rotated is not None:
            self.rotations += 1
            if self._compressor is not None:
                self._compressor.submit(log.path)

    def _write_locked(self, log: _Log, data: bytes) -> None:
        """Append ``data`` under the shared writer lock, to the file the path names now."""
        while True:
            fcntl.flock(log.fd, fcntl.LOCK_SH)
            try:
                cur = os.stat(log.path)
                same = (cur.st_dev, cur.st_ino) == log.key
            except FileNotFoundError:
                same = False
            if same:
                break
            fcntl.flock(log.fd, fcntl.LOCK_UN)
            self._reopen(log)  # rotated by `logpipe rotate`: continue in the fresh file
        try:
            self._write_all(log, data)
        finally:
            fcntl.flock(log.fd, fcntl.LOCK_UN)

    def _write_all(self, log: _Log, data: bytes) -> None:
        fd = log.fd
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        full_since: float | None = None
        delay = 0.05
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                # cut the partial batch back off: no split line is ever left in the file
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                if exc.errno not in _FULL:
                    raise self._error(log.path, exc, "write") from None
                now = time.monotonic()
                if full_since is None:
                    full_since = now
                    diagnostics.warning(f"file sink: disk full writing {log.path}; retrying for "
                                        f"{DISK_FULL_RETRY_SECONDS:g}s", key=f"file-full:{log.path}")
                if now - full_since >= DISK_FULL_RETRY_SECONDS:
                    raise self._error(log.path, exc, "write") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                view = memoryview(data)
        log.size = start + len(data)
        log.dirty = True
        self.bytes += len(data)

    @staticmethod
    def _error(path: str, exc: OSError, what: str) -> SinkError:
        if exc.errno in _FULL:
            return DiskFullError(f"file sink: disk full, cannot {what} {path} ({exc.strerror}); "
                                 "everything written before is kept")
        if exc.errno == errno.EFBIG:
            return DiskFullError(f"file sink: {path} reached the file size limit (EFBIG), cannot "
                                 f"{what} it; everything written before is kept")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return SinkConfigError(f"file sink: cannot {what} {path}: {exc.strerror}")
        return SinkError(f"file sink: cannot {what} {path}: {exc.strerror}")
