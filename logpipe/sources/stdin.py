"""Standard input as a source (``logpipe sink``, ``logpipe collect -``)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from logpipe import identity, record
from logpipe.pipeline import BATCH_MAX_BYTES, Batch, Source
from logpipe.sources._lines import LineSplitter

READ_SIZE = 1 << 20


class StdinSource(Source):
    """Reads stdin in large chunks on a daemon thread, splits lines, normalises, emits batches.

    A daemon thread (not the default executor) does the blocking reads so a SIGTERM can end the
    run while stdin stays open: ``stop()`` stops taking chunks; what was read is emitted.
    """

    name = "stdin"

    def __init__(self, service: str | None = None, fd: int | None = None,
                 max_line: int = 1 << 20) -> None:
        self._fd = fd
        defaults: dict[str, Any] = {record.SOURCE: "stdin"}
        if service:
            defaults[record.SERVICE] = service
        defaults.setdefault(record.HOST, identity.hostname())
        self._normalise = record.LineNormaliser(defaults)
        self._split = LineSplitter(max_line)
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self.lines_read = 0

    def stop(self) -> None:
        """Stop after the chunk in hand."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Read until EOF or stop()."""
        loop = asyncio.get_running_loop()
        fd = self._fd if self._fd is not None else sys.stdin.fileno()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)
        self._wake = asyncio.Event()

        def reader() -> None:
            while True:
                try:
                    chunk = os.read(fd, READ_SIZE)
                except InterruptedError:
                    continue
                except OSError:
                    chunk = b""
                fut = asyncio.run_coroutine_threadsafe(queue.put(chunk or None), loop)
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - loop closed: nobody wants more input
                    return
                if not chunk:
                    return

        threading.Thread(target=reader, name="logpipe-stdin", daemon=True).start()
        while not self._stopping:
            get = asyncio.ensure_future(queue.get())
            wake = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({get, wake}, return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
            if not get.done():
                get.cancel()
                break
            chunk = get.result()
            if chunk is None:
                tail = self._split.flush()
                if tail is not None:
                    await self._emit_lines([tail], [False], emit)
                return
            lines, flags = self._split.feed(chunk)
            await self._emit_lines(lines, flags, emit)
        tail = self._split.flush()
        if tail is not None:
            await self._emit_lines([tail], [False], emit)

    async def _emit_lines(self, lines: list[bytes], flags: list[bool],
                          emit: Callable[[Batch], Awaitable[None]]) -> None:
        received = record.now()
        recs: list[dict[str, Any]] = []
        out: list[bytes] = []
        size = 0
        for line, cut in zip(lines, flags, strict=True):
            res = self._normalise(line, received)
            if res is None:
                continue
            rec, enc = res
            if cut:
                rec[record.TRUNCATED] = True
                enc = record.dumps(rec)
            recs.append(rec)
            out.append(enc)
            size += len(enc)
            if size >= BATCH_MAX_BYTES or len(recs) >= 2048:
                self.lines_read += len(recs)
                await emit(Batch(recs, out, source=self.name))
                recs, out, size = [], [], 0
        if recs:
            self.lines_read += len(recs)
            await emit(Batch(recs, out, source=self.name))
