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

This package: :mod:`._contracts` (Batch, Outcome, the Sink and Source contracts),
:mod:`._fanout` (Pipeline: per-sink buffers, ordered acks) and :func:`run` here (start the
sources, stop them, drain, let them commit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from logpipe import diagnostics
from logpipe.errors import LogpipeError, PipelineAborted, SourceError
from logpipe.pipeline._contracts import (
    BATCH_MAX_BYTES,
    BATCH_MAX_RECORDS,
    Batch,
    Outcome,
    Sink,
    Source,
    batch_bytes,
    sink_labels,
)
from logpipe.pipeline._fanout import (
    DRAIN_AFTER_FAILURE_SECONDS,
    SINK_BUFFER_BATCHES,
    SINK_BUFFER_BYTES,
    Pipeline,
)

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_RECORDS",
    "DRAIN_AFTER_FAILURE_SECONDS",
    "SINK_BUFFER_BATCHES",
    "SINK_BUFFER_BYTES",
    "Batch",
    "Outcome",
    "Pipeline",
    "Sink",
    "Source",
    "batch_bytes",
    "run",
    "sink_labels",
]


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
