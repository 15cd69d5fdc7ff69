"""_output.py: the logger's lines reach the OS whole when the call returns — closed streams,
streams without a file descriptor, pipes and sockets under kill -9, threads and forked processes
sharing one pipe (SPEC §2)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import logpipe
from logpipe.errors import UsageError
from tests._logger_helpers import capture, lines, logger_child_env, run_py
from tests.helpers import wait_for


def test_closed_stream_and_closed_stdout_do_not_raise(tmp_path: Path) -> None:
    """Logging to a stream the app closed, or with fd 1 closed, or to a pipe whose reader is gone
    (EPIPE), returns normally and the program goes on (exit 0)."""
    f = open(tmp_path / "x.log", "wb")  # noqa: SIM115
    with capture(tmp_path):
        logpipe.configure(stream=f)
        f.close()
        logpipe.logger.info("into a closed file")
    proc = run_py(
        """
        import os
        from logpipe import logger
        os.close(1)
        logger.info("no stdout")
        print("still here", file=__import__("sys").stderr)
        """
    )
    assert proc.returncode == 0 and b"still here" in proc.stderr
    r, w = os.pipe()
    os.close(r)
    try:
        proc = run_py(
            """
            import sys
            from logpipe import logger
            for i in range(1000):
                logger.info("into a broken pipe", i=i)
            print("survived", file=sys.stderr)
            """,
            stdout=w,
        )
    finally:
        os.close(w)
    assert proc.returncode == 0 and b"survived" in proc.stderr and b"Traceback" not in proc.stderr


def test_stream_without_fileno(tmp_path: Path) -> None:
    """``configure(stream=io.StringIO())`` (or BytesIO) receives the same JSON lines."""
    import io

    import orjson

    text, raw = io.StringIO(), io.BytesIO()
    with capture(tmp_path):
        logpipe.configure(stream=text)
        logpipe.logger.info("to text", n=1)
        logpipe.configure(stream=raw)
        logpipe.logger.info("to bytes", n=2)
    assert orjson.loads(text.getvalue())["n"] == 1
    assert orjson.loads(raw.getvalue())["n"] == 2
    with pytest.raises(UsageError, match="file object"):
        logpipe.configure(stream=3.5)  # type: ignore[arg-type]


def _read_all(fd: int, proc: subprocess.Popen[bytes]) -> bytes:
    """Read ``fd`` until EOF (all writers gone), with a deadline."""
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return out
            out += chunk
    proc.kill()
    raise AssertionError("timed out reading the child's output")


def _child_lines(code: str) -> list[dict[str, Any]]:
    """Run ``python -c code`` with stdout a pipe, read it to EOF; it must exit 0; its lines."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            env=logger_child_env())
    assert proc.stdout is not None
    with proc.stdout:
        out = _read_all(proc.stdout.fileno(), proc)
    assert proc.wait(timeout=30) == 0
    return lines(out)


KILL_SELF = """
import os, signal, sys
{setup}
for i in range(500):
    {log}
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_lines_survive_kill_9_right_after_logging(kind: str) -> None:
    """A child whose stdout is a pipe (or a socket, as PM2 gives it) logs 500 lines and is
    SIGKILLed at once: all 500 lines are there, complete. (Control: the same loop with print()
    loses them, so the test can tell.)"""

    def run(setup: str, log: str) -> bytes:
        if kind == "pipe":
            r, w = os.pipe()
        else:
            r, w = (s.detach() for s in socket.socketpair())
        proc = subprocess.Popen([sys.executable, "-c", KILL_SELF.format(setup=setup, log=log)],
                                stdout=w, env=logger_child_env())
        os.close(w)
        try:
            out = _read_all(r, proc)
        finally:
            os.close(r)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        return out

    out = run("from logpipe import logger", 'logger.info("order placed", i=i)')
    recs = lines(out)
    assert [r["i"] for r in recs] == list(range(500))
    # control: print() to a pipe/socket is block-buffered, so the tail of the same loop is lost
    assert not run("", 'print("order placed", i)').endswith(b"order placed 499\n")


def test_threads_never_interleave_lines() -> None:
    """8 threads each log 100 lines of 8 KB (twice PIPE_BUF, so the kernel alone would not keep
    them whole) to a pipe: every line read back is whole JSON and every (thread, i) appears
    exactly once."""
    recs = _child_lines(
        "import threading\n"
        "from logpipe import logger\n"
        "pad = 'x' * 8000\n"
        "def run(t):\n"
        "    for i in range(100):\n"
        "        logger.info('bulk', t=t, i=i, pad=pad)\n"
        "ts = [threading.Thread(target=run, args=(t,)) for t in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n")
    assert sorted((r["t"], r["i"]) for r in recs) == [(t, i) for t in range(8) for i in range(100)]
    assert all(len(r["pad"]) == 8000 for r in recs)


def test_processes_sharing_a_pipe_never_interleave_lines() -> None:
    """4 processes (forked after import, as a pre-fork server does) log 300 lines of ~2 KB each
    to one shared stdout pipe: every line is whole, because each is a single write() below
    PIPE_BUF (POSIX makes those atomic on a pipe)."""
    recs = _child_lines(
        "import os\n"
        "from logpipe import logger\n"
        "pad = 'y' * 2000\n"
        "kids = []\n"
        "for k in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        for i in range(300):\n"
        "            logger.info('bulk', k=k, i=i, pad=pad)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    os.waitpid(pid, 0)\n")
    assert sorted((r["k"], r["i"]) for r in recs) == [(k, i) for k in range(4) for i in range(300)]
    assert len({r["pid"] for r in recs}) == 4


def test_stdout_is_not_block_buffered_while_child_lives() -> None:
    """A line is readable from the pipe while the child is still running (it reached the OS when
    the call returned; no flush, no PYTHONUNBUFFERED)."""
    proc = subprocess.Popen(
        [sys.executable, "-c",
        "import sys, time\nfrom logpipe import logger\nlogger.info('ready')\nsys.stdin.read()\n"],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=logger_child_env())
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = wait_for(lambda: select.select([proc.stdout], [], [], 0.2)[0] and proc.stdout.readline(),
                        timeout=20, message="the first line")
        assert lines(line)[0]["message"] == "ready"
        assert proc.poll() is None
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
