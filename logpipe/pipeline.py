"""Batches, the Source and Sink contracts, and the fan-out that carries acks back in order.

The model (ARCHITECTURE.md)::

    sources ──► Pipeline.put(batch) ──► one bounded buffer per sink ──► sink.write(batch)
       ▲                                                                      │
       └──── batch.ack() once every sink has accepted it, in put order ◄─────┘

A source commits its checkpoint only from ``batch.ack`` — Vector's end-to-end
acknowledgements, Filebeat's registry rule — so a record is never checkpointed before every
sink holds it durably. Acks come in the order batches were put, never out of order, and none
after a sink has failed fatally.

``logpipe collect … | logpipe sink …`` keeps this rule across the pipe: the collector's ndjson
sink settles a batch only once the reading ``logpipe sink`` acknowledges it, and that sink
acknowledges from this very ack path (its stdin source's empty "position" batches) — the
protocol, in MUST/SHOULD terms, is :mod:`logpipe.pipeack`'s docstring.

The Sink contract
-----------------
Every sink subclasses :class:`Sink`. A sink:

- MUST return from ``write(batch)`` only when the batch has reached one of these ends:
  **delivered** (written to its destination: bytes in the OS for stdout/files, acknowledged by
  the server for HEC), **spooled** (durable on local disk, to be delivered later in order), or
  **rejected** (permanently undeliverable — e.g. a malformed event — and reported once through
  ``diagnostics``, quarantined where that makes sense). It returns the matching
  :class:`Outcome`. A batch never counts as delivered before it is durable or acknowledged.
- MAY return, instead of an Outcome, an awaitable resolving to one (a *receipt*) when the batch
  is handed over but its end is confirmed later — the ndjson sink on a pipe read by ``logpipe
  sink`` (:mod:`logpipe.pipeack`): bytes written, the reader's ack awaited. The pipeline then
  writes the next batch while it awaits the receipts one by one in write order, counts each
  batch against the sink's buffer until its receipt resolves, and treats an exception from a
  receipt as one from ``write``. Receipts MUST resolve in write order.
- MUST treat transient failures (**failed**: network errors, 5xx, a full disk that may free up)
  by retrying inside ``write`` (or inside its spool's sender) with backoff; ``write`` does not
  return while it retries, which is how back-pressure reaches the sources. It MUST NOT drop
  records silently.
- MUST raise :class:`~logpipe.errors.SinkError` (one-line message, no secret) when it can
  never succeed (bad token, unwritable directory): the pipeline then stops, the source does not
  commit, the process exits non-zero, and data already spooled is kept.
- MUST report a fatal error it finds *outside* ``write`` (a background sender told "bad token"
  while input is idle) through :meth:`Sink.fail` at once, and raise it again from the next
  ``write``/``close``: the pipeline then stops the sources without waiting for more input
  (an idle stdin would otherwise never bring the next ``write``), so ``logpipe sink splunk``
  exits promptly with its one-line error.
- MUST make ``close()`` drain: everything accepted is delivered or durable when it returns.
- SHOULD implement ``start()`` as a health check over the real path (open the file, ask the
  HEC) and raise ``SinkError`` with a clear message when the destination is unusable, or warn
  (diagnostics) and carry on when it is only unreachable for now.
- MAY keep its own internal buffers, but they count against its bound: when full, ``write``
  blocks. The pipeline gives each sink its own buffer, bounded in batches and in bytes, so a
  stalled sink stalls the others only once its buffer is full.
- MUST NOT mutate ``batch.records`` (or the dicts in it) or ``batch.lines``: the same batch
  object goes to every sink, possibly at the same time.
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
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from logpipe import diagnostics, record
from logpipe.errors import LogpipeError, PipelineAborted, SinkError, SourceError

#: Sources cap a batch at BATCH_MAX_RECORDS records / BATCH_MAX_BYTES bytes of NDJSON.
BATCH_MAX_RECORDS = 2048
BATCH_MAX_BYTES = 1 << 20
#: Default per-sink buffer: whichever bound is reached first, batches or NDJSON bytes. 16 MiB
#: per sink stays well under the 64 MiB in-memory queue research/collector.md §9 allows.
SINK_BUFFER_BATCHES = 16
SINK_BUFFER_BYTES = 16 << 20
#: After a fatal sink error, how long the healthy sinks may take to drain what they buffered.
DRAIN_AFTER_FAILURE_SECONDS = 10.0


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
    #: set by the Pipeline before ``start()``: where :meth:`fail` reports to
    _on_fail: Callable[[BaseException], None] | None = None

    def fail(self, exc: LogpipeError) -> None:
        """Tell the pipeline, from outside ``write``, that this sink can never succeed: it stops
        the sources now and exits with ``exc`` (one line, no secret). Without a pipeline (a sink
        used on its own) this does nothing; the next ``write``/``close`` raises as usual."""
        if self._on_fail is not None:
            self._on_fail(exc)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources and check health; raise SinkError when the sink can never work."""

    @abc.abstractmethod
    async def write(self, batch: Batch) -> Outcome | Awaitable[Outcome]:
        """Deliver, spool or reject ``batch`` (or hand it over and return a receipt); see the
        contract."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Drain: when this returns, everything accepted is delivered or durable."""

    def summary(self) -> str | None:
        """One line for the end of a run (counts), or None."""
        return None

    def counts(self) -> dict[str, int]:
        """The sink's own counts for the summary's JSON, where they say more than the pipeline's
        outcomes (the Splunk sink: spooled vs delivered to HEC); keys as in its summary()."""
        return {}

    def stopping(self) -> None:  # noqa: B027 - optional hook
        """A stop was asked (SIGTERM/SIGINT); called by the runner before the drain begins, so a
        sink can bound how long it keeps delivering from that moment (``--drain-timeout``)."""


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


class _Lane:
    """One sink's bounded FIFO buffer of batches it has not accepted yet, and its worker.

    The bound counts the batch being written too, so a stalled sink holds at most
    ``max_batches`` batches / ``max_bytes`` bytes; an empty lane still admits one oversize
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
        self.ready = asyncio.Event()  # set when an item arrives or the lane closes
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

    Each sink has its own lane bounded by ``buffer_batches`` batches and ``buffer_bytes`` bytes
    (research/collector.md §9: a dead Splunk must not stall the console or the files beyond
    its own buffer). ``put`` blocks only while some lane is full, which is how back-pressure
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
        self._lanes = [_Lane(s, buffer_batches, buffer_bytes) for s in self.sinks]
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
        for lane in self._lanes:
            if lane.sink is sink:
                return len(lane.items), lane.bytes
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
        for lane in self._lanes:
            lane.task = asyncio.create_task(self._work(lane), name=f"sink:{lane.sink.name}")
        self._started = True

    async def put(self, batch: Batch) -> None:
        """Hand ``batch`` to every sink; blocks while any sink's buffer is full.

        Raises PipelineAborted once a sink has failed fatally.
        """
        if self._closed:
            raise RuntimeError("pipeline is closed")
        if not self._started:
            raise RuntimeError("pipeline is not started")
        # One put at a time, so every lane and the ack queue see batches in the same order
        # (asyncio.Lock is FIFO, so concurrent sources take turns).
        async with self._put_lock:
            self._raise_if_failed()
            if not batch.records:
                # nothing to deliver, but the source's position still moves (e.g. dropped
                # lines): acked once everything before it is.
                if batch.ack is not None:
                    batch._pending = 0
                    self._inflight.append(batch)
                    self._ack_ready()
                return
            size = batch_bytes(batch)
            for lane in self._lanes:
                while not lane.has_room(size):
                    lane.room.clear()
                    await _first(lane.room.wait(), self._failed.wait())
                    self._raise_if_failed()
            batch._pending = len(self._lanes)
            self._inflight.append(batch)
            for lane in self._lanes:
                if lane.dead:
                    batch._pending -= 1
                else:
                    lane.push(batch, size)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PipelineAborted(str(self._error)) from self._error

    async def _work(self, lane: _Lane) -> None:
        sink = lane.sink
        try:
            while True:
                if lane.written >= len(lane.items):  # everything in hand is written
                    if lane.closed or lane.dead:
                        if lane.settler is not None:
                            await asyncio.wait({lane.settler})  # the receipts still out
                        return
                    lane.ready.clear()
                    await lane.ready.wait()
                    continue
                batch, _ = lane.items[lane.written]
                try:
                    res = await sink.write(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - see _write_failed
                    self._write_failed(lane, exc)
                    return
                if lane.dead:  # a receipt failed meanwhile: this batch is moot too
                    if inspect.iscoroutine(res):
                        res.close()
                    return
                if isinstance(res, Outcome) and not lane.written:
                    self._settle(lane, res)  # the common case: the batch reached its end
                elif isinstance(res, Outcome) or inspect.isawaitable(res):
                    lane.written += 1
                    lane.receipts.append(res)
                    if lane.settler is None or lane.settler.done():
                        lane.settler = asyncio.create_task(self._settle_receipts(lane),
                                                           name=f"settle:{sink.name}")
                else:
                    self._sink_failed(lane, SinkError(
                        f"{sink.name} sink returned {res!r} instead of an Outcome"))
                    return
        finally:
            if lane.settler is not None and not lane.settler.done():
                lane.settler.cancel()
                await asyncio.gather(lane.settler, return_exceptions=True)
            _drop_receipts(lane)

    async def _settle_receipts(self, lane: _Lane) -> None:
        """Await the lane's receipts in write order; settle each batch as its receipt resolves."""
        while lane.receipts and not lane.dead:
            head = lane.receipts.popleft()
            try:
                outcome = head if isinstance(head, Outcome) else await head
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - see _write_failed
                self._write_failed(lane, exc)
                return
            if lane.dead:
                return
            lane.written -= 1
            if not isinstance(outcome, Outcome):
                self._sink_failed(lane, SinkError(
                    f"{lane.sink.name} sink's receipt gave {outcome!r} instead of an Outcome"))
                return
            self._settle(lane, outcome)
        lane.ready.set()  # a closing worker may be waiting for the last receipt

    def _settle(self, lane: _Lane, outcome: Outcome) -> None:
        """The batch at the head of ``lane`` reached ``outcome``: count it, ack what is ready."""
        batch, _ = lane.items[0]
        self.outcomes[self.labels[self._lanes.index(lane)]][outcome] += len(batch.records)
        lane.pop()
        batch._pending -= 1
        self._ack_ready()

    def _write_failed(self, lane: _Lane, exc: BaseException) -> None:
        """A write or receipt raised: a LogpipeError is the sink's one-line fatal error; anything
        else is a sink bug, which must stop the pipeline, not hang it."""
        name = lane.sink.name
        if not isinstance(exc, LogpipeError):
            diagnostics.error(f"sink {name} failed: {exc!r}", key=f"sink-bug:{name}")
            exc = SinkError(f"{name} sink failed unexpectedly: {exc!r}")
        self._sink_failed(lane, exc)

    def _sink_failed(self, lane: _Lane, exc: BaseException) -> None:
        lane.dead = True
        settler = lane.settler
        if settler is not None and settler is not asyncio.current_task():
            settler.cancel()  # its receipt is moot: nothing of this sink commits any more
        _drop_receipts(lane)
        lane.written = 0
        lane.items.clear()
        lane.bytes = 0
        lane.room.set()
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
            for lane in self._lanes:
                lane.closed = True
                lane.ready.set()
            tasks = [lane.task for lane in self._lanes if lane.task is not None]
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


def _drop_receipts(lane: _Lane) -> None:
    """Forget receipts never awaited (after a failure or cancel), closing coroutines cleanly."""
    while lane.receipts:
        r = lane.receipts.popleft()
        if inspect.iscoroutine(r):
            r.close()


def sink_labels(sinks: Sequence[Sink]) -> list[str]:
    """Each sink's name for outcomes and the summary: its ``name``, or, for sinks sharing a name,
    ``name:DIR`` (a sink with a ``directory``) or ``name#k`` — one key per instance."""
    names = [s.name for s in sinks]
    labels = []
    for k, sink in enumerate(sinks):
        label = sink.name
        if names.count(label) > 1:
            where = getattr(sink, "directory", None)
            label = f"{label}:{where}" if isinstance(where, str) else f"{label}#{k + 1}"
        labels.append(label)
    return labels


def batch_bytes(batch: Batch) -> int:
    """A batch's size as the buffers count it: its NDJSON bytes (encoded once, then cached)."""
    return sum(map(len, batch.encoded())) + len(batch.records)


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` completes; cancel the rest."""
    futs = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futs:
            f.cancel()


async def run(
    sources: Sequence[Source],
    sinks: Sequence[Sink],
    stop: asyncio.Event,
    buffer_batches: int = SINK_BUFFER_BATCHES,
    buffer_bytes: int = SINK_BUFFER_BYTES,
    pipeline: Pipeline | None = None,
) -> Pipeline:
    """Run ``sources`` into ``sinks`` until every source finishes, ``stop`` is set, a sink fails
    fatally or a source fails; then stop the sources, drain the pipeline, and let the sources
    commit (``aclose``).

    Returns the pipeline (for its outcomes); raises PipelineAborted after a fatal sink error and
    the source's error when a source failed. Pass ``pipeline`` (built on ``sinks``) to watch it
    while it runs.
    """
    if pipeline is None:
        pipeline = Pipeline(sinks, buffer_batches=buffer_batches, buffer_bytes=buffer_bytes)
    await pipeline.start()
    tasks = [asyncio.create_task(src.run(pipeline.put), name=f"source:{src.name}") for src in sources]
    stopper = asyncio.ensure_future(stop.wait())
    failer = asyncio.ensure_future(pipeline.failed.wait())
    try:
        pending: set[asyncio.Future[Any]] = set(tasks)
        while pending:
            done, _ = await asyncio.wait({*pending, stopper, failer},
                                         return_when=asyncio.FIRST_COMPLETED)
            pending -= done
            if stopper in done or failer in done:
                break
            if any(t.exception() is not None for t in done if not t.cancelled()):
                break  # a source crashed: stop the others and drain what was read
    finally:
        for src in sources:
            src.stop()
        stopper.cancel()
        failer.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
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
