"""Standard input as a source (``logpipe sink``, ``logpipe collect -``)."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import select
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from logpipe import diagnostics, identity, pipeack, record
from logpipe._zstdstream import CompressedInput
from logpipe.errors import SourceError
from logpipe.multiline import Joiner
from logpipe.pipeline import Batch, Source
from logpipe.sources._lines import LineAssembler, LineBatch

#: Bytes taken from stdin per turn (several pipe-buffers' worth, so batches are large).
READ_SIZE = 1 << 20
#: After stop(), how long to keep reading to finish a line already begun.
STOP_LINE_GRACE = 2.0


class StdinSource(Source):
    """Reads stdin in large chunks, splits lines, normalises them, emits batches.

    Nothing read is ever dropped: bytes are taken from the descriptor only when the source is
    about to process them, so a SIGTERM (``stop()``) ends the run after the chunk in hand and
    leaves the rest in the pipe — daemontools multilog's rule ("on TERM it reads up to the next
    newline and exits, leaving stdin at the first unprocessed byte", research/collector.md §5):
    a line begun is read to its newline (for at most STOP_LINE_GRACE seconds).
    Pipes, sockets and terminals are read when the event loop reports them readable (a read
    then returns at once); regular files and other unpollable inputs are read in a worker
    thread, one chunk at a time. A partial last line is emitted at EOF (and at stop when its
    newline does not come in time).

    ``multiline=True`` (``logpipe collect -``) joins Python tracebacks and indented
    continuation lines with :class:`logpipe.multiline.Joiner`, as for files and children: a
    group is held until the line after it, EOF, stop, or the joiner's idle deadline (≤ 1 s
    without input: research/collector.md "What the best do" 8). ``logpipe sink`` reads NDJSON
    and leaves it off.

    ``acks`` (``logpipe sink`` on a pipe): after each chunk's batches the source puts an empty
    batch whose ack publishes the bytes consumed through the chunk's last complete line; the
    pipeline runs it only once every batch before it was accepted by every sink, which is the
    reader's side of :mod:`logpipe.pipeack`. While the joiner holds lines no ack is put (they
    are consumed but not emitted); the next chunk, idle flush or EOF with nothing held acks.
    """

    name = "stdin"

    def __init__(self, service: str | None = None, fd: int | None = None,
                 max_line: int = pipeack.RECORD_MAX_BYTES, plain_level: str = "info",
                 multiline: bool = False, acks: pipeack.PipeAcker | None = None) -> None:
        self._fd = fd
        self._acks = acks
        self._eof = False
        defaults: dict[str, Any] = {record.SOURCE: "stdin"}
        if service:
            defaults[record.SERVICE] = service
        defaults.setdefault(record.HOST, identity.hostname())
        self._lines = LineAssembler(record.LineNormaliser(defaults, plain_level=plain_level),
                                    max_line, Joiner() if multiline else None)
        self._compressed = CompressedInput()
        self._stopping = False
        self._wake: asyncio.Event | None = None
        #: records emitted so far
        self.lines_read = 0
        #: bytes taken from the descriptor so far
        self.bytes_read = 0

    def stop(self) -> None:
        """Stop after the chunk in hand; what is still in the pipe stays there."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Read until EOF or stop()."""
        if self._fd is None and sys.stdin is None:
            # Python sets sys.stdin to None when fd 0 was closed at start-up (the number may be
            # reused by now for one of our own descriptors)
            raise SourceError("standard input is closed")
        fd = self._fd if self._fd is not None else 0
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            raise SourceError(f"standard input cannot be read: {exc.strerror}") from None
        if stat.S_ISDIR(mode):
            raise SourceError("standard input is a directory")
        self._wake = asyncio.Event()
        if self._stopping:
            self._wake.set()
        loop = asyncio.get_running_loop()
        pollable = not stat.S_ISREG(mode) and _can_poll(loop, fd)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        eof = False
        try:
            while not self._stopping:
                if pollable:
                    idle = self._idle_wait()
                    if not await self._readable(loop, fd, self._wake, idle):
                        if self._stopping or idle is None:
                            break  # stop() while waiting: nothing taken from the pipe
                        await self._flush_joiner(emit)  # quiet for the joiner's idle spell
                        await self._emit_ack(emit)
                        continue
                    chunk = _read_available(fd, poller)
                else:
                    chunk = await asyncio.to_thread(_read, fd, READ_SIZE)
                if not chunk:
                    eof = True  # EOF (or an unreadable input, already reported)
                    break
                await self._feed(chunk, emit)
            if not eof and self._lines.pending:
                # stopped in the middle of a line: read on to its newline (multilog's rule on
                # TERM), so a record is never split between this run and whoever reads next
                deadline = loop.time() + STOP_LINE_GRACE
                while self._lines.pending and loop.time() < deadline:
                    if pollable:
                        if not await self._readable(loop, fd, None, deadline - loop.time()):
                            break
                        chunk = _read_available(fd, poller)
                    else:
                        chunk = await asyncio.to_thread(_read, fd, READ_SIZE)
                    if not chunk:
                        break
                    await self._feed(chunk, emit)
        finally:
            poller.unregister(fd)
        self._eof = eof
        self._compressed.finish()
        await self._emit_batches(self._lines.finish(), emit)
        await self._emit_ack(emit)

    async def aclose(self) -> None:
        """Leave the pipe's ack file for a writer still waiting for it, or remove it after EOF."""
        if self._acks is not None:
            self._acks.close(self._eof)

    async def _emit_ack(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """An empty batch acking what was consumed so far, once all before it is accepted."""
        if self._acks is not None and self._lines.held == 0:
            await emit(Batch([], ack=functools.partial(self._acks.ack, self._lines.consumed),
                             source=self.name))

    def _idle_wait(self) -> float | None:
        """Seconds until the joiner's held lines are due (None: nothing held)."""
        deadline = self._lines.idle_deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    async def _flush_joiner(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        await self._emit_batches(self._lines.flush_groups(), emit)

    async def _feed(self, chunk: bytes, emit: Callable[[Batch], Awaitable[None]]) -> None:
        self.bytes_read += len(chunk)
        chunk = self._compressed.decode(chunk)
        before = self._lines.consumed
        await self._emit_batches(self._lines.feed(chunk), emit)
        if self._lines.consumed != before:
            await self._emit_ack(emit)

    @staticmethod
    async def _readable(loop: asyncio.AbstractEventLoop, fd: int, wake: asyncio.Event | None,
                        wait_at_most: float | None = None) -> bool:
        """Wait until ``fd`` is readable (True), or ``wake`` is set or ``wait_at_most`` seconds
        pass (False)."""
        ready = loop.create_future()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_ready)
        waits: set[asyncio.Future[Any]] = {ready}
        if wake is not None:
            waits.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=wait_at_most, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
            for w in waits:
                if w is not ready:
                    w.cancel()
        return ready.done()

    async def _emit_batches(self, batches: Iterator[LineBatch],
                            emit: Callable[[Batch], Awaitable[None]]) -> None:
        for b in batches:
            if b.records:
                self.lines_read += len(b.records)
                await emit(Batch(b.records, b.lines, source=self.name))


def _can_poll(loop: asyncio.AbstractEventLoop, fd: int) -> bool:
    """True when the event loop can watch ``fd`` (epoll refuses regular files and /dev/null)."""
    try:
        loop.add_reader(fd, lambda: None)
    except (OSError, ValueError, NotImplementedError):
        return False
    loop.remove_reader(fd)
    return True


def _read(fd: int, size: int) -> bytes:
    """One ``os.read``; EINTR retried; an input error is reported once and read as EOF."""
    while True:
        try:
            return os.read(fd, size)
        except InterruptedError:
            continue
        except BlockingIOError:
            # someone put the descriptor in non-blocking mode: wait for data like a blocking read
            select.select([fd], [], [])
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:  # the terminal went away (SIGHUP'd session)
                return b""
            diagnostics.error(f"stopped reading standard input: {exc.strerror}", key="stdin-read")
            return b""


def _read_available(fd: int, poller: select.poll) -> bytes:
    """Read what a readable descriptor holds, up to READ_SIZE, without ever blocking for more:
    each further read happens only while poll() says data (or EOF) is waiting."""
    first = _read(fd, READ_SIZE)
    if not first:
        return b""
    parts = [first]
    total = len(first)
    while total < READ_SIZE and poller.poll(0):
        more = _read(fd, READ_SIZE - total)
        if not more:
            break  # EOF: the next turn's read returns b"" again and ends the run
        parts.append(more)
        total += len(more)
    return b"".join(parts) if len(parts) > 1 else first
