"""``logpipe sink`` joins tracebacks on stdin (a joiner) and acknowledges a pipe (pipe acks): an
ack never covers lines the joiner still holds."""

from __future__ import annotations

import os

from logpipe.pipeline import Batch
from logpipe.sources.stdin import StdinSource
from tests._pipeline_helpers import arun


class _Acker:
    """Records acks beside the records emitted, in order (the pipe-ack reader's interface)."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log

    def ack(self, consumed: int) -> None:
        self.log.append(("ack", consumed))

    def close(self, eof: bool) -> None:
        self.log.append(("close", eof))


def test_no_ack_covers_a_held_traceback() -> None:
    """A JSON line, then a traceback the joiner holds until EOF: the JSON record goes out, no
    ack is published while the traceback is held (an ack of everything read would let a
    collector commit lines the sink has not made durable), and after the joined traceback is
    emitted the ack covers every byte."""
    data = (b'{"message": "ok"}\nTraceback (most recent call last):\n  File "x.py", line 1\n'
            b"KeyError: 'k'\n")
    log: list[tuple[str, object]] = []
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)

    async def emit(batch: Batch) -> None:
        if batch.records:
            log.append(("records", [rec["message"] for rec in batch.records]))
        if batch.ack is not None:
            batch.ack()

    async def scenario() -> None:
        src = StdinSource(fd=r, multiline=True, acks=_Acker(log))  # type: ignore[arg-type]
        await src.run(emit)

    try:
        arun(scenario())
    finally:
        os.close(r)
    acks = [v for k, v in log if k == "ack" and v]
    first_ack = next(i for i, (k, v) in enumerate(log) if k == "ack" and v)
    tb_at = next(i for i, (k, v) in enumerate(log) if k == "records" and "KeyError" in str(v))
    assert log[0] == ("records", ["ok"])
    assert tb_at < first_ack and acks[-1] == len(data)
