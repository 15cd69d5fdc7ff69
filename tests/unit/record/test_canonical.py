"""record._canonical and LineNormaliser.lines: canonical lines keep their bytes and build no
dict; every other line gets exactly what the general path gives it."""

from __future__ import annotations

import json

import orjson

from logpipe import record
from logpipe.record import Head, LineNormaliser, NormalisedLines
from logpipe.record._rules import NEEDS_WORK

RECEIVED = "2026-12-04T10:00:00.000000Z"
DEFAULTS = {"source": "/var/log/api-0.log", "service": "api", "host": "web-1", "pm_id": 0,
            "instance_id": "0"}
LOGGER_LINE = (b'{"time":"2026-12-04T09:59:59.123456Z","level":"info","message":"order placed",'
               b'"service":"api","instance_id":"0","host":"web-1","pid":42,"order_id":7}')

#: lines of every shape the general path handles differently from a canonical line
ODD_LINES = [
    b"", b"   ", b"plain text", b"ERROR:shop.payments:payment failed", b"[1,2]", b'"str"',
    b"{}", b"{ }", b' {"a":1}', b'{"a":1}\r', b'{"a":1} ', b'{"a":1}{"b":2}', b'{"a":',
    b'{"time":null}', b'{"level":null}', b'{"level":"INFO"}', b'{"level":30}',
    b'{"time":1700000000000}', b'{"time":"2026-13-04T09:59:59.123456Z"}',
    b'{"time":"2026-12-04T09:59:59Z"}', b'{"time":"2026-12-04T09:59:59.123456+00:00"}',
    b'{"a":"\xff"}', b'{"\xff":1}', b'{"level":"\xff"}', b'{"a":"\\ud800"}',
    b'{"a":123456789012345678901234567890}', b'{"a":NaN}', b'{"logpipe":"diagnostic","m":1}',
    b'{"service":["x"],"host":{"a":1},"instance_id":7,"source":null}',
    b'{"time":"2026-12-04T09:59:59.123456Z","time":"later"}', b'{"level":"bogus","level":"info"}',
    b'{"a":"caf\xc3\xa9","time":"2026-12-04T09:59:59.123456Z"}', b'{"a":"\\u00e9"}',
    *(orjson.dumps({key: "x", "message": "m"}) for key in sorted(NEEDS_WORK)),
    *(orjson.dumps({key: None}) for key in sorted(NEEDS_WORK)),
    LOGGER_LINE,
]


def test_canonical_line_keeps_its_bytes_and_builds_no_dict() -> None:
    """A line of logpipe's own logger comes out as its own bytes with only the missing defaults
    (source, pm_id) appended; what the check read is a Head, not a dict."""
    norm = LineNormaliser(DEFAULTS).lines([LOGGER_LINE], RECEIVED)
    assert norm.lines == [LOGGER_LINE[:-1] + b',"source":"/var/log/api-0.log","pm_id":0}']
    (head,) = norm.heads
    assert isinstance(head, Head)
    assert (head.time, head.level, head.service, head.host) == (
        "2026-12-04T09:59:59.123456Z", "info", "api", "web-1")
    assert head.source is record.UNSET  # filled in: norm.fill says with what
    assert norm.fill["source"] == "/var/log/api-0.log" and norm.fill["time"] == RECEIVED


def test_every_other_shape_gets_what_the_general_path_gives() -> None:
    """For each line the canonical check must refuse (every alias key, present even as null;
    odd times and levels; whitespace around the object; invalid UTF-8; lone surrogates; NaN;
    logpipe's own diagnostics; blank lines), lines() gives the same NDJSON and the same records
    as the general path (one orjson.loads per line and the alias table) — the check changes
    only how fast a canonical line goes, never what any line becomes."""
    for defaults in (DEFAULTS, {"source": "stdin", "host": "h"}, {}):
        general = LineNormaliser(defaults, "error")
        for line in ODD_LINES:
            # a fresh normaliser each time: reading records switches one to dicts for a while
            norm = LineNormaliser(defaults, "error").lines([line], RECEIVED)
            recs, outs = general._general([line], RECEIVED)
            assert norm.lines == outs, line
            assert norm.records() == recs, line
        # and mixed in one batch among canonical lines (kept as bytes), in order
        mixed = [x for odd in ODD_LINES for x in (LOGGER_LINE, LOGGER_LINE, LOGGER_LINE, odd)]
        norm = LineNormaliser(defaults, "error").lines(mixed, RECEIVED)
        assert isinstance(norm.heads[0], Head)
        recs, outs = general._general(mixed, RECEIVED)
        assert norm.lines == outs
        assert list(norm) == recs


def test_alias_keys_send_a_line_to_the_general_path() -> None:
    """A line holding any key of the alias table (even as null) is not taken as canonical: the
    general path renames it (its record is a dict the normaliser built)."""
    for key in sorted(NEEDS_WORK):
        for value in ("x", None, 1, {"a": 1}):
            line = orjson.dumps({"time": "2026-12-04T09:59:59.123456Z", key: value})
            norm = LineNormaliser(DEFAULTS).lines([line], RECEIVED)
            assert norm.heads == [] or isinstance(norm.heads[0], dict), line


def test_records_are_built_on_first_access_and_equal_the_general_paths() -> None:
    """The records of canonical lines are parsed from the output lines once, when asked for, and
    equal what the general path builds (its dicts, defaults and read time in)."""
    lines = [LOGGER_LINE, b'{"message":"no time, no level"}', b'{}']
    norm = LineNormaliser(DEFAULTS).lines(lines, RECEIVED)
    assert norm._records is None
    recs = norm.records()
    assert norm.records() is recs  # cached
    assert recs == LineNormaliser(DEFAULTS)._general(lines, RECEIVED)[0]
    assert recs[1]["time"] == RECEIVED and recs[1]["level"] == "info"
    assert len(norm) == 3 and norm[0]["order_id"] == 7


def test_a_mostly_non_canonical_origin_skips_the_check_for_a_while() -> None:
    """After a batch where most lines fail the check (pino's shape), the next 16 batches of that
    origin go straight to the general path (their heads are dicts), then the check is tried
    again — a canonical batch afterwards keeps its bytes."""
    n = LineNormaliser(DEFAULTS)
    pino = [b'{"level":30,"time":1700000000000,"msg":"hi %d"}' % i for i in range(8)]
    n.lines(pino, RECEIVED)
    for _ in range(16):
        norm = n.lines([LOGGER_LINE], RECEIVED)
        assert isinstance(norm.heads[0], dict)
    norm = n.lines([LOGGER_LINE], RECEIVED)
    assert isinstance(norm.heads[0], Head)


def test_reading_records_switches_the_origin_to_dicts_for_a_while() -> None:
    """When a sink reads the records of a batch kept as bytes (console, file), the next
    DICTS_FOR batches of that origin are parsed into dicts directly (heads are the dicts), then
    bytes are kept again."""
    from logpipe.record._normaliser import DICTS_FOR

    n = LineNormaliser(DEFAULTS)
    first = n.lines([LOGGER_LINE], RECEIVED)
    assert isinstance(first.heads[0], Head)
    first.records()
    for _ in range(DICTS_FOR):
        norm = n.lines([LOGGER_LINE], RECEIVED)
        assert isinstance(norm.heads[0], dict) and norm.lines == first.lines
    assert isinstance(n.lines([LOGGER_LINE], RECEIVED).heads[0], Head)


def test_numbers_beyond_float_range_are_passed_as_written() -> None:
    """The one documented difference: a number orjson refuses (beyond the float range) in a key
    the check does not read stays as written — still valid JSON — instead of becoming null;
    its record holds what the exact parser makes of it."""
    norm = LineNormaliser({}).lines([b'{"a":1.5e999}'], RECEIVED)
    assert norm.lines == [b'{"a":1.5e999,"time":"' + RECEIVED.encode() + b'","level":"info"}']
    assert json.loads(norm.lines[0])["a"] == float("inf")
    assert norm.records()[0]["a"] == float("inf")


def test_normalised_lines_compare_as_their_records() -> None:
    """A NormalisedLines is the records as a Sequence: equal to the list of its dicts."""
    norm = NormalisedLines([b'{"a":1}'], [{"a": 1}], {})
    assert norm == [{"a": 1}] and list(norm) == [{"a": 1}] and norm[0] == {"a": 1}


def test_heads_stay_aligned_with_the_lines_around_failures() -> None:
    """heads_of gives one entry per line, None exactly where the decode failed (not JSON, an
    alias key), however many failures follow one another."""
    from logpipe.record._canonical import head_decoder, heads_of

    decoder = head_decoder(NEEDS_WORK, DEFAULTS)
    assert decoder is not None
    lines = [b"{}", b"x", b'{"msg":1}', b'{"a":1}', b"y", b"z", LOGGER_LINE, b""]
    heads = heads_of(decoder.decode, lines)
    assert [h is None for h in heads] == [False, True, True, False, True, True, False, True]
    assert heads[6].service == "api"  # type: ignore[union-attr]
