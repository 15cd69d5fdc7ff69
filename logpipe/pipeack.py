"""The pipe-ack protocol: ``logpipe collect … | logpipe sink …`` commits only what the sink holds.

Without it the collector's stdout sink would count a batch delivered once its bytes are in the
pipe, and a sink killed with records in the pipe or in its memory would lose them. With it the
chain is at-least-once end to end: the collector's checkpoints pass a record only once the
sink has made it durable (spooled or delivered by every one of its sinks).

The protocol (version 1)
------------------------
*Pipe identity.* Both ends ``fstat`` their end of the pipe — the writer its stdout, the reader
its stdin — and, only when it is a FIFO, name it ``<st_dev>-<st_ino>``. Both see the same
inode, so they meet with no extra flag in ``<state dir>/pipes/<identity>.ack``.

*The reader* (``logpipe sink``, :class:`PipeAcker`):

- MUST create the ack file before it reads its first byte of stdin, holding
  ``{"v": 1, "pid": <its pid>, "acked": 0}``, and MUST replace it atomically (write a temp file
  in the same directory, ``rename``) each time ``acked`` grows. It need not fsync it: the ack is
  only read while both processes live; what it vouches for is already durable.
- ``acked`` MUST be the number of bytes read from stdin, counted from its first read, through
  the end of the last complete line whose records *every* one of its sinks has accepted —
  spooled (Splunk: appended and fsynced), delivered (console/file: written), or rejected for
  good (quarantined and reported). It advances only from the reader's pipeline acks, which
  come in order, so it is always on a line boundary and never passes a record a sink could
  still lose. A partial line is never acked.
- MUST NOT publish an ack after a fatal sink error (its pipeline acks nothing more).
- SHOULD remove the file when it exits at EOF (every writer has closed the pipe: nobody waits
  for the ack any more) and MUST leave it otherwise (SIGTERM, a fatal error: a writer may still
  read the final ``acked``). A reader SHOULD remove, at start, ack files whose pid is dead and
  that have not changed for STALE_SECONDS.

*The writer* (``logpipe collect``'s stdout sink, :class:`PipeWriter`) counts the bytes it
writes into the pipe, from its first write, and is in one of three modes:

- **ack**: it found an ack file whose pid holds this very pipe as its stdin
  (``/proc/<pid>/fd/0`` names the pipe; a file left by a dead reader on a recycled inode is
  ignored). A batch counts as delivered only once ``acked`` ≥ the bytes written through its
  last line. If the reader goes away (EPIPE on write, or its pid no longer holds the pipe —
  checked while waiting for an ack, and every WATCH_SECONDS while idle) the writer MUST fail
  (SinkError): nothing past ``acked`` is committed, the process exits non-zero, and a restart
  re-reads from the last checkpoint. It MAY write further batches while it waits (the
  pipeline's receipts), settling them in write order. Checkpoints lag acks by the source's
  flush interval, so a restart duplicates at most about that much (at-least-once).
- **pending** (the handshake): at start, no ack file yet. The writer MUST NOT report a batch
  delivered in this mode. It scans ``/proc`` for the processes holding the pipe's read end:
  when one is ``logpipe sink`` (``logpipe`` is the program or ``-m`` module in its first three
  arguments, followed by ``sink``), it waits up to HANDSHAKE_SECONDS for the ack file (the
  reader's interpreter may still be starting); when no reader is found yet, or only shells
  (``a | b`` forks both sides, and a side may not have exec'd its command yet), it looks again
  for up to PROBE_SECONDS.
- **write**: the reader is not logpipe (``jq``, ``cat``, ``tee``), or the handshake timed out
  (a logpipe sink with another ``--state-dir``): a batch counts as delivered once its bytes
  are in the pipe — today's write-time commit, at-least-once only up to the pipe — and the
  writer says so once (a diagnostic). It SHOULD keep looking for an ack file every
  RECHECK_SECONDS and switch to ack mode when one appears; once in ack mode it MUST never
  commit past an unacked byte again (write-time commits made before stand).

One writer and one reader per pipe: a second process writing into the same pipe makes the byte
counts meaningless. A writer that sees ``acked`` pass the bytes it wrote knows the pipe is
shared; it MUST then fall back to write mode and say so.

*Record size.* Every record a writer emits MUST fit RECORD_MAX_BYTES encoded (without its
newline), which is ``logpipe sink``'s input line limit, so the sink parses it whole (its own
``source``, ``truncated: true``) instead of cutting it again into a plain-text line:
:func:`fit` cuts the longest strings of an oversize record until it fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from dataclasses import dataclass
from typing import Any

import orjson

from logpipe import diagnostics, record
from logpipe._proc import (
    holds_pipe,
    is_logpipe,
    is_shell,
    pid_alive,
    pipe_holders,
    pipe_readers,
    program_name,
)
from logpipe.errors import SinkError
from logpipe.paths import pipes_dir

VERSION = 1
#: a reader that looks like logpipe gets this long to publish its ack file
HANDSHAKE_SECONDS = 10.0
#: no reader of the pipe found yet (still being exec'd): look again for this long
PROBE_SECONDS = 2.0
#: in write mode, look for a late ack file this often
RECHECK_SECONDS = 1.0
#: while waiting for an ack: poll the file between these intervals, check the reader's pid this often
POLL_MIN, POLL_MAX = 0.0005, 0.02
LIVENESS_SECONDS = 0.25
#: with nothing to write, the writer checks its reader this often (no EPIPE comes while idle)
WATCH_SECONDS = 1.0
#: a dead reader's ack file unchanged this long is removed by the next reader
STALE_SECONDS = 600.0
#: the largest encoded record (newline excluded) a writer emits: ``logpipe sink``'s line limit
RECORD_MAX_BYTES = 1 << 20
_MARK = "...[truncated by logpipe]"


@dataclass(frozen=True, slots=True)
class PipeId:
    """One end of a pipe: its ``dev-ino`` name and inode."""

    name: str
    ino: int


def pipe_id(fd: int) -> PipeId | None:
    """The identity of the pipe behind ``fd``; None when ``fd`` is not a pipe (a file, a TTY)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode):
        return None
    return PipeId(f"{st.st_dev}-{st.st_ino}", st.st_ino)


def ack_path(state_dir: str, pipe: PipeId) -> str:
    """Where the reader of ``pipe`` publishes its acks."""
    return os.path.join(pipes_dir(state_dir), f"{pipe.name}.ack")


# --- the reader's side --------------------------------------------------------------------------
class PipeAcker:
    """The reader's ack file (``logpipe sink``): ``ack(n)`` publishes n bytes as durable."""

    def __init__(self, state_dir: str, pipe: PipeId) -> None:
        self.path = ack_path(state_dir, pipe)
        self.acked = -1
        self._pid = os.getpid()

    @classmethod
    def for_fd(cls, state_dir: str, fd: int = 0) -> PipeAcker | None:
        """An acker for the pipe on ``fd`` with its file published at ``acked: 0``; None when
        ``fd`` is not a pipe or the state dir cannot hold the file (said once: the writer then
        commits at write time)."""
        pipe = pipe_id(fd)
        if pipe is None:
            return None
        acker = cls(state_dir, pipe)
        try:
            os.makedirs(os.path.dirname(acker.path), exist_ok=True)
            _sweep(os.path.dirname(acker.path))
            acker.ack(0)
        except OSError as exc:
            # only worth a word when a logpipe collector is the one writing into stdin
            if any(program_name(a).startswith("logpipe") for _, a in pipe_holders(pipe.ino, write=True)):
                diagnostics.warning(f"cannot acknowledge through {acker.path} ({exc.strerror}): "
                                    "the logpipe collector writing into stdin commits at write "
                                    "time", key="pipeack-reader")
            return None
        return acker

    def ack(self, consumed: int) -> None:
        """Publish ``consumed`` bytes of stdin as durable (no-op unless it grew)."""
        if consumed <= self.acked:
            return
        tmp = f"{self.path}.{self._pid}.tmp"
        data = orjson.dumps({"v": VERSION, "pid": self._pid, "acked": consumed})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.acked = consumed

    def close(self, eof: bool) -> None:
        """At exit: remove the file after EOF (no writer is left to read it), else keep it."""
        if eof:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _sweep(directory: str) -> None:
    """Remove ack files of dead readers left unchanged for STALE_SECONDS."""
    now = time.time()
    for name in os.listdir(directory):
        if not name.endswith(".ack"):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError, ValueError):
            if now - os.stat(path).st_mtime < STALE_SECONDS:
                continue
            with open(path, "rb") as f:
                pid = int(orjson.loads(f.read()).get("pid", 0))
            if pid <= 0 or not pid_alive(pid):
                os.unlink(path)


# --- the writer's side --------------------------------------------------------------------------
class PipeWriter:
    """The writer's view of the reader's acks (``logpipe collect``'s stdout sink)."""

    def __init__(self, state_dir: str, pipe: PipeId) -> None:
        self.pipe = pipe
        self.path = ack_path(state_dir, pipe)
        self.mode = "pending"
        self.reader_pid = 0
        self.acked = 0
        #: bytes written into the pipe so far (the caller counts them)
        self.written = 0
        self._deadline = 0.0
        self._probe_until = 0.0
        self._next_check = 0.0
        self._seen_logpipe = False

    @classmethod
    def for_fd(cls, state_dir: str, fd: int = 1) -> PipeWriter | None:
        """The protocol for the pipe on ``fd``; None when ``fd`` is not a pipe."""
        pipe = pipe_id(fd)
        if pipe is None:
            return None
        w = cls(state_dir, pipe)
        w._handshake_start()
        return w

    def _handshake_start(self) -> None:
        now = time.monotonic()
        self._probe_until = now + PROBE_SECONDS
        self._deadline = now + HANDSHAKE_SECONDS
        if self._attach():
            return
        self._look(now, everywhere=True)

    def _look(self, now: float, everywhere: bool = False) -> bool:
        """Scan the pipe's readers: False once decided for write mode (a reader that is not
        logpipe, or none found within PROBE_SECONDS). A shell is a sibling forked but not yet
        exec'd into its command (``a | b`` forks both): look again until PROBE_SECONDS."""
        readers = pipe_readers(self.pipe.ino, everywhere)  # looks again: the near ones only
        if any(is_logpipe(argv) for _, argv in readers):
            self._seen_logpipe = True
        elif now >= self._probe_until or (readers and not all(is_shell(a) for _, a in readers)):
            self._write_mode(readers)
            return False
        return True

    def _attach(self) -> bool:
        """Ack mode when a live reader of this pipe has published an ack file."""
        doc = self._read()
        if doc is None:
            return False
        pid = doc["pid"]
        if not holds_pipe(pid, self.pipe.ino):
            return False
        late = " now" if self.mode == "write" else ""
        self.mode, self.reader_pid, self.acked = "ack", pid, doc["acked"]
        diagnostics.info(f"stdout: the logpipe sink reading it (pid {pid}){late} acknowledges what "
                         "it holds durably; checkpoints advance only past that", key="pipeack-mode")
        return True

    def _write_mode(self, readers: list[tuple[int, list[str]]] | None = None,
                    why: str | None = None) -> None:
        self.mode = "write"
        self._next_check = time.monotonic() + RECHECK_SECONDS
        if why is None and readers:
            names = ", ".join(sorted({program_name(a) for _, a in readers}))
            why = f"stdout is read by {names}, not by a logpipe sink"
        elif why is None:
            why = "no process reading stdout was found (another user's?)"
        diagnostics.info(f"{why}: checkpoints advance once records are written into the pipe "
                         "(at-least-once ends at the pipe)", key="pipeack-mode")

    def _read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                doc = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            return None
        pid, acked = doc.get("pid"), doc.get("acked")
        if not isinstance(pid, int) or not isinstance(acked, int) or pid <= 0 or acked < 0:
            return None
        return doc

    def recheck_due(self) -> bool:
        """In write mode: time to look for a late ack file again."""
        return time.monotonic() >= self._next_check

    async def wait_acked(self, written: int) -> None:
        """Return once the first ``written`` bytes count as delivered (see the modes); raise
        SinkError when the reader went away before acknowledging them."""
        poll = POLL_MIN
        alive_at = time.monotonic() + LIVENESS_SECONDS
        while True:
            now = time.monotonic()
            if self.mode == "write":
                if now >= self._next_check:
                    self._next_check = now + RECHECK_SECONDS
                    self._attach()
                if self.mode == "write":
                    return
            if self.mode == "pending" and not self._attach():
                if not self._seen_logpipe and not self._look(now):
                    return
                if self._seen_logpipe and now >= self._deadline:
                    self._write_mode(why=f"no logpipe sink acknowledged through {self.path} "
                                     f"within {HANDSHAKE_SECONDS:g} s (a sink with another "
                                     "--state-dir?)")
                    return
                await asyncio.sleep(0.05)
                continue
            doc = self._read()
            if doc is not None and doc["pid"] == self.reader_pid:
                self.acked = doc["acked"]
            if self.acked > self.written:
                self._write_mode(why="another process writes into the same pipe, so the sink's "
                                 "acknowledgements cannot be matched")
                return
            if self.acked >= written:
                return
            if now >= alive_at:
                alive_at = now + LIVENESS_SECONDS
                if not holds_pipe(self.reader_pid, self.pipe.ino):
                    doc = self._read()  # its last word may have come just before it exited
                    if doc is not None and doc["pid"] == self.reader_pid:
                        self.acked = doc["acked"]
                    if self.acked >= written:
                        return
                    raise SinkError(
                        f"the logpipe sink reading the pipe (pid {self.reader_pid}) went away; "
                        f"{written - self.acked} bytes it had not acknowledged are not committed "
                        "(read again on restart)")
            await asyncio.sleep(poll)
            poll = min(POLL_MAX, poll * 1.2)

    def reader_alive(self) -> bool:
        """True while the acknowledging reader still holds the pipe."""
        return holds_pipe(self.reader_pid, self.pipe.ino)

    def broken(self) -> SinkError:
        """The error for EPIPE: the reader went away (what it acked stays committed)."""
        if self.mode != "ack":
            return SinkError("the reader of the output went away (broken pipe)")
        return SinkError(f"the logpipe sink reading the output (pid {self.reader_pid}) went away; "
                         "records it had not acknowledged are not committed (read again on "
                         "restart)")

    def close(self) -> None:
        """At exit: remove the ack file of a reader that is gone (nobody else reads it)."""
        if self.mode == "ack" and not holds_pipe(self.reader_pid, self.pipe.ino):
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def fit(rec: dict[str, Any], encoded: bytes, limit: int = RECORD_MAX_BYTES) -> bytes:
    """``encoded`` if it fits ``limit`` bytes, else a copy of ``rec`` whose longest strings are
    cut (message first) until it does, with ``truncated: true``. A record whose bulk is not in
    strings keeps its identity keys and carries the rest as cut text in ``message``."""
    if len(encoded) <= limit:
        return encoded
    out = dict(rec)
    out[record.TRUNCATED] = True
    for _ in range(8):
        enc = record.dumps(out)
        over = len(enc) - limit
        if over <= 0:
            return enc
        key = max((k for k, v in out.items() if isinstance(v, str)),
                  key=lambda k: (len(out[k]), k == record.MESSAGE), default=None)
        value = out[key] if key is not None else ""
        if key is None or len(value) <= over + len(_MARK):
            break
        # every character encodes to at least one byte: dropping `over` more fits this round
        out[key] = value[: len(value) - over - len(_MARK)] + _MARK
    keep = (record.TIME, record.LEVEL, record.SERVICE, record.INSTANCE_ID, record.PM_ID,
            record.HOST, record.PID, record.SOURCE)
    small = {k: rec[k] for k in keep if k in rec and len(record.dumps({k: rec[k]})) < 4096}
    text = record.dumps(rec).decode("utf-8", "replace")
    small[record.MESSAGE] = text[: max(0, limit // 8 - len(_MARK))] + _MARK
    small[record.TRUNCATED] = True
    return record.dumps(small)
