"""The ``ndjson`` sink: records as NDJSON on stdout — ``logpipe collect``'s default output."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import sys
from typing import IO

from logpipe.errors import DiskFullError, SinkConfigError, SinkError
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
        """Resolve the descriptor (stdout unless given); a closed stdout is a one-line error."""
        if self._fd is None:
            if self._stream is not None:
                self._stream.flush()
                self._fd = self._stream.fileno()
            else:
                self._fd = stdout_fd(self.name)

    async def write(self, batch: Batch) -> Outcome:
        """Write the batch's NDJSON bytes fully, retrying short writes."""
        data = batch.ndjson()
        assert self._fd is not None
        await asyncio.to_thread(write_all, self._fd, data, self.name)
        return Outcome.DELIVERED


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
