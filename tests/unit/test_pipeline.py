"""The fan-out: every sink gets every batch, acks come back in order and stop after a fatal
sink error, and a stalled sink holds the others back only once its own buffer is full."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.errors import PipelineAborted, SinkError, SourceError
from logpipe.pipeline import Batch, Outcome, Pipeline, Sink, Source, batch_bytes, run
from tests._pipeline_helpers import ListSource, MemorySink, arun, numbered, settle

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)


def test_fan_out_every_sink_gets_every_record_in_order() -> None:
    """Three sinks each receive all 50 records, in the source's order, and every batch is acked."""
    sinks = [MemorySink("a"), MemorySink("b", outcome=Outcome.SPOOLED), MemorySink("c")]
    src = ListSource(numbered(10, 5))

    pipeline = arun(run([src], sinks, asyncio.Event()))

    for sink in sinks:
        assert [r["n"] for r in sink.records] == list(range(50))
        assert sink.started and sink.closed
    assert src.acks == list(range(10))
    assert src.closed
    assert pipeline.outcomes["a"][Outcome.DELIVERED] == 50
    assert pipeline.outcomes["b"][Outcome.SPOOLED] == 50


def test_acks_wait_for_the_slowest_sink_and_come_in_order() -> None:
    """While one sink holds batch 0, no batch is acked even though the other sink took them all;
    once it resumes, the acks arrive exactly 0, 1, 2, ... in put order."""

    async def scenario() -> None:
        fast, slow = MemorySink("fast"), MemorySink("slow")
        slow.stall()
        pipeline = Pipeline([fast, slow], buffer_batches=8)
        await pipeline.start()
        acks: list[int] = []
        for i, recs in enumerate(numbered(5, 2)):
            await pipeline.put(Batch(recs, ack=lambda i=i: acks.append(i)))
        # an empty batch carrying only a position: acked after everything before it
        await pipeline.put(Batch([], ack=lambda: acks.append(99)))
        await settle()
        assert len(fast.records) == 10
        assert slow.waiting == 1
        assert acks == []
        slow.resume()
        await pipeline.close()
        assert acks == [0, 1, 2, 3, 4, 99]

    arun(scenario())


def test_empty_batch_with_nothing_in_flight_is_acked_at_once() -> None:
    """A position-only batch (no records) with nothing ahead of it is acked immediately."""

    async def scenario() -> None:
        pipeline = Pipeline([MemorySink()])
        await pipeline.start()
        acks: list[str] = []
        await pipeline.put(Batch([], ack=lambda: acks.append("x")))
        assert acks == ["x"]
        await pipeline.close()

    arun(scenario())


def test_fatal_sink_error_stops_acks_and_aborts() -> None:
    """When one sink fails fatally on its 3rd write, only batches 0 and 1 (accepted by both sinks
    before the failure) are acked; nothing later is, the run raises PipelineAborted carrying the
    sink's error, and the source stops being fed."""
    healthy = MemorySink("healthy")
    failing = MemorySink("failing", fail_on_write=3, error=SinkError("failing: bad token"))
    src = ListSource(numbered(40, 3))

    with pytest.raises(PipelineAborted) as info:
        arun(run([src], [healthy, failing], asyncio.Event(), buffer_batches=2))

    assert isinstance(info.value.__cause__, SinkError)
    assert str(info.value.__cause__) == "failing: bad token"
    assert src.acks == [0, 1]
    assert src.emitted < 40
    assert len(failing.records) == 6
    # the healthy sink still got what had been handed to it (not acked, so re-read if possible)
    assert [r["n"] for r in healthy.records] == list(range(len(healthy.records)))
    assert healthy.closed and failing.closed


def test_put_after_fatal_error_raises() -> None:
    """Once a sink has failed, ``put`` refuses with PipelineAborted instead of buffering more."""

    async def scenario() -> None:
        pipeline = Pipeline([MemorySink("x", fail_on_write=1)])
        await pipeline.start()
        await pipeline.put(Batch([{"message": "a"}]))
        await settle()
        assert pipeline.error is not None
        with pytest.raises(PipelineAborted):
            await pipeline.put(Batch([{"message": "b"}]))
        with pytest.raises(PipelineAborted):
            await pipeline.close()

    arun(scenario())


def test_sink_bug_becomes_a_sink_error_not_a_hang() -> None:
    """A sink raising an unexpected exception stops the pipeline with a one-line SinkError."""
    bug = MemorySink("buggy", fail_on_write=2, error=ZeroDivisionError("oops"))
    with pytest.raises(PipelineAborted) as info:
        arun(run([ListSource(numbered(5, 1))], [bug], asyncio.Event()))
    assert isinstance(info.value.__cause__, SinkError)
    assert "buggy sink failed unexpectedly" in str(info.value.__cause__)
    assert "\n" not in str(info.value.__cause__)


def test_stalled_sink_stalls_the_others_only_once_its_buffer_is_full() -> None:
    """With a 4-batch buffer, a stalled sink lets the healthy sink receive exactly 4 batches (the
    one it is writing plus 3 waiting) before the source blocks; after it resumes, all 20 batches
    reach both sinks and are acked in order."""

    async def scenario() -> None:
        healthy, stalled = MemorySink("healthy"), MemorySink("stalled")
        stalled.stall()
        src = ListSource(numbered(20, 2))
        pipeline = Pipeline([healthy, stalled], buffer_batches=4)
        task = asyncio.create_task(run([src], [healthy, stalled], asyncio.Event(), pipeline=pipeline))
        await settle()
        assert len(healthy.batches) == 4
        assert pipeline.buffered(stalled)[0] == 4
        assert src.emitted == 4 and src.emitting == 5  # the 5th put is blocked
        assert src.acks == []
        await settle()
        assert len(healthy.batches) == 4  # still held: the loop had nothing else to do
        stalled.resume()
        await task
        assert [r["n"] for r in healthy.records] == list(range(40))
        assert [r["n"] for r in stalled.records] == list(range(40))
        assert src.acks == list(range(20))

    arun(scenario())


def test_buffer_is_bounded_by_bytes_too() -> None:
    """With a byte bound of 2.5 batches, a stalled sink holds 2 batches and the healthy sink gets
    2; a single batch bigger than the bound is still admitted when the buffer is empty."""

    async def scenario() -> None:
        batches = numbered(6, 1, pad=1000)
        size = batch_bytes(Batch(batches[0]))
        healthy, stalled = MemorySink("healthy"), MemorySink("stalled")
        stalled.stall()
        pipeline = Pipeline([healthy, stalled], buffer_batches=100, buffer_bytes=int(size * 2.5))
        src = ListSource(batches)
        task = asyncio.create_task(run([src], [healthy, stalled], asyncio.Event(), pipeline=pipeline))
        await settle()
        assert len(healthy.batches) == 2
        assert pipeline.buffered(stalled) == (2, 2 * size)
        stalled.resume()
        await task
        assert len(stalled.records) == 6

        tiny = Pipeline([MemorySink("tiny")], buffer_bytes=10)
        await tiny.start()
        await tiny.put(Batch(numbered(1, 3, pad=100)[0]))  # 3x over the bound: admitted alone
        await tiny.close()
        assert len(tiny.sinks[0].records) == 3  # type: ignore[attr-defined]

    arun(scenario())


def test_stop_drains_everything_already_emitted() -> None:
    """Setting ``stop`` mid-run stops the source, yet every batch it emitted reaches the sink and
    is acked before ``run`` returns."""

    async def scenario() -> None:
        sink = MemorySink()
        sink.stall()
        src = ListSource(numbered(100, 1))
        stop = asyncio.Event()
        task = asyncio.create_task(run([src], [sink], stop, buffer_batches=3))
        await settle()
        stop.set()
        await settle()
        sink.resume()
        await task
        assert src.stopped and src.emitted < 100
        assert len(sink.records) == src.emitted
        assert src.acks == list(range(src.emitted))

    arun(scenario())


def test_failed_start_closes_the_sinks_already_started() -> None:
    """When the second sink's health check fails, the first is closed again and the error
    (not a traceback from elsewhere) propagates."""
    first = MemorySink("first")
    second = MemorySink("second", fail_start=SinkError("second: cannot open"))
    with pytest.raises(SinkError, match="second: cannot open"):
        arun(run([ListSource(numbered(1, 1))], [first, second], asyncio.Event()))
    assert first.started and first.closed


def test_source_crash_stops_the_run_after_draining() -> None:
    """A source that crashes ends the run with a SourceError, after the other source was stopped
    and what it had emitted was delivered."""

    class Crashing(ListSource):
        async def run(self, emit):  # type: ignore[no-untyped-def]
            await emit(Batch([{"message": "last words"}]))
            raise RuntimeError("disk on fire")

    class Endless(ListSource):
        async def run(self, emit):  # type: ignore[no-untyped-def]
            while not self.stopped:
                await emit(Batch([{"message": "tick"}]))
                await asyncio.sleep(0.001)

    sink = MemorySink()
    endless = Endless([])
    with pytest.raises(SourceError, match="disk on fire"):
        arun(run([Crashing([], name="crashing"), endless], [sink], asyncio.Event()))
    assert endless.stopped
    assert {"message": "last words"} in sink.records


def test_pipeline_needs_a_sink() -> None:
    """A pipeline without sinks is a programming error, refused at once."""
    with pytest.raises(ValueError, match="at least one sink"):
        Pipeline([])


def test_sink_subclass_contract_defaults() -> None:
    """A minimal Sink only needs ``write``; start/close are no-ops and summary is None."""

    class Minimal(Sink):
        async def write(self, batch: Batch) -> Outcome:
            return Outcome.DELIVERED

    sink = Minimal()
    assert sink.summary() is None
    arun(run([ListSource(numbered(2, 2))], [sink], asyncio.Event()))


class _Jittery(MemorySink):
    """A MemorySink whose writes take a scripted number of event-loop turns."""

    def __init__(self, name: str, delays: list[int]) -> None:
        super().__init__(name)
        self._delays = delays

    async def write(self, batch: Batch) -> Outcome:
        for _ in range(self._delays[self.writes % len(self._delays)]):
            await asyncio.sleep(0)
        return await super().write(batch)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    delays=st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=8), min_size=1, max_size=4),
    buffer_batches=st.integers(1, 4),
)
def test_any_schedule_delivers_everything_in_order_and_acks_in_order(
        sizes: list[int], delays: list[list[int]], buffer_batches: int) -> None:
    """Whatever the batch sizes (empty ones included), sink speeds and buffer size: every sink
    gets every record exactly once in order, and every batch is acked exactly once, in order."""
    batches = []
    n = 0
    for size in sizes:
        batches.append([{"n": n + i} for i in range(size)])
        n += size
    sinks = [_Jittery(f"s{i}", d) for i, d in enumerate(delays)]
    src = ListSource(batches)
    arun(run([src], sinks, asyncio.Event(), buffer_batches=buffer_batches))
    for sink in sinks:
        assert [r["n"] for r in sink.records] == list(range(n))
    assert src.acks == list(range(len(batches)))


class _IdleSource(Source):
    """Emits one batch, then waits (like stdin left open and quiet) until ``stop()``."""

    name = "idle"

    def __init__(self) -> None:
        self.acks: list[int] = []
        self.stopped = asyncio.Event()

    def stop(self) -> None:
        self.stopped.set()

    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        await emit(Batch([{"message": "first"}], ack=lambda: self.acks.append(0), source=self.name))
        await self.stopped.wait()


class _BackgroundFailSink(MemorySink):
    """Accepts writes, then — from a background task, as the Splunk sender does when HEC says
    "token disabled" — reports a fatal error through ``fail()``; later writes/close raise it."""

    def __init__(self) -> None:
        super().__init__("bg")
        self.fatal: SinkError | None = None
        self._task: asyncio.Task[None] | None = None

    async def write(self, batch: Batch) -> Outcome:
        if self.fatal is not None:
            raise self.fatal
        outcome = await super().write(batch)
        self._task = asyncio.create_task(self._sender())
        return outcome

    async def _sender(self) -> None:
        await asyncio.sleep(0)
        self.fatal = SinkError("bg: token disabled")
        self.fail(self.fatal)

    async def close(self) -> None:
        await super().close()
        if self.fatal is not None:
            raise self.fatal


def test_sink_reported_failure_stops_an_idle_source_at_once() -> None:
    """A fatal error a sink reports through ``fail()`` while the source is idle (no further write
    would ever surface it) stops the run promptly: the source is told to stop, the run raises
    PipelineAborted carrying the sink's error, the batch accepted before it stays acked, and
    every sink is closed."""
    bg, other = _BackgroundFailSink(), MemorySink("other")
    src = _IdleSource()
    with pytest.raises(PipelineAborted) as info:
        arun(run([src], [bg, other], asyncio.Event()), timeout=5.0)  # no fix: hangs → TimeoutError
    assert str(info.value.__cause__) == "bg: token disabled"
    assert src.stopped.is_set()
    assert src.acks == [0]
    assert bg.closed and other.closed and other.records == [{"message": "first"}]


def test_fail_without_a_pipeline_does_nothing() -> None:
    """A sink used on its own (no pipeline) may call ``fail()``; it is a no-op, not a crash."""
    MemorySink("alone").fail(SinkError("alone: broken"))


class ReceiptSink(Sink):
    """Hands each batch over at once and returns a receipt (a future the test resolves)."""

    name = "receipts"

    def __init__(self) -> None:
        self.receipts: list[asyncio.Future[Outcome]] = []

    async def write(self, batch: Batch) -> Awaitable[Outcome]:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.receipts.append(fut)
        return fut


def test_receipts_let_writes_run_ahead_but_acks_wait_for_them_in_order() -> None:
    """A sink that returns receipts (the ndjson sink on a pipe read by `logpipe sink`) gets the
    next batches written while the first are unconfirmed; a batch is acked only once its own
    receipt and every earlier one resolved; a receipt that raises stops all further acks and
    fails the pipeline; the buffer bound counts unconfirmed batches."""

    async def scenario() -> None:
        sink = ReceiptSink()
        pipeline = Pipeline([sink], buffer_batches=3)
        await pipeline.start()
        acks: list[int] = []
        for i, recs in enumerate(numbered(3, 2)):
            await pipeline.put(Batch(recs, ack=lambda i=i: acks.append(i)))
        await settle()
        assert len(sink.receipts) == 3 and acks == []  # all written, none confirmed
        assert pipeline.buffered(sink)[0] == 3  # they still count against the bound
        sink.receipts[1].set_result(Outcome.DELIVERED)
        await settle()
        assert acks == []  # batch 0 is not confirmed yet
        sink.receipts[0].set_result(Outcome.SPOOLED)
        await settle()
        assert acks == [0, 1]
        await pipeline.put(Batch(numbered(1, 2)[0], ack=lambda: acks.append(3)))
        await settle()
        sink.receipts[3].set_exception(SinkError("receipts: the reader went away"))
        sink.receipts[2].set_result(Outcome.DELIVERED)
        await settle()
        assert acks == [0, 1, 2]  # nothing after the failed receipt
        with pytest.raises(PipelineAborted, match="reader went away"):
            await pipeline.close()
        assert pipeline.outcomes["receipts"][Outcome.DELIVERED] == 4
        assert pipeline.outcomes["receipts"][Outcome.SPOOLED] == 2

    arun(scenario())
