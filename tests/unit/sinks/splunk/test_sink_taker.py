"""The Splunk sink's chunk taker never stops silently: it reads on across spool segments deleted
under it, and any error that would end it stops the sink with one line instead."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

import pytest

from logpipe.errors import SinkConfigError
from logpipe.spool import Spool
from tests._splunk_helpers import TOKEN, records
from tests.doubles.hec_double import HecDouble
from tests.helpers import until
from tests.unit.sinks.splunk.test_sink import assert_exactly_once_in_order, feed, make_sink


def pending_in_spool(spool_dir: Path) -> int:
    """Items not yet done in a closed spool (what the next run would send)."""

    async def count() -> int:
        async with Spool(str(spool_dir)) as s:
            return s.pending_items

    return asyncio.run(count())


def test_sink_keeps_sending_after_the_segment_it_read_to_the_end_of_is_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving of the benchmark's stalls, driven step by step (4 KiB spool segments,
    requests due at 20 KB): write X (~24 KB) is taken whole — the taker's read position is the
    very end of segment 1 — and while HEC holds X's answer, write Y1 (~12 KB, not due yet)
    rolls the spool over to segment 2. X is then delivered and the cursor save deletes segment
    1. Write Y2 makes a request due: the taker must read on from segment 2 (Y1 is delivered,
    Y2 at the end of the input): every event arrives once, in order, and nothing is left in the
    spool. (Before the fix the spool reader looked up the deleted segment, raised KeyError and
    the taker task died: the sink sent nothing more, waited out its drain timeout and exited 0
    with Y1 and Y2 in the spool.)"""
    from logpipe.sinks.splunk import sink as sink_module

    monkeypatch.setattr(sink_module, "Spool", functools.partial(Spool, segment_bytes=4096))
    recs = records(160, sources=["a"])
    x, y1, y2 = recs[:80], recs[80:120], recs[120:]
    with HecDouble(token=TOKEN) as hec:
        sink = make_sink(tmp_path, [hec.url], concurrency=1, batch_bytes=20_000, batch_timeout=60.0,
                         drain_timeout=5.0)
        spool_dir = tmp_path / "spool"

        def seg_files() -> list[str]:
            return sorted(p.name for p in spool_dir.glob("*.seg"))

        async def go() -> None:
            await sink.start()
            spool = sink._spool
            assert spool is not None
            hec.set_delay(1.5)  # X's answers wait: Y1 is spooled before X is done
            await feed(sink, x)
            await until(lambda: not spool.unread_items, 20, "X taken")
            await feed(sink, y1)
            assert sink.delivered == 0, "precondition: Y1 spooled while X is in flight"
            assert len(seg_files()) == 2 and spool.unread_items
            hec.set_delay(0.0)
            await until(lambda: sink.delivered == len(x), 20, "X delivered")
            await until(lambda: len(seg_files()) == 1, 20, "segment 1 deleted by the cursor save")
            await feed(sink, y2)  # Y1 + Y2 ≥ 20 KB: a request is due now
            await until(lambda: sink.delivered >= len(x) + len(y1) or sink._shared.fatal is not None,
                        20, "Y1 delivered (or the sink stopped)")
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, len(recs))
    assert (sink.delivered, sink.left_in_spool) == (len(recs), 0)
    assert pending_in_spool(spool_dir) == 0


def test_an_unexpected_error_in_the_taker_stops_the_sink_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If taking from the spool fails with an error the taker does not expect (a bug), the sink
    stops at once with one line naming it and the events stay in the spool — it does not sit
    idle until the drain timeout and then exit as if all were well."""
    calls = 0
    real = Spool.next_chunk

    async def failing(self: Spool, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("boom")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Spool, "next_chunk", failing)
    with HecDouble(token=TOKEN) as hec:
        sink = make_sink(tmp_path, [hec.url], batch_timeout=0.05, drain_timeout=30.0)

        async def go() -> None:
            await sink.start()
            recs = records(20)
            await feed(sink, recs[:10])
            await until(lambda: sink.delivered == 10, 20, "the first write delivered")
            await feed(sink, recs[10:])  # the taker's next take fails
            await until(lambda: calls > 1, 20, "the failing take")
            await sink.close()

        t0 = time.monotonic()
        with pytest.raises(SinkConfigError) as info:
            asyncio.run(go())
        took = time.monotonic() - t0
    msg = str(info.value)
    assert "taking from the spool stopped by an unexpected error: RuntimeError('boom')" in msg
    assert "\n" not in msg and "kept in spool" in msg
    assert took < 20.0, took  # stopped at once, not after the 30 s drain timeout
    assert sink.delivered == 10 and pending_in_spool(tmp_path / "spool") >= 1  # the second write


def test_an_unexpected_error_in_the_ack_poller_stops_the_sink_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --ack, an unexpected error in the ack poller (a bug) stops the sink at once with one
    line naming it, the unacknowledged events kept in the spool — instead of a dead poller,
    acks never settled, and an exit 0 after the drain timeout."""
    from logpipe.sinks.splunk.acks import AckTracker

    async def failing(self: AckTracker, ep: Any) -> None:
        raise RuntimeError("ack boom")

    monkeypatch.setattr(AckTracker, "_poll", failing)
    with HecDouble(token=TOKEN, ack=True) as hec:
        sink = make_sink(tmp_path, [hec.url], ack=True, ack_interval=0.05, batch_timeout=0.05,
                         drain_timeout=30.0)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(10))
            await sink.close()

        t0 = time.monotonic()
        with pytest.raises(SinkConfigError) as info:
            asyncio.run(go())
        took = time.monotonic() - t0
    msg = str(info.value)
    assert "polling acks stopped by an unexpected error: RuntimeError('ack boom')" in msg
    assert "\n" not in msg and "kept in spool" in msg
    assert took < 20.0, took  # stopped at once, not after the 30 s drain timeout
    assert sink.delivered == 0 and pending_in_spool(tmp_path / "spool") >= 1


def test_many_small_writes_racing_the_taker_are_all_delivered_before_close(tmp_path: Path) -> None:
    """The stall of bench/RESULTS.md ("a lost wake-up between the spool reader and the chunk
    taker"): 400 one-record writes from 4 sources, back to back and with the batch timeout
    (20 ms) firing between them, while the taker reads items straight from memory. Every event
    must reach HEC within 10 s of the last write *before* close() — whose drain would wake a
    stuck taker and hide the stall — once each and in order per source."""
    n = 400
    recs = records(n, sources=["a", "b", "c", "d"])
    with HecDouble(token=TOKEN) as hec:
        sink = make_sink(tmp_path, [hec.url], batch_timeout=0.02)

        async def go() -> None:
            await sink.start()
            for i, rec in enumerate(recs):
                await feed(sink, [rec], batch=1)
                if i % 7 == 0:
                    await asyncio.sleep(0.001)
            await until(lambda: sink.delivered == n, 10, "every event delivered before close")
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, n)
    assert (sink.delivered, sink.left_in_spool) == (n, 0)
