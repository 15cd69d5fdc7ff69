"""logpipe's own diagnostics: JSON lines off a terminal, one human line each on a terminal, and
listeners (the status publisher) see every occurrence, also those rate-limited off stderr."""

from __future__ import annotations

import io
import json
import os
import pty
from typing import Any

from logpipe import diagnostics


def test_json_lines_when_not_a_terminal() -> None:
    """On a pipe or file each diagnostic is one JSON object marked as logpipe's own."""
    buf = io.BytesIO()
    buf.fileno = lambda: -1  # type: ignore[method-assign]  # not a terminal
    diagnostics.set_stream(buf)
    try:
        diagnostics.warning("splunk: down", endpoint="x")
    finally:
        diagnostics.set_stream(None)
    rec = json.loads(buf.getvalue())
    assert rec["message"] == "splunk: down" and rec["logpipe"] == "diagnostic"
    assert rec["endpoint"] == "x" and rec["level"] == "warning"


def test_one_human_line_on_a_terminal() -> None:
    """On a terminal: ``HH:MM:SS level message (key=value)``, control characters escaped, no
    JSON."""
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "wb", buffering=0, closefd=False) as out:
            diagnostics.set_stream(out)  # type: ignore[arg-type]
            try:
                diagnostics.warning("splunk: down \x1b[2J", endpoint="x")
            finally:
                diagnostics.set_stream(None)
        text = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    line = text.strip()
    assert not line.startswith("{") and "\x1b" not in line
    time_s, level, rest = line.split(" ", 2)
    assert len(time_s) == 8 and time_s[2] == ":" and level == "warning"
    assert rest == 'splunk: down \\x1b[2J (endpoint="x")'


def test_listeners_see_rate_limited_repeats() -> None:
    """A listener gets every diagnostic with its epoch time — the second of two identical
    warnings too, though the rate limit keeps it off stderr."""
    seen: list[dict[str, Any]] = []
    diagnostics.add_listener(seen.append)
    buf = io.BytesIO()
    buf.fileno = lambda: -1  # type: ignore[method-assign]
    diagnostics.set_stream(buf)
    try:
        diagnostics.warning("splunk: refused")
        diagnostics.warning("splunk: refused")
    finally:
        diagnostics.set_stream(None)
        diagnostics.remove_listener(seen.append)
    assert [s["message"] for s in seen] == ["splunk: refused"] * 2
    assert isinstance(seen[1]["time"], float) and seen[1]["time"] >= seen[0]["time"]
    assert len(buf.getvalue().splitlines()) == 1
