"""Splitting byte chunks into lines, holding the partial tail, capping line length."""

from __future__ import annotations

#: Marker appended to a line cut at the length limit (the record also gets ``truncated: true``).
TRUNCATION_MARKER = b"...[truncated by logpipe]"


class LineSplitter:
    """Feeds byte chunks, yields complete lines (without ``\\n``); holds the partial last line.

    A line longer than ``max_line`` is cut to ``max_line`` bytes plus TRUNCATION_MARKER and the
    rest, up to its newline, is skipped — the stream keeps being read. ``consumed`` counts the
    bytes behind every line returned so far (what a checkpoint may commit).
    """

    __slots__ = ("_buf", "_dropping", "consumed", "max_line", "truncated_lines")

    def __init__(self, max_line: int = 1 << 20) -> None:
        self.max_line = max_line
        self._buf = b""
        self._dropping = False
        self.consumed = 0
        self.truncated_lines = 0

    @property
    def pending(self) -> int:
        """Bytes held (a partial line, or the part of an over-long line being skipped)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> tuple[list[bytes], list[bool]]:
        """Returns (lines, truncated flags). Each line excludes its newline."""
        lines: list[bytes] = []
        flags: list[bool] = []
        if self._dropping:
            nl = chunk.find(b"\n")
            if nl < 0:
                self.consumed += len(chunk)
                return lines, flags
            self.consumed += nl + 1
            chunk = chunk[nl + 1 :]
            self._dropping = False
        data = self._buf + chunk if self._buf else chunk
        parts = data.split(b"\n")
        tail = parts.pop()
        for p in parts:
            if len(p) > self.max_line:
                lines.append(p[: self.max_line] + TRUNCATION_MARKER)
                flags.append(True)
                self.truncated_lines += 1
            else:
                lines.append(p)
                flags.append(False)
        self.consumed += len(data) - len(tail)
        if len(tail) > self.max_line:
            lines.append(tail[: self.max_line] + TRUNCATION_MARKER)
            flags.append(True)
            self.truncated_lines += 1
            self.consumed += len(tail)
            self._buf = b""
            self._dropping = True
        else:
            self._buf = tail
        return lines, flags

    def flush(self) -> bytes | None:
        """Return the held partial line (at EOF / shutdown), counting it as consumed."""
        if not self._buf:
            return None
        tail, self._buf = self._buf, b""
        self.consumed += len(tail)
        return tail
