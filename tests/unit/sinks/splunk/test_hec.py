"""Unit tests of the pure HEC protocol (logpipe/sinks/splunk/_hec.py): envelopes, classify, backoff, acks."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logpipe import record
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk._hec import Action, Backoff, EnvelopeEncoder, classify


def _decode(b: bytes) -> dict:
    return orjson.loads(b)


# --- envelopes ----------------------------------------------------------------------------------
def test_envelope_has_exactly_the_hec_keys_and_flat_string_fields() -> None:
    """An envelope carries only time/host/source/sourcetype/index/fields/event; fields are the four
    indexed keys as strings, missing ones omitted; event is the record unchanged."""
    rec = {"time": "2026-11-23T14:01:51.123456Z", "level": "info", "message": "hi",
           "service": "api", "instance_id": "2", "host": "web1", "source": "/var/log/api.log",
           "order": {"id": 7}}
    enc = EnvelopeEncoder(index="main", default_host="me")
    env = _decode(enc.encode(rec, record.dumps(rec)))
    assert set(env) == {"time", "host", "source", "sourcetype", "index", "fields", "event"}
    assert env["fields"] == {"service": "api", "instance_id": "2", "level": "info"}
    assert env["event"] == rec
    assert env["host"] == "web1"
    assert env["source"] == "/var/log/api.log"
    assert env["sourcetype"] == "_json"
    assert env["index"] == "main"


def test_envelope_time_is_exact_epoch_seconds_with_microseconds() -> None:
    """The canonical RFC 3339 time becomes exactly <seconds>.<6 digits> (no float rounding)."""
    enc = EnvelopeEncoder()
    raw = enc.encode({"time": "2026-11-23T14:01:51.123456Z"})
    assert b'"time":1795442511.123456' in raw
    expected = datetime(2026, 11, 23, 14, 1, 51, tzinfo=UTC).timestamp()
    assert int(expected) == 1795442511


def test_envelope_time_other_forms_and_missing() -> None:
    """Non-canonical times go through record.to_epoch; a record without time gets now."""
    enc = EnvelopeEncoder()
    assert _decode(enc.encode({"time": 1700000000123}))["time"] == pytest.approx(1700000000.123)
    assert _decode(enc.encode({"time": "2026-11-23T14:01:51+01:00"}))["time"] == pytest.approx(
        datetime(2026, 11, 23, 13, 1, 51, tzinfo=UTC).timestamp())
    before = datetime.now(UTC).timestamp()
    t = _decode(enc.encode({"message": "x"}))["time"]
    assert before - 1 <= t <= datetime.now(UTC).timestamp() + 1
    t = _decode(enc.encode({"time": "garbage"}))["time"]
    assert before - 1 <= t <= datetime.now(UTC).timestamp() + 1


def test_envelope_overrides_and_defaults() -> None:
    """--host/--source override the record; else the record's host/source; else this host and the
    service; no sourcetype/index keys when unset."""
    enc = EnvelopeEncoder(host="H", source="S")
    env = _decode(enc.encode({"host": "h", "source": "s", "service": "api"}))
    assert (env["host"], env["source"]) == ("H", "S")
    enc = EnvelopeEncoder(sourcetype=None, default_host="thishost")
    env = _decode(enc.encode({"service": "api"}))
    assert (env["host"], env["source"]) == ("thishost", "api")
    assert "sourcetype" not in env and "index" not in env
    env = _decode(enc.encode({"message": "m", "host": 5}))
    assert env["host"] == "thishost" and "source" not in env and "fields" not in env


def test_fields_never_nested() -> None:
    """Non-string indexed values are stringified (numbers) or omitted (objects), never nested."""
    enc = EnvelopeEncoder()
    env = _decode(enc.encode({"instance_id": 3, "feature": {"a": 1}, "level": True, "service": ""}))
    assert env["fields"] == {"instance_id": "3"}


def test_encode_many_reuses_lines_and_keeps_order() -> None:
    """encode_many embeds each record's own NDJSON bytes as event, in order."""
    recs = [{"message": f"m{i}", "service": "s"} for i in range(5)]
    lines = [record.dumps(r) for r in recs]
    out = EnvelopeEncoder().encode_many(recs, lines)
    assert [_decode(b)["event"]["message"] for b in out] == [f"m{i}" for i in range(5)]
    body = _hec.join_body(out)
    assert body == b"\n".join(out) and body.count(b"}\n{") == 4


@given(st.dictionaries(st.text(min_size=1, max_size=8),
                       st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.none(),
                                 st.booleans(), st.floats(allow_nan=False, allow_infinity=False)),
                       max_size=8))
def test_any_record_gives_a_valid_envelope(rec: dict) -> None:
    """Whatever a record holds, its envelope is valid JSON with a numeric time, a non-blank object
    event and flat string fields."""
    raw = EnvelopeEncoder().encode(rec, record.dumps(rec))
    env = _decode(raw)
    assert isinstance(env["time"], float | int) and env["time"] >= 0
    assert isinstance(env["event"], dict)
    assert all(isinstance(v, str) for v in env.get("fields", {}).values())
    assert set(env) <= {"time", "host", "source", "sourcetype", "index", "fields", "event"}


def _reference_envelope(enc: EnvelopeEncoder, rec: dict, line: bytes) -> dict:
    """The envelope as a plain dict (``event`` an orjson Fragment of ``line``): the reference
    form the fast encoder must reproduce byte for byte."""
    meta = enc.metadata(rec)
    env: dict = {}
    if "source" in meta:
        env["source"] = meta.pop("source")
    env["time"] = orjson.Fragment(enc.epoch_text(rec.get(record.TIME)))
    env.update(meta)
    env["event"] = orjson.Fragment(line)
    return env


@given(st.lists(st.fixed_dictionaries({}, optional={
    "time": st.one_of(st.just("2026-11-23T14:01:51.123456Z"), st.just("2026-11-23T14:01:51.12345xZ"),
                      st.integers(0, 2**40), st.text(max_size=27)),
    "host": st.one_of(st.text(max_size=5), st.integers(0, 3), st.booleans(), st.none()),
    "source": st.one_of(st.text(max_size=5), st.none()),
    "service": st.one_of(st.sampled_from(["api", "", "w"]), st.integers(0, 2)),
    "feature": st.one_of(st.text(max_size=3), st.floats(allow_nan=False, allow_infinity=False)),
    "instance_id": st.one_of(st.sampled_from(["0", "1"]), st.integers(0, 2), st.booleans(),
                             st.just(1.0)),
    "level": st.sampled_from(["info", "error"]),
}), max_size=12))
def test_fast_encoding_equals_the_reference_envelope(recs: list[dict]) -> None:
    """encode_many (cached metadata, byte splicing) produces exactly the JSON of the reference
    envelope dict for every record, whatever types its keys hold (1, 1.0 and True differ)."""
    enc = EnvelopeEncoder(index="i", default_host="me")
    lines = [record.dumps(r) for r in recs]
    fast = enc.encode_many(recs, lines) + enc.encode_many(recs, lines)  # second pass: cache hits
    ref = [orjson.dumps(_reference_envelope(enc, r, ln)) for r, ln in zip(recs, lines, strict=True)] * 2
    if any("time" not in r or record.to_epoch(r["time"]) is None for r in recs):
        # "now" differs between the two calls: compare all but the time
        fast = [orjson.dumps({**orjson.loads(f), "time": 0}) for f in fast]
        ref = [orjson.dumps({**orjson.loads(f), "time": 0}) for f in ref]
    assert fast == ref


# --- classify -----------------------------------------------------------------------------------
def _body(**kw: object) -> bytes:
    return orjson.dumps(kw)


def test_success_with_and_without_ack_id() -> None:
    """200 code 0 is success; the ackId is carried when present."""
    v = classify(200, _body(text="Success", code=0))
    assert v.action is Action.SUCCESS and v.ack_id is None
    v = classify(200, _body(text="Success", code=0, ackId=7))
    assert v.action is Action.SUCCESS and v.ack_id == 7


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_transient_statuses_retry(status: int) -> None:
    """5xx (but 501), 408 and 429 are retried (Vector/Fluent Bit consensus)."""
    assert classify(status, b"").action is Action.RETRY


def test_server_busy_and_retry_after() -> None:
    """503 code 9 retries and Retry-After (seconds or HTTP date) is parsed."""
    v = classify(503, _body(text="Server is busy", code=9), retry_after="3")
    assert (v.action, v.code, v.retry_after) == (Action.RETRY, 9, 3.0)
    future = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 20, UTC)
    v = classify(429, b"", retry_after=format_datetime(future, usegmt=True))
    assert v.retry_after is not None and 15 <= v.retry_after <= 21
    assert _hec.parse_retry_after("99999") == _hec.RETRY_AFTER_MAX
    assert _hec.parse_retry_after("soon") is None


def test_html_bodies_from_load_balancers_are_survived() -> None:
    """A 502 with an HTML page retries; its text is reduced to a short plain line."""
    html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad\nGateway</h1></body></html>"
    v = classify(502, html)
    assert v.action is Action.RETRY and v.code is None
    assert "502 Bad Gateway" in v.text and "<" not in v.text and "\n" not in v.text
    assert classify(400, html).action is Action.CONFIG


def test_413_splits_and_bad_event_isolated() -> None:
    """413 splits; 400 codes 6/12/13/15 name the bad event's index."""
    assert classify(413, b"").action is Action.SPLIT
    for code in (6, 12, 13, 15):
        v = classify(400, _body(text="Invalid data format", code=code, **{"invalid-event-number": 3}))
        assert (v.action, v.event_index, v.code) == (Action.BAD_EVENT, 3, code)
    v = classify(400, _body(text="Invalid data format", code=6))
    assert v.action is Action.BAD_EVENT and v.event_index is None


@pytest.mark.parametrize(("status", "code"), [(401, 2), (401, 3), (403, 1), (403, 4), (400, 7),
                                              (400, 10), (400, 11), (400, 14), (400, 16),
                                              (404, 404), (405, None), (501, None), (415, None),
                                              (301, None)])
def test_config_errors_stop(status: int, code: int | None) -> None:
    """Token, index, channel, ack-disabled and wrong-URL replies are config errors with a hint."""
    v = classify(status, _body(text="x", code=code) if code is not None else b"")
    assert v.action is Action.CONFIG
    msg = _hec.config_message(v)
    assert "\n" not in msg and f"HTTP {status}" in msg


def test_no_data_is_rejected() -> None:
    """400 code 5 "No data" is not retried (that body can never index)."""
    assert classify(400, _body(text="No data", code=5)).action is Action.REJECT


# --- backoff ------------------------------------------------------------------------------------
def test_backoff_is_capped_full_jitter_and_honours_retry_after() -> None:
    """delay(n) lies in [0, min(cap, base*2^n)], and is never below Retry-After."""
    b = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    for n in range(40):
        d = b.delay(n)
        assert 0.0 <= d <= min(8.0, 0.5 * 2 ** n)
    assert b.ceiling(100) == 8.0
    assert b.delay(0, retry_after=5.0) >= 5.0
    delays = [b.delay(6) for _ in range(200)]
    assert min(delays) < 2.0 < 6.0 < max(delays)  # jitter spreads over the window


# --- acks ---------------------------------------------------------------------------------------
def test_ack_query_and_reply() -> None:
    """The ack query lists ids; the reply's string keys become ints and only true counts."""
    assert orjson.loads(_hec.ack_query([5, 1, 1])) == {"acks": [1, 5]}
    assert _hec.parse_ack_reply(b'{"acks":{"0":true,"1":false,"2":"true"}}') == {0: True, 1: False,
                                                                                   2: False}
    with pytest.raises(ValueError, match="acks"):
        _hec.parse_ack_reply(b'{"text":"x"}')
    with pytest.raises(ValueError, match="JSON"):
        _hec.parse_ack_reply(b"<html>")


@given(st.one_of(st.none(), st.text(max_size=30)), st.text(max_size=10))
def test_source_key_finds_the_source_without_parsing(source: str | None, other: str) -> None:
    """source_key returns the raw JSON text of the envelope's source whatever characters it holds
    (quotes, backslashes, the text ',"time":' itself), and b"" when there is none."""
    rec = {"source": source, "message": other, "x": '","time":'}
    env = EnvelopeEncoder().encode(rec)
    expected = orjson.dumps(source)[1:-1] if source else b""
    assert _hec.source_key(env) == expected


def test_grouped_encoding_keeps_each_source_in_order_and_matches_source_key() -> None:
    """encode_grouped puts each source's envelopes in one group, in record order, and the group
    id equals source_group(source_key(envelope)) — how a resent envelope finds its lane."""
    recs = [{"source": s, "n": i} for i, s in enumerate("abacab\"c")]
    groups = EnvelopeEncoder().encode_grouped(recs, [record.dumps(r) for r in recs])
    assert sorted(len(v) for v in groups.values()) == [1, 2, 2, 3]
    for gid, envs in groups.items():
        ns = [_decode(e)["event"]["n"] for e in envs]
        assert ns == sorted(ns)
        assert {_decode(e)["source"] for e in envs} == {recs[ns[0]]["source"]}
        assert all(_hec.source_group(_hec.source_key(e)) == gid for e in envs)
