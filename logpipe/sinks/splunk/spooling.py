"""Getting a written batch's spool items into the spool: through a full disk and a spent reserve,
saying so once, giving up only at a stop's deadline (see the package docstring for the words)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from logpipe import diagnostics
from logpipe.errors import DiskFullError, SinkError
from logpipe.sinks.splunk.endpoints import Endpoints
from logpipe.sinks.splunk.sender import Sender
from logpipe.sinks.splunk.state import Shared
from logpipe.spool import Spool


class SpoolWriter:
    """Appends spool items for the sink; on a full disk what fits goes in and the rest waits
    (the write does not return, so the pipeline stops reading: input pauses)."""

    def __init__(self, shared: Shared, endpoints: Endpoints) -> None:
        self._shared = shared
        self._endpoints = endpoints
        #: set by stop(): the drain (and a disk-full wait) ends by then
        self.stop_deadline: float | None = None
        self.stopping = asyncio.Event()
        self._disk_paused = False

    def stop(self, drain_timeout: float) -> bool:
        """A stop was asked: waits end at ``drain_timeout`` from now. False if already stopping."""
        if self.stop_deadline is not None:
            return False
        self.stop_deadline = time.monotonic() + drain_timeout
        self.stopping.set()
        return True

    async def reserve_before_input(self, spool: Spool, close: Callable[[], Awaitable[None]]) -> None:
        """At start on a full disk: read no input until the reserve is in place (the senders run
        meanwhile and free space). A stop meanwhile ends the run (``close``) before anything is read."""
        try:
            while not await spool.restore_reserve():
                self._say_paused(f"spool disk full: no room for its reserve ({spool.reserve_bytes} "
                                 "bytes, kept for records read but not yet spooled)")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.25)
                if self.stopping.is_set() or self._shared.fatal is not None:
                    await close()
                    raise SinkError("splunk: stopped while the spool's disk was full; no input was "
                                    "read (it is still in the pipe)")
        except BaseException:
            await close()
            raise
        self._say_resumed()

    async def write(self, spool: Spool, sender: Sender, items: list[tuple[bytes, int]], records: int) -> None:
        """Append ``items`` ((spool item, its events), in order) of a batch of ``records``."""
        if not spool.reserve_held:
            await self._wait_for_reserve(spool)
        await self._append_until_room(spool, sender, items, records)

    def _say_paused(self, why: object) -> None:
        if not self._disk_paused:
            self._disk_paused = True
            diagnostics.warning(f"splunk: {why}; input paused until Splunk has taken what is "
                                "spooled and its space is reused (nothing is dropped)",
                                key="splunk-disk-full")

    def _say_resumed(self) -> None:
        if self._disk_paused:
            self._disk_paused = False
            diagnostics.info("splunk: the spool has disk space again; input resumed",
                             key="splunk-disk-room")

    async def _wait_for_reserve(self, spool: Spool) -> None:
        """The reserve was spent on a full disk: take no more input (this write waits, the lane
        fills, the pipeline stops reading) until it is back — or a stop lets what is held in."""
        while not self.stopping.is_set() and not await spool.restore_reserve():
            self._say_paused("spool disk full (its reserve was used for records already read)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.25)
            self._shared.raise_if_fatal()

    async def _append_until_room(self, spool: Spool, sender: Sender, items: list[tuple[bytes, int]],
                                 records: int) -> None:
        """Append; on a full disk append item by item what fits, hold the rest (input pauses:
        the pipeline stops reading), say so once, and retry until HEC has drained the spool and
        its space is reused. After a stop, give up at the drain deadline (at once when HEC is
        unreachable): the batch was not wholly spooled, so it is not acknowledged (a logpipe
        collector reads it again; what did go in is delivered, so that part comes twice)."""
        left = items
        while left:
            try:
                await self._append(spool, [item for item, _ in left])
                sender.appended(sum(n for _, n in left), sum(len(item) for item, _ in left))
                break
            except DiskFullError as exc:
                if len(left) > 1:  # what fits goes in now, in order
                    with contextlib.suppress(DiskFullError):
                        while left:
                            await self._append(spool, [left[0][0]])
                            sender.appended(left[0][1], len(left[0][0]))
                            left = left[1:]
                    if not left:
                        break
                await self._wait_for_disk(exc, records)
        if spool.reserve_held:
            self._say_resumed()

    async def _wait_for_disk(self, exc: DiskFullError, records: int) -> None:
        """One pause step on a full disk (says so the first time); raises at the stop deadline."""
        self._say_paused(exc)
        deadline = self.stop_deadline
        if deadline is not None and (time.monotonic() >= deadline or self._endpoints.all_unreachable()):
            raise DiskFullError(
                f"splunk: the spool's disk is still full at the end of the drain; a batch of {records} "
                "records read was not wholly spooled and is not acknowledged (a logpipe collector "
                "reads it again; a plain pipe into `logpipe sink` loses it)") from None
        wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shared.fatal_event.wait(), wait)
        self._shared.raise_if_fatal()

    async def _append(self, spool: Spool, items: list[bytes]) -> None:
        """``spool.append``, abandoned only if sending stops for good while the spool is full."""
        append = asyncio.ensure_future(spool.append(items))
        if not append.done():
            fatal = asyncio.ensure_future(self._shared.fatal_event.wait())
            try:
                await asyncio.wait({append, fatal}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                fatal.cancel()
            if not append.done():
                append.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await append
                self._shared.raise_if_fatal()
        append.result()
