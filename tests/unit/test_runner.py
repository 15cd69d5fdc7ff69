"""runner.run_command in-process: exit status from the outcomes, the sink's own error raised for
the CLI, the one-line summary, and SIGTERM draining."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from logpipe.errors import DiskFullError
from logpipe.pipeline import Batch, Outcome, Pipeline
from logpipe.runner import EXIT_OK, run_command, summary_line
from tests._pipeline_helpers import ListSource, MemorySink, numbered

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)


def test_everything_delivered_or_spooled_exits_0() -> None:
    """Delivered and spooled records both count as safe: status 0."""
    sinks = [MemorySink("a"), MemorySink("b", outcome=Outcome.SPOOLED)]
    status = run_command(lambda: [ListSource(numbered(3, 2))], lambda: sinks, summary=False)
    assert status == EXIT_OK
    assert all(len(s.records) == 6 for s in sinks)


def test_fatal_sink_error_is_raised_as_the_sinks_own_error(diag: io.BytesIO) -> None:
    """A fatal sink error reaches the CLI as the sink's DiskFullError (one line), not as a
    PipelineAborted wrapper, and the summary is still written, at error level."""
    sink = MemorySink("disk", fail_on_write=2, error=DiskFullError("disk: disk full"))
    with pytest.raises(DiskFullError, match=r"^disk: disk full$"):
        run_command(lambda: [ListSource(numbered(5, 1))], lambda: [sink])
    lines = [json.loads(line) for line in diag.getvalue().splitlines()]
    summary = [d for d in lines if d["message"].startswith("summary: ")]
    assert len(summary) == 1
    assert summary[0]["level"] == "error"
    assert summary[0]["message"] == "summary: disk: 1 records"
    assert summary[0]["logpipe"] == "diagnostic"


def test_summary_line_names_each_sink_with_its_counts() -> None:
    """The summary uses a sink's own summary() where it has one, else delivered/spooled
    counts (only the non-zero ones besides delivered)."""

    class Plain(MemorySink):
        def summary(self) -> None:  # type: ignore[override]
            return None

    async def scenario() -> str:
        own, plain = MemorySink("own"), Plain("plain", outcome=Outcome.SPOOLED)
        pipeline = Pipeline([own, plain])
        await pipeline.start()
        await pipeline.put(Batch([{"message": "a"}, {"message": "b"}]))
        await pipeline.close()
        return summary_line(pipeline)

    assert asyncio.run(scenario()) == "own: 2 records; plain: 0 delivered, 2 spooled"


def test_sigterm_stops_the_sources_and_drains() -> None:
    """A SIGTERM during the run stops an endless source; everything it emitted is delivered and
    the status is 0."""

    class Endless(ListSource):
        async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
            n = 0
            while not self.stopped:
                await emit(Batch([{"n": n}]))
                n += 1
                if n == 50:
                    os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(0)

    sink = MemorySink()
    src = Endless([])
    status = run_command(lambda: [src], lambda: [sink], summary=False)
    assert status == EXIT_OK
    assert src.stopped
    assert [r["n"] for r in sink.records] == list(range(len(sink.records)))
    assert len(sink.records) >= 50
