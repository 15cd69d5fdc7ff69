"""_console.py, the one console formatter (logger, console sink, `logpipe logs`): the colour rule,
the line layout, quoting, exceptions below the line, odd values, a batch as one block. (The sink
on a real terminal and pipe: tests/unit/sinks/test_console.py.)"""

from __future__ import annotations

import os
import pty
from typing import Any

import pytest

from logpipe.sinks.console import ConsoleFormatter, format_value, use_colour


@pytest.mark.parametrize(
    ("env", "isatty", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": ""}, True, True),  # present but empty: no effect (no-color.org)
        ({"NO_COLOR": "1"}, True, False),
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "true"}, False, True),
        ({"FORCE_COLOR": "0"}, True, False),
        ({"FORCE_COLOR": "false"}, True, False),
        ({"FORCE_COLOR": ""}, False, False),
        ({"TERM": "dumb"}, True, False),
        ({"TERM": "dumb", "FORCE_COLOR": "1"}, False, True),
    ],
)
def test_colour_decision(env: dict[str, str], isatty: bool, expected: bool) -> None:
    """The colour rule: NO_COLOR (non-empty) off, else FORCE_COLOR (non-empty; 0/false off),
    else TERM=dumb off, else whether the descriptor is a terminal."""
    master, slave = pty.openpty()
    r, w = os.pipe()
    try:
        assert use_colour(slave if isatty else w, env) is expected
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)


def fmt(rec: dict[str, Any], colour: bool = False) -> str:
    """Render one record without colour."""
    return ConsoleFormatter(colour).format(rec)


def test_line_layout_time_level_service_message_pairs() -> None:
    """Time (ms), level label, ``service[instance]``, message, then the application's keys in
    their order, then the origin keys (feature, host, pid, source) last."""
    rec = {"time": "2026-11-23T14:01:51.123456Z", "level": "info", "message": "order placed",
           "service": "api", "instance_id": "0", "host": "web1", "pid": 42, "source": "run:api",
           "feature": "store", "order_id": 7, "amount": 9.99, "paid": True, "coupon": None}
    assert fmt(rec) == ("2026-11-23T14:01:51.123Z INFO  api[0] order placed order_id=7 amount=9.99 "
                        "paid=true coupon=null feature=store host=web1 pid=42 source=run:api\n")


def test_key_value_quoting_and_nested_values() -> None:
    """Values with spaces, quotes, ``=`` or control characters, and empty strings, are quoted as
    JSON strings; dicts and lists are compact JSON; plain words stay bare."""
    rec = {"level": "debug", "message": "m", "word": "plain", "spaced": "two words", "eq": "a=b",
           "quote": 'say "hi"', "empty": "", "nl": "a\nb", "nested": {"a": [1, {"b": None}]},
           "list": ["x", 2], "unicode": "café"}
    line = fmt(rec)
    assert line.startswith("- DEBUG m word=plain ")
    assert ' spaced="two words" eq="a=b" quote="say \\"hi\\"" empty="" nl="a\\nb" ' in line
    assert ' nested={"a":[1,{"b":null}]} list=["x",2] unicode=café\n' in line
    assert line.count("\n") == 1
    assert format_value(12345678901234567890123) == "12345678901234567890123"


def test_exception_is_printed_below_its_line_indented() -> None:
    """The ``exception`` traceback follows the record's line, every line indented by 4 spaces;
    it is not repeated as a key=value pair."""
    tb = ('Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n'
          "    1 / 0\nZeroDivisionError: division by zero\n")
    out = fmt({"time": "2026-11-23T14:01:51.123456Z", "level": "error", "message": "boom",
               "service": "worker", "exception": tb, "job": 3})
    assert out == ("2026-11-23T14:01:51.123Z ERROR worker boom job=3\n"
                   "    Traceback (most recent call last):\n"
                   '      File "app.py", line 3, in <module>\n'
                   "        1 / 0\n"
                   "    ZeroDivisionError: division by zero\n")
    coloured = fmt({"level": "error", "message": "boom", "exception": tb}, colour=True)
    assert "\x1b[31m    Traceback" in coloured


def test_multiline_message_and_odd_values_stay_readable() -> None:
    """A message with newlines continues indented; a non-string message, level or service is
    rendered as JSON text; a record missing everything still yields one line."""
    assert fmt({"message": "first\nsecond\n", "level": "info"}) == "- INFO  first\n    second\n"
    assert fmt({"message": {"k": 1}, "level": 30, "service": 5}) == '- 30    5 {"k":1}\n'
    assert fmt({}) == "- INFO  \n"
    assert fmt({"level": "critical", "message": "x"}).startswith("- CRIT  x")
    assert fmt({"level": "warning", "message": "x", "time": "yesterday"}) == "yesterday WARN  x\n"


def test_batch_is_one_block_of_text_lines() -> None:
    """A batch renders to one UTF-8 block with one line per record, in order."""
    recs = [{"level": "info", "message": f"m{i}"} for i in range(1000)]
    block = ConsoleFormatter(False).format_many(recs)
    lines = block.decode().splitlines()
    assert len(lines) == 1000
    assert lines[0] == "- INFO  m0" and lines[-1] == "- INFO  m999"
