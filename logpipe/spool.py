"""Bounded, ordered, crash-safe disk queue (the Splunk sink's spool): CRC-framed segments + a cursor.

On disk, in the spool directory::

    lock                      flock()ed while a Spool is open: one process per spool directory
    0000000000000001.seg      segments: 8-byte magic, then records  <u32 len><u32 crc32><payload>
    0000000000000002.seg      (the last one is appended to; a new one starts past segment_bytes)
    cursor                    {"version":1,"segment":S,"offset":O} — first record not yet done

Durability rules (the same ones Vector's disk buffer and Fluent Bit's filesystem storage follow):

- ``append`` returns only after the records are written and ``fdatasync``ed, so an item whose
  append returned survives a crash or ``kill -9``.
- A crash can tear the last record of the last segment. ``open`` walks every record from the
  cursor on, checking length and CRC, and truncates the segment at the first bad record: a
  torn tail is dropped (it was never acknowledged to the caller), never misread as data.
- The cursor is written atomically (temp + fsync + rename + fsync dir, ``_fsutil``) at most
  every ``CURSOR_INTERVAL`` seconds and at close. After a crash, items marked done since the
  last cursor write are delivered again: duplicates are bounded by that interval's worth of
  done chunks, loss is impossible (at-least-once, like Filebeat's registry).
- Fully consumed segments are deleted after the cursor that passes them is durable.

The bound (``max_bytes``) counts record bytes not yet done; ``append`` blocks while the spool
is over it (back-pressure, Vector's ``when_full = "block"``) and says so once. Disk usage can
exceed the bound by up to one segment plus what was done within the last cursor interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field

import orjson

from logpipe import diagnostics
from logpipe._fsutil import atomic_write, fsync_dir
from logpipe.errors import DiskFullError, SinkError, SpoolFullError, UsageError

MAGIC = b"LPSPOOL1"
_HDR = struct.Struct("<II")
HDR_SIZE = _HDR.size
#: The cursor is persisted at most this often while chunks are being marked done.
CURSOR_INTERVAL = 0.2
_SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

Position = tuple[int, int]  # (segment number, byte offset of a record start)

_OUT, _DONE, _RELEASED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Chunk:
    """Items handed out together, in spool order; give ``id`` back to ``done`` or ``release``."""

    id: int
    items: list[bytes]

    @property
    def nbytes(self) -> int:
        """Sum of the items' lengths."""
        return sum(len(i) for i in self.items)


@dataclass(slots=True)
class _Range:
    """A contiguous run of records [start, end) handed out at least once."""

    start: Position
    end: Position
    items: list[bytes]
    ends: list[Position]  # position just after each item
    state: int = _OUT
    chunk_id: int = -1
    disk_bytes: int = field(default=0)


def _frame(item: bytes) -> bytes:
    head = struct.pack("<I", len(item))
    return head + struct.pack("<I", zlib.crc32(item, zlib.crc32(head))) + item


def _crc_ok(length: int, crc: int, payload: bytes) -> bool:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<I", length))) == crc


def _write_all(fd: int, data: bytes) -> None:
    """Write everything and fdatasync (a hook tests can replace to simulate ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.fdatasync(fd)


class Spool:
    """A bounded, ordered, crash-safe queue of opaque byte items in ``directory``."""

    def __init__(self, directory: str, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise UsageError("spool: max_bytes and segment_bytes must be positive")
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._wseq = 0
        self._wfd: int | None = None
        self._woff = 0
        self._rpos: Position = (0, 0)
        self._cpos: Position = (0, 0)
        self._ppos: Position | None = None
        self._ranges: list[_Range] = []
        self._chunks: dict[int, _Range] = {}
        self._released = 0
        self._next_id = 0
        self._appended_items = 0
        self._appended_bytes = 0
        self._committed_items = 0
        self._committed_bytes = 0
        self._rfd: tuple[int, int] | None = None  # (segment, fd) of the reader
        self._opened = False
        self._closed = False
        self._blocked = False
        self._last_persist = 0.0
        self._persist_task: asyncio.Task[None] | None = None
        # created in open(), inside the loop that will use them
        self._data: asyncio.Event
        self._space: asyncio.Event
        self._append_lock: asyncio.Lock
        self._read_lock: asyncio.Lock
        self._persist_lock: asyncio.Lock
        self._wake: asyncio.Event

    # ------------------------------------------------------------------ properties

    @property
    def pending_bytes(self) -> int:
        """On-disk bytes (frames included) of items not yet done."""
        return self._appended_bytes - self._committed_bytes

    @property
    def pending_items(self) -> int:
        """Items appended and not yet done (handed out or not)."""
        return self._appended_items - self._committed_items

    @property
    def is_empty(self) -> bool:
        """True when every appended item is done."""
        return self.pending_items == 0

    @property
    def unread_items(self) -> bool:
        """True when some item is waiting to be handed out (new, or released)."""
        return self._released > 0 or self._rpos < (self._wseq, self._woff)

    def _seg_path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:016d}.seg")

    # ------------------------------------------------------------------ open / recovery

    async def open(self) -> None:
        """Lock the directory, recover segments (dropping a torn tail) and restore the cursor."""
        if self._opened:
            raise UsageError("spool: already open")
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self._append_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._persist_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        await asyncio.to_thread(self._open_sync)
        self._opened = True

    def _open_sync(self) -> None:
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
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        try:
            self._recover()
        except BaseException:
            self._release_lock()
            raise

    def _recover(self) -> None:
        names = sorted(os.listdir(self.directory))
        for name in names:
            if name.startswith(".tmp-"):  # an atomic_write interrupted by a crash
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))
        segments = sorted(int(m.group(1)) for m in map(_SEGMENT_NAME.match, names) if m)
        cursor = self._read_cursor()
        if cursor is not None:
            # segments wholly before the cursor were consumed; a crash came before their unlink
            for seq in [s for s in segments if s < cursor[0]]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._seg_path(seq))
                segments.remove(seq)
            if not segments or segments[0] != cursor[0]:
                cursor = None
        if not segments:
            seq = (cursor[0] if cursor else 0) + 1
            self._create_segment(seq)
            segments = [seq]
        start = cursor if cursor is not None else (segments[0], HDR_SIZE)
        items = nbytes = 0
        for i, seq in enumerate(segments):
            from_off = start[1] if seq == start[0] else HDR_SIZE
            n, b, size, cursor_ok = self._scan(seq, from_off, last=(i == len(segments) - 1))
            if seq == start[0] and not cursor_ok:
                # the cursor is not on a record boundary: start the segment over (duplicates, not loss)
                diagnostics.warning(f"spool {self.directory}: cursor does not match segment {seq}; "
                                    "re-sending that segment from its start")
                start = (seq, HDR_SIZE)
                n, b, size, _ = self._scan(seq, HDR_SIZE, last=(i == len(segments) - 1))
            if seq == start[0] and start[1] > size:
                start = (seq, size)
            items += n
            nbytes += b
            self._sizes[seq] = size
        self._segments = segments
        self._wseq = segments[-1]
        self._woff = self._sizes[self._wseq]
        self._wfd = os.open(self._seg_path(self._wseq), os.O_WRONLY)
        self._cpos = self._rpos = start
        self._ppos = cursor
        self._appended_items, self._appended_bytes = items, nbytes

    def _read_cursor(self) -> Position | None:
        path = os.path.join(self.directory, "cursor")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            doc = orjson.loads(raw)
            if doc.get("version") != 1:
                raise ValueError("unknown version")
            seq, off = int(doc["segment"]), int(doc["offset"])
        except (ValueError, KeyError, TypeError, AttributeError):
            diagnostics.warning(f"spool {self.directory}: unreadable cursor file; re-sending everything "
                                "still spooled (duplicates possible, nothing lost)")
            return None
        return (seq, off)

    def _create_segment(self, seq: int) -> None:
        path = self._seg_path(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, MAGIC)
        finally:
            os.close(fd)
        fsync_dir(self.directory)

    def _scan(self, seq: int, from_off: int, last: bool) -> tuple[int, int, int, bool]:
        """Walk segment ``seq``; truncate it at the first bad record.

        Returns (items at or after ``from_off``, their frame bytes, valid size, whether
        ``from_off`` fell on a record boundary).
        """
        path = self._seg_path(seq)
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
            off, end = HDR_SIZE, len(data)
            items = nbytes = 0
            boundary = from_off == HDR_SIZE
            while off < end:
                if off + HDR_SIZE > end:
                    break
                length, crc = _HDR.unpack_from(data, off)
                stop = off + HDR_SIZE + length
                if stop > end or not _crc_ok(length, crc, data[off + HDR_SIZE:stop]):
                    break
                if off >= from_off:
                    items += 1
                    nbytes += stop - off
                off = stop
                if off == from_off:
                    boundary = True
            if off < end:
                what = "a torn write at the end (crash)" if last else "a corrupt record"
                diagnostics.warning(f"spool {self.directory}: segment {seq} has {what}; dropped its last "
                                    f"{end - off} bytes (items never acknowledged by append are lost only "
                                    "in the crash case)")
                f.truncate(off)
                f.flush()
                os.fdatasync(f.fileno())
        if from_off > off:
            boundary = True  # the cursor is past what survived: all of it was done already
        return items, nbytes, off, boundary

    # ------------------------------------------------------------------ append

    async def append(self, items: list[bytes]) -> None:
        """Write ``items`` durably (returns after fsync); blocks while the spool is over its bound."""
        self._check_open()
        if not items:
            return
        data = b"".join(_frame(i) for i in items)
        async with self._append_lock:
            while self.pending_bytes > 0 and self.pending_bytes + len(data) > self.max_bytes:
                if self._closed:
                    raise SpoolFullError(f"spool {self.directory} is full and closing; "
                                         f"{len(items)} items not spooled")
                if not self._blocked:
                    self._blocked = True
                    diagnostics.warning(
                        f"spool {self.directory} is full ({self.pending_bytes} of {self.max_bytes} bytes): "
                        "pausing input until Splunk catches up (back-pressure; nothing is dropped)",
                        key=f"spool-full:{self.directory}")
                self._space.clear()
                await self._space.wait()
            if self._blocked:
                self._blocked = False
                diagnostics.info(f"spool {self.directory} has room again; input resumed",
                                 key=f"spool-room:{self.directory}")
            if self._woff >= self.segment_bytes:
                new_fd = await asyncio.to_thread(self._rotate)
                if self._wfd is not None:
                    os.close(self._wfd)
                self._wfd = new_fd
                self._wseq += 1
                self._woff = HDR_SIZE
                self._segments.append(self._wseq)
                self._sizes[self._wseq] = HDR_SIZE
            await asyncio.to_thread(self._write, data)
            self._woff += len(data)
            self._sizes[self._wseq] = self._woff
            self._appended_items += len(items)
            self._appended_bytes += len(data)
            self._data.set()

    def _rotate(self) -> int:
        """Start the next segment (worker thread); returns its write descriptor."""
        seq = self._wseq + 1
        try:
            self._create_segment(seq)
            return os.open(self._seg_path(seq), os.O_WRONLY)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(self._seg_path(seq))
            self._raise_write_error(e)
            raise  # unreachable: _raise_write_error always raises

    def _write(self, data: bytes) -> None:
        assert self._wfd is not None
        os.lseek(self._wfd, self._woff, os.SEEK_SET)
        try:
            _write_all(self._wfd, data)
        except OSError as e:
            # leave no partial frame behind: the next append starts at a record boundary
            with contextlib.suppress(OSError):
                os.ftruncate(self._wfd, self._woff)
            self._raise_write_error(e)

    def _raise_write_error(self, e: OSError) -> None:
        if e.errno in _DISK_FULL:
            raise DiskFullError(f"spool {self.directory}: disk full ({e.strerror}); "
                                "the records were not spooled and are kept in memory") from None
        raise SinkError(f"spool {self.directory}: cannot write: {e.strerror}") from None

    # ------------------------------------------------------------------ hand out

    async def next_chunk(
        self, max_items: int, max_bytes: int,
        timeout: float | None = None,  # noqa: ASYNC109 - None on timeout is the API the sink polls with
    ) -> Chunk | None:
        """The next undelivered items in order (released ones first), or None on timeout/close.

        A chunk holds at least one item, at most ``max_items``, and at most ``max_bytes`` of item
        bytes unless its single item is larger.
        """
        self._check_open()
        max_items = max(1, max_items)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._data.clear()
            async with self._read_lock:
                chunk = await self._take(max_items, max_bytes)
            if chunk is not None:
                return chunk
            if self._closed:
                return None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._data.wait(), remaining)
            except TimeoutError:
                return None

    async def _take(self, max_items: int, max_bytes: int) -> Chunk | None:
        if self._released:
            for i, r in enumerate(self._ranges):
                if r.state == _RELEASED:
                    return self._take_released(i, r, max_items, max_bytes)
        limit = (self._wseq, self._woff)
        if self._rpos >= limit:
            return None
        items, ends, end = await asyncio.to_thread(
            self._read, self._rpos, max_items, max_bytes, limit, list(self._segments), dict(self._sizes))
        if not items:
            self._rpos = end
            return None
        r = _Range(self._rpos, end, items, ends)
        self._rpos = end
        self._ranges.append(r)
        return self._hand_out(r)

    def _take_released(self, i: int, r: _Range, max_items: int, max_bytes: int) -> Chunk:
        k, total = 0, 0
        while k < len(r.items) and k < max_items:
            n = len(r.items[k])
            if k and total + n > max_bytes:
                break
            total += n
            k += 1
        self._released -= 1
        if k < len(r.items):
            rest = _Range(r.ends[k - 1], r.end, r.items[k:], r.ends[k:], _RELEASED)
            r.items, r.ends, r.end = r.items[:k], r.ends[:k], r.ends[k - 1]
            self._ranges.insert(i + 1, rest)
            self._released += 1
        return self._hand_out(r)

    def _hand_out(self, r: _Range) -> Chunk:
        r.state = _OUT
        r.chunk_id = self._next_id
        self._next_id += 1
        self._chunks[r.chunk_id] = r
        return Chunk(r.chunk_id, list(r.items))

    def _read(self, pos: Position, max_items: int, max_bytes: int, limit: Position,
              segments: list[int], sizes: dict[int, int]) -> tuple[list[bytes], list[Position], Position]:
        """Read framed records from ``pos`` (runs in a worker thread)."""
        items: list[bytes] = []
        ends: list[Position] = []
        total = 0
        seq, off = pos
        while len(items) < max_items:
            size = limit[1] if seq == limit[0] else sizes[seq]
            if off >= size:
                if seq >= limit[0]:
                    break
                seq, off = segments[segments.index(seq) + 1], HDR_SIZE
                continue
            fd = self._reader_fd(seq)
            want = min(size - off, max(1 << 16, max_bytes - total + HDR_SIZE * (max_items - len(items))))
            buf = os.pread(fd, want, off)
            p = 0
            full = False
            while p + HDR_SIZE <= len(buf) and len(items) < max_items:
                length, crc = _HDR.unpack_from(buf, p)
                if items and total + length > max_bytes:
                    full = True
                    break
                if p + HDR_SIZE + length > len(buf):
                    if p or len(buf) >= HDR_SIZE + length or off + HDR_SIZE + length > size:
                        break  # the rest of this block is read next time round
                    buf = os.pread(fd, HDR_SIZE + length, off)  # one record larger than our read
                    continue
                payload = buf[p + HDR_SIZE:p + HDR_SIZE + length]
                if not _crc_ok(length, crc, payload):
                    raise SinkError(f"spool {self.directory}: segment {seq} is corrupt at byte {off + p} "
                                    "(changed on disk while logpipe was running)")
                items.append(payload)
                total += length
                p += HDR_SIZE + length
                ends.append((seq, off + p))
            if p == 0 and not full:
                raise SinkError(f"spool {self.directory}: segment {seq} is corrupt at byte {off} "
                                "(changed on disk while logpipe was running)")
            off += p
            if full:
                break
        return items, ends, (seq, off)

    def _reader_fd(self, seq: int) -> int:
        if self._rfd is not None:
            if self._rfd[0] == seq:
                return self._rfd[1]
            os.close(self._rfd[1])
            self._rfd = None
        fd = os.open(self._seg_path(seq), os.O_RDONLY)
        self._rfd = (seq, fd)
        return fd

    # ------------------------------------------------------------------ done / release

    def done(self, chunk_id: int) -> None:
        """Chunk delivered (or quarantined): advance the committed cursor over contiguous done chunks."""
        r = self._pop_chunk(chunk_id)
        r.state = _DONE
        ranges = self._ranges
        n = 0
        while n < len(ranges) and ranges[n].state == _DONE:
            done = ranges[n]
            self._committed_items += len(done.items)
            self._committed_bytes += sum(len(i) for i in done.items) + HDR_SIZE * len(done.items)
            n += 1
        if n:
            del ranges[:n]
            self._cpos = ranges[0].start if ranges else self._rpos
            self._space.set()
            self._schedule_persist()

    def release(self, chunk_id: int) -> None:
        """Chunk not delivered: its items are handed out again, in order, before later ones."""
        r = self._pop_chunk(chunk_id)
        r.state = _RELEASED
        self._released += 1
        self._data.set()

    def _pop_chunk(self, chunk_id: int) -> _Range:
        try:
            return self._chunks.pop(chunk_id)
        except KeyError:
            raise ValueError(f"spool: chunk {chunk_id} is not out (already done or released?)") from None

    # ------------------------------------------------------------------ cursor

    def _schedule_persist(self) -> None:
        if self._closed:  # close() wrote the last cursor and dropped the lock; a late done() stays in memory
            return
        if self._persist_task is None or self._persist_task.done():
            self._persist_task = asyncio.get_running_loop().create_task(self._persist_soon())

    async def _persist_soon(self) -> None:
        # loop: done() calls that land while a write is in flight do not schedule another task.
        # Never cancelled (close() wakes it instead): a cancelled task would leave its worker
        # thread writing an older cursor that could land after close()'s newer one.
        while self._normalised(self._cpos) != self._ppos:
            wait = self._last_persist + CURSOR_INTERVAL - time.monotonic()
            if wait > 0 and not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            try:
                await self._persist()
            except OSError as e:
                diagnostics.error(f"spool {self.directory}: cannot save the cursor ({e.strerror}); "
                                  "will retry", key=f"spool-cursor:{self.directory}")
                self._last_persist = time.monotonic()
                if self._closed:
                    return

    async def _persist(self) -> None:
        async with self._persist_lock:
            pos = self._normalised(self._cpos)
            self._last_persist = time.monotonic()
            if pos == self._ppos:
                return
            gone = [s for s in self._segments if s < pos[0] and s != self._wseq]
            await asyncio.to_thread(self._persist_sync, pos, gone)
            self._ppos = pos
            for seq in gone:
                self._segments.remove(seq)
                self._sizes.pop(seq, None)

    def _normalised(self, pos: Position) -> Position:
        """Move a position at the very end of a finished segment to the start of the next one."""
        seq, off = pos
        while seq != self._wseq and off >= self._sizes.get(seq, 0) and seq in self._segments:
            seq, off = self._segments[self._segments.index(seq) + 1], HDR_SIZE
        return (seq, off)

    def _persist_sync(self, pos: Position, gone: list[int]) -> None:
        doc = orjson.dumps({"version": 1, "segment": pos[0], "offset": pos[1]})
        atomic_write(os.path.join(self.directory, "cursor"), doc, mode=0o600)
        # the cursor now says these segments are consumed: delete them (a crash before the
        # unlink is cleaned up by _recover)
        for seq in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._seg_path(seq))
        if gone:
            fsync_dir(self.directory)

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        """Persist the cursor, close files and unlock; waiting next_chunk/append calls return/raise."""
        if not self._opened or self._closed:
            return
        self._closed = True
        self._data.set()
        self._space.set()
        self._wake.set()
        task = self._persist_task
        if task is not None and not task.done():
            await task
        try:
            try:
                await self._persist()
            except OSError as e:
                raise SinkError(f"spool {self.directory}: cannot save the cursor at close ({e.strerror}); "
                                "delivered items may be sent again") from None
        finally:
            async with self._read_lock:
                if self._rfd is not None:
                    os.close(self._rfd[1])
                    self._rfd = None
            async with self._append_lock:
                if self._wfd is not None:
                    os.close(self._wfd)
                    self._wfd = None
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _check_open(self) -> None:
        if not self._opened:
            raise UsageError("spool: call open() first")
        if self._closed:
            raise SinkError(f"spool {self.directory} is closed")

    async def __aenter__(self) -> Spool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
