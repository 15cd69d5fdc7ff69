"""Runs a pipeline as a command: one event loop, SIGTERM/SIGINT → drain, summary, exit status.

Both ``logpipe collect`` (sources → sinks) and ``logpipe sink`` (stdin → sinks) end here, so
both drain and exit the same way: everything read is delivered or spooled before exit; the
exit status is non-zero only when records could not be delivered or spooled (SPEC §4) — that is
a fatal sink error, raised for the CLI to print as one line. There is no "rejected" end: the one
permanent refusal (HEC's bad event) is quarantined by the Splunk sink after it was spooled, so
it stays on disk in its dead-letter file and counts as kept (status 0); its summary and an error
line report it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence

from logpipe import diagnostics
from logpipe.errors import LogpipeError, PipelineAborted
from logpipe.pipeline import Outcome, Pipeline, Sink, Source, run
from logpipe.sinks import SinkOptions

#: exit status when every record was delivered or spooled
EXIT_OK = 0


def run_command(
    make_sources: Callable[[], Sequence[Source]],
    make_sinks: Callable[[], Sequence[Sink]],
    *,
    on_stop: Callable[[], None] | None = None,
    summary: bool = True,
    status: tuple[str, str] | None = None,
) -> int:
    """Build sources and sinks inside a fresh event loop, run them until the sources end or a
    SIGTERM/SIGINT arrives, drain, and return the exit status.

    A fatal sink error is raised (as the sink's own LogpipeError) for the CLI to print as one
    line (and exit non-zero); otherwise everything was delivered or spooled: EXIT_OK. With
    ``summary``, one diagnostic line on stderr gives each sink's counts at exit (also after a
    fatal error).
    """
    return asyncio.run(_main(make_sources, make_sinks, on_stop, summary, status))


async def _main(
    make_sources: Callable[[], Sequence[Source]],
    make_sinks: Callable[[], Sequence[Sink]],
    on_stop: Callable[[], None] | None,
    summary: bool,
    status: tuple[str, str] | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    built_sinks: list[Sink] = []  # filled once built: the signal handler tells them
    handler = _signal_handler(stop, built_sinks, on_stop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig)
    try:
        # sinks first: the Splunk sink takes its token out of os.environ, which sources that
        # start children (``--run``) copy when they are built
        sinks = make_sinks()
        built_sinks.extend(sinks)
        sources = make_sources()
        await _run_pipeline(sources, sinks, stop, summary, status)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return EXIT_OK


def _signal_handler(stop: asyncio.Event, sinks: list[Sink],
                    on_stop: Callable[[], None] | None) -> Callable[[int], None]:
    """SIGTERM/SIGINT: the first stops the sources and tells the sinks (drain); the second
    gives the default action back, so a third ends the process at once."""

    def _signalled(signum: int) -> None:
        if stop.is_set():
            # Draining can wait on a stalled sink. Like Vector's second Ctrl-C, give the user a
            # way out: the next SIGTERM/SIGINT gets the default action and ends the process at
            # once; checkpoints never passed what the sinks did not accept, so files are re-read
            # after a restart (only records read from a pipe and still buffered are lost).
            diagnostics.warning("second signal: still draining what was read; a third one quits "
                                "at once without delivering what is still buffered",
                                key="second-signal")
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, signal.SIG_DFL)
            return
        diagnostics.info(f"{signal.Signals(signum).name}: stopping; delivering everything read",
                         key="stopping")
        stop.set()
        for sink in sinks:
            sink.stopping()
        if on_stop is not None:
            on_stop()

    return _signalled


async def _run_pipeline(sources: Sequence[Source], sinks: Sequence[Sink], stop: asyncio.Event,
                        summary: bool, status: tuple[str, str] | None) -> None:
    """Run until the sources end or ``stop``; publish status meanwhile; the summary at the end
    (also after a fatal error, which is raised as the sink's own LogpipeError)."""
    pipeline = Pipeline(sinks)
    failed = True
    publisher = None
    if status is not None:  # (state dir, command): for `logpipe status`
        from logpipe._statusfile import Publisher

        publisher = Publisher(status[0], status[1], sources, sinks, pipeline.outcomes)
        publisher.start()
    try:
        await run(sources, sinks, stop, pipeline=pipeline)
        failed = False
    except PipelineAborted as exc:
        cause = exc.__cause__
        if isinstance(cause, LogpipeError):
            raise cause from None
        raise
    finally:
        if publisher is not None:
            await publisher.stop()
        if summary:
            report_summary(pipeline, failed)


def summary_line(pipeline: Pipeline) -> str:
    """``console: 120 delivered; file: 120 delivered`` — each sink's own ``summary()`` where it
    has one, else the records it reported per outcome; each sink named by its label (sinks
    sharing a name are told apart: ``file:/a: …; file:/b: …``), as in :func:`summary_counts`."""
    parts: list[str] = []
    for sink, label in zip(pipeline.sinks, pipeline.labels, strict=True):
        own = sink.summary()
        if own:
            prefix = f"{sink.name}: "
            parts.append(f"{label}: {own[len(prefix):]}" if own.startswith(prefix) else own)
            continue
        counts = pipeline.outcomes[label]
        shown = [f"{counts[o]} {o.value}" for o in Outcome if counts[o] or o is Outcome.DELIVERED]
        parts.append(f"{label}: {', '.join(shown)}")
    return "; ".join(parts)


def summary_counts(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    """The summary's JSON ``sinks``: per sink label, the records per outcome, overridden by the
    sink's own ``counts()`` (so the Splunk sink's "delivered" means delivered to HEC, as its
    text says, not "accepted into the spool")."""
    out: dict[str, dict[str, int]] = {}
    for sink, label in zip(pipeline.sinks, pipeline.labels, strict=True):
        counts = {o.value: n for o, n in pipeline.outcomes[label].items()}
        counts.update(sink.counts())
        out[label] = counts
    return out


def report_summary(pipeline: Pipeline, failed: bool = False) -> None:
    """One diagnostic line on stderr with every sink's counts (error level after a failure)."""
    level = "error" if failed or pipeline.error is not None else "info"
    diagnostics.emit(level, f"summary: {summary_line(pipeline)}", key="summary",
                     sinks=summary_counts(pipeline))


def sink_main(names: list[str], options: SinkOptions, service: str | None = None) -> int:
    """``logpipe sink NAME...``: stdin → every named sink. When stdin is a pipe, acknowledge
    through the state dir what every sink holds durably (:mod:`logpipe.pipeack`), so a
    ``logpipe collect`` writing into it commits only that."""
    from logpipe import pipeack
    from logpipe import sinks as registry
    from logpipe.sources.stdin import StdinSource

    acks = pipeack.PipeAcker.for_fd(options.state_dir, 0)
    return run_command(
        lambda: [StdinSource(service=service, acks=acks, multiline=True)],
        lambda: [registry.build(name, options) for name in names],
        status=(options.state_dir, "sink " + " ".join(names)),
    )
