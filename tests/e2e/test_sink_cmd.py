"""``logpipe sink`` as a real process: SIGTERM and EOF deliver everything read, exit statuses,
one-line errors for user mistakes, a full disk and a reader that goes away."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests._sink_cmd_helpers import count_lines, read_ndjson, split_stderr, summary_of
from tests.helpers import LOGPIPE, wait_for

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)


def test_sigterm_mid_stream_delivers_everything_read(tmp_path: Path) -> None:
    """While a writer streams records into the pipe, SIGTERM makes logpipe exit 0 having
    delivered every byte it took from the pipe: what it wrote plus what is still in the pipe is
    exactly the writer's stream, in order, with nothing missing or duplicated."""
    out_path = tmp_path / "out.ndjson"
    r, w = os.pipe()
    with out_path.open("wb") as out:
        proc = subprocess.Popen([*LOGPIPE, "sink", "ndjson"], stdin=r, stdout=out,
                                stderr=subprocess.PIPE)
    # the test keeps its own copy of the read end, to read what logpipe left in the pipe
    stop_writing = threading.Event()
    written = [0]

    def writer() -> None:
        i = 0
        while not stop_writing.is_set():
            # one write per line, under PIPE_BUF: POSIX makes each one atomic
            os.write(w, json.dumps({"message": f"line {i}", "n": i}).encode() + b"\n")
            i += 1
            written[0] = i

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: count_lines(out_path) >= 3000, message="3000 records delivered")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        stop_writing.set()
    leftover = bytearray()
    os.set_blocking(r, False)
    while thread.is_alive():  # the writer may be blocked on a full pipe: make room
        try:
            leftover += os.read(r, 1 << 16)
        except BlockingIOError:
            thread.join(0.01)
    os.close(w)
    os.set_blocking(r, True)
    while chunk := os.read(r, 1 << 16):
        leftover += chunk
    os.close(r)

    assert proc.returncode == 0, stderr
    assert b"Traceback" not in stderr
    delivered = read_ndjson(out_path)
    ns: list[int] = []
    fragment = ""
    for i, rec in enumerate(delivered):
        if "n" in rec:
            ns.append(rec["n"])
        else:  # the partial line in hand at SIGTERM, flushed as text: must be the last one
            assert i == len(delivered) - 1, rec
            fragment = rec["message"]
    rest = (fragment + leftover.decode()).splitlines()
    ns += [json.loads(line)["n"] for line in rest if line]
    assert ns == list(range(written[0]))
    assert len(delivered) >= 3000
    assert summary_of(stderr)["sinks"]["ndjson"]["delivered"] == len(delivered)


def test_sigterm_while_idle_exits_at_once_with_everything_delivered(tmp_path: Path) -> None:
    """With stdin still open but quiet, SIGTERM ends the run promptly, status 0, every record
    already sent delivered."""
    out_path = tmp_path / "out.ndjson"
    with out_path.open("wb") as out:
        proc = subprocess.Popen([*LOGPIPE, "sink", "console", "--format", "json"],
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(b'{"message": "one"}\n{"message": "two"}\n')
    proc.stdin.flush()
    wait_for(lambda: count_lines(out_path) == 2, message="two records")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert [r["message"] for r in read_ndjson(out_path)] == ["one", "two"]


def test_eof_flushes_everything_including_a_partial_last_line() -> None:
    """At EOF every line is delivered — NDJSON, CRLF, plain text, invalid UTF-8 and the
    unterminated last line — blank lines are skipped, and the exit status is 0."""
    data = (b'{"message":"json","level":"warning","k":1}\n{"msg":"crlf"}\r\n\nplain text\n'
            b"bad \xff utf8\nno newline at end")
    res = subprocess.run([*LOGPIPE, "sink", "console", "--format", "json", "--service", "svc"],
                         input=data, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["message"] for r in recs] == ["json", "crlf", "plain text", "bad \ufffd utf8",
                                            "no newline at end"]
    assert recs[0]["level"] == "warning" and recs[0]["k"] == 1
    assert all(r["source"] == "stdin" and r["service"] == "svc" for r in recs)
    assert summary_of(res.stderr)["sinks"]["console"]["delivered"] == 5
    _, other = split_stderr(res.stderr)
    assert other == []


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["sink", "console"], 0),  # delivered
        (["sink", "ndjson", "console", "--format", "json"], 0),  # two sinks, both delivered
    ],
)
def test_exit_status_zero_when_everything_is_delivered(args: list[str], status: int) -> None:
    """Status 0 when every record reached every sink (each sink counted in the summary)."""
    res = subprocess.run([*LOGPIPE, *args], input=b"a\nb\n", capture_output=True, timeout=30)
    assert res.returncode == status, res.stderr
    counts = summary_of(res.stderr)["sinks"]
    assert all(c["delivered"] == 2 for c in counts.values())


def test_disk_full_is_one_line_and_non_zero(tmp_path: Path) -> None:
    """Writing to /dev/full (ENOSPC) ends with ``logpipe: console: disk full ...`` as the only
    non-diagnostic stderr line, a non-zero status and no traceback."""
    with open("/dev/full", "wb") as full:
        res = subprocess.run([*LOGPIPE, "sink", "console"], input=b"x\n" * 10, stdout=full,
                             stderr=subprocess.PIPE, timeout=30)
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr
    _, other = split_stderr(res.stderr)
    assert other == ["logpipe: console: disk full while writing output"]
    assert summary_of(res.stderr)["level"] == "error"


def test_reader_going_away_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """``logpipe sink console | head -1``: head prints one line and exits; logpipe stops with a
    one-line broken-pipe message and a non-zero status, never a traceback."""
    err = tmp_path / "stderr"
    script = (f"seq 1 200000 | {' '.join(LOGPIPE)} sink console 2>{err}; echo $? >{tmp_path}/rc"
              " ; true")
    res = subprocess.run(["sh", "-c", f"({script}) | head -1"], capture_output=True, timeout=60)
    assert res.returncode == 0
    assert res.stdout.count(b"\n") == 1
    assert b" INFO  1 host=" in res.stdout  # the first record, rendered for people
    stderr = err.read_bytes()
    assert b"Traceback" not in stderr
    _, other = split_stderr(stderr)
    assert other == ["logpipe: console: the reader of the output went away (broken pipe)"]
    assert (tmp_path / "rc").read_text().strip() == "1"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sink", "console", "--no-such-flag"], "No such option '--no-such-flag'"),
        (["sink", "nosuchsink"], "'nosuchsink' is not one of"),
        (["sink"], "name at least one sink: console, file, splunk or ndjson"),
    ],
)
def test_user_mistakes_are_one_click_error_line(args: list[str], expected: str) -> None:
    """A wrong flag, an unknown sink or no sink at all → exit 2 with click's usage hint and one
    ``Error:`` line naming the mistake; nothing read, no traceback."""
    res = subprocess.run([*LOGPIPE, *args], input=b"x\n", capture_output=True, timeout=30)
    assert res.returncode == 2
    assert res.stdout == b""
    text = res.stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], text


def test_stalled_output_drains_on_sigterm_and_a_third_signal_quits(tmp_path: Path) -> None:
    """With stdout full (nobody reads it), SIGTERM starts a drain that cannot finish; a second
    SIGTERM warns that a third quits at once, and the third ends the process by the signal."""
    import fcntl
    import termios

    proc = subprocess.Popen([*LOGPIPE, "sink", "console"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    os.set_blocking(proc.stdin.fileno(), False)
    data = b"a line that will not fit\n" * 200_000
    sent = 0

    def unread() -> int:
        buf = bytearray(4)
        fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, buf)  # type: ignore[union-attr]
        return int.from_bytes(buf, "little")

    def stdout_full() -> bool:
        nonlocal sent
        with contextlib.suppress(BlockingIOError):
            sent += os.write(proc.stdin.fileno(), data[sent:sent + 65536])  # type: ignore[union-attr]
        return unread() >= 65536  # the default pipe capacity: logpipe's writes now block

    err = bytearray()
    os.set_blocking(proc.stderr.fileno(), False)

    def said(text: bytes) -> bool:
        with contextlib.suppress(BlockingIOError):
            err.extend(os.read(proc.stderr.fileno(), 65536))  # type: ignore[union-attr]
        return text in err

    try:
        wait_for(stdout_full, message="stdout pipe full")
        # one signal at a time: a second SIGTERM sent before the first is handled merges with it
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: said(b"SIGTERM: stopping"), message="first signal handled")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: said(b"a third one quits"), message="second-signal warning")
        assert proc.poll() is None  # still draining into the full pipe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()


@pytest.mark.parametrize(
    ("redirect", "message"),
    [
        (">&-", "logpipe: console: standard output is closed"),
        ("<&-", "logpipe: standard input is closed"),
    ],
)
def test_closed_stdio_is_one_line_error(redirect: str, message: str) -> None:
    """Started with stdout or stdin closed, ``logpipe sink console`` says so in one line and
    exits 1 — no traceback, and never a write into whatever reused the descriptor number."""
    cmd = " ".join(LOGPIPE) + " sink console"
    res = subprocess.run(["sh", "-c", f"echo hi | exec {cmd} {redirect}"], capture_output=True,
                         timeout=30)
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr
    _, other = split_stderr(res.stderr)
    assert other == [message]
    assert summary_of(res.stderr)["level"] == "error"


def test_sink_configuration_mistake_is_one_logpipe_line() -> None:
    """A sink missing its required option (``file`` without ``--dir``) is a usage error: exit 2,
    one ``logpipe:`` line naming the fix, nothing on stdout, no summary, no traceback."""
    res = subprocess.run([*LOGPIPE, "sink", "file"], input=b"x\n", capture_output=True,
                         timeout=30)
    assert res.returncode == 2
    assert res.stdout == b""
    assert res.stderr.decode().splitlines() == [
        "logpipe: the file sink needs a directory: --dir DIR (or LOGPIPE_FILE_DIR, or --to file:DIR)"]


@pytest.mark.parametrize(("sub", "status", "expected"), [
    ("", 2, "Error: Invalid value for '--dir'"),  # click checks the option: a usage error
    ("logs", 1, "logpipe: file sink: cannot create"),  # found by the sink's start-up check
])
def test_unusable_file_sink_directory_is_one_line_and_nothing_is_read(
        tmp_path: Path, sub: str, status: int, expected: str) -> None:
    """``sink console file --dir D`` where D is a regular file (a usage error, exit 2) or lies
    under one (the sink's start-up check, exit 1): one error line naming it, no traceback, and
    no record is taken from stdin (the console, started first, prints nothing)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    target = blocker / sub if sub else blocker
    r, w = os.pipe()
    os.write(w, b'{"message": "kept"}\n')
    os.close(w)
    with os.fdopen(r, "rb") as stdin:
        res = subprocess.run([*LOGPIPE, "sink", "console", "file", "--dir", str(target)],
                             stdin=stdin, capture_output=True, timeout=30)
        left = stdin.read()
    assert res.returncode == status
    assert res.stdout == b""
    err = res.stderr.decode()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(("logpipe: ", "Error: "))]
    assert len(lines) == 1 and lines[0].startswith(expected), err
    assert left == b'{"message": "kept"}\n'
