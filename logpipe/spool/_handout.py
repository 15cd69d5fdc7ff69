"""What the spool has handed out: runs of records with a consumer, done, or given back."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from logpipe.spool._records import HDR_SIZE, Position


class _Handed(enum.Enum):
    """Where a handed-out run of records stands."""

    OUT = "out"            # with a consumer
    DONE = "done"          # delivered; waits for the runs before it to be done too
    RELEASED = "released"  # given back: handed out again before newer records


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
class _Run:
    """A contiguous run of records [start, end) handed out at least once."""

    start: Position
    end: Position
    items: list[bytes]
    ends: list[Position]  # position just after each item
    state: _Handed = _Handed.OUT
    chunk_id: int = -1


class HandedOut:
    """The runs handed out and not yet done, in spool order."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._out: dict[int, _Run] = {}
        self.released = 0  # runs given back, waiting to be handed out again
        self._next_id = 0

    def __bool__(self) -> bool:
        return bool(self._runs)

    def new(self, start: Position, end: Position, items: list[bytes], ends: list[Position]) -> Chunk:
        """Hand out records just read from ``start`` to ``end``."""
        run = _Run(start, end, items, ends)
        self._runs.append(run)
        return self._hand_out(run)

    def again(self, max_items: int, max_bytes: int) -> Chunk | None:
        """Hand out the first released run again (cut to the limits), or None."""
        if not self.released:
            return None
        i = next((k for k, r in enumerate(self._runs) if r.state is _Handed.RELEASED), -1)
        if i < 0:
            return None
        run = self._runs[i]
        k, total = 0, 0
        while k < len(run.items) and k < max_items:
            n = len(run.items[k])
            if k and total + n > max_bytes:
                break
            total += n
            k += 1
        self.released -= 1
        if k < len(run.items):
            rest = _Run(run.ends[k - 1], run.end, run.items[k:], run.ends[k:], _Handed.RELEASED)
            run.items, run.ends, run.end = run.items[:k], run.ends[:k], run.ends[k - 1]
            self._runs.insert(i + 1, rest)
            self.released += 1
        return self._hand_out(run)

    def _hand_out(self, run: _Run) -> Chunk:
        run.state = _Handed.OUT
        run.chunk_id = self._next_id
        self._next_id += 1
        self._out[run.chunk_id] = run
        return Chunk(run.chunk_id, list(run.items))

    def done(self, chunk_id: int) -> tuple[int, int, Position | None] | None:
        """Mark a chunk done. When that completes the runs at the head: (items, record bytes,
        the first position still out — None when nothing is) they cover; else None."""
        self._pop_out(chunk_id).state = _Handed.DONE
        runs = self._runs
        n = items = nbytes = 0
        while n < len(runs) and runs[n].state is _Handed.DONE:
            finished = runs[n]
            items += len(finished.items)
            nbytes += sum(len(i) for i in finished.items) + HDR_SIZE * len(finished.items)
            n += 1
        if not n:
            return None
        del runs[:n]
        return items, nbytes, (runs[0].start if runs else None)

    def release(self, chunk_id: int) -> None:
        """Give a chunk back: its records are handed out again before newer ones."""
        self._pop_out(chunk_id).state = _Handed.RELEASED
        self.released += 1

    def _pop_out(self, chunk_id: int) -> _Run:
        try:
            return self._out.pop(chunk_id)
        except KeyError:
            raise ValueError(f"spool: chunk {chunk_id} is not out (already done or released?)") from None
