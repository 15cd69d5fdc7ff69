"""The ``ndjson`` sink: records as NDJSON on stdout — ``logpipe collect``'s default output."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import sys
from typing import IO

from logpipe.errors import DiskFullError, SinkError
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks import SinkOptions


class NdjsonSink(Sink):
    """Writes each batch as one ``os.write`` burst to a file descriptor (stdout by default).

    A batch counts as delivered once the bytes are in the OS (the pipe or the file), which is
    what the collector's checkpoint needs. Writes run in a thread so a slow reader applies
    back-pressure without stalling the event loop.
    """

    name = "ndjson"

    def __init__(self, fd: int | None = None, stream: IO[bytes] | None = None) -> None:
        self._stream = stream
        self._fd = fd

    @classmethod
    def from_options(cls, options: SinkOptions) -> NdjsonSink:
        """Standard output."""
        return cls()

    async def start(self) -> None:
        """Resolve the descriptor (stdout unless given)."""
        if self._fd is None:
            stream = self._stream if self._stream is not None else sys.stdout.buffer
            stream.flush()
            self._fd = stream.fileno()

    async def write(self, batch: Batch) -> Outcome:
        """Write the batch's NDJSON bytes fully, retrying short writes."""
        data = batch.ndjson()
        assert self._fd is not None
        await asyncio.to_thread(write_all, self._fd, data, self.name)
        return Outcome.DELIVERED


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
