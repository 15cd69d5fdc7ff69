"""Batches and the Source and Sink contracts: what a source emits, what a sink's ``write`` must
guarantee before it returns.

The Sink contract
-----------------
Every sink subclasses :class:`Sink`. A sink:

- MUST return from ``write(batch)`` only when the batch has reached one of these ends:
  **delivered** (written to its destination: bytes in the OS for stdout/files, acknowledged by
  the server for HEC), **spooled** (durable on local disk, to be delivered later in order), or
  **rejected** (permanently undeliverable — e.g. a malformed event — and reported once through
  ``diagnostics``, quarantined where that makes sense). It returns the matching
  :class:`Outcome`. A batch never counts as delivered before it is durable or acknowledged.
- MAY return, instead of an Outcome, an awaitable resolving to one (a *receipt*) when the batch
  is handed over but its end is confirmed later — the ndjson sink on a pipe read by ``logpipe
  sink`` (:mod:`logpipe.pipeack`): bytes written, the reader's ack awaited. The pipeline then
  writes the next batch while it awaits the receipts one by one in write order, counts each
  batch against the sink's buffer until its receipt resolves, and treats an exception from a
  receipt as one from ``write``. Receipts MUST resolve in write order.
- MUST treat transient failures (**failed**: network errors, 5xx, a full disk that may free up)
  by retrying inside ``write`` (or inside its spool's sender) with backoff; ``write`` does not
  return while it retries, which is how back-pressure reaches the sources. It MUST NOT drop
  records silently.
- MUST raise :class:`~logpipe.errors.SinkError` (one-line message, no secret) when it can
  never succeed (bad token, unwritable directory): the pipeline then stops, the source does not
  commit, the process exits non-zero, and data already spooled is kept.
- MUST report a fatal error it finds *outside* ``write`` (a background sender told "bad token"
  while input is idle) through :meth:`Sink.fail` at once, and raise it again from the next
  ``write``/``close``: the pipeline then stops the sources without waiting for more input
  (an idle stdin would otherwise never bring the next ``write``), so ``logpipe sink splunk``
  exits promptly with its one-line error.
- MUST make ``close()`` drain: everything accepted is delivered or durable when it returns.
- SHOULD implement ``start()`` as a health check over the real path (open the file, ask the
  HEC) and raise ``SinkError`` with a clear message when the destination is unusable, or warn
  (diagnostics) and carry on when it is only unreachable for now.
- MAY keep its own internal buffers, but they count against its bound: when full, ``write``
  blocks. The pipeline gives each sink its own buffer, bounded in batches and in bytes, so a
  stalled sink stalls the others only once its buffer is full.
- MUST NOT mutate ``batch.records`` (or the dicts in it) or ``batch.lines``: the same batch
  object goes to every sink, possibly at the same time.
- SHOULD keep ``write`` cheap per record: use ``batch.encoded()`` (pre-encoded NDJSON) where
  bytes are what it needs, and ``len(batch)`` to count. A batch from the line path builds its
  record dicts only when ``batch.records`` is first read, so a sink that never reads it spares
  every record its parse.

The Source contract
-------------------
A source produces batches by calling ``await emit(batch)`` from ``run()``; ``emit`` blocks
while the pipeline is full (back-pressure). ``stop()`` asks it to finish (flush held partial
state, stop reading) and make ``run()`` return. After the pipeline has drained, ``aclose()``
commits the final checkpoint.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain
from typing import Any

from logpipe import record
from logpipe.errors import LogpipeError

#: Sources cap a batch at BATCH_MAX_RECORDS records / BATCH_MAX_BYTES bytes of NDJSON.
BATCH_MAX_RECORDS = 2048
BATCH_MAX_BYTES = 1 << 20


class Outcome(enum.Enum):
    """How a batch ended at one sink."""

    DELIVERED = "delivered"
    SPOOLED = "spooled"


#: joined after a batch's lines, so its NDJSON block ends with a newline
_END = (b"",)


class Batch:
    """Records from one source, in order, with an ack callback for the source's checkpoint.

    ``lines`` (optional) are the records' NDJSON encodings without newlines, parallel to
    ``records``; sources that already have them (the normaliser) pass them so byte sinks need
    not re-encode. ``records`` may be given as a :class:`~logpipe.record.NormalisedLines`
    (what the line path makes): the dicts are then built only when a sink first reads
    ``batch.records``, so a batch written as bytes (``collect`` to stdout, ``sink splunk``)
    never builds one. ``normalised`` is that object (None otherwise): the Splunk sink takes
    each envelope's fields from it.
    """

    __slots__ = ("_pending", "_records", "ack", "lines", "normalised", "source")

    def __init__(self, records: Sequence[dict[str, Any]], lines: list[bytes] | None = None,
                 ack: Callable[[], None] | None = None, source: str = "") -> None:
        if isinstance(records, record.NormalisedLines):
            self.normalised: record.NormalisedLines | None = records
            self._records: list[dict[str, Any]] | None = None
            if lines is None:
                lines = records.lines
        else:
            self.normalised = None
            self._records = records if isinstance(records, list) else list(records)
        self.lines = lines
        self.ack = ack
        self.source = source
        self._pending = 0

    @property
    def records(self) -> list[dict[str, Any]]:
        """The records as dicts (built from the lines on first access when the batch came from
        the line path)."""
        if self._records is None:
            assert self.normalised is not None
            self._records = self.normalised.records()
        return self._records

    def encoded(self) -> list[bytes]:
        """The records as NDJSON lines (no trailing newline), encoded once and cached."""
        if self.lines is None:
            self.lines = [record.dumps(r) for r in self.records]
        return self.lines

    def ndjson(self) -> bytes:
        """All records as one NDJSON block, each line ending with a newline."""
        lines = self.encoded()
        if not lines:
            return b""
        return b"\n".join(chain(lines, _END))  # one copy of the bytes (not a join, then a concat)

    def __len__(self) -> int:
        if self._records is not None:
            return len(self._records)
        assert self.normalised is not None
        return len(self.normalised)

    def __repr__(self) -> str:
        return f"Batch({len(self)} records, source={self.source!r})"


class Sink(abc.ABC):
    """Base class of every sink; see the module docstring for the contract."""

    #: short name used in messages (``console``, ``file``, ``splunk``, ``ndjson``)
    name: str = "sink"
    #: set by the Pipeline before ``start()``: where :meth:`fail` reports to
    _on_fail: Callable[[BaseException], None] | None = None
    #: (batches, bytes): a tighter bound for this sink's buffer than the pipeline's (None: its own).
    #: The Splunk sink keeps a disk reserve for what it holds, so what it holds must be bounded.
    buffer_limits: tuple[int, int] | None = None

    def fail(self, exc: LogpipeError) -> None:
        """Tell the pipeline, from outside ``write``, that this sink can never succeed: it stops
        the sources now and exits with ``exc`` (one line, no secret). Without a pipeline (a sink
        used on its own) this does nothing; the next ``write``/``close`` raises as usual."""
        if self._on_fail is not None:
            self._on_fail(exc)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources and check health; raise SinkError when the sink can never work."""

    @abc.abstractmethod
    async def write(self, batch: Batch) -> Outcome | Awaitable[Outcome]:
        """Deliver, spool or reject ``batch`` (or hand it over and return a receipt); see the
        contract."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Drain: when this returns, everything accepted is delivered or durable."""

    def summary(self) -> str | None:
        """One line for the end of a run (counts), or None."""
        return None

    def counts(self) -> dict[str, int]:
        """The sink's own counts for the summary's JSON, where they say more than the pipeline's
        outcomes (the Splunk sink: spooled vs delivered to HEC); keys as in its summary()."""
        return {}

    def stopping(self) -> None:  # noqa: B027 - optional hook
        """A stop was asked (SIGTERM/SIGINT); called by the runner before the drain begins, so a
        sink can bound how long it keeps delivering from that moment (``--drain-timeout``)."""


class Source(abc.ABC):
    """Base class of every source; see the module docstring for the contract."""

    name: str = "source"

    @abc.abstractmethod
    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Produce batches until the input ends (``--once``, EOF) or ``stop()`` is called."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Ask ``run()`` to finish soon: flush held state, stop reading, return."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """After the pipeline drained: commit final checkpoints, release resources."""


def sink_labels(sinks: Sequence[Sink]) -> list[str]:
    """Each sink's name for outcomes and the summary: its ``name``, or, for sinks sharing a name,
    ``name:DIR`` (a sink with a ``directory``) or ``name#k`` — one key per instance."""
    names = [s.name for s in sinks]
    labels = []
    for k, sink in enumerate(sinks):
        label = sink.name
        if names.count(label) > 1:
            where = getattr(sink, "directory", None)
            label = f"{label}:{where}" if isinstance(where, str) else f"{label}#{k + 1}"
        labels.append(label)
    return labels


def batch_bytes(batch: Batch) -> int:
    """A batch's size as the buffers count it: its NDJSON bytes (encoded once, then cached)."""
    return sum(map(len, batch.encoded())) + len(batch)
