"""logpipe.processors, one processor at a time: what each adds, in which precedence, and that
each follows logpipe's settings at the moment it runs (in-process, writing to a real file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import structlog

from logpipe import bindings
from logpipe import processors as lp
from tests._logger_helpers import TIME_RE, capture


@pytest.mark.parametrize(("method", "level"), [
    ("debug", "debug"), ("info", "info"), ("warn", "warning"), ("warning", "warning"),
    ("error", "error"), ("exception", "error"), ("fatal", "critical"), ("msg", "info"),
    ("something_else", "info"),
])
def test_add_level_names_the_spec_level(method: str, level: str) -> None:
    """``add_level`` sets the SPEC level of the method called, replacing one the event carried."""
    assert lp.add_level(None, method, {"level": "bogus"}) == {"level": level}


def test_filter_by_level_follows_configure(tmp_path: Path) -> None:
    """``filter_by_level`` drops (``DropEvent``) what ``logpipe.logger`` would not write, at the
    level configured when it runs."""
    with capture(tmp_path, level="warning"):
        with pytest.raises(structlog.DropEvent):
            lp.filter_by_level(None, "info", {})
        assert lp.filter_by_level(None, "warn", {"a": 1}) == {"a": 1}
        bindings.configure(level="debug")
        assert lp.filter_by_level(None, "debug", {}) == {}


def test_add_time_keeps_a_given_time() -> None:
    """``add_time`` stamps RFC 3339 UTC microseconds with Z, unless the event has a time."""
    assert re.match(TIME_RE, lp.add_time(None, "info", {})["time"])
    assert lp.add_time(None, "info", {"time": "given"}) == {"time": "given"}


def test_add_bindings_precedence_and_order(tmp_path: Path) -> None:
    """Process-wide bindings < ``logpipe.context()`` < structlog contextvars < the event's own
    keys; the result reads like a logpipe line (time, level, message first)."""
    with capture(tmp_path):
        bindings.bind(service="api", feature="store", k="bound")
        with bindings.context(k="context", c=1):
            structlog.contextvars.bind_contextvars(k2="contextvar")
            try:
                ev = lp.add_bindings(None, "info", {"x": 1, "message": "m", "level": "info",
                                                    "time": "t", "k2": "event"})
            finally:
                structlog.contextvars.clear_contextvars()
    assert list(ev)[:3] == ["time", "level", "message"]
    assert (ev["service"], ev["feature"], ev["k"], ev["c"], ev["k2"], ev["x"]) == (
        "api", "store", "context", 1, "event", 1)


def test_redact_follows_configure(tmp_path: Path) -> None:
    """``redact`` uses logpipe's list as configured when it runs."""
    with capture(tmp_path, redact=["pin"]):
        assert lp.redact(None, "info", {"pin": 1, "password": "p"}) == {"pin": "[REDACTED]", "password": "p"}


def test_write_writes_one_logpipe_line_and_ends_the_chain(tmp_path: Path) -> None:
    """``write`` renders the event as logpipe does, writes it with logpipe's writer (here the
    configured file) and raises ``DropEvent`` so the wrapped logger writes nothing more."""
    with capture(tmp_path) as read:
        with pytest.raises(structlog.DropEvent):
            lp.write(None, "info", {"time": "t", "level": "info", "message": "m", "a": [1]})
        assert read() == [{"time": "t", "level": "info", "message": "m", "a": [1]}]


def test_chain_is_the_documented_order() -> None:
    """``CHAIN`` filters first and redacts last (so nothing added later escapes redaction)."""
    assert lp.CHAIN[0] is lp.filter_by_level and lp.CHAIN[-1] is lp.redact
    assert set(lp.CHAIN) == {lp.filter_by_level, lp.add_time, lp.add_level, lp.event_to_message,
                             lp.add_bindings, lp.format_exception, lp.redact}
