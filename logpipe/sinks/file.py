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

Modules: this one decides where lines go (service → safe file name, when to rotate, fsync and
idle checks); :mod:`logpipe.sinks._file_writer` appends to one file (writer lock, reopen after
a cron rotation, full-disk retry, a failed batch cut back off: no partial line is ever left);
:mod:`logpipe.sinks._file_compressor` compresses and applies ``--retain`` off the write path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from logpipe import diagnostics, rotate
from logpipe.errors import SinkConfigError, UsageError
from logpipe.feedback import SINK_DIR_MARKER
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks._file_compressor import Compressor
from logpipe.sinks._file_writer import LogFile

if TYPE_CHECKING:
    from logpipe.sinks import SinkOptions

#: Seconds between fsyncs of files written since the last one.
FSYNC_INTERVAL = 1.0
#: Seconds between checks, while idle, that the path still names the open file (cron rotation).
IDLE_CHECK_INTERVAL = 1.0
#: Open log files kept; the least recently written is closed beyond this (EMFILE guard).
MAX_OPEN_FILES = 128
#: File-name budget for a service (the name gets ``.log`` and a rotation suffix on top).
MAX_NAME = 100
UNKNOWN_SERVICE = "unknown"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_service(value: Any) -> str:
    """A service name → a safe file-name stem: ``[A-Za-z0-9._-]`` only (so no ``/`` and no
    traversal), no leading dot (no hidden files, no ``..``), at most :data:`MAX_NAME` chars;
    missing or empty → ``unknown``."""
    if value is None:
        return UNKNOWN_SERVICE
    text = value if isinstance(value, str) else str(value)
    name = _UNSAFE.sub("_", text[: MAX_NAME * 4]).lstrip(".")[:MAX_NAME].rstrip(".")
    return name or UNKNOWN_SERVICE


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
        self._logs: collections.OrderedDict[str, LogFile] = collections.OrderedDict()
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
            if fsync_due:
                log.fsync()
            if log.moved():
                log.close()
                del self._logs[key]
        if fsync_due:
            self._last_fsync = time.monotonic()

    def _close_all(self) -> None:
        for log in self._logs.values():
            log.close()
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

    def _log_for(self, name: str) -> LogFile:
        log = self._logs.get(name)
        if log is not None:
            self._logs.move_to_end(name)
            return log
        log = LogFile(os.path.join(self.directory, name + ".log"))
        log.open(self.daily)
        if self._compressor is not None:
            self._compressor.submit(log.path)  # leftovers of an earlier run: compress, retain
        self._logs[name] = log
        while len(self._logs) > MAX_OPEN_FILES:
            _, old = self._logs.popitem(last=False)
            old.close()
        return log

    def _append(self, log: LogFile, lines: list[bytes]) -> None:
        """Append ``lines`` to ``log``, rotating first when the day changed (``--daily``) and
        before the first line that would take the file past ``--max-size``."""
        n = len(lines)
        remaining = sum(map(len, lines)) + n
        i = 0
        while i < n:
            if log.fd < 0:
                log.open(self.daily)
            if (self.daily and log.size > 0 and log.day != rotate.utc_day(time.time())
                    and time.monotonic() >= log.rotate_after):
                self._rotate(log)
            limit = self.max_size
            if limit is None or log.size + remaining <= limit or time.monotonic() < log.rotate_after:
                j, nbytes = n, remaining
            else:
                j, nbytes = _fitting(lines, i, limit - log.size)
                if j == i:
                    if log.size > 0:
                        self._rotate(log)
                        continue
                    j, nbytes = i + 1, len(lines[i]) + 1  # one line longer than --max-size
            part = lines if (i == 0 and j == n) else lines[i:j]
            data = b"\n".join(part) + b"\n"
            log.write_locked(data, self.daily)
            self.bytes += len(data)
            remaining -= nbytes
            i = j

    def _rotate(self, log: LogFile) -> None:
        try:
            rotated = rotate.rotate_locked_fd(log.path, log.fd)
        except OSError as exc:
            log.rotate_after = time.monotonic() + 60.0  # keep writing to the same file; retry later
            diagnostics.warning(f"file sink: cannot rotate {log.path}: {exc.strerror}; "
                                "retrying in a minute", key=f"file-rotate:{log.path}")
            return
        log.reopen(self.daily)
        if rotated is not None:
            self.rotations += 1
            if self._compressor is not None:
                self._compressor.submit(log.path)


def _fitting(lines: list[bytes], i: int, room: int) -> tuple[int, int]:
    """(end index, bytes with newlines) of the lines from ``i`` on that fit in ``room`` bytes."""
    j, nbytes = i, 0
    while j < len(lines):
        ln = len(lines[j]) + 1
        if nbytes + ln > room:
            break
        nbytes += ln
        j += 1
    return j, nbytes
