"""The console sink: colour only on a terminal (NO_COLOR / FORCE_COLOR respected), the line
layout (time, level, service[instance], message, key=value), exceptions below the line, and
``--format json``."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
from typing import Any

import pytest

from logpipe.pipeline import Batch
from logpipe.sinks import SinkOptions
from logpipe.sinks.console import ConsoleConfig, ConsoleFormatter, ConsoleSink, format_value, use_colour
from tests._sink_cmd_helpers import env_without_colour
from tests.helpers import LOGPIPE

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)

ESC = b"\x1b["
RECORD = {"time": "2026-11-23T14:01:51.123456Z", "level": "error", "message": "order failed",
          "service": "api", "instance_id": "2", "order_id": 7}


def run_console(env: dict[str, str], tty: bool, data: bytes) -> bytes:
    """Run ``logpipe sink console`` with stdout on a pty (a terminal) or a pipe; its output."""
    if not tty:
        res = subprocess.run([*LOGPIPE, "sink", "console"], input=data, capture_output=True,
                             env=env, timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stdout
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*LOGPIPE, "sink", "console"], stdin=subprocess.PIPE,
                                stdout=slave, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal's last slave fd
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    proc.stderr.close()
    return bytes(out)


LINE = json.dumps(RECORD).encode() + b"\n"


def test_colour_on_a_terminal_not_on_a_pipe() -> None:
    """On a pty the level is coloured (ANSI SGR); on a pipe the same record has no escape."""
    env = env_without_colour(TERM="xterm-256color")
    on_tty = run_console(env, tty=True, data=LINE)
    on_pipe = run_console(env, tty=False, data=LINE)
    assert b"\x1b[31mERROR\x1b[0m" in on_tty
    assert b"order failed" in on_tty
    assert ESC not in on_pipe
    assert on_pipe.startswith(b"2026-11-23T14:01:51.123Z ERROR api[2] order failed order_id=7")


def test_no_color_disables_colour_on_a_terminal() -> None:
    """``NO_COLOR=1`` (no-color.org) removes every escape even on a terminal, and wins over
    FORCE_COLOR."""
    for env in (env_without_colour(TERM="xterm", NO_COLOR="1"),
                env_without_colour(TERM="xterm", NO_COLOR="1", FORCE_COLOR="1")):
        out = run_console(env, tty=True, data=LINE)
        assert b"order failed" in out
        assert ESC not in out


def test_force_color_colours_a_pipe() -> None:
    """``FORCE_COLOR=1`` colours output on a pipe; ``FORCE_COLOR=0`` keeps a terminal plain."""
    assert b"\x1b[31mERROR\x1b[0m" in run_console(env_without_colour(FORCE_COLOR="1"), tty=False, data=LINE)
    plain = run_console(env_without_colour(TERM="xterm", FORCE_COLOR="0"), tty=True, data=LINE)
    assert b"order failed" in plain and ESC not in plain


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


def test_json_format_prints_the_records_as_ndjson() -> None:
    """``--format json`` writes each record as one NDJSON line, unchanged."""
    r, w = os.pipe()
    recs = [dict(RECORD), {"message": "second", "nested": {"a": 1}}]

    async def scenario() -> None:
        sink = ConsoleSink.from_options(SinkOptions(console=ConsoleConfig("json")))
        sink._fd = w  # write to our pipe instead of the test runner's stdout
        await sink.start()
        await sink.write(Batch(recs))
        await sink.close()

    asyncio.run(scenario())
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert [json.loads(line) for line in f.read().splitlines()] == recs


def test_batch_is_one_block_of_text_lines() -> None:
    """A batch renders to one UTF-8 block with one line per record, in order."""
    recs = [{"level": "info", "message": f"m{i}"} for i in range(1000)]
    block = ConsoleFormatter(False).format_many(recs)
    lines = block.decode().splitlines()
    assert len(lines) == 1000
    assert lines[0] == "- INFO  m0" and lines[-1] == "- INFO  m999"


def test_zstd_on_stdin_is_decompressed_gzip_refused() -> None:
    """``logpipe sink console < api.log.….zst`` prints the records inside (two concatenated
    frames too), never the compressed bytes; gzip is refused with one clear line and status 1;
    damaged zstd likewise."""
    import zstandard

    frame = zstandard.ZstdCompressor().compress(LINE * 3)
    out = run_console(env_without_colour(), tty=False, data=frame + frame)
    assert out.decode().count("order failed order_id=7") == 6
    assert len(out.splitlines()) == 6
    import gzip

    for data, says in ((gzip.compress(LINE), b"gzip-compressed"),
                       (frame[:4] + b"damaged" * 10, b"damaged zstd data")):
        res = subprocess.run([*LOGPIPE, "sink", "console"], input=data, capture_output=True,
                             env=env_without_colour(), timeout=30)
        assert res.returncode == 1 and res.stdout == b""
        assert says in res.stderr and b"Traceback" not in res.stderr


def test_traceback_on_stdin_is_one_record() -> None:
    """``python legacy.py 2>&1 | logpipe sink console``: a traceback printed as plain text is
    one record (its lines indented below the first), between the lines around it, as
    ``collect -`` does; JSON lines around it are untouched."""
    tb = (b"Traceback (most recent call last):\n"
          b'  File "legacy.py", line 3, in <module>\n'
          b"    main()\n"
          b"KeyError: 'sku'\n")
    data = b"starting\n" + tb + LINE + b"done\n"
    res = subprocess.run([*LOGPIPE, "sink", "console"], input=data, capture_output=True,
                         env=env_without_colour(), timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    heads = [line for line in lines if not line.startswith(" ")]
    assert [re.sub(r"^\S+ [A-Z]+ +", "", h).split(" host=")[0] for h in heads] == [
        "starting", "Traceback (most recent call last):", "api[2] order failed order_id=7", "done"]
    at = lines.index(heads[1])
    assert [x.strip().split(" host=")[0] for x in lines[at + 1:at + 4]] == [
        'File "legacy.py", line 3, in <module>', "main()", "KeyError: 'sku'"]
