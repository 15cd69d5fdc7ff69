"""Multiline joining: Python tracebacks and indented continuations become one logical line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.multiline import MAX_LINES, Joiner


def feed(lines: list[bytes], joiner: Joiner | None = None) -> list[tuple[bytes, int]]:
    """Push ``lines`` with running end offsets (as a file reader would), then flush."""
    j = joiner or Joiner()
    out: list[tuple[bytes, int]] = []
    off = 0
    for line in lines:
        off += len(line) + 1
        out.extend(j.push(line, off))
    out.extend(j.flush())
    return out


def real_traceback(code: str) -> list[bytes]:
    """The stderr lines a real interpreter prints for an uncaught exception in ``code``."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert proc.returncode != 0
    return proc.stderr.rstrip(b"\n").split(b"\n")


def test_json_fast_path_passes_through_untouched() -> None:
    """A JSON line with nothing pending comes straight back with its own offset, nothing held."""
    j = Joiner()
    assert j.push(b'{"a":1}', 8) == [(b'{"a":1}', 8)]
    assert j.pending == 0 and j.idle_deadline is None


def test_uncaught_exception_is_one_record() -> None:
    """A real interpreter's uncaught-exception output becomes exactly one logical line."""
    lines = real_traceback("def f():\n    raise ValueError('boom')\nf()\n")
    out = feed(lines)
    assert len(out) == 1
    text = out[0][0]
    assert text.startswith(b"Traceback (most recent call last):")
    assert text.endswith(b"ValueError: boom")
    assert out[0][1] == sum(len(x) + 1 for x in lines)


def test_chained_exceptions_stay_in_one_record() -> None:
    """``During handling of the above exception`` and ``direct cause`` chains join the first
    traceback, blank separator lines included."""
    for code in (
        "try:\n    raise ValueError('a')\nexcept Exception:\n    raise KeyError('b')\n",
        "try:\n    raise ValueError('a')\nexcept Exception as e:\n    raise KeyError('b') from e\n",
    ):
        lines = real_traceback(code)
        out = feed(lines)
        assert len(out) == 1, out
        assert out[0][0] == b"\n".join(lines)


def test_exception_group_is_one_record() -> None:
    """A PEP 654 exception group (indented ``+`` gutter) becomes one logical line."""
    lines = real_traceback("raise ExceptionGroup('eg', [ValueError(1), TypeError(2)])\n")
    out = feed(lines)
    assert [x for x, _ in out] == [b"\n".join(lines)]


def test_traceback_between_plain_and_json_lines() -> None:
    """Lines around a traceback stay separate: the plain line before it, and a JSON line after
    it, which also ends the held group at once."""
    tb = real_traceback("1/0")
    j = Joiner()
    out: list[tuple[bytes, int]] = []
    out += j.push(b"starting worker", 16)
    off = 16
    for line in tb:
        off += len(line) + 1
        out += j.push(line, off)
    json_line = b'{"message":"after"}'
    out += j.push(json_line, off + len(json_line) + 1)
    assert j.pending == 0
    assert [x for x, _ in out] == [b"starting worker", b"\n".join(tb), json_line]
    assert out[1][1] == off


def test_indented_continuation_joins_plain_line() -> None:
    """An indented line after a plain line joins it; the next unindented line starts anew."""
    out = feed([b"ERROR bad config:", b"  key: x", b"\tvalue: y", b"next line"])
    assert [x for x, _ in out] == [b"ERROR bad config:\n  key: x\n\tvalue: y", b"next line"]


def test_indented_line_after_json_is_not_joined() -> None:
    """JSON lines are never joined, even when an indented line follows."""
    out = feed([b'{"message":"x"}', b"  indented"])
    assert [x for x, _ in out] == [b'{"message":"x"}', b"  indented"]


def test_crlf_is_dropped_inside_joined_records() -> None:
    """CRLF writers: the ``\\r`` of each joined physical line is dropped, the record joined."""
    out = feed([b"Traceback (most recent call last):\r", b'  File "x", line 1\r', b"E: m\r"])
    assert [x for x, _ in out] == [b'Traceback (most recent call last):\n  File "x", line 1\nE: m']


def test_cap_of_500_lines_splits_group() -> None:
    """A group never exceeds MAX_LINES physical lines; the rest comes out after it, in order."""
    lines = [b"Traceback (most recent call last):"] + [b"  x"] * (MAX_LINES + 10) + [b"E: m"]
    out = feed(lines)
    assert out[0][0].count(b"\n") + 1 == MAX_LINES
    assert b"\n".join(x for x, _ in out) == b"\n".join(lines)


def test_byte_cap_splits_group() -> None:
    """A group never exceeds max_bytes (2 MiB by default)."""
    j = Joiner(max_bytes=100)
    out = feed([b"head"] + [b"  " + b"x" * 30] * 10, j)
    assert all(len(x) <= 100 for x, _ in out)
    assert len(out) > 1


def test_idle_deadline_and_poll() -> None:
    """Held lines set a deadline ≤ 1 s away; poll() before it returns nothing, after it
    returns the held group."""
    j = Joiner()
    t0 = time.monotonic()
    assert j.push(b"plain", 6) == []
    assert j.idle_deadline is not None and j.idle_deadline - t0 <= 1.0
    assert j.poll(now=j.idle_deadline - 0.01) == []
    assert j.poll(now=j.idle_deadline + 0.01) == [(b"plain", 6)]
    assert j.idle_deadline is None


def test_timeout_is_capped_at_one_second() -> None:
    """Whatever is asked, a held line is never kept past 1 s of idleness."""
    assert Joiner(timeout=30).timeout == 1.0


_line = st.one_of(
    st.sampled_from([
        b"Traceback (most recent call last):",
        b'  File "a.py", line 1, in f',
        b"    code()",
        b"ValueError: x",
        b"",
        b"During handling of the above exception, another exception occurred:",
        b"  + Exception Group Traceback (most recent call last):",
        b'{"message": "j"}',
        b"plain",
        b"\tindented",
        b"ERROR:shop.payments:payment failed",
        b"/app/x.js:3",
        b"    ^",
        b"Node.js v20.20.2",
    ]),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=60), st.integers(min_value=2, max_value=8))
def test_never_loses_or_reorders_bytes(lines: list[bytes], cap: int) -> None:
    """Whatever the input, splitting the outputs at the join newlines gives back the input
    lines exactly, in order; offsets are those of each group's last line and increase."""
    j = Joiner(max_lines=cap)
    ends = []
    out: list[tuple[bytes, int]] = []
    off = 0
    for line in lines:
        off += len(line) + 1
        ends.append(off)
        out.extend(j.push(line, off))
    out.extend(j.flush())
    physical = [p for text, _ in out for p in text.split(b"\n")]
    assert physical == lines
    # each output's offset is the end offset of its last physical line
    i = 0
    for text, end in out:
        i += text.count(b"\n") + 1
        assert end == ends[i - 1]
    assert j.pending == 0


def test_logging_exception_traceback_joins_its_error_line() -> None:
    """What a real ``logging.exception`` prints with the stdlib's default format (its
    ``ERROR:logger:message`` line, then the traceback) is one logical line; the plain line
    before it and the one after stay their own."""
    code = ("import logging\nlogging.basicConfig()\nlog = logging.getLogger('shop.payments')\n"
            "log.warning('starting worker')\ntry:\n    1/0\nexcept ZeroDivisionError:\n"
            "    log.exception('payment failed')\nlog.warning('after')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=True)
    lines = proc.stderr.rstrip(b"\n").split(b"\n")
    out = feed(lines)
    assert [text.split(b"\n")[0] for text, _ in out] == [
        b"WARNING:shop.payments:starting worker", b"ERROR:shop.payments:payment failed",
        b"WARNING:shop.payments:after"]
    assert out[1][0].split(b"\n")[1] == b"Traceback (most recent call last):"
    assert out[1][0].endswith(b"ZeroDivisionError: division by zero")


@pytest.mark.parametrize("first", [b"starting worker", b"INFO:app:ready", b"2026-12-01 INFO ok"])
def test_traceback_after_a_line_that_is_not_an_error_stays_apart(first: bytes) -> None:
    """An unrelated earlier line does not swallow a later crash (Fluent Bit's rule)."""
    out = feed([first, b"Traceback (most recent call last):", b'  File "a.py", line 1',
                b"ValueError: x"])
    assert [t for t, _ in out] == [
        first, b'Traceback (most recent call last):\n  File "a.py", line 1\nValueError: x']


@pytest.mark.parametrize("first", [b"ERROR:a:b", b"2026-12-01 13:40:15,173 ERROR a b",
                                   b"[CRITICAL] worker died", b"FATAL: x"])
def test_traceback_after_an_error_line_joins_it(first: bytes) -> None:
    """Error lines in the common formats take the traceback that follows them."""
    out = feed([first, b"Traceback (most recent call last):", b'  File "a.py", line 1',
                b"ValueError: x", b"next"])
    assert [t for t, _ in out] == [
        first + b'\nTraceback (most recent call last):\n  File "a.py", line 1\nValueError: x',
        b"next"]


def test_node_crash_report_is_one_group() -> None:
    """A real Node.js crash (location, source, caret, blank, TypeError, at-lines, blank,
    ``Node.js vX``) is one logical line; the lines around it stay their own."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    proc = subprocess.run(["node", "-e", "function f() { null.x; }\nf();"], capture_output=True,
                          timeout=30)
    assert proc.returncode != 0
    crash = proc.stderr.rstrip(b"\n").split(b"\n")
    lines = [b"booting", *crash, b'{"message":"next"}']
    out = feed(lines)
    assert [t for t, _ in out] == [b"booting", b"\n".join(crash), b'{"message":"next"}']
    assert out[1][1] == sum(len(x) + 1 for x in lines[:-1])
    assert crash[-1].startswith(b"Node.js v") and crash[2].strip() == b"^"


def test_node_location_without_caret_gives_lines_back_one_by_one() -> None:
    """A line that only looks like a Node location (``/path:12``) and a line after it, with no
    caret line, go out as separate lines with their own offsets; an indented line after it
    joins it as after any plain line."""
    lines = [b"/srv/app/config.js:12", b"loaded", b"ready", b"/x.js:1", b"  indented",
             b"  more", b"/y.js:2", b"  only"]
    out = feed(lines)
    ends = [sum(len(x) + 1 for x in lines[:i + 1]) for i in range(len(lines))]
    assert out == [(b"/srv/app/config.js:12", ends[0]), (b"loaded", ends[1]),
                   (b"ready", ends[2]), (b"/x.js:1\n  indented\n  more", ends[5]),
                   (b"/y.js:2\n  only", ends[7])]
