"""SplunkSink: the Sink the pipeline sees — spool on write, start/stop the senders, drain, summary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable
from typing import Any

import httpx

from logpipe import diagnostics, identity
from logpipe.errors import SinkConfigError, SinkError, UsageError
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks import SinkOptions
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk.commits import GroupCommit
from logpipe.sinks.splunk.config import RETRY_BASE, Secret, SplunkConfig, read_token
from logpipe.sinks.splunk.endpoints import (
    Endpoint,
    Endpoints,
    client_for,
    error_verdict,
)
from logpipe.sinks.splunk.health import check_endpoints
from logpipe.sinks.splunk.items import cut_group, to_item
from logpipe.sinks.splunk.quarantine import Quarantine
from logpipe.sinks.splunk.reserve import LANE_BATCHES, LANE_BYTES, reserve_bytes
from logpipe.sinks.splunk.sender import Sender
from logpipe.sinks.splunk.spooling import SpoolWriter
from logpipe.sinks.splunk.state import Shared
from logpipe.spool import Spool


class SplunkSink(Sink):
    """Splunk HTTP Event Collector sink (see the package docstring)."""

    name = "splunk"
    #: what the sink holds unspooled is bounded, so the spool's reserve can cover it (reserve.py)
    buffer_limits = (LANE_BATCHES, LANE_BYTES)

    def __init__(self, urls: list[str], token: Secret, *, encoder: _hec.EnvelopeEncoder | None = None,
                 **settings: Any) -> None:
        """``SplunkSink(urls, token, spool_dir=…, quarantine_path=…, **SplunkConfig fields)``."""
        if not urls:
            raise UsageError("splunk: no HEC URL: pass --url or set LOGPIPE_SPLUNK_URL")
        config = SplunkConfig(urls=list(urls), **settings)
        self.config = config
        self._shared = shared = Shared(config, token)
        shared.on_fatal = self._on_fatal
        self.endpoints = Endpoints(config.urls, _hec.Backoff(base=RETRY_BASE, cap=config.retry_max),
                                   token.scrub)
        self._encoder = encoder or _hec.EnvelopeEncoder(
            host=config.host, source=config.source, sourcetype=config.sourcetype,
            default_host=identity.hostname())
        self._quarantine = Quarantine(config.quarantine_path)
        self._spool: Spool | None = None
        self._sender: Sender | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._left_items = 0
        self._final = False  # close() has counted what is left
        self._progress_shown = False
        self._started = False
        self._closed = False
        self._writer = SpoolWriter(shared, self.endpoints)
        #: what the pipeline can hand over before it waits for receipts: write a group then
        #: (item bytes run larger than the pipeline's NDJSON bytes, hence half of them)
        self._commits = GroupCommit(self._write_items, self._count_spooled, LANE_BATCHES, LANE_BYTES // 2)

    @property
    def channel(self) -> str:
        """This process's HEC data channel (a GUID)."""
        return self._shared.channel

    # counts, in events (read by tests and the summary)
    @property
    def spooled(self) -> int:
        return self._shared.counts.spooled

    @property
    def delivered(self) -> int:
        return self._shared.counts.delivered

    @property
    def resent(self) -> int:
        return self._shared.counts.resent

    @property
    def quarantined(self) -> int:
        return self._quarantine.count

    @property
    def backlog(self) -> int:
        return self._shared.counts.backlog

    @property
    def left_in_spool(self) -> int:
        return self._shared.counts.left_in_spool

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_options(cls, options: SinkOptions) -> SplunkSink:
        """Build from CLI options / ``LOGPIPE_*`` environment (token only from env or file)."""
        config = SplunkConfig.from_options(options)
        token = read_token(options.splunk_token_file)
        # Read once, then out of the environment: children of ``collect --run`` (and pm2) copy
        # os.environ, and an app that dumps its environment on a crash would otherwise log the
        # token into the very stream we ship. (Sinks are built before sources.)
        os.environ.pop("LOGPIPE_SPLUNK_TOKEN", None)
        return cls.from_config(config, token)

    @classmethod
    def from_config(cls, config: SplunkConfig, token: Secret) -> SplunkSink:
        """A sink for ``config``."""
        fields = {k: v for k, v in vars(config).items() if k != "urls"}
        return cls(config.urls, token, **fields)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the spool, check every endpoint (health + token), start the senders.

        Unreachable is not fatal (records are spooled and sent when HEC answers); a refused
        token or an untrusted certificate is (SinkConfigError, one line, spool kept).
        """
        config = self.config
        self._client = client = client_for(self.endpoints, config.ca_file, config.insecure,
                                           config.request_timeout,
                                           config.concurrency + len(self.endpoints) + 1)
        try:
            await check_endpoints(self.endpoints, client, self._shared)
            spool = Spool(config.spool_dir, max_bytes=config.spool_max, reserve_bytes=self._reserve_size())
            try:
                await spool.open()
            except OSError as exc:
                raise SinkError(f"splunk: cannot open the spool {config.spool_dir}: {exc.strerror}") from None
        except BaseException:
            await client.aclose()
            raise
        self._spool = spool
        self._sender = sender = Sender(self._shared, spool, self.endpoints, client, self._quarantine)
        self._shared.counts.backlog = sender.backlog_unread = spool.pending_items
        if spool.pending_items:
            diagnostics.info(f"splunk: {spool.pending_items} batches ({spool.pending_bytes:,} bytes) of "
                             "events from an earlier run are in the spool; sending them first",
                             key="splunk-backlog")
            sender.unread_bytes = spool.pending_bytes
            sender.first_unread = time.monotonic() - config.batch_timeout
        self._started = True
        self._tasks = sender.tasks()
        if not spool.reserve_held:
            await self._writer.reserve_before_input(spool, self._close_once)
        show = config.progress if config.progress is not None else _stderr_is_tty()
        if show:
            self._progress_shown = True
            self._tasks.append(asyncio.create_task(self._progress(), name="splunk-progress"))

    def _reserve_size(self) -> int:
        """The spool reserve (reserve.py), or 0 with a warning when --spool-max is too small for it."""
        size = reserve_bytes(self._encoder, identity.hostname())
        if self.config.spool_max >= 2 * size:
            return size
        diagnostics.warning(
            f"splunk: --spool-max {self.config.spool_max} is under twice the {size}-byte reserve kept for "
            "records read but not yet spooled; running without it: a stop on a full disk may lose "
            "what was read from a plain pipe (it says so)", key="splunk-no-reserve")
        return 0

    def _error_verdict(self, exc: BaseException, ep: Endpoint) -> _hec.Verdict:
        """A transport error → its Verdict (kept for callers of the old method)."""
        return error_verdict(exc, ep, self._shared.token.scrub)

    async def write(self, batch: Batch) -> Awaitable[Outcome]:
        """Encode envelopes and queue them for the spool; the receipt resolves to SPOOLED once
        they are durable (several batches share one write and fdatasync: commits.py)."""
        self._raise_if_fatal()
        spool, sender = self._spool, self._sender
        if spool is None or sender is None:
            raise SinkError("splunk: write before start")
        # a line-path batch is encoded from what its normaliser read: no record dict is built
        groups = self._encoder.encode_grouped(batch.normalised or batch.records, batch.encoded())
        items: list[tuple[bytes, int]] = []  # (spool item, its events)
        for g, envelopes in groups.items():
            for bundle in cut_group(envelopes):
                items.append((to_item(g, bundle), len(bundle)))
        return self._commits.add(items, len(batch))

    async def _write_items(self, items: list[tuple[bytes, int]], records: int) -> None:
        """Append one group's items (through a full disk: spooling.py)."""
        spool, sender = self._spool, self._sender
        assert spool is not None and sender is not None
        await self._writer.write(spool, sender, items, records)

    def _count_spooled(self, records: int) -> None:
        self._shared.counts.spooled += records

    def stopping(self) -> None:
        """A stop was asked (SIGTERM/SIGINT): deliver for at most the drain timeout from now."""
        self._commits.hurry()
        if self._writer.stop(self.config.drain_timeout):
            if self._spool is not None:
                self._spool.use_reserve()
            self._shared.wake.set()

    async def close(self) -> None:
        """Drain (bounded by the drain timeout), stop, close the spool; raise a fatal error."""
        if self._closed:
            self._raise_if_fatal()
            return
        self._closed = True
        if not self._started:
            return
        sender, spool = self._sender, self._spool
        assert sender is not None and spool is not None
        await self._commits.flush()  # the pipeline awaited its receipts; a direct caller may not have
        await self._drain(sender)
        self._shared.stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._shared.counts.left_in_spool = sender.events_in_spool()
        self._left_items = sender.backlog_unread
        self._final = True
        try:
            await spool.close()
        finally:
            if self._client is not None:
                await self._client.aclose()
            if self._progress_shown:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write("\r\x1b[K")
                    sys.stderr.flush()
        if (self.left_in_spool or self._left_items) and self._shared.fatal is None:
            diagnostics.warning(
                f"splunk: {self._why_left()}; "
                f"{self._left_text()} left in spool {self.config.spool_dir} (sent on the next run)",
                key="splunk-left")
        self._raise_if_fatal()

    async def _drain(self, sender: Sender) -> None:
        """Let the senders deliver what is spooled (everything read is durable by now).

        After a stop signal: for at most the drain timeout since the signal. At the end of the
        input: while HEC keeps taking events, and for at most the drain timeout without progress.
        After a signal it also ends at once when every endpoint is unreachable (no HTTP answer):
        the stop must be prompt, and the spool keeps everything for the next run.
        """
        shared = self._shared
        sender.draining = True
        shared.wake.set()
        timeout = self.config.drain_timeout
        progress_at, delivered = time.monotonic(), self.delivered
        while not sender.is_drained() and shared.fatal is None:
            now = time.monotonic()
            if self.delivered != delivered:
                progress_at, delivered = now, self.delivered
            stop_deadline = self._writer.stop_deadline
            deadline = stop_deadline if stop_deadline is not None else progress_at + timeout
            left = deadline - now
            if left <= 0 or (stop_deadline is not None and self.endpoints.all_unreachable()):
                break
            shared.settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.settled.wait(), min(left, 0.1))

    def summary(self) -> str | None:
        """``splunk: 120 delivered, 3 retried, 1 quarantined, 121 spooled, 0 left in spool`` (events;
        "spooled" counts this run's input, "left in spool" what the next run will send)."""
        return (f"splunk: {self.delivered} delivered, {self.resent} retried, "
                f"{self.quarantined} quarantined, {self.spooled} spooled, "
                f"{self._left_text('')} left in spool")

    def counts(self) -> dict[str, int]:
        """The numbers of :meth:`summary`, for the summary's JSON (events)."""
        counts = {"delivered": self.delivered, "retried": self.resent, "quarantined": self.quarantined,
                  "spooled": self.spooled,
                  "left_in_spool": self.left_in_spool if self._final else self._in_spool()}
        earlier = self._left_items if self._final else (self._sender.backlog_unread if self._sender else 0)
        if earlier:
            counts["earlier_batches_left_in_spool"] = earlier
        return counts

    def _why_left(self) -> str:
        if self.endpoints.all_unreachable():
            return "HEC is unreachable"
        return f"HEC did not take everything within the drain timeout ({self.config.drain_timeout:g}s)"

    def stats(self) -> dict[str, Any]:
        """Counters and health for ``logpipe status`` and tests (events unless said otherwise)."""
        spool = self._spool
        return {
            "spooled": self.spooled, "delivered": self.delivered, "retried": self.resent,
            "quarantined": self.quarantined, "left_in_spool": self._in_spool(),
            "spool": spool.stats() if spool is not None else None,
            "endpoints": [{"url": ep.display, "up": ep.failures == 0 and not ep.unreachable,
                           "last_error": ep.last_error or None, "last_success": ep.last_success}
                          for ep in self.endpoints],
        }

    # ------------------------------------------------------------------ state helpers
    def _in_spool(self) -> int:
        return self._sender.events_in_spool() if self._sender is not None else 0

    def _left_text(self, unit: str = " events") -> str:
        n = self.left_in_spool if self._final else self._in_spool()
        sender = self._sender
        items = self._left_items if self._final else (sender.backlog_unread if sender else 0)
        if n == 1 and unit == " events":
            unit = " event"
        if items:
            return f"{n}{unit} and {items} earlier batches"
        return f"{n}{unit}"

    def _raise_if_fatal(self) -> None:
        self._shared.raise_if_fatal()

    async def _close_once(self) -> None:
        if not self._closed:
            await self.close()

    def _on_fatal(self, message: str) -> None:
        shared = self._shared
        message = shared.token.scrub(message)
        shared.fatal = SinkConfigError(
            f"{message}; sending stopped, {self._left_text()} kept in spool {self.config.spool_dir}")
        diagnostics.error(str(shared.fatal), key="splunk-fatal")
        # found by a background sender, maybe while input is idle: stop the pipeline now
        # rather than at the next write/close (issue 5: "exit non-zero in sink mode")
        self.fail(shared.fatal)
        shared.fatal_event.set()
        shared.settled.set()
        shared.stop.set()
        shared.wake.set()

    # ------------------------------------------------------------------ progress
    async def _progress(self) -> None:
        """On a TTY: events/s, spooled, delivered — one line rewritten every second."""
        last_t, last_n = time.monotonic(), 0
        stop = self._shared.stop
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            now = time.monotonic()
            rate = (self.delivered - last_n) / max(now - last_t, 1e-6)
            last_t, last_n = now, self.delivered
            line = (f"splunk: {rate:,.0f} events/s · spooled {self.spooled:,} · delivered "
                    f"{self.delivered:,} · in spool {self._in_spool():,}")
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\r\x1b[K" + line)
                sys.stderr.flush()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
