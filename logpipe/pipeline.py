"""Batches, the Source and Sink contracts, and the fan-out that carries acks back in order.

The model (ARCHITECTURE.md)::

    sources ──► Pipeline.put(batch) ──► one bounded queue per sink ──► sink.write(batch)
       ▲                                                                      │
       └──── batch.ack() once every sink has accepted it, in put order ◄─────┘

A source commits its checkpoint only from ``batch.ack`` — Vector's end-to-end
acknowledgements, Filebeat's registry rule — so a record is never checkpointed before every
sink holds it durably.

The Sink contract
-----------------
Every sink subclasses :class:`Sink`. A sink:

- MUST return from ``write(batch)`` only when the batch has reached one of these ends:
  **delivered** (written to its destination: bytes in the OS for stdout/files, acknowledged by
  the server for HEC), **spooled** (durable on local disk, to be delivered later in order), or
  **rejected** (permanently undeliverable — e.g. a malformed event — and reported once through
  ``diagnostics``, quarantined where that makes sense). It returns the matching
  :class:`Outcome`. A batch never counts as delivered before it is durable or acknowledged.
- MUST treat transient failures (**failed**: network errors, 5xx, a full disk that may free up)
  by retrying inside ``write`` (or inside its spool's sender) with backoff; ``write`` does not
  return while it retries, which is how back-pressure reaches the sources. It MUST NOT drop
  records silently.
- MUST raise :class:`~logpipe.errors.SinkError` (one-line message, no secret) when it can
  never succeed (bad token, unwritable directory): the pipeline then stops, the source does not
  commit, the process exits non-zero, and data already spooled is kept.
- MUST make ``close()`` drain: everything accepted is delivered or durable when it returns.
- SHOULD implement ``start()`` as a health check over the real path (open the file, ask the
  HEC) and raise ``SinkError`` with a clear message when the destination is unusable, or warn
  (diagnostics) and carry on when it is only unreachable for now.
- MAY keep its own internal buffers, but they count against its bound: when full, ``write``
  blocks. The pipeline gives each sink its own bounded queue, so a stalled sink stalls the
  others only once its queue is full.
- SHOULD keep ``write`` cheap per record: use ``batch.lines`` (pre-encoded NDJSON) where bytes
  are what it needs.

The Source contract
-------------------
A source produces batches by calling ``await emit(batch)`` from ``run()``; ``emit`` blocks
while the pipeline is full (back-pressure). ``stop()`` asks it to finish (flush held partial
state, stop reading) and make ``run()`` return. After the pipeline has drained, ``aclose()``
commits the final checkpoint.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from logpipe import diagnostics, record
from logpipe.errors import LogpipeError, PipelineAborted, SinkError, SourceError

#: Default per-sink buffer, in batches. Sources cap a batch at BATCH_MAX_RECORDS records /
#: BATCH_MAX_BYTES bytes, so a sink's buffer stays under ~16 MiB.
SINK_BUFFER_BATCHES = 16
BATCH_MAX_RECORDS = 2048
BATCH_MAX_BYTES = 1 << 20


class Outcome(enum.Enum):
    """How a batch ended at one sink."""

    DELIVERED = "delivered"
    SPOOLED = "spooled"
    REJECTED = "rejected"


@dataclass(slots=True, eq=False)
class Batch:
    """Records from one source, in order, with an ack callback for the source's checkpoint.

    ``lines`` (optional) are the records' NDJSON encodings without newlines, parallel to
    ``records``; sources that already have them (the normaliser's fast path) pass them so byte
    sinks need not re-encode.
    """

    records: list[dict[str, Any]]
    lines: list[bytes] | None = None
    ack: Callable[[], None] | None = None
    source: str = ""
    _pending: int = field(default=0, repr=False)

    def encoded(self) -> list[bytes]:
        """The records as NDJSON lines (no trailing newline), encoded once and cached."""
        if self.lines is None:
            self.lines = [record.dumps(r) for r in self.records]
        return self.lines

    def ndjson(self) -> bytes:
        """All records as one NDJSON block, each line ending with a newline."""
        lines = self.encoded()
        if not lines:
            return b""
        return b"\n".join(lines) + b"\n"

    def __len__(self) -> int:
        return len(self.records)


class Sink(abc.ABC):
    """Base class of every sink; see the module docstring for the contract."""

    #: short name used in messages (``console``, ``file``, ``splunk``, ``ndjson``)
    name: str = "sink"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources and check health; raise SinkError when the sink can never work."""

    @abc.abstractmethod
    async def write(self, batch: Batch) -> Outcome:
        """Deliver, spool or reject ``batch``; see the contract."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Drain: when this returns, everything accepted is delivered or durable."""

    def summary(self) -> str | None:
        """One line for the end of a run (counts), or None."""
        return None


class Source(abc.ABC):
    """Base class of every source; see the module docstring for the contract."""

    name: str = "source"

    @abc.abstractmethod
    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Produce batches until the input ends (``--once``, EOF) or ``stop()`` is called."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Ask ``run()`` to finish soon: flush held state, stop reading, return."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """After the pipeline drained: commit final checkpoints, release resources."""


class Pipeline:
    """Fans batches out to sinks over bounded per-sink queues; acks batches in order."""

    def __init__(self, sinks: Sequence[Sink], buffer_batches: int = SINK_BUFFER_BATCHES) -> None:
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        self.sinks = list(sinks)
        self._queues: list[asyncio.Queue[Batch | None]] = [
            asyncio.Queue(maxsize=buffer_batches) for _ in self.sinks
        ]
        self._inflight: deque[Batch] = deque()
        self._workers: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self._failed = asyncio.Event()
        self._closed = False
        self.outcomes: dict[str, dict[Outcome, int]] = {
            s.name: dict.fromkeys(Outcome, 0) for s in self.sinks
        }

    @property
    def error(self) -> BaseException | None:
        """The fatal sink error that stopped the pipeline, if any."""
        return self._error

    async def start(self) -> None:
        """Start every sink (health checks), then their workers."""
        for sink in self.sinks:
            await sink.start()
        self._workers = [
            asyncio.create_task(self._work(sink, q), name=f"sink:{sink.name}")
            for sink, q in zip(self.sinks, self._queues, strict=True)
        ]

    async def put(self, batch: Batch) -> None:
        """Hand ``batch`` to every sink; blocks while any sink's queue is full.

        Raises PipelineAborted once a sink has failed fatally.
        """
        if self._error is not None:
            raise PipelineAborted(str(self._error)) from self._error
        if self._closed:
            raise RuntimeError("pipeline is closed")
        if not batch.records:
            if batch.ack is not None:
                # nothing to deliver, but the source's position still moves (e.g. dropped lines)
                if self._inflight:
                    batch._pending = len(self.sinks)
                    self._inflight.append(batch)
                    for q in self._queues:
                        await self._put_or_fail(q, batch)
                else:
                    batch.ack()
            return
        batch._pending = len(self.sinks)
        self._inflight.append(batch)
        for q in self._queues:
            await self._put_or_fail(q, batch)

    async def _put_or_fail(self, q: asyncio.Queue[Batch | None], batch: Batch) -> None:
        if not q.full():
            q.put_nowait(batch)
            return
        put = asyncio.ensure_future(q.put(batch))
        fail = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({put, fail}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fail.cancel()
        if not put.done():
            put.cancel()
            raise PipelineAborted(str(self._error)) from self._error

    async def _work(self, sink: Sink, q: asyncio.Queue[Batch | None]) -> None:
        while True:
            batch = await q.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # drain the queue without writing; nothing after a fatal error commits
            try:
                if batch.records:
                    outcome = await sink.write(batch)
                    self.outcomes[sink.name][outcome] += 1
            except asyncio.CancelledError:
                raise
            except SinkError as exc:
                self._fail(exc)
                continue
            except LogpipeError as exc:
                self._fail(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a sink bug must stop the pipeline, not hang it
                diagnostics.error(f"sink {sink.name} failed: {exc!r}", key=f"sink-bug:{sink.name}")
                self._fail(SinkError(f"{sink.name} sink failed unexpectedly: {exc!r}"))
                continue
            self._settle(batch)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            self._failed.set()

    def _settle(self, batch: Batch) -> None:
        batch._pending -= 1
        while self._inflight and self._inflight[0]._pending <= 0:
            done = self._inflight.popleft()
            if done.ack is not None and self._error is None:
                done.ack()

    async def close(self) -> None:
        """Drain every queue, then close every sink. Raises PipelineAborted after a fatal error
        (the other sinks are still drained and closed first)."""
        if not self._closed:
            self._closed = True
            for q in self._queues:
                await q.put(None)
            await asyncio.gather(*self._workers, return_exceptions=True)
            for sink in self.sinks:
                try:
                    await sink.close()
                except LogpipeError as exc:
                    self._fail(exc)
        if self._error is not None:
            raise PipelineAborted(str(self._error)) from self._error


async def run(
    sources: Sequence[Source],
    sinks: Sequence[Sink],
    stop: asyncio.Event,
    buffer_batches: int = SINK_BUFFER_BATCHES,
) -> Pipeline:
    """Run ``sources`` into ``sinks`` until every source finishes or ``stop`` is set; then stop
    the sources, drain the pipeline, and let the sources commit (``aclose``).

    Returns the pipeline (for its outcomes); raises PipelineAborted after a fatal sink error.
    """
    pipeline = Pipeline(sinks, buffer_batches=buffer_batches)
    await pipeline.start()
    tasks = [asyncio.create_task(src.run(pipeline.put), name=f"source:{src.name}") for src in sources]
    all_done = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
    stopper = asyncio.ensure_future(stop.wait())
    failer = asyncio.ensure_future(pipeline._failed.wait())
    try:
        await asyncio.wait({all_done, stopper, failer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for src in sources:
            src.stop()
        stopper.cancel()
        failer.cancel()
    results = await all_done
    try:
        await pipeline.close()
    finally:
        for src in sources:
            try:
                await src.aclose()
            except LogpipeError as exc:
                diagnostics.error(str(exc), key=f"aclose:{src.name}")
    for src, res in zip(sources, results, strict=True):
        if isinstance(res, PipelineAborted):
            continue
        if isinstance(res, LogpipeError):
            raise res
        if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
            raise SourceError(f"source {src.name} failed unexpectedly: {res!r}") from res
    return pipeline
