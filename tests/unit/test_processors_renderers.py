"""The logger's processors (logpipe/_processors.py) and the fused fast path's equivalence to them."""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe import _emit, bindings
from logpipe import _processors as p
from logpipe.record import format_time
from tests._logger_helpers import TIME_RE, capture

# --- time -----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_timestamper_format_equals_record_format_time(epoch: float) -> None:
    """``TimeStamper.format`` (prefix cached per second) gives exactly ``record.format_time``,
    rounding and second carry included."""
    assert p.TimeStamper().format(epoch) == format_time(epoch)


def test_timestamper_now_and_processor() -> None:
    """``now()`` is RFC 3339 µs Z within the caller's clock reads; as a processor it sets ``time``
    only when the event has none."""
    s = p.TimeStamper()
    before = time.time()
    stamp = s.now()
    after = time.time()
    assert re.match(TIME_RE, stamp)
    assert format_time(before)[:19] <= stamp[:19] <= format_time(after)[:19]
    assert re.match(TIME_RE, s(None, "info", {})["time"])
    assert s(None, "info", {"time": "kept"})["time"] == "kept"


def test_level_names() -> None:
    """stdlib numbers map to the SPEC names, custom numbers to the nearest name at or below."""
    assert [p.level_name(n) for n in (5, 10, 15, 20, 25, 30, 40, 45, 50, 60)] == [
        "debug", "debug", "debug", "info", "info", "warning", "error", "error", "critical", "critical"]


def test_event_to_message() -> None:
    """structlog's ``event`` key becomes ``message``; a None event adds no message."""
    assert p.event_to_message(None, "info", {"event": "hi", "a": 1}) == {"a": 1, "message": "hi"}
    assert p.event_to_message(None, "info", {"event": None}) == {}


# --- redaction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret"),
    [("password", True), ("PASSWORD", True), ("db_password", True), ("X-Api-Key", True),
     ("api_key", True), ("apiKey", True), ("Authorization", True), ("Set-Cookie", True),
     ("access_token", True), ("client_secret", True), ("passwd", True),
     ("tokens_used", False), ("secretary", False), ("user", False), ("passwordless", False),
     (3, False)],
)
def test_is_secret(key: Any, secret: bool) -> None:
    """Secret = a listed name, or ending in ``_<name>``, case-insensitively, ``-`` read as ``_``;
    look-alikes are not."""
    assert p.Redactor().is_secret(key) is secret


def test_redact_copies_on_write_only() -> None:
    """``redact`` returns a redacted copy where needed and the very same object where nothing
    changed; the input is never modified."""
    r = p.Redactor()
    clean = {"a": [1, {"b": 2}], "c": (3,)}
    assert r.redact(clean) is clean
    data = {"user": {"name": "x", "Token": "t"}, "list": [{"secret": 1}, 2], "t": ({"passwd": 1},)}
    out = r.redact(data)
    assert out == {"user": {"name": "x", "Token": "[REDACTED]"}, "list": [{"secret": "[REDACTED]"}, 2],
                   "t": [{"passwd": "[REDACTED]"}]}
    assert data["user"]["Token"] == "t" and data["list"][0]["secret"] == 1


def test_redactor_processor_and_empty_list() -> None:
    """As a processor it redacts the event dict (never time/level/message); with no names it is
    a no-op."""
    ev = {"time": "t", "level": "info", "message": "m", "token": "x", "d": {"password": 1}}
    assert p.Redactor()(None, "info", ev) == {"time": "t", "level": "info", "message": "m",
                                             "token": "[REDACTED]", "d": {"password": "[REDACTED]"}}
    ev2 = {"token": "x"}
    assert p.Redactor(())(None, "info", ev2) == {"token": "x"}


# --- exceptions -----------------------------------------------------------------------------------


def test_exc_info_forms() -> None:
    """``exc_info`` may be True (the exception being handled), an exception, or a 3-tuple; False,
    None or True outside ``except`` give nothing."""
    try:
        raise OSError("disk")
    except OSError as exc:
        caught = exc
        current = p.exc_info_tuple(True)
        assert current is not None and current[1] is exc
        assert p.exc_info_tuple(sys.exc_info()) == current
    assert p.exc_info_tuple(caught) == (OSError, caught, caught.__traceback__)
    assert p.exc_info_tuple(True) is None and p.exc_info_tuple(False) is None
    ev = p.format_exception(None, "error", {"exc_info": caught})
    assert ev["exception"].startswith("Traceback") and ev["exception"].endswith("OSError: disk")
    assert "exc_info" not in ev


def test_format_exc_survives_broken_str() -> None:
    """An exception whose ``__str__`` raises still gives a traceback (the stdlib's placeholder)."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    text = p.format_exc((Broken, Broken(), None))
    assert "Broken" in text


# --- JSON -----------------------------------------------------------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=20)
    | st.binary(max_size=20) | st.builds(object) | st.builds(lambda: {1, 2})
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_dumps_never_raises_and_is_valid_utf8_json(value: Any) -> None:
    """Whatever it is given — lone surrogates, bytes, huge ints, NaN, sets, objects, non-str keys
    — ``dumps`` returns valid UTF-8 JSON on one line."""
    out = p.dumps({"v": value})
    out.decode("utf-8")
    assert b"\n" not in out
    assert "v" in orjson.loads(out)


def test_dumps_specific_fallbacks() -> None:
    """bytes → text with U+FFFD, surrogates → U+FFFD, ints beyond 64 bits → their decimal text,
    a cycle → still one line, a too-deep nest → a placeholder deep down."""
    cyc: list[Any] = []
    cyc.append(cyc)
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    got = orjson.loads(p.dumps({"b": b"a\xff", "s": "\udcff", "n": -(2**70), "c": cyc, "d": deep}))
    assert got["b"] == "a\ufffd" and got["s"] == "\ufffd" and got["n"] == str(-(2**70))
    assert "c" in got and "d" in got
    assert p.JSONRenderer()(None, "info", {"m": "a\nb"}) == b'{"m":"a\\nb"}\n'


# --- console --------------------------------------------------------------------------------------


def test_console_renderer_is_the_console_sinks_formatter() -> None:
    """One formatter: the logger's console line for a record is exactly the console sink's line
    for the same record (plain and coloured), and a clear-screen escape in the message is
    escaped, not passed to the terminal."""
    from logpipe._console import ConsoleFormatter

    ev = {"time": "2026-11-23T14:01:51.123456Z", "level": "info", "message": "order \x1b[2J placed",
          "service": "api", "instance_id": "0", "host": "h", "pid": 1, "order_id": 7,
          "note": "two words", "tags": ["a"]}
    plain = p.ConsoleRenderer(False)(None, "info", dict(ev)).decode()
    assert plain == ConsoleFormatter(False).format(ev)
    assert plain == ('2026-11-23T14:01:51.123Z INFO  api[0] order \\x1b[2J placed order_id=7 '
                     'note="two words" tags=["a"] host=h pid=1\n')
    colour = p.ConsoleRenderer(True)(None, "info", dict(ev)).decode()
    assert colour == ConsoleFormatter(True).format(ev)
    assert "\x1b[32mINFO" in colour and "\x1b[2J" not in colour
    assert re.sub(r"\x1b\[[0-9;]*m", "", colour) == plain


# --- the fast path is the chain ---------------------------------------------------------------

_keys = st.sampled_from(["order_id", "amount", "user", "Password", "token", "service", "feature",
                         "time", "level", "message", "request_id", "x-api-key", "nested", "n"])
_simple = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=10))
_kw_values = st.recursive(_simple, lambda i: st.lists(i, max_size=3)
                          | st.dictionaries(_keys, i, max_size=3), max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(max_size=10), kw=st.dictionaries(_keys, _kw_values, max_size=5),
       ctx=st.dictionaries(_keys, _simple, max_size=2))
def test_fast_path_writes_what_the_chain_writes(tmp_path: Path, message: str, kw: dict[str, Any],
                                                ctx: dict[str, Any]) -> None:
    """For any message, fields and context, the logger's line (fused fast path when it applies)
    has the same keys, order and values, time aside, as the structlog processor chain's line."""
    ctx.pop("time", None)
    with capture(tmp_path) as read:
        bindings.bind(feature="store")
        with bindings.context(**ctx):
            for _ in range(2):  # the second call takes the fast path for keys learnt by the first
                bindings.logger.info(message, **kw)
                _emit.slow(_emit.state, "info", message, dict(kw))
        recs = read()
    for fast, chain in (recs[0:2], recs[2:4]):
        if kw.get("time") is None:
            assert re.match(TIME_RE, fast.pop("time")) and re.match(TIME_RE, chain.pop("time"))
        assert list(fast.items()) == list(chain.items())
        assert not any(isinstance(v, float) and math.isnan(v) for v in fast.values())


def test_fast_path_is_taken_for_the_common_call(tmp_path: Path) -> None:
    """The benchmark's call (plain scalar fields) is rendered by the fast path, not the chain —
    checked by counting calls into the chain."""
    calls = []
    original = _emit.slow

    def counting(*args: Any) -> None:
        calls.append(args)
        original(*args)

    with capture(tmp_path) as read:
        _emit.slow = counting  # type: ignore[assignment]
        try:
            for _ in range(3):
                bindings.logger.info("order placed", order_id=123, amount=9.99, user="bob")
        finally:
            _emit.slow = original  # type: ignore[assignment]
    assert len(read()) == 3
    assert len(calls) == 1  # the first call learns the keys; the rest are spliced
