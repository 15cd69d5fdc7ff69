"""When the tail source looks for changes: inotify events as they come, polling behind them.

With inotify (``notify``: directories watched, ``logpipe.sources.tail.notify``) a write to an
open file wakes the reader within EVENT_GATHER; any other change to a name a glob matches
(created, renamed, deleted, an idle-closed file grown) is looked at on its own; a full rescan
(glob + ``stat`` of every file) runs every RECONCILE_INTERVAL and after an event queue overflow
or a directory change. Files inotify does not cover (symlinks, unwatched directories) are
``stat``'ed every ``rescan_interval``. Without inotify, a full rescan every ``rescan_interval``
(1 s, Vector's ``glob_minimum_cooldown_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from logpipe import diagnostics
from logpipe.sources.tail.discovery import Discovery
from logpipe.sources.tail.globs import matches
from logpipe.sources.tail.notify import IN_MODIFY, RECONCILE_INTERVAL

#: inotify events are handled this long after the first of a burst: 1,000 files written once a
#: second each make one pass per EVENT_GATHER, not one per write.
EVENT_GATHER = 0.02


class Watching(Discovery):
    """The discovery task: events, partial and full scans on their schedule."""

    _scan_event: asyncio.Event | None

    async def _scanner(self) -> None:
        """Discovery: a full scan every ``rescan_interval`` when polling; with inotify
        (``notify``) a full scan every RECONCILE_INTERVAL, the files inotify does not cover
        stat'ed every ``rescan_interval``, and events handled as they come (a burst gathered
        for EVENT_GATHER first)."""
        ev = asyncio.Event()
        self._scan_event = ev
        loop = asyncio.get_running_loop()
        w = self._watcher
        fd = w.fd if w is not None else None

        def readable() -> None:  # once, until re-armed after reading (no spin while readable)
            assert fd is not None
            loop.remove_reader(fd)
            ev.set()

        if fd is not None:
            loop.add_reader(fd, readable)
        mono = time.monotonic()
        next_tick, next_full = mono + self.rescan_interval, mono + self._full_interval()
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), max(0.0, next_tick - time.monotonic()))
                if self._stopping:
                    return
                try:
                    if ev.is_set():
                        ev.clear()
                        await asyncio.sleep(EVENT_GATHER)
                        if self._stopping:
                            return
                        if self._on_events():
                            next_full = 0.0
                        assert fd is not None
                        loop.add_reader(fd, readable)
                    mono = time.monotonic()
                    if mono >= next_full:
                        self._scan()
                        next_tick, next_full = mono + self.rescan_interval, mono + self._full_interval()
                    elif mono >= next_tick:
                        self._scan(self._uncovered())
                        next_tick = mono + self.rescan_interval
                except OSError as exc:  # e.g. EMFILE elsewhere in the process: retry next time
                    diagnostics.warning(f"tail: scan failed: {exc}", key="tail-scan")
        finally:
            if fd is not None:
                loop.remove_reader(fd)

    def _full_interval(self) -> float:
        if self._watcher is not None and self._all_watched:
            return max(RECONCILE_INTERVAL, self.rescan_interval)
        return self.rescan_interval

    def _uncovered(self) -> list[str]:
        """Attached files no inotify watch reports: stat'ed every ``rescan_interval``."""
        return [p for p, f in self._by_path.items() if not f.covered]

    def _on_events(self) -> bool:
        """Handle the queued inotify events: a write to an open file wakes its reader; any
        other change to a name a glob matches is looked at (``_scan(only=…)``). True when a
        full rescan must follow (overflow, directories created/moved/removed)."""
        assert self._watcher is not None
        events, rescan = self._watcher.read()
        look: set[str] = set()
        woke = False
        for path, mask in events:
            f = self._by_path.get(path)
            if f is not None and f.fd is not None and mask == IN_MODIFY:
                f.poke()
                woke = True
            elif path not in self._waiting and (f is not None or matches(self._globs, path)):
                look.add(path)  # new, renamed, deleted, or idle-closed and grown
        if look:
            self._scan(look)
        if woke and self._wake is not None:
            self._wake.set()
        return rescan
