"""The console sink (sinks/console.py) as a real process: colour only on a terminal (NO_COLOR /
FORCE_COLOR respected), ``--format json``, zstd / gzip on stdin, a traceback as one record. (The
formatter's own rules: tests/unit/test_console.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess

import pytest

from logpipe.pipeline import Batch
from logpipe.sinks import SinkOptions
from logpipe.sinks.console import ConsoleConfig, ConsoleSink
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
