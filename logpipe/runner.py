"""Runs a pipeline as a command: one event loop, SIGTERM/SIGINT → drain, exit status.

Both ``logpipe collect`` (sources → sinks) and ``logpipe sink`` (stdin → sinks) end here, so
both drain and exit the same way: everything read is delivered or spooled before exit; the
exit status is non-zero only when records could not be delivered or spooled.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence

from logpipe import diagnostics
from logpipe.errors import LogpipeError, PipelineAborted
from logpipe.pipeline import Sink, Source, run
from logpipe.sinks import SinkOptions


def run_command(
    make_sources: Callable[[], Sequence[Source]],
    make_sinks: Callable[[], Sequence[Sink]],
    *,
    on_stop: Callable[[], None] | None = None,
) -> int:
    """Build sources and sinks inside a fresh event loop, run them until the sources end or a
    SIGTERM/SIGINT arrives, drain, and return the exit status (0, or 1 after a fatal sink
    error, which is printed as one line by raising it to the CLI)."""
    return asyncio.run(_main(make_sources, make_sinks, on_stop))


async def _main(
    make_sources: Callable[[], Sequence[Source]],
    make_sinks: Callable[[], Sequence[Sink]],
    on_stop: Callable[[], None] | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def _signalled(signum: int) -> None:
        if stop.is_set():
            diagnostics.warning("second signal: still draining; kill -9 loses nothing committed",
                                key="second-signal")
        stop.set()
        if on_stop is not None:
            on_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _signalled, sig)
    try:
        sinks = make_sinks()
        sources = make_sources()
        try:
            await run(sources, sinks, stop)
        except PipelineAborted as exc:
            cause = exc.__cause__
            if isinstance(cause, LogpipeError):
                raise cause from None
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def sink_main(names: list[str], options: SinkOptions, service: str | None = None) -> int:
    """``logpipe sink NAME...``: stdin → every named sink."""
    from logpipe import sinks as registry
    from logpipe.sources.stdin import StdinSource

    return run_command(
        lambda: [StdinSource(service=service)],
        lambda: [registry.build(name, options) for name in names],
    )
