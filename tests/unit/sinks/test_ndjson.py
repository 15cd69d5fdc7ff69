"""sinks/ndjson.py: records as NDJSON on a descriptor — whole batches, records over the pipe-ack
limit cut and flagged, a non-blocking pipe drained instead of failing, broken pipes and full
disks as one-line sink errors. (``collect | sink`` acks: tests/e2e/test_pipe_acks.py.)"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import threading
from pathlib import Path

import orjson
import pytest

from logpipe import diagnostics, pipeack
from logpipe.errors import DiskFullError, SinkError
from logpipe.pipeline import Batch, Outcome
from logpipe.sinks.ndjson import NdjsonSink, write_all


def _write(sink: NdjsonSink, *batches: Batch) -> list[Outcome]:
    async def go() -> list[Outcome]:
        await sink.start()
        out = [await sink.write(b) for b in batches]  # no acks here: plain outcomes
        await sink.close()
        return out  # type: ignore[return-value]

    return asyncio.run(go())


def test_batches_are_written_whole_and_delivered(tmp_path: Path) -> None:
    """Each batch's records reach the descriptor as NDJSON, in order, and count as delivered."""
    path = tmp_path / "out.ndjson"
    with open(path, "wb") as f:
        outcomes = _write(NdjsonSink(fd=f.fileno()),
                          Batch([{"message": "a", "n": 1}, {"message": "b"}]),
                          Batch([{"message": "c", "nested": {"x": [1, 2]}}]))
    assert outcomes == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert [json.loads(x) for x in path.read_bytes().splitlines()] == [
        {"message": "a", "n": 1}, {"message": "b"}, {"message": "c", "nested": {"x": [1, 2]}}]


def test_a_record_over_the_limit_is_cut_flagged_and_said(tmp_path: Path) -> None:
    """A record longer than ``pipeack.RECORD_MAX_BYTES`` encoded is cut to fit, marked
    ``truncated: true``, counted in ``cut`` and warned about once; its neighbours are untouched."""
    path = tmp_path / "out.ndjson"
    huge = {"message": "x" * (pipeack.RECORD_MAX_BYTES + 10), "service": "api"}
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        with open(path, "wb") as f:
            sink = NdjsonSink(fd=f.fileno())
            _write(sink, Batch([{"message": "small"}, huge, {"message": "after"}]))
    finally:
        diagnostics.set_stream(None)
    raw = path.read_bytes().splitlines()
    small, cut, after = (orjson.loads(x) for x in raw)
    assert small == {"message": "small"} and after == {"message": "after"}
    assert cut["truncated"] is True and cut["service"] == "api"
    assert len(raw[1]) <= pipeack.RECORD_MAX_BYTES and sink.cut == 1
    assert b"cut to fit" in buf.getvalue()


def test_write_all_waits_on_a_non_blocking_pipe() -> None:
    """A non-blocking pipe that fills (Node parents leave shared pipes so) is waited on, not
    failed: 1 MiB goes through a 64 KiB pipe whole while a reader drains it."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    data = bytes(range(256)) * 4096
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        write_all(w, data, "ndjson")
    finally:
        os.close(w)
        reader.join(timeout=30)
        os.close(r)
    assert bytes(got) == data


def test_broken_pipe_and_full_disk_are_one_line_sink_errors(small_tmpfs: Path) -> None:
    """No reader left: SinkError "the reader of the output went away"; ENOSPC: DiskFullError
    (a real 1 MiB tmpfs filled up)."""
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(SinkError, match="reader of the output went away"):
            write_all(w, b"x\n", "ndjson")
    finally:
        os.close(w)
    with open(small_tmpfs / "out", "wb") as f, \
            pytest.raises(DiskFullError, match="ndjson: disk full while writing output"):
        write_all(f.fileno(), b"y" * (2 << 20), "ndjson")
