"""Where the spool's records are: the live segments in order, their sizes, the write end — and
writing there (words: :mod:`logpipe.spool._records`)."""

from __future__ import annotations

import contextlib
import os

from logpipe.spool import _segments
from logpipe.spool._records import HDR_SIZE, Position
from logpipe.spool._segments import SegmentFiles


class SegmentLog:
    """The live segments of one spool directory, as the open spool sees them. The blocking
    methods (``start_next``, ``write``) run in a worker thread."""

    def __init__(self, files: SegmentFiles) -> None:
        self.files = files
        #: live segment numbers, ascending; the last one is written to
        self.segments: list[int] = []
        #: each live segment's size (its end of valid records)
        self.sizes: dict[int, int] = {}
        self.write_segment = 0
        self.write_offset = 0
        self._write_fd: int | None = None

    @property
    def write_end(self) -> Position:
        """Where the next record goes."""
        return (self.write_segment, self.write_offset)

    def restore(self, segments: list[int], sizes: dict[int, int]) -> None:
        """Start from what recovery found; open the last segment for writing."""
        self.segments, self.sizes = segments, sizes
        self.write_segment = segments[-1]
        self.write_offset = sizes[self.write_segment]
        self._write_fd = os.open(self.files.path(self.write_segment), os.O_WRONLY)

    def normalised(self, pos: Position) -> Position:
        """Move a position at the very end of a finished segment to the start of the next one.

        A position in a segment already deleted as consumed (the read position, or the start of
        a run handed out, left at its very end) is the start of the first segment left."""
        number, off = pos
        segments = self.segments
        if number < segments[0]:
            return (segments[0], HDR_SIZE)
        while number != self.write_segment and off >= self.sizes.get(number, 0) and number in segments:
            number, off = segments[segments.index(number) + 1], HDR_SIZE
        return (number, off)

    def is_full(self, segment_bytes: int) -> bool:
        """The write segment has reached ``segment_bytes``: the next write starts a new one."""
        return self.write_offset >= segment_bytes

    def start_next(self) -> None:
        """Create the next segment and write there from now on (blocking)."""
        number = self.write_segment + 1
        new_fd = self.files.create_for_writing(number)
        if self._write_fd is not None:
            os.close(self._write_fd)
        self._write_fd = new_fd
        self.write_segment = number
        self.write_offset = HDR_SIZE
        self.segments.append(number)
        self.sizes[number] = HDR_SIZE

    def write(self, parts: list[bytes]) -> None:
        """Write ``parts`` at the write end and fdatasync (blocking); the write end moves only
        with :meth:`advance`. On an error no partial record is left behind."""
        fd = self._write_fd
        assert fd is not None
        os.lseek(fd, self.write_offset, os.SEEK_SET)
        try:
            _segments.write_all(fd, parts)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.write_offset)
            _segments.raise_write_error(self.files.directory, e)

    def advance(self, nbytes: int) -> None:
        """``nbytes`` of records were written at the write end."""
        self.write_offset += nbytes
        self.sizes[self.write_segment] = self.write_offset

    def consumed_before(self, pos: Position) -> list[int]:
        """Segments wholly before ``pos`` (never the write segment)."""
        return [s for s in self.segments if s < pos[0] and s != self.write_segment]

    def forget(self, numbers: list[int]) -> None:
        """The segments ``numbers`` were deleted."""
        for number in numbers:
            self.segments.remove(number)
            self.sizes.pop(number, None)

    def empty(self) -> tuple[int, int, list[int]] | None:
        """For emptying: (write segment, its descriptor, the older segments); None when there is
        nothing to give back (one segment holding no record)."""
        if self.write_offset <= HDR_SIZE and len(self.segments) == 1:
            return None
        assert self._write_fd is not None
        number = self.write_segment
        return number, self._write_fd, [s for s in self.segments if s != number]

    def emptied(self) -> None:
        """The older segments were deleted and the write segment cut back to its magic."""
        self.segments = [self.write_segment]
        self.sizes = {self.write_segment: HDR_SIZE}
        self.write_offset = HDR_SIZE

    def close(self) -> None:
        """Close the write descriptor."""
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
