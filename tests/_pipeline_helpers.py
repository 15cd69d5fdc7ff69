"""Test doubles for the pipeline: a real in-memory sink and a list-fed source (no mocks).

``MemorySink`` is to logpipe's sinks what httpx's ``MockTransport`` is to its transports: a
complete, contract-abiding implementation that keeps what it accepts in memory, and that a
test can stall (``stall()``/``resume()``) or make fail on its Nth write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from logpipe.errors import SinkError
from logpipe.pipeline import Batch, Outcome, Sink, Source

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``coro`` in a fresh event loop with a hard deadline (a hang fails, never blocks CI)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def settle(turns: int = 50) -> None:
    """Let the event loop run every ready callback ``turns`` times (pure in-loop work only)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class MemorySink(Sink):
    """Keeps every accepted record in ``records`` (and each batch's records in ``batches``)."""

    def __init__(self, name: str = "memory", *, outcome: Outcome = Outcome.DELIVERED,
                 fail_on_write: int | None = None, error: BaseException | None = None,
                 fail_start: BaseException | None = None) -> None:
        self.name = name
        self.outcome = outcome
        self.records: list[dict[str, Any]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.writes = 0
        self.started = False
        self.closed = False
        self._fail_on_write = fail_on_write
        self._error = error if error is not None else SinkError(f"{name}: destination refused")
        self._fail_start = fail_start
        self._gate: asyncio.Event | None = None
        self._stalled = False
        self.waiting = 0  # writes currently held at the gate

    def stall(self) -> None:
        """Make every write wait (inside ``write``) until ``resume()``."""
        self._stalled = True
        if self._gate is not None:
            self._gate.clear()

    def resume(self) -> None:
        """Let held and future writes through."""
        self._stalled = False
        if self._gate is not None:
            self._gate.set()

    async def start(self) -> None:
        """Fail if asked to; otherwise note the start."""
        if self._fail_start is not None:
            raise self._fail_start
        self.started = True

    async def write(self, batch: Batch) -> Outcome:
        """Accept the batch (after the gate), or raise on the configured write."""
        self.writes += 1
        if self._fail_on_write is not None and self.writes == self._fail_on_write:
            raise self._error
        if self._gate is None:
            self._gate = asyncio.Event()
            if not self._stalled:
                self._gate.set()
        if self._stalled:
            self.waiting += 1
            try:
                await self._gate.wait()
            finally:
                self.waiting -= 1
        self.records.extend(batch.records)
        self.batches.append(list(batch.records))
        return self.outcome

    async def close(self) -> None:
        """Nothing is buffered here beyond ``write``; note the close."""
        self.closed = True

    def summary(self) -> str:
        """Records accepted."""
        return f"{self.name}: {len(self.records)} records"


class ListSource(Source):
    """Emits the given batches in order; each ack appends the batch's index to ``acks``."""

    def __init__(self, batches: Iterable[list[dict[str, Any]]], name: str = "list") -> None:
        self.name = name
        self._batches = list(batches)
        self.acks: list[int] = []
        self.emitted = 0  # emits that returned
        self.emitting = 0  # emits started
        self.stopped = False
        self.closed = False

    def stop(self) -> None:
        """Stop before the next batch."""
        self.stopped = True

    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Emit each batch, waiting on back-pressure."""
        for i, recs in enumerate(self._batches):
            if self.stopped:
                return
            self.emitting += 1
            await emit(Batch(list(recs), ack=lambda i=i: self.acks.append(i), source=self.name))
            self.emitted += 1

    async def aclose(self) -> None:
        """Note the close."""
        self.closed = True


def numbered(batches: int, per_batch: int, pad: int = 0) -> list[list[dict[str, Any]]]:
    """``batches`` batches of ``per_batch`` records ``{"message": "m<n>", "n": n}`` (+ padding)."""
    out = []
    n = 0
    for _ in range(batches):
        recs = []
        for _ in range(per_batch):
            rec: dict[str, Any] = {"message": f"m{n}", "n": n}
            if pad:
                rec["pad"] = "x" * pad
            recs.append(rec)
            n += 1
        out.append(recs)
    return out
