"""Batch: records given as a list (every caller so far) or as the line path's NormalisedLines,
whose dicts are built only when a sink reads ``batch.records``."""

from __future__ import annotations

import asyncio

from logpipe import record
from logpipe.pipeline import Batch, Outcome, Sink, batch_bytes, run
from tests._pipeline_helpers import MemorySink, arun

RECEIVED = "2026-12-04T10:00:00.000000Z"
LINES = [b'{"time":"2026-12-04T09:59:59.123456Z","level":"info","message":"a","service":"api"}',
         b"plain b", b'{"msg":"c"}']


def _normalised() -> record.NormalisedLines:
    return record.LineNormaliser({"source": "s", "host": "h"}).lines(LINES, RECEIVED)


class BytesSink(Sink):
    """A sink that, like ndjson and splunk, only writes bytes and counts with len(batch)."""

    name = "bytes"

    def __init__(self) -> None:
        self.data = b""
        self.count = 0
        self.batches: list[Batch] = []

    async def write(self, batch: Batch) -> Outcome:
        self.data += batch.ndjson()
        self.count += len(batch)
        self.batches.append(batch)
        return Outcome.DELIVERED


class NormalisedSource:
    """Emits one batch of the line path (records as NormalisedLines)."""

    name = "normalised"

    async def run(self, emit):  # type: ignore[no-untyped-def]
        await emit(Batch(_normalised(), source=self.name))

    def stop(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def test_list_records_work_as_before() -> None:
    """Batch([...]) keeps its records list as given, encodes it once, counts it."""
    recs = [{"message": "a"}, {"message": "b"}]
    b = Batch(recs, source="x")
    assert b.records is recs and len(b) == 2 and b.normalised is None
    assert b.ndjson() == b'{"message":"a"}\n{"message":"b"}\n'
    assert b.encoded() is b.encoded()
    assert batch_bytes(b) == sum(map(len, b.encoded())) + 2


def test_line_path_batch_builds_its_dicts_only_when_records_are_read() -> None:
    """A batch made from NormalisedLines takes its lines from it and counts without building a
    dict; reading ``records`` builds them once, equal to the general path's records."""
    norm = _normalised()
    b = Batch(norm, source="s")
    assert b.lines is norm.lines and len(b) == 3 and batch_bytes(b) > 0
    assert b._records is None  # nothing above needed a dict
    recs = b.records
    assert b.records is recs
    assert recs == record.LineNormaliser({"source": "s", "host": "h"})._general(LINES, RECEIVED)[0]


def test_a_pipeline_of_byte_sinks_never_builds_the_records() -> None:
    """Through the fan-out, a sink writing bytes gets every line and the pipeline counts every
    record, while no record dict is built; a dict sink beside it still gets the dicts."""
    bytes_sink, memory = BytesSink(), MemorySink()
    pipeline = arun(run([NormalisedSource()], [bytes_sink], asyncio.Event()))  # type: ignore[list-item]
    assert bytes_sink.data.count(b"\n") == 3 and bytes_sink.count == 3
    assert pipeline.outcomes["bytes"][Outcome.DELIVERED] == 3
    assert all(b._records is None for b in bytes_sink.batches)

    both = BytesSink()
    arun(run([NormalisedSource()], [both, memory], asyncio.Event()))  # type: ignore[list-item]
    assert [r["message"] for r in memory.records] == ["a", "plain b", "c"]
