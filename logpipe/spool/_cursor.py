"""Saving the spool's done position to its cursor file: in the background, at most every
``CURSOR_INTERVAL`` seconds, deleting the segments it passes; a last save at close."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from logpipe import diagnostics
from logpipe.spool._log import SegmentLog
from logpipe.spool._records import Position
from logpipe.spool._segments import DISK_FULL_ERRNOS

#: The cursor is persisted at most this often while chunks are being marked done.
CURSOR_INTERVAL = 0.2


class CursorSaver:
    """Keeps the cursor file up with ``done()`` (the position of the first record not yet done)."""

    def __init__(self, log: SegmentLog, done: Callable[[], Position], saved: Position | None,
                 on_disk_full: Callable[[], None]) -> None:
        self._log = log
        self._done = done
        #: what the cursor file says
        self.saved = saved
        self._on_disk_full = on_disk_full
        #: held while a save (or an emptying of the segments) is under way
        self.lock = asyncio.Lock()
        #: ends the interval wait of a save in the background (close() sets it)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self._last_save = 0.0

    def schedule(self) -> None:
        """The done position moved: save it soon (one background task at a time)."""
        if self.closed:  # close() wrote the last cursor and dropped the lock; a late done() stays in memory
            return
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._save_soon())

    async def _save_soon(self) -> None:
        # loop: done() calls that land while a write is in flight do not schedule another task.
        # Never cancelled (close() wakes it instead): a cancelled task would leave its worker
        # thread writing an older cursor that could land after close()'s newer one.
        while self._log.normalised(self._done()) != self.saved:
            wait = self._last_save + CURSOR_INTERVAL - time.monotonic()
            if wait > 0 and not self.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
            try:
                await self.save()
            except OSError as e:
                if e.errno in DISK_FULL_ERRNOS:
                    # the disk is full: the next append meets it too, says so once and reclaims
                    # the space of what is done (this cursor is saved then)
                    self._on_disk_full()
                else:
                    directory = self._log.files.directory
                    diagnostics.error(f"spool {directory}: cannot save the cursor ({e.strerror}); "
                                      "will retry", key=f"spool-cursor:{directory}")
                self._last_save = time.monotonic()
                if self.closed:
                    return

    async def save(self) -> None:
        """Delete the segments the done position passed, then write it (OSError on failure)."""
        async with self.lock:
            pos = self._log.normalised(self._done())
            self._last_save = time.monotonic()
            if pos == self.saved:
                return
            consumed = self._log.consumed_before(pos)
            await asyncio.to_thread(self._log.files.save_cursor, pos, consumed)
            self.saved = pos
            self._log.forget(consumed)

    async def close(self) -> None:
        """Let a save in the background finish (at once), then save a last time."""
        self.closed = True
        self.wake.set()
        task = self.task
        if task is not None and not task.done():
            await task
        await self.save()
