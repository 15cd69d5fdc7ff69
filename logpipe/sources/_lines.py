"""The line path of byte-stream sources: chunks → lines (partial tail held, length capped) →
multiline groups → normalised batches."""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from itertools import accumulate, repeat
from typing import Any, NamedTuple

from logpipe import record
from logpipe.multiline import Joiner
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
        # the held partial line joins the chunk's first line only (no copy of the whole chunk)
        parts = chunk.split(b"\n")
        if self._buf:
            parts[0] = self._buf + parts[0]
        size = len(self._buf) + len(chunk)
        tail = parts.pop()
        self.consumed += size - len(tail)
        cut: dict[int, int] | None = None
        limit = self.max_line
        if size > limit and parts and max(map(len, parts)) > limit:
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
    received: str | None = None,
) -> Iterator[tuple[int, list[dict[str, Any]], list[bytes]]]:
    """Normalise ``lines`` into (end, records, NDJSON lines) batches of at most
    BATCH_MAX_RECORDS records / about BATCH_MAX_BYTES bytes; ``end`` is the index in ``lines``
    just past the batch. ``truncated`` holds the indexes of lines cut at the length limit: their
    records get ``truncated: true``. Dropped lines (blank, logpipe's own diagnostics) are left
    out, so a batch may hold no record (its ``end`` still counts: an offset may be acked).

    The records are a :class:`~logpipe.record.NormalisedLines`: dicts built only when a sink
    asks for them. The common case is one ``LineNormaliser.lines`` call per batch (no per-line
    calls).
    """
    for j, norm in _normalised(normalise, lines, truncated, received):
        yield j, norm, norm.lines  # type: ignore[misc]  # a Sequence of the records


def _normalised(normalise: record.LineNormaliser, lines: Sequence[bytes],
                truncated: Container[int] | None, received: str | None,
                ) -> Iterator[tuple[int, record.NormalisedLines]]:
    received = received or record.now()
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
            yield j, record.NormalisedLines(outs, list(recs), {})
        else:
            yield j, normalise.lines(list(lines[i:j]), received)
        i = j


class LineBatch(NamedTuple):
    """Normalised records of consecutive lines, their NDJSON lines, and ``end``: the stream
    offset (bytes consumed by the splitter, from its start) just past the batch's last line.
    ``records`` is a :class:`~logpipe.record.NormalisedLines` (dicts built on first access):
    pass it on as a Batch's records and a sink that only writes bytes never builds one."""

    records: list[dict[str, Any]]
    lines: list[bytes]
    end: int


class LineAssembler:
    """The one line path of a byte-stream source: split chunks into lines (over-long ones cut
    and marked), join multiline groups (when given a :class:`~logpipe.multiline.Joiner`),
    normalise, batch.

    ``feed(chunk)``, ``flush_groups()`` (the joiner's idle deadline passed, or the stream was
    cut under it) and ``finish()``
    (EOF / stop: the partial last line and every held group) return :class:`LineBatch` es in
    order; a batch may hold no record (every line dropped) — skip it unless its ``end`` is
    acked. A cut line is never joined: it ends the group held before it and keeps its
    ``truncated: true``. ``consumed`` is the offset through the last complete line read;
    ``held`` is how many of those lines the joiner still holds (an ack must wait while > 0).
    The splitter is reachable as ``split`` for sources that keep their own bookkeeping;
    ``last_line`` is the last complete line ``feed`` split (None when it was cut, or none yet).
    """

    __slots__ = ("_joiner", "_normalise", "last_line", "split")

    def __init__(self, normalise: record.LineNormaliser, max_line: int = 1 << 20,
                 joiner: Joiner | None = None) -> None:
        self._normalise = normalise
        self.split = LineSplitter(max_line)
        self._joiner = joiner
        self.last_line: bytes | None = None

    @property
    def normalise(self) -> record.LineNormaliser:
        """The normaliser (a source that restarts a stream builds a new assembler with it)."""
        return self._normalise

    @property
    def consumed(self) -> int:
        """Bytes behind every complete line read so far (a line boundary)."""
        return self.split.consumed

    @property
    def pending(self) -> int:
        """Bytes of a partial (or over-long) line read but not yet returned."""
        return self.split.pending

    @property
    def held(self) -> int:
        """Lines the multiline joiner holds (0 without one)."""
        return 0 if self._joiner is None else self._joiner.pending

    @property
    def idle_deadline(self) -> float | None:
        """``time.monotonic()`` value after which ``flush_groups()`` is due (None: nothing held)."""
        return None if self._joiner is None else self._joiner.idle_deadline

    def feed(self, chunk: bytes, received: str | None = None) -> Iterator[LineBatch]:
        """The batches of the complete lines in ``chunk`` (split now; normalised as iterated)."""
        start = self.split.consumed
        lines, cut = self.split.split(chunk)
        if not lines:
            return iter(())
        self.last_line = None if cut is not None and len(lines) - 1 in cut else lines[-1]
        j = self._joiner
        if j is None or (j.pending == 0 and all(map(bytes.startswith, lines, repeat(b"{")))):
            # no joiner, or JSON with nothing held: the joiner would pass it through unchanged
            return self._plain(lines, cut, start, received)
        raws = [len(x) + 1 for x in lines]
        if cut:
            for k, raw in cut.items():
                raws[k] = raw
        pairs: list[tuple[bytes, int]] = []
        flagged: set[int] = set()
        push = j.push
        for i, (line, end) in enumerate(zip(lines, _ends(raws, start), strict=True)):
            if cut is not None and i in cut:
                pairs += j.flush()
                flagged.add(len(pairs))
                pairs.append((line, end))
            else:
                pairs += push(line, end)
        return self._pairs(pairs, flagged, received)

    def flush_groups(self, received: str | None = None) -> Iterator[LineBatch]:
        """The groups the joiner holds (its idle deadline passed; a copytruncate cut the file)."""
        if self._joiner is None:
            return iter(())
        return self._pairs(self._joiner.flush(), (), received)

    def finish(self, received: str | None = None) -> Iterator[LineBatch]:
        """EOF or shutdown: the partial last line (counted as consumed) and every held group."""
        held = self.split.flush_flagged()
        end = self.split.consumed
        j = self._joiner
        pairs: list[tuple[bytes, int]] = []
        flagged: set[int] = set()
        if held is not None and (held[1] or j is None):
            if j is not None:
                pairs += j.flush()
            if held[1]:
                flagged.add(len(pairs))
            pairs.append((held[0], end))
        elif held is not None and j is not None:
            pairs += j.push(held[0], end)
        if j is not None:
            pairs += j.flush()
        return self._pairs(pairs, flagged, received)

    def _plain(self, lines: list[bytes], cut: dict[int, int] | None, start: int,
               received: str | None) -> Iterator[LineBatch]:
        pos = start
        i = 0
        for j, norm in _normalised(self._normalise, lines, cut, received):
            pos += sum(map(len, lines[i:j])) + (j - i)
            if cut:
                pos += sum(raw - len(lines[k]) - 1 for k, raw in cut.items() if i <= k < j)
            yield LineBatch(norm, norm.lines, pos)  # type: ignore[arg-type]
            i = j

    def _pairs(self, pairs: list[tuple[bytes, int]], flagged: Container[int],
               received: str | None) -> Iterator[LineBatch]:
        if not pairs:
            return
        lines = [p[0] for p in pairs]
        for j, norm in _normalised(self._normalise, lines, flagged, received):
            yield LineBatch(norm, norm.lines, pairs[j - 1][1])  # type: ignore[arg-type]


def _ends(raws: list[int], start: int) -> Iterator[int]:
    """Running end offsets of lines of raw lengths ``raws`` that begin at ``start``."""
    ends = accumulate(raws, initial=start)
    next(ends)
    return ends
