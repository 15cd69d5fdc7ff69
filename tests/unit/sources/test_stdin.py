"""StdinSource in-process: pipes and regular files, over-long lines, and stop() taking nothing
more from the pipe."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from logpipe.pipeline import Batch
from logpipe.sources._lines import TRUNCATION_MARKER
from logpipe.sources.stdin import StdinSource
from tests._pipeline_helpers import arun

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)


async def collect(src: StdinSource) -> list[Batch]:
    """Run ``src`` to its end, keeping every emitted batch."""
    batches: list[Batch] = []

    async def emit(batch: Batch) -> None:
        batches.append(batch)

    await src.run(emit)
    return batches


def messages(batches: list[Batch]) -> list[str]:
    """The records' messages, in order."""
    return [r["message"] for b in batches for r in b.records]


def test_regular_file_as_stdin_is_read_to_the_end(tmp_path: Path) -> None:
    """``logpipe sink < file`` (unpollable by epoll) reads every line, partial last one too, and
    each batch carries its NDJSON lines."""
    path = tmp_path / "in.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(5000)) + b"tail")
    fd = os.open(path, os.O_RDONLY)
    try:
        batches = arun(collect(StdinSource(fd=fd, service="svc")))
    finally:
        os.close(fd)
    assert messages(batches) == [f"line {i}" for i in range(5000)] + ["tail"]
    assert all(b.lines is not None and len(b.lines) == len(b.records) for b in batches)
    assert all(r["service"] == "svc" and r["source"] == "stdin" for b in batches for r in b.records)


def test_dev_null_is_an_empty_input() -> None:
    """/dev/null as stdin ends at once with no records."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert arun(collect(StdinSource(fd=fd))) == []
    finally:
        os.close(fd)


def test_over_long_line_is_cut_and_flagged_and_reading_goes_on() -> None:
    """A line over the limit is cut with the marker and ``truncated: true``; the lines after it
    still arrive, and a held over-long last line is flagged too."""
    r, w = os.pipe()
    os.write(w, b"a" * 5000 + b"\nshort\n" + b"b" * 3000)
    os.close(w)
    try:
        recs = [rec for b in arun(collect(StdinSource(fd=r, max_line=1024))) for rec in b.records]
    finally:
        os.close(r)
    assert [rec["message"] for rec in recs] == [
        "a" * 1024 + TRUNCATION_MARKER.decode(), "short", "b" * 1024 + TRUNCATION_MARKER.decode()]
    assert [rec.get("truncated") for rec in recs] == [True, None, True]


def test_stop_takes_nothing_more_from_the_pipe() -> None:
    """After stop() the source returns without reading: bytes still in the pipe stay there for
    the next reader (multilog's rule), and what it had read was emitted."""
    r, w = os.pipe()

    async def scenario() -> list[str]:
        src = StdinSource(fd=r)
        got: list[str] = []

        async def emit(batch: Batch) -> None:
            got.extend(rec["message"] for rec in batch.records)
            if got == ["first"]:
                src.stop()
                os.write(w, b"second\n")  # arrives after stop(): must stay in the pipe

        os.write(w, b"first\n")
        await asyncio.wait_for(src.run(emit), 10)
        return got

    try:
        assert arun(scenario()) == ["first"]
        os.set_blocking(r, False)
        assert os.read(r, 100) == b"second\n"
    finally:
        os.close(r)
        os.close(w)


def test_stop_mid_line_reads_on_to_the_newline() -> None:
    """Stopped while holding half a line, the source reads on until that line's newline (and
    no further than the data already waiting), so the record is whole and not split with the
    next reader — multilog's behaviour on TERM."""
    r, w = os.pipe()

    async def scenario() -> list[str]:
        src = StdinSource(fd=r)
        got: list[str] = []
        loop = asyncio.get_running_loop()

        async def emit(batch: Batch) -> None:
            got.extend(rec["message"] for rec in batch.records)
            if got == ["first"]:
                src.stop()
                loop.call_later(0.2, os.write, w, b"ond half\n")  # the line's end comes later

        os.write(w, b"first\nsec")
        await asyncio.wait_for(src.run(emit), 10)
        return got

    try:
        assert arun(scenario()) == ["first", "second half"]
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 100)  # nothing left behind, nothing read beyond
    finally:
        os.close(r)
        os.close(w)


def test_multiline_joins_only_when_asked_and_cut_lines_stay_flagged() -> None:
    """``multiline=True`` (collect -) joins a traceback and an indented continuation; a cut
    over-long line is never joined and keeps ``truncated: true``. Without it (``logpipe
    sink``) every physical line stays its own record."""
    data = (b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
            b"KeyError: 'k'\nwrapped\n  continued\n" + b"c" * 3000 + b"\n  indented after cut\n")
    got: dict[bool, list[dict[str, object]]] = {}
    for multiline in (True, False):
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        try:
            src = StdinSource(fd=r, max_line=1024, multiline=multiline)
            got[multiline] = [rec for b in arun(collect(src)) for rec in b.records]
        finally:
            os.close(r)
    cut = "c" * 1024 + TRUNCATION_MARKER.decode()
    assert [rec["message"] for rec in got[True]] == [
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'k'",
        "wrapped\n  continued", cut, "  indented after cut"]
    assert [rec.get("truncated") for rec in got[True]] == [None, None, True, None]
    assert [rec["message"] for rec in got[False]] == [
        x.decode() if not x.startswith(b"ccc") else cut for x in data.splitlines()]
