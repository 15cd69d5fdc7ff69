"""The fan-out: one bounded buffer per sink, written by its own worker; ``batch.ack`` runs once
every sink has accepted the batch, in put order, and never after a fatal sink error."""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

from logpipe import diagnostics
from logpipe.errors import LogpipeError, PipelineAborted, SinkError
from logpipe.pipeline._contracts import Batch, Outcome, Sink, batch_bytes, sink_labels

#: Default per-sink buffer: whichever bound is reached first, batches or NDJSON bytes. 16 MiB
#: per sink stays well under the 64 MiB in-memory queue research/collector.md §9 allows.
SINK_BUFFER_BATCHES = 16
SINK_BUFFER_BYTES = 16 << 20
#: After a fatal sink error, how long the healthy sinks may take to drain what they buffered.
DRAIN_AFTER_FAILURE_SECONDS = 10.0



class _SinkBuffer:
    """One sink's bounded FIFO buffer of batches it has not accepted yet, and its worker.

    The bound counts the batch being written too, so a stalled sink holds at most
    ``max_batches`` batches / ``max_bytes`` bytes; an empty buffer still admits one oversize
    batch so nothing can deadlock on a batch larger than the byte bound.
    """

    __slots__ = ("bytes", "closed", "dead", "items", "max_batches", "max_bytes", "ready",
                 "receipts", "room", "settler", "sink", "task", "written")

    def __init__(self, sink: Sink, max_batches: int, max_bytes: int) -> None:
        self.sink = sink
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.items: deque[tuple[Batch, int]] = deque()
        self.bytes = 0
        self.ready = asyncio.Event()  # set when an item arrives or the buffer closes
        self.room = asyncio.Event()  # set when an item leaves
        self.closed = False
        self.dead = False  # the sink failed fatally: nothing more goes to it
        self.task: asyncio.Task[None] | None = None
        #: items at the head of ``items`` already written, their ends not known yet
        self.written = 0
        #: the receipts of those items not yet taken by the settler, in write order
        self.receipts: deque[Outcome | Awaitable[Outcome]] = deque()
        self.settler: asyncio.Task[None] | None = None

    def has_room(self, size: int) -> bool:
        return self.dead or not self.items or (
            len(self.items) < self.max_batches and self.bytes + size <= self.max_bytes
        )

    def push(self, batch: Batch, size: int) -> None:
        if self.dead:
            return
        self.items.append((batch, size))
        self.bytes += size
        self.ready.set()

    def pop(self) -> None:
        _, size = self.items.popleft()
        self.bytes -= size
        self.room.set()


class Pipeline:
    """Fans batches out to sinks over bounded per-sink buffers; acks batches in put order.

    Each sink has its own buffer bounded by ``buffer_batches`` batches and ``buffer_bytes`` bytes
    (research/collector.md §9: a dead Splunk must not stall the console or the files beyond
    its own buffer). ``put`` blocks only while some buffer is full, which is how back-pressure
    reaches the sources. A batch is acked once every sink has accepted it and every earlier
    batch has been acked; after a fatal sink error nothing more is acked (the healthy sinks
    still get what is already buffered, so ``logpipe sink`` loses nothing it read that they
    can take).
    """

    def __init__(self, sinks: Sequence[Sink], buffer_batches: int = SINK_BUFFER_BATCHES,
                 buffer_bytes: int = SINK_BUFFER_BYTES) -> None:
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        if buffer_batches < 1 or buffer_bytes < 1:
            raise ValueError("sink buffers must hold at least one batch and one byte")
        self.sinks = list(sinks)
        self._buffers = [_SinkBuffer(s, *_limits(s, buffer_batches, buffer_bytes)) for s in self.sinks]
        self._inflight: deque[Batch] = deque()
        self._put_lock = asyncio.Lock()
        self._error: BaseException | None = None
        self._failed = asyncio.Event()
        self._started = False
        self._closed = False
        #: each sink's name in outcomes and the summary (see sink_labels)
        self.labels = sink_labels(self.sinks)
        #: records per outcome, per sink (keyed by its label)
        self.outcomes: dict[str, dict[Outcome, int]] = {
            label: dict.fromkeys(Outcome, 0) for label in self.labels
        }
        #: batches acked so far (what the sources may have committed)
        self.acked_batches = 0

    @property
    def error(self) -> BaseException | None:
        """The fatal sink error that stopped the pipeline, if any."""
        return self._error

    @property
    def failed(self) -> asyncio.Event:
        """Set once a sink has failed fatally."""
        return self._failed

    def buffered(self, sink: Sink) -> tuple[int, int]:
        """(batches, bytes) that ``sink`` has not accepted yet, the one being written included."""
        for sbuf in self._buffers:
            if sbuf.sink is sink:
                return len(sbuf.items), sbuf.bytes
        raise ValueError("not a sink of this pipeline")

    async def start(self) -> None:
        """Start every sink (health checks), then their workers. When a sink's start fails,
        the sinks already started are closed again and the error propagates."""
        started: list[Sink] = []
        for sink in self.sinks:
            sink._on_fail = self._fail
        try:
            for sink in self.sinks:
                await sink.start()
                started.append(sink)
        except BaseException:
            for sink in started:
                try:
                    await sink.close()
                except Exception as exc:  # noqa: BLE001 - the start error is the one to report
                    diagnostics.error(f"closing sink {sink.name} after a failed start: {exc}",
                                      key=f"close:{sink.name}")
            raise
        for sbuf in self._buffers:
            sbuf.task = asyncio.create_task(self._work(sbuf), name=f"sink:{sbuf.sink.name}")
        self._started = True

    async def put(self, batch: Batch) -> None:
        """Hand ``batch`` to every sink; blocks while any sink's buffer is full.

        Raises PipelineAborted once a sink has failed fatally.
        """
        if self._closed:
            raise RuntimeError("pipeline is closed")
        if not self._started:
            raise RuntimeError("pipeline is not started")
        # One put at a time, so every buffer and the ack queue see batches in the same order
        # (asyncio.Lock is FIFO, so concurrent sources take turns).
        async with self._put_lock:
            self._raise_if_failed()
            if not len(batch):
                # nothing to deliver, but the source's position still moves (e.g. dropped
                # lines): acked once everything before it is.
                if batch.ack is not None:
                    batch._pending = 0
                    self._inflight.append(batch)
                    self._ack_ready()
                return
            size = batch_bytes(batch)
            for sbuf in self._buffers:
                while not sbuf.has_room(size):
                    sbuf.room.clear()
                    await _first(sbuf.room.wait(), self._failed.wait())
                    self._raise_if_failed()
            batch._pending = len(self._buffers)
            self._inflight.append(batch)
            for sbuf in self._buffers:
                if sbuf.dead:
                    batch._pending -= 1
                else:
                    sbuf.push(batch, size)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PipelineAborted(str(self._error)) from self._error

    async def _work(self, sbuf: _SinkBuffer) -> None:
        sink = sbuf.sink
        try:
            while True:
                if sbuf.written >= len(sbuf.items):  # everything in hand is written
                    if sbuf.closed or sbuf.dead:
                        if sbuf.settler is not None:
                            await asyncio.wait({sbuf.settler})  # the receipts still out
                        return
                    sbuf.ready.clear()
                    await sbuf.ready.wait()
                    continue
                batch, _ = sbuf.items[sbuf.written]
                try:
                    res = await sink.write(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - see _write_failed
                    self._write_failed(sbuf, exc)
                    return
                if sbuf.dead:  # a receipt failed meanwhile: this batch is moot too
                    if inspect.iscoroutine(res):
                        res.close()
                    return
                if isinstance(res, Outcome) and not sbuf.written:
                    self._settle(sbuf, res)  # the common case: the batch reached its end
                elif isinstance(res, Outcome) or inspect.isawaitable(res):
                    sbuf.written += 1
                    sbuf.receipts.append(res)
                    if sbuf.settler is None or sbuf.settler.done():
                        sbuf.settler = asyncio.create_task(self._settle_receipts(sbuf),
                                                           name=f"settle:{sink.name}")
                else:
                    self._sink_failed(sbuf, SinkError(
                        f"{sink.name} sink returned {res!r} instead of an Outcome"))
                    return
        finally:
            if sbuf.settler is not None and not sbuf.settler.done():
                sbuf.settler.cancel()
                await asyncio.gather(sbuf.settler, return_exceptions=True)
            _drop_receipts(sbuf)

    async def _settle_receipts(self, sbuf: _SinkBuffer) -> None:
        """Await the buffer's receipts in write order; settle each batch as its receipt resolves."""
        while sbuf.receipts and not sbuf.dead:
            head = sbuf.receipts.popleft()
            try:
                outcome = head if isinstance(head, Outcome) else await head
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - see _write_failed
                self._write_failed(sbuf, exc)
                return
            if sbuf.dead:
                return
            sbuf.written -= 1
            if not isinstance(outcome, Outcome):
                self._sink_failed(sbuf, SinkError(
                    f"{sbuf.sink.name} sink's receipt gave {outcome!r} instead of an Outcome"))
                return
            self._settle(sbuf, outcome)
        sbuf.ready.set()  # a closing worker may be waiting for the last receipt

    def _settle(self, sbuf: _SinkBuffer, outcome: Outcome) -> None:
        """The batch at the head of ``sbuf`` reached ``outcome``: count it, ack what is ready."""
        batch, _ = sbuf.items[0]
        self.outcomes[self.labels[self._buffers.index(sbuf)]][outcome] += len(batch)
        sbuf.pop()
        batch._pending -= 1
        self._ack_ready()

    def _write_failed(self, sbuf: _SinkBuffer, exc: BaseException) -> None:
        """A write or receipt raised: a LogpipeError is the sink's one-line fatal error; anything
        else is a sink bug, which must stop the pipeline, not hang it."""
        name = sbuf.sink.name
        if not isinstance(exc, LogpipeError):
            diagnostics.error(f"sink {name} failed: {exc!r}", key=f"sink-bug:{name}")
            exc = SinkError(f"{name} sink failed unexpectedly: {exc!r}")
        self._sink_failed(sbuf, exc)

    def _sink_failed(self, sbuf: _SinkBuffer, exc: BaseException) -> None:
        sbuf.dead = True
        settler = sbuf.settler
        if settler is not None and settler is not asyncio.current_task():
            settler.cancel()  # its receipt is moot: nothing of this sink commits any more
        _drop_receipts(sbuf)
        sbuf.written = 0
        sbuf.items.clear()
        sbuf.bytes = 0
        sbuf.room.set()
        if self._error is None:
            self._error = exc
            self._failed.set()

    def _ack_ready(self) -> None:
        """Ack, in put order, every batch at the head that all sinks have accepted."""
        while self._inflight and self._inflight[0]._pending <= 0:
            done = self._inflight.popleft()
            if self._error is not None:
                continue  # after a fatal error nothing more commits
            self.acked_batches += 1
            if done.ack is not None:
                try:
                    done.ack()
                except Exception as exc:  # noqa: BLE001 - a failed checkpoint means re-reading, not loss
                    diagnostics.error(f"source {done.source or '?'} could not record an ack: {exc}",
                                      key=f"ack:{done.source}")

    async def close(self) -> None:
        """Drain every buffer, then close every sink. Raises PipelineAborted after a fatal error
        (the other sinks are still drained, for at most DRAIN_AFTER_FAILURE_SECONDS, and
        closed first)."""
        if not self._closed:
            self._closed = True
            for sbuf in self._buffers:
                sbuf.closed = True
                sbuf.ready.set()
            tasks = [sbuf.task for sbuf in self._buffers if sbuf.task is not None]
            if tasks:
                await self._join(tasks)
            for sink in self.sinks:
                try:
                    await sink.close()
                except LogpipeError as exc:
                    self._fail(exc)
                except Exception as exc:  # noqa: BLE001 - report a sink bug as that sink's failure
                    self._fail(SinkError(f"{sink.name} sink failed to close: {exc!r}"))
        self._raise_if_failed()

    async def _join(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for the workers; after a fatal error, for at most DRAIN_AFTER_FAILURE_SECONDS."""
        pending: set[asyncio.Future[Any]] = set(tasks)
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            while pending:
                if self._failed.is_set():
                    _, pending = await asyncio.wait(pending, timeout=DRAIN_AFTER_FAILURE_SECONDS)
                    break
                _, pending = await asyncio.wait({*pending, failed},
                                                return_when=asyncio.FIRST_COMPLETED)
                pending.discard(failed)
        finally:
            failed.cancel()
        if pending:
            # A sink still stuck after another one failed: nothing will be acked anyway, so do
            # not hang the exit on it (its buffered records stay unacked: re-read or lost with
            # stdin, and counted as not delivered).
            names = ", ".join(sorted(t.get_name() for t in pending if isinstance(t, asyncio.Task)))
            diagnostics.error(f"gave up draining {names} after a fatal sink error", key="drain")
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            self._failed.set()


def _drop_receipts(sbuf: _SinkBuffer) -> None:
    """Forget receipts never awaited (after a failure or cancel), closing coroutines cleanly."""
    while sbuf.receipts:
        r = sbuf.receipts.popleft()
        if inspect.iscoroutine(r):
            r.close()


def _limits(sink: Sink, batches: int, nbytes: int) -> tuple[int, int]:
    """The buffer bound for ``sink``: the pipeline's, tightened by the sink's ``buffer_limits``."""
    own = sink.buffer_limits
    return (batches, nbytes) if own is None else (min(batches, own[0]), min(nbytes, own[1]))


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` completes; cancel the rest."""
    futs = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futs:
            f.cancel()
