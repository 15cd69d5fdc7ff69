"""record.py: normalisation of what other loggers write (SPEC §1)."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from logpipe import record


def test_pino_line_is_normalised() -> None:
    """pino's msg, numeric level and epoch-ms time become message, a level name and RFC 3339."""
    rec = record.normalise(record.parse_line(b'{"msg":"hi","level":40,"time":1700000000123}'))
    assert rec == {"message": "hi", "level": "warning", "time": "2023-11-14T22:13:20.123000Z"}


def test_structlog_default_event_and_iso_timestamp() -> None:
    """structlog's event/timestamp and logging's levelname are renamed."""
    rec = record.normalise(record.parse_line(
        b'{"event":"x","timestamp":"2026-01-02T03:04:05+01:00","levelname":"ERROR"}'))
    assert rec == {"message": "x", "time": "2026-01-02T02:04:05.000000Z", "level": "error"}


def test_existing_keys_are_never_overwritten() -> None:
    """A line's own message/service win over aliases and defaults."""
    rec = record.normalise({"message": "m", "msg": "other", "service": "api"},
                           {"service": "file-name", "level": "info"})
    assert rec == {"message": "m", "msg": "other", "service": "api", "level": "info"}


def test_plain_and_invalid_utf8_lines() -> None:
    """Non-JSON becomes {"message": …}; invalid bytes are replaced, never fatal."""
    assert record.parse_line(b"hello \xff world") == {"message": "hello \ufffd world"}
    assert record.parse_line(b"[1,2]") == {"message": "[1,2]"}
    assert record.parse_line(b'{"a": "\xff"}') == {"a": "\ufffd"}


def test_epoch_magnitudes() -> None:
    """Seconds, ms, µs and ns epochs land on the same instant."""
    for v in (1700000000.5, 1700000000500, 1700000000500000, 1700000000500000000):
        assert record.normalise_time(v) == "2023-11-14T22:13:20.500000Z"


def test_normaliser_fast_path_keeps_bytes_and_fills_missing() -> None:
    """A clean JSON line keeps its bytes; missing keys are spliced in; output parses equal."""
    norm = record.LineNormaliser({"source": "a.log", "service": "a"})
    line = b'{"message":"m","level":"error","time":"2026-11-23T14:01:51.123456Z","service":"b"}'
    rec, enc = norm(line, "2026-11-23T00:00:00.000000Z")  # type: ignore[misc]
    assert enc.startswith(line[:-1])
    assert orjson.loads(enc) == rec
    assert rec["service"] == "b" and rec["source"] == "a.log"


def test_normaliser_drops_own_diagnostics_and_blank_lines() -> None:
    """logpipe's own diagnostic lines and empty lines never become records."""
    norm = record.LineNormaliser({})
    assert norm(b'{"message":"x","logpipe":"diagnostic"}', record.now()) is None
    assert norm(b"   ", record.now()) is None


@given(st.binary(max_size=300))
def test_normaliser_never_raises_and_emits_valid_json(data: bytes) -> None:
    """Whatever bytes arrive, the result is one JSON object line with a message or the line's keys."""
    norm = record.LineNormaliser({"source": "x"}, plain_level="error")
    line = data.replace(b"\n", b"")
    res = norm(line, record.now())
    if res is None:
        return
    rec, enc = res
    assert b"\n" not in enc
    assert orjson.loads(enc) == orjson.loads(orjson.dumps(rec))
    assert "time" in rec and "level" in rec


def test_helpers_importable() -> None:
    """tests.helpers is importable under --import-mode=importlib (shared by every test module)."""
    from tests.helpers import LOGPIPE, wait_for

    assert wait_for(lambda: 1) == 1
    assert LOGPIPE[-1] == "logpipe"


def test_dumps_never_raises_on_huge_integers_or_deep_nesting() -> None:
    """Integers beyond 64 bits are written exactly, as JSON numbers; a value nested too deep for
    orjson becomes a repr string; the other fields keep their JSON types."""
    deep: list[object] = []
    cur = deep
    for _ in range(300):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    out = json.loads(record.dumps({"big": 2**80, "nested": {"n": 2**70}, "deep": deep, "ok": 1}))
    assert out["big"] == 2**80
    assert out["nested"] == {"n": 2**70}
    assert isinstance(out["deep"], str)
    assert out["ok"] == 1
