"""Splitting byte chunks into lines (partial tail held, length capped) and lines into batches."""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Any

from logpipe import record
from logpipe.pipeline import BATCH_MAX_BYTES, BATCH_MAX_RECORDS

#: Marker appended to a line cut at the length limit (the record also gets ``truncated: true``).
TRUNCATION_MARKER = b"...[truncated by logpipe]"


class LineSplitter:
    """Feeds byte chunks, returns complete lines (without ``\\n``); holds the partial last line.

    A line longer than ``max_line`` is cut to ``max_line`` bytes plus TRUNCATION_MARKER (Filebeat's
    policy: truncate and flag, keep reading — never Fluent Bit's drop-the-file). The cut line is
    returned once its newline arrives, so ``consumed`` — the bytes behind every line returned so
    far, i.e. what a checkpoint may commit — always sits on a line boundary: a restart never
    resumes in the middle of an over-long line (the re-read loop of Fluent Bit #3488). Memory
    stays bounded by ``max_line`` however long the line is.
    """

    __slots__ = ("_buf", "_cut", "_cut_raw", "consumed", "max_line", "truncated_lines")

    def __init__(self, max_line: int = 1 << 20) -> None:
        self.max_line = max_line
        self._buf = b""
        self._cut: bytes | None = None  # kept prefix of an over-long line still being skipped
        self._cut_raw = 0  # raw bytes of that line seen so far
        self.consumed = 0
        self.truncated_lines = 0

    @property
    def pending(self) -> int:
        """Bytes read but not yet returned as lines (a partial line, or an over-long one)."""
        return self._cut_raw if self._cut is not None else len(self._buf)

    def split(self, chunk: bytes) -> tuple[list[bytes], dict[int, int] | None]:
        """Returns (lines, cut): ``cut`` is ``None`` or maps the index of each truncated line to
        its raw length in the input (newline included); every other line's raw length is
        ``len(line) + 1``. The common case does no per-line Python work."""
        head: bytes | None = None
        head_raw = 0
        if self._cut is not None:
            nl = chunk.find(b"\n")
            if nl < 0:
                self._cut_raw += len(chunk)
                return [], None
            head = self._cut + TRUNCATION_MARKER
            head_raw = self._cut_raw + nl + 1
            self._cut = None
            self._cut_raw = 0
            self.consumed += head_raw
            self.truncated_lines += 1
            chunk = chunk[nl + 1 :]
        data = self._buf + chunk if self._buf else chunk
        parts = data.split(b"\n")
        tail = parts.pop()
        self.consumed += len(data) - len(tail)
        cut: dict[int, int] | None = None
        limit = self.max_line
        if len(data) > limit and parts and max(map(len, parts)) > limit:
            cut = {}
            for i, p in enumerate(parts):
                if len(p) > limit:
                    parts[i] = p[:limit] + TRUNCATION_MARKER
                    cut[i] = len(p) + 1
                    self.truncated_lines += 1
        if len(tail) > limit:
            self._cut = tail[:limit]
            self._cut_raw = len(tail)
            self._buf = b""
        else:
            self._buf = tail
        if head is not None:
            parts.insert(0, head)
            shifted = {i + 1: n for i, n in cut.items()} if cut else {}
            shifted[0] = head_raw
            cut = shifted
        return parts, cut

    def feed(self, chunk: bytes) -> tuple[list[bytes], list[bool]]:
        """Returns (lines, truncated flags). Each line excludes its newline."""
        lines, cut = self.split(chunk)
        flags = [False] * len(lines)
        if cut:
            for i in cut:
                flags[i] = True
        return lines, flags

    def flush_flagged(self) -> tuple[bytes, bool] | None:
        """The held partial line (EOF, file gone, ``--once``) and whether it was cut; it counts
        as consumed from now on. ``None`` when nothing is held."""
        if self._cut is not None:
            line = self._cut + TRUNCATION_MARKER
            self.consumed += self._cut_raw
            self._cut = None
            self._cut_raw = 0
            self.truncated_lines += 1
            return line, True
        if not self._buf:
            return None
        tail, self._buf = self._buf, b""
        self.consumed += len(tail)
        return tail, False

    def flush(self) -> bytes | None:
        """Return the held partial line (at EOF / shutdown), counting it as consumed."""
        res = self.flush_flagged()
        return None if res is None else res[0]


#: Rough per-record growth of a normalised line (spliced keys), for batch byte bounds.
SPLICE_ESTIMATE = 128


def batch_end(lines: Sequence[bytes], start: int) -> int:
    """End index of the batch of ``lines`` that begins at ``start``: at most BATCH_MAX_RECORDS
    lines and about BATCH_MAX_BYTES bytes once normalised — always at least one line."""
    j = min(len(lines), start + BATCH_MAX_RECORDS)
    while j - start > 1 and sum(map(len, lines[start:j])) + SPLICE_ESTIMATE * (j - start) > BATCH_MAX_BYTES:
        j = start + (j - start) // 2
    return j


def normalised_batches(
    normalise: record.LineNormaliser,
    lines: Sequence[bytes],
    truncated: Container[int] | None = None,
) -> Iterator[tuple[list[dict[str, Any]], list[bytes]]]:
    """Normalise ``lines`` into (records, NDJSON lines) batches of at most BATCH_MAX_RECORDS
    records / about BATCH_MAX_BYTES bytes. ``truncated`` holds the indexes of lines cut at the
    length limit: their records get ``truncated: true``. Dropped lines (blank, logpipe's own
    diagnostics) are left out; empty batches are not yielded.

    The common case is one ``LineNormaliser.batch`` call per batch (no per-line calls).
    """
    received = record.now()
    n = len(lines)
    i = 0
    while i < n:
        j = batch_end(lines, i)
        if truncated and any(k in truncated for k in range(i, j)):
            recs: list[dict[str, Any]] = []
            outs: list[bytes] = []
            for k in range(i, j):
                res = normalise(lines[k], received)
                if res is None:
                    continue
                rec, enc = res
                if k in truncated:
                    rec[record.TRUNCATED] = True
                    enc = record.dumps(rec)
                recs.append(rec)
                outs.append(enc)
        else:
            recs, outs = normalise.batch(list(lines[i:j]), received)
        if recs:
            yield recs, outs
        i = j
