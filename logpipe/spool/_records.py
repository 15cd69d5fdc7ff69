"""The spool's records: their frame, the check of a stored one, and the two ways to read them.

Words used here and in :mod:`logpipe.spool`:

- *item*: the opaque bytes a caller appends.
- *record*: one item as stored, framed ``<u32 length><u32 crc32><item bytes>``; the CRC covers
  the length field and the item, so a torn or changed record is never misread as data.
- *segment*: a file ``<16-digit number>.seg`` = 8-byte ``MAGIC`` + records. Numbers only grow.
- *position*: ``(segment number, byte offset of a record start)``.

Records are read back from disk (:class:`DiskReader`, CRC checked) only after a restart or when
the reader fell behind by more than the memory bound; otherwise the items just appended are
handed out from :class:`RecentRecords` — the same bytes, no read, no check, no copy.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable

from isal.isal_zlib import crc32

from logpipe.errors import SinkError

MAGIC = b"LPSPOOL1"
RECORD_HEADER = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
#: bytes of a record's header (length + crc) — also the size of ``MAGIC``
HDR_SIZE = RECORD_HEADER.size
assert len(MAGIC) == HDR_SIZE

Position = tuple[int, int]  # (segment number, byte offset of a record start)
#: what a read hands back: (items, the position just after each, the position reached)
Read = tuple[list[bytes], list[Position], Position]


def header(item: bytes) -> bytes:
    """The 8-byte frame header of ``item`` (written before it with ``writev``: no joined copy).
    The CRC-32 is zlib's, computed by ISA-L (the same values, ~15x faster here)."""
    length = _LENGTH.pack(len(item))
    return length + _LENGTH.pack(crc32(item, crc32(length)))


def crc_ok(length: int, crc: int, item: bytes | memoryview) -> bool:
    """Whether a record header's CRC matches its item."""
    return crc32(item, crc32(_LENGTH.pack(length))) == crc


def walk(data: bytes, from_off: int) -> tuple[int, int, int, bool]:
    """Check a whole segment's bytes: (end of the last good record, records and bytes at/after
    ``from_off``, whether ``from_off`` is a record boundary)."""
    view = memoryview(data)
    off, end = HDR_SIZE, len(data)
    records = nbytes = 0
    boundary = from_off == HDR_SIZE
    while off + HDR_SIZE <= end:
        length, crc = RECORD_HEADER.unpack_from(data, off)
        stop = off + HDR_SIZE + length
        if stop > end or not crc_ok(length, crc, view[off + HDR_SIZE:stop]):
            break
        if off >= from_off:
            records += 1
            nbytes += stop - off
        off = stop
        if off == from_off:
            boundary = True
    return off, records, nbytes, boundary


class RecentRecords:
    """The items appended most recently, in order, with their positions — at most ``max_bytes``
    of them (the oldest are dropped first; the reader then reads those from disk)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._records: deque[tuple[Position, Position, bytes]] = deque()  # (start, end, item)
        self._bytes = 0

    def add(self, segment: int, offset: int, items: list[bytes]) -> None:
        """``items`` were written one after another from ``(segment, offset)``."""
        records = self._records
        for item in items:
            end = offset + HDR_SIZE + len(item)
            records.append(((segment, offset), (segment, end), item))
            offset = end
            self._bytes += len(item)
        while self._bytes > self.max_bytes and records:
            self._bytes -= len(records.popleft()[2])

    def take(self, pos: Position, max_items: int, max_bytes: int) -> Read | None:
        """Items from ``pos`` on if the first one is held here (at least one, at most
        ``max_items`` and ``max_bytes`` of item bytes); None when ``pos`` must be read from disk."""
        records = self._records
        if not records or records[0][0] != pos:
            return None
        items: list[bytes] = []
        ends: list[Position] = []
        total = 0
        while records and len(items) < max_items:
            item = records[0][2]
            if items and total + len(item) > max_bytes:
                break
            _, end, _ = records.popleft()
            items.append(item)
            ends.append(end)
            total += len(item)
        self._bytes -= total
        return items, ends, ends[-1]

    def drop_before(self, pos: Position) -> None:
        """Forget records that start before ``pos`` (they were read from disk)."""
        records = self._records
        while records and records[0][0] < pos:
            self._bytes -= len(records.popleft()[2])

    def clear(self) -> None:
        """Forget everything (the segments were emptied)."""
        self._records.clear()
        self._bytes = 0


class DiskReader:
    """Reads records in order from the segment files, CRC checked, keeping one descriptor open
    (blocking: runs in a worker thread)."""

    def __init__(self, directory: str, path: Callable[[int], str]) -> None:
        self.directory = directory
        self._path = path
        self._open: tuple[int, int] | None = None  # (segment number, fd)

    def read(self, pos: Position, max_items: int, max_bytes: int, limit: Position,
             segments: list[int], sizes: dict[int, int]) -> Read:
        """Items from ``pos`` up to ``limit``: at most ``max_items`` and ``max_bytes`` of item bytes
        (at least one item)."""
        items: list[bytes] = []
        ends: list[Position] = []
        total = 0
        number, off = pos
        while len(items) < max_items:
            size = limit[1] if number == limit[0] else sizes[number]
            if off >= size:
                if number >= limit[0]:
                    break
                number, off = segments[segments.index(number) + 1], HDR_SIZE
                continue
            fd = self._fd(number)
            want = min(size - off, max(1 << 16, max_bytes - total + HDR_SIZE * (max_items - len(items))))
            buf = os.pread(fd, want, off)
            p = 0
            full = False
            while p + HDR_SIZE <= len(buf) and len(items) < max_items:
                length, crc = RECORD_HEADER.unpack_from(buf, p)
                if items and total + length > max_bytes:
                    full = True
                    break
                if p + HDR_SIZE + length > len(buf):
                    if p or len(buf) >= HDR_SIZE + length or off + HDR_SIZE + length > size:
                        break  # the rest of this block is read next time round
                    buf = os.pread(fd, HDR_SIZE + length, off)  # one record larger than our read
                    continue
                item = buf[p + HDR_SIZE:p + HDR_SIZE + length]
                if not crc_ok(length, crc, item):
                    self._corrupt(number, off + p)
                items.append(item)
                total += length
                p += HDR_SIZE + length
                ends.append((number, off + p))
            if p == 0 and not full:
                self._corrupt(number, off)
            off += p
            if full:
                break
        return items, ends, (number, off)

    def _corrupt(self, number: int, at: int) -> None:
        raise SinkError(f"spool {self.directory}: segment {number} is corrupt at byte {at} "
                        "(changed on disk while logpipe was running)")

    def _fd(self, number: int) -> int:
        if self._open is not None:
            if self._open[0] == number:
                return self._open[1]
            self.close()
        fd = os.open(self._path(number), os.O_RDONLY)
        self._open = (number, fd)
        return fd

    def close(self) -> None:
        """Close the open descriptor (if any)."""
        if self._open is not None:
            os.close(self._open[1])
            self._open = None
