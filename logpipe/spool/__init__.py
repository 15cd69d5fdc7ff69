"""Bounded, ordered, crash-safe disk queue (the Splunk sink's spool): CRC-framed segments + a cursor.

On disk, in the spool directory (the files are :mod:`logpipe.spool._segments`)::

    lock                      flock()ed while a Spool is open: one process per spool directory
    0000000000000001.seg      segments: 8-byte magic, then records  <u32 len><u32 crc32><item>
    0000000000000002.seg      (the last one is appended to; a new one starts past segment_bytes)
    cursor                    {"version":1,"segment":S,"offset":O} — first record not yet done
    reserve                   preallocated bytes (``reserve_bytes``), kept for records already read

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

Three positions move forward through the records: the *write end* (where ``append`` writes),
the *read position* (the next record to hand out) and the *done position* (the first record
not yet done; the cursor file saves it, lagging by at most ``CURSOR_INTERVAL``).

The reserve: a full disk (ENOSPC) releases it and the append is written into its space;
``reserve_held`` is then False until ``restore_reserve`` makes it again, and a caller that keeps
taking input only while it is held can always spool what it has read. ``max_bytes`` counts it:
records may use ``max_bytes - reserve_bytes`` until ``use_reserve`` (a stop).

The bound (``max_bytes``) counts record bytes not yet done; ``append`` blocks while the spool
is over it (back-pressure, Vector's ``when_full = "block"``) and says so once. Disk usage can
exceed the bound by up to one segment plus what was done within the last cursor interval.

Reading: the items just appended stay in memory (``recent_bytes``, 8 MiB) and are handed out
from there while the reader keeps up; records are read back from disk (and their CRC checked)
only after a restart or by a reader that fell further behind.

Modules: ``_records`` (record format, memory and disk readers), ``_log`` (live segments and the
write end), ``_segments`` (the files), ``_cursor`` (saving the cursor), ``_handout`` (what is
out with a consumer, done, or given back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from logpipe import diagnostics
from logpipe.errors import DiskFullError, SinkError, SpoolFullError, UsageError
from logpipe.spool import _records, _segments
from logpipe.spool._cursor import CURSOR_INTERVAL, CursorSaver
from logpipe.spool._handout import Chunk, HandedOut
from logpipe.spool._log import SegmentLog
from logpipe.spool._records import HDR_SIZE, MAGIC, DiskReader, Position, RecentRecords
from logpipe.spool._segments import SegmentFiles

__all__ = ["CURSOR_INTERVAL", "HDR_SIZE", "MAGIC", "RECENT_BYTES", "Chunk", "Spool"]

#: Item bytes just appended that are kept in memory to hand out without reading them back
RECENT_BYTES = 8 << 20


class Spool:
    """A bounded, ordered, crash-safe queue of opaque byte items in ``directory``."""

    def __init__(self, directory: str, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20,
                 reserve_bytes: int = 0, recent_bytes: int = RECENT_BYTES) -> None:
        if max_bytes <= 0 or segment_bytes <= 0 or reserve_bytes < 0:
            raise UsageError("spool: max_bytes and segment_bytes must be positive")
        if reserve_bytes and reserve_bytes * 2 > max_bytes:
            raise UsageError(f"spool: the maximum size ({max_bytes} bytes) must be at least twice the "
                             f"reserve for records read but not yet spooled ({reserve_bytes} bytes)")
        #: bytes preallocated in the file ``reserve``, counted toward ``max_bytes``: released on a
        #: full disk (or at a stop) so that every record already read can still be spooled
        self.reserve_bytes = reserve_bytes
        self._reserve_held = False
        self._use_reserve = False
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._files = SegmentFiles(self.directory)
        self._log = SegmentLog(self._files)
        self._reader = DiskReader(self.directory, self._files.path)
        #: the items appended last, handed out from memory while the reader keeps up
        self._recent = RecentRecords(recent_bytes)
        self._read_pos: Position = (0, 0)
        self._done_pos: Position = (0, 0)
        self._handed = HandedOut()
        self._appended_items = 0
        self._appended_bytes = 0
        self._done_items = 0
        self._done_bytes = 0
        self._opened = False
        self._closed = False
        self._paused = False
        #: the last write failed with ENOSPC/EDQUOT: reclaim drained space before the next one
        self._disk_full = False
        # created in open(), inside the loop that will use them
        self._data: asyncio.Event
        self._space: asyncio.Event
        self._append_lock: asyncio.Lock
        self._read_lock: asyncio.Lock
        self._cursor: CursorSaver

    # ------------------------------------------------------------------ properties

    @property
    def pending_bytes(self) -> int:
        """On-disk bytes (frames included) of items not yet done."""
        return self._appended_bytes - self._done_bytes

    @property
    def pending_items(self) -> int:
        """Items appended and not yet done (handed out or not)."""
        return self._appended_items - self._done_items

    @property
    def is_empty(self) -> bool:
        """True when every appended item is done."""
        return self.pending_items == 0

    @property
    def unread_items(self) -> bool:
        """True when some item is waiting to be handed out (new, or released)."""
        return self._handed.released > 0 or self._log.normalised(self._read_pos) < self._log.write_end

    def stats(self) -> dict[str, object]:
        """Depth and health for ``logpipe status``: items and bytes not yet done, whether the
        disk was full at the last append, and the oldest segment's mtime (epoch seconds; an
        upper bound on the age of the oldest item)."""
        oldest: float | None = None
        if self._log.segments:
            with contextlib.suppress(OSError):
                oldest = os.stat(self._files.path(self._log.segments[0])).st_mtime
        return {"items": self.pending_items, "bytes": self.pending_bytes, "max_bytes": self.max_bytes,
                "disk_full": self._disk_full, "oldest_segment_mtime": oldest}

    # ------------------------------------------------------------------ open / recovery

    async def open(self) -> None:
        """Lock the directory, recover segments (dropping a torn tail) and restore the cursor."""
        if self._opened:
            raise UsageError("spool: already open")
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self._append_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._cursor = CursorSaver(self._log, lambda: self._done_pos, None, self._cursor_disk_full)
        await asyncio.to_thread(self._open_sync)
        self._opened = True

    def _open_sync(self) -> None:
        self._files.lock()
        try:
            self._recover()
            if self.reserve_bytes:
                self._reserve_held = self._files.make_reserve(self.reserve_bytes)
        except BaseException:
            self._files.unlock()
            raise

    def _recover(self) -> None:
        found = self._files.recover()
        self._log.restore(found.segments, found.sizes)
        self._done_pos = self._read_pos = found.start
        self._cursor.saved = found.cursor
        self._appended_items, self._appended_bytes = found.items, found.nbytes

    # ------------------------------------------------------------------ append

    async def append(self, items: list[bytes]) -> None:
        """Write ``items`` durably (returns after fsync); blocks while the spool is over its bound."""
        self._check_open()
        if not items:
            return
        header = _records.header
        parts: list[bytes] = []
        for item in items:
            parts += (header(item), item)
        nbytes = sum(map(len, items)) + HDR_SIZE * len(items)
        async with self._append_lock:
            await self._wait_for_room(nbytes, len(items))
            if self._disk_full:
                await self._reclaim_drained()
            try:
                await self._write_or_release(parts)
            except DiskFullError:
                self._disk_full = True
                raise
            self._disk_full = False
            self._recent.add(self._log.write_segment, self._log.write_offset, items)
            self._log.advance(nbytes)
            self._appended_items += len(items)
            self._appended_bytes += nbytes
            self._data.set()

    @property
    def _data_bound(self) -> int:
        """Record bytes allowed: ``max_bytes`` less the reserve, until a stop hands it over."""
        return self.max_bytes if self._use_reserve else self.max_bytes - self.reserve_bytes

    async def _wait_for_room(self, nbytes: int, nitems: int) -> None:
        while self.pending_bytes > 0 and self.pending_bytes + nbytes > self._data_bound:
            if self._closed:
                raise SpoolFullError(f"spool {self.directory} is full and closing; "
                                     f"{nitems} items not spooled")
            if not self._paused:
                self._paused = True
                diagnostics.warning(
                    f"spool {self.directory} is full ({self.pending_bytes} of {self._data_bound} bytes"
                    f"{f'; {self.reserve_bytes} more are its reserve' if self.reserve_bytes else ''}): "
                    "pausing input until Splunk catches up (back-pressure; nothing is dropped)",
                    key=f"spool-full:{self.directory}")
            self._space.clear()
            await self._space.wait()
        if self._paused:
            self._paused = False
            diagnostics.info(f"spool {self.directory} has room again; input resumed",
                             key=f"spool-room:{self.directory}")

    @property
    def reserve_held(self) -> bool:
        """The reserve file is in place (always True without a reserve): taking new input is safe."""
        return self._reserve_held or not self.reserve_bytes

    def use_reserve(self) -> None:
        """A stop: everything already read must go in now — release the reserve's bytes to the
        data (``max_bytes`` counts them) and wake appends waiting for room."""
        self._use_reserve = True
        if self._opened and not self._closed:
            self._space.set()

    async def restore_reserve(self) -> bool:
        """Re-create the reserve once there is room (reclaiming drained segments first, as after
        a disk-full append); True when it is in place."""
        self._check_open()
        if self.reserve_held:
            return True
        async with self._append_lock:
            make = self._files.make_reserve
            self._reserve_held = await asyncio.to_thread(make, self.reserve_bytes)
            if not self._reserve_held:  # the space of what was delivered may be all there is
                await self._reclaim_drained()
                self._reserve_held = await asyncio.to_thread(make, self.reserve_bytes)
            if self._reserve_held:
                self._disk_full = False
                diagnostics.info(f"spool {self.directory}: its reserve of {self.reserve_bytes} bytes is "
                                 "in place again", key=f"spool-reserve:{self.directory}")
        return self._reserve_held

    async def _write_or_release(self, parts: list[bytes]) -> None:
        """Write; on a full disk release the reserve (once) and write into the space it frees."""
        try:
            await self._write_at_end(parts)
        except DiskFullError:
            if not self._reserve_held:
                raise
            self._reserve_held = False
            await asyncio.to_thread(self._files.release_reserve)
            diagnostics.warning(f"spool {self.directory}: disk full; released its reserve of "
                                f"{self.reserve_bytes} bytes to keep what was already read",
                                key=f"spool-reserve-released:{self.directory}")
            await self._write_at_end(parts)

    async def _write_at_end(self, parts: list[bytes]) -> None:
        """Write at the write end (a new segment first when this one is full); the write end
        itself moves only after the caller has the records in memory too."""
        if self._log.is_full(self.segment_bytes):
            await asyncio.to_thread(self._log.start_next)
        await asyncio.to_thread(self._log.write, parts)

    @property
    def disk_full(self) -> bool:
        """The last append failed for lack of disk space (it is retried by the caller)."""
        return self._disk_full

    async def _reclaim_drained(self) -> None:
        """After a disk-full append: once every record is done, give the segments' space back.

        Segments otherwise roll over only at ``segment_bytes``, so on a disk smaller than that
        a drained segment would never be freed and the spool would stay full for good.
        """
        if self.pending_items or self._handed or self._read_pos < self._log.write_end:
            return
        emptying = self._log.empty()
        if emptying is None:
            return
        number, fd, older = emptying
        async with self._read_lock, self._cursor.lock:
            self._reader.close()
            self._recent.clear()
            try:
                await asyncio.to_thread(self._files.empty_last, number, fd, older)
            except OSError as e:
                _segments.raise_write_error(self.directory, e)
            self._log.emptied()
            self._read_pos = self._done_pos = self._cursor.saved = (number, HDR_SIZE)
        diagnostics.info(f"spool {self.directory}: everything spooled was delivered; its disk space "
                         "is free again", key=f"spool-reclaimed:{self.directory}")

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
        again = self._handed.again(max_items, max_bytes)
        if again is not None:
            return again
        log = self._log
        limit = log.write_end
        # the read position may name a segment the cursor save has deleted since (it was read
        # to its very end, then the writer rolled over and its records were done): start at
        # the next live segment, never hand the reader a segment it no longer knows
        self._read_pos = log.normalised(self._read_pos)
        if self._read_pos >= limit:
            return None
        read = self._recent.take(self._read_pos, max_items, max_bytes)
        if read is None:  # after a restart, or fallen behind by more than the memory bound
            read = await asyncio.to_thread(
                self._reader.read, self._read_pos, max_items, max_bytes, limit,
                list(log.segments), dict(log.sizes))
            self._recent.drop_before(read[2])
        items, ends, end = read
        start, self._read_pos = self._read_pos, end
        if not items:
            return None
        return self._handed.new(start, end, items, ends)

    # ------------------------------------------------------------------ done / release

    def done(self, chunk_id: int) -> None:
        """Chunk delivered (or quarantined): advance the done position over contiguous done runs."""
        finished = self._handed.done(chunk_id)
        if finished is not None:
            items, nbytes, first_out = finished
            self._done_items += items
            self._done_bytes += nbytes
            self._done_pos = first_out if first_out is not None else self._read_pos
            self._space.set()
            if not self._closed:
                self._cursor.schedule()

    def release(self, chunk_id: int) -> None:
        """Chunk not delivered: its items are handed out again, in order, before later ones."""
        self._handed.release(chunk_id)
        self._data.set()

    def _cursor_disk_full(self) -> None:
        self._disk_full = True

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        """Persist the cursor, close files and unlock; waiting next_chunk/append calls return/raise."""
        if not self._opened or self._closed:
            return
        self._closed = True
        self._data.set()
        self._space.set()
        try:
            try:
                await self._cursor.close()
            except OSError as e:
                raise SinkError(f"spool {self.directory}: cannot save the cursor at close ({e.strerror}); "
                                "delivered items may be sent again") from None
        finally:
            async with self._read_lock:
                self._reader.close()
            async with self._append_lock:
                self._log.close()
            self._files.unlock()

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
