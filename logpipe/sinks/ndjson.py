"""The ``ndjson`` sink: records as NDJSON on stdout — ``logpipe collect``'s default output."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import sys
from collections.abc import Awaitable
from typing import IO

from logpipe import diagnostics, pipeack
from logpipe.errors import DiskFullError, SinkConfigError, SinkError
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks import SinkOptions


class NdjsonSink(Sink):
    """Writes each batch as one ``os.write`` burst to a file descriptor (stdout by default).

    A batch counts as delivered once the bytes are in the OS (the pipe or the file) — unless
    stdout is a pipe read by ``logpipe sink``: then only once that sink has acknowledged them
    as durable (:mod:`logpipe.pipeack`), so ``collect | sink`` is at-least-once end to end.
    Every record is at most ``pipeack.RECORD_MAX_BYTES`` encoded (longer ones are cut, flagged
    ``truncated``), so ``logpipe sink`` takes each one whole. Writes run in a thread so a slow
    reader applies back-pressure without stalling the event loop.
    """

    name = "ndjson"

    def __init__(self, fd: int | None = None, stream: IO[bytes] | None = None,
                 state_dir: str | None = None) -> None:
        self._stream = stream
        self._fd = fd
        self._state_dir = state_dir
        self._acks: pipeack.PipeWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        #: records cut to fit RECORD_MAX_BYTES
        self.cut = 0

    @classmethod
    def from_options(cls, options: SinkOptions) -> NdjsonSink:
        """Standard output, with pipe acks through the state dir."""
        return cls(state_dir=options.state_dir)

    async def start(self) -> None:
        """Resolve the descriptor (stdout unless given); a closed stdout is a one-line error.
        On stdout with a state dir, start the pipe-ack handshake."""
        if self._fd is None:
            if self._stream is not None:
                self._stream.flush()
                self._fd = self._stream.fileno()
            else:
                self._fd = stdout_fd(self.name)
                if self._state_dir:
                    self._acks = pipeack.PipeWriter.for_fd(self._state_dir, self._fd)
                    if self._acks is not None:
                        self._watch = asyncio.create_task(self._watchdog(self._acks),
                                                          name="ndjson-reader-watch")

    async def write(self, batch: Batch) -> Outcome | Awaitable[Outcome]:
        """Write the batch's NDJSON bytes fully, retrying short writes. With pipe acks, return a
        receipt that resolves once the reading sink holds them durably (the pipeline writes the
        next batch meanwhile, so the two processes keep working side by side)."""
        data = self._encode(batch)
        assert self._fd is not None
        acks = self._acks
        if acks is not None:
            acks.written += len(data)  # before: the reader may ack them before the write returns
        try:
            await asyncio.to_thread(write_all, self._fd, data, self.name)
        except SinkError as exc:
            if self._acks is not None and isinstance(exc.__cause__, BrokenPipeError):
                raise self._acks.broken() from exc
            raise
        if acks is None:
            return Outcome.DELIVERED
        if acks.mode == "write" and not acks.recheck_due():
            return Outcome.DELIVERED
        return self._receipt(acks, acks.written)

    @staticmethod
    async def _receipt(acks: pipeack.PipeWriter, end: int) -> Outcome:
        await acks.wait_acked(end)
        return Outcome.DELIVERED

    def _encode(self, batch: Batch) -> bytes:
        lines = batch.encoded()
        if not lines or max(map(len, lines)) <= pipeack.RECORD_MAX_BYTES:
            return batch.ndjson()
        fitted = [pipeack.fit(r, e) for r, e in zip(batch.records, lines, strict=True)]
        n = sum(1 for a, b in zip(lines, fitted, strict=True) if a is not b)
        self.cut += n
        diagnostics.warning(f"{n} record(s) over {pipeack.RECORD_MAX_BYTES} bytes cut to fit "
                            "(truncated: true), so `logpipe sink` reads each one whole",
                            key="ndjson-cut")
        return b"\n".join(fitted) + b"\n"

    async def _watchdog(self, acks: pipeack.PipeWriter) -> None:
        """While input is idle no write meets EPIPE: notice a logpipe sink that went away and
        stop (non-zero exit; nothing past its last ack was committed)."""
        while True:
            await asyncio.sleep(pipeack.WATCH_SECONDS)
            if acks.mode == "ack" and not acks.reader_alive():
                self.fail(acks.broken())
                return

    async def close(self) -> None:
        """Nothing buffered; forget the pipe's ack file once its reader is gone."""
        if self._watch is not None:
            self._watch.cancel()
        if self._acks is not None:
            self._acks.close()


def stdout_fd(what: str) -> int:
    """Descriptor 1, after flushing anything Python buffered for it; SinkConfigError when the
    process was started with stdout closed (``>&-``), where Python's ``sys.stdout`` is None."""
    # Python sets sys.stdout to None when fd 1 was closed at start-up; by now the number may
    # have been reused for one of our own descriptors, so that, not fstat(1), is the test.
    if sys.stdout is None:
        raise SinkConfigError(f"{what}: standard output is closed")
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    return 1


def write_all(fd: int, data: bytes, what: str) -> None:
    """``os.write`` until all of ``data`` is written (short writes and EINTR retried, a
    non-blocking descriptor waited on); translate OS errors into one-line SinkErrors."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError as exc:
            raise SinkError(f"{what}: the reader of the output went away (broken pipe)") from exc
        except InterruptedError:
            continue
        except BlockingIOError:
            # the descriptor was left non-blocking (Node parents do that to shared pipes): wait
            # until it drains instead of failing, which is the back-pressure we want anyway
            select.select([], [fd], [])
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"{what}: disk full while writing output") from exc
            raise SinkError(f"{what}: cannot write output: {exc.strerror}") from exc
        view = view[n:]
