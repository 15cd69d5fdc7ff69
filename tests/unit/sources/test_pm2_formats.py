"""PM2's ``--time`` prefix and ``log_type: json`` chunk records, undone byte for byte."""

from __future__ import annotations

import time

import orjson
import pytest

from logpipe import record
from logpipe.sources.pm2_formats import DateFormat, JsonChunkDecoder, PrefixDecoder


def _local(y: int, mo: int, d: int, h: int, mi: int, s: int) -> str:
    return record.format_time(time.mktime((y, mo, d, h, mi, s, 0, 0, -1)))


def _all(out: list[tuple[bytes, str | None]]) -> bytes:
    return b"".join(seg for seg, _ in out)


def test_default_prefix_stripped_and_read_as_local_time() -> None:
    """``--time`` (``YYYY-MM-DDTHH:mm:ss``): each raw line loses ``<date>: ``; the date is read
    in the host's local time (PM2 writes no zone); lines of one second form one segment."""
    dec = PrefixDecoder(None)
    raw = (b"2026-12-04T15:24:24: hello\n2026-12-04T15:24:24: {\"message\": \"x\"}\n"
           b"2026-12-04T15:24:25: Traceback (most recent call last):\n")
    out = dec.feed(raw)
    assert out == [(b'hello\n{"message": "x"}\n', _local(2026, 12, 4, 15, 24, 24)),
                   (b"Traceback (most recent call last):\n", _local(2026, 12, 4, 15, 24, 25))]
    assert dec.last_time == _local(2026, 12, 4, 15, 24, 25)  # for a group the joiner holds


def test_prefix_partial_line_held_and_offsets_map_to_raw_bytes() -> None:
    """A raw line split across reads is held until its newline; every decoded line end maps
    back to the raw offset just after its raw line (checkpoints stay in file bytes), starting
    from the offset the file was opened at."""
    dec = PrefixDecoder("YYYY-MM-DD HH:mm:ss", start=100)
    a = b"2026-01-02 03:04:05: one\n2026-01-02 03:04:05: tw"
    assert _all(dec.feed(a)) == b"one\n"
    assert _all(dec.feed(b"o\n")) == b"two\n"
    assert dec.raw_offset(100 + 4) == 100 + 25
    assert dec.raw_offset(100 + 8) == 100 + len(a) + 2
    assert dec.raw_offset(100) == 100


def test_line_without_prefix_passes_through() -> None:
    """A line without PM2's prefix (written before ``--time`` was turned on) is kept as it is,
    with no PM2 time."""
    dec = PrefixDecoder(None)
    assert dec.feed(b"plain old line\n") == [(b"plain old line\n", None)]


@pytest.mark.parametrize(("pattern", "prefix", "want"), [
    ("YYYY-MM-DD HH:mm Z", "2026-12-04 15:24 +02:00", "2026-12-04T13:24:00.000000Z"),
    ("DD/MM/YYYY HH:mm:ss.SSS ZZ", "04/12/2026 15:24:24.250 -0100", "2026-12-04T16:24:24.250000Z"),
    ("[at] X", "at 1796397864", record.format_time(1796397864)),
    ("MMM D, YYYY h:mm:ss A", "Dec 4, 2026 3:24:24 PM", None),
])
def test_custom_patterns(pattern: str, prefix: str, want: str | None) -> None:
    """Custom dayjs patterns (literal brackets, 12-hour clocks, month names, zones, epoch)
    match PM2's prefix and give its time; without a zone it is local time."""
    dec = PrefixDecoder(pattern)
    out = dec.feed(prefix.encode() + b": body\n")
    assert out[0][0] == b"body\n"
    assert out[0][1] == (want or _local(2026, 12, 4, 15, 24, 24))


def test_date_format_cache_is_per_prefix() -> None:
    """Two prefixes in a row give two different times (the one-entry cache keys on the text)."""
    fmt = DateFormat("HH:mm:ss")
    m1 = fmt.prefix.match(b"10:00:00: a")
    m2 = fmt.prefix.match(b"10:00:01: b")
    assert m1 and m2 and fmt.time_of(m1) != fmt.time_of(m2)


def _chunk(msg: str, ts: str = "2026-12-04T15:24:24.993Z", typ: str = "out") -> bytes:
    return orjson.dumps({"message": msg, "timestamp": ts, "type": typ, "process_id": 2,
                         "app_name": "j"}) + b"\n"


def test_json_chunks_rejoined_into_the_apps_byte_stream() -> None:
    """``log_type: json``: chunks holding part of a line, or several lines, are unwrapped and
    concatenated, so lines split only where the app wrote newlines (a traceback's lines and a
    logger JSON line come back whole); the ISO timestamp (UTC) is the segment's time."""
    dec = JsonChunkDecoder(None)
    raw = (_chunk('{"level": "warning", "mess') + _chunk('age": "hi"}\nTraceback (most recent')
           + _chunk(' call last):\n  File "x.py", line 1\nValueError: boom\n'))
    out = dec.feed(raw)
    assert _all(out) == (b'{"level": "warning", "message": "hi"}\nTraceback (most recent call '
                         b'last):\n  File "x.py", line 1\nValueError: boom\n')
    assert {t for _, t in out} == {"2026-12-04T15:24:24.993000Z"}


def test_json_chunk_offsets_never_skip_a_partial_line() -> None:
    """A decoded offset at a chunk's end maps to the raw end of that chunk record; an offset
    inside a chunk maps to that chunk's start (re-read after a restart, never skipped)."""
    dec = JsonChunkDecoder(None)
    c1, c2 = _chunk("a\nb"), _chunk("c\n")
    dec.feed(c1 + c2)
    assert dec.raw_offset(len(b"a\nbc\n")) == len(c1) + len(c2)
    assert dec.raw_offset(len(b"a\n")) == 0


def test_json_chunk_with_custom_date_format_and_foreign_lines() -> None:
    """With ``log_date_format`` PM2 formats the chunk's timestamp with it (local time); a raw
    line that is not a PM2 chunk record passes through as a line of its own."""
    dec = JsonChunkDecoder("YYYY-MM-DD HH:mm:ss")
    out = dec.feed(_chunk("x\n", ts="2026-12-04 15:24:24") + b"not a chunk\n")
    assert out == [(b"x\n", _local(2026, 12, 4, 15, 24, 24)), (b"not a chunk\n", None)]
