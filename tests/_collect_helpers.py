"""Helpers for collector tests: run ``logpipe collect`` as a real process and watch its output."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from tests.helpers import LOGPIPE, wait_for


class Collector:
    """A running ``logpipe collect``; its NDJSON stdout is parsed on a thread into ``records``."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 stdin: Any = subprocess.DEVNULL, cwd: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [*LOGPIPE, "collect", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=stdin, env=env, cwd=cwd,
        )
        self.records: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.stderr = b""
        self._lock = threading.Lock()
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            rec = orjson.loads(line)
            with self._lock:
                self.raw.append(line)
                self.records.append(rec)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def snapshot(self) -> list[dict[str, Any]]:
        """The records received so far (a copy)."""
        with self._lock:
            return list(self.records)

    def wait_records(self, pred: Any, n: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` received records satisfy ``pred``; return them."""
        def check() -> list[dict[str, Any]] | None:
            hits = [r for r in self.snapshot() if pred(r)]
            return hits if len(hits) >= n else None

        return wait_for(check, timeout=timeout, message=f"{n} matching records; stderr: {self.stderr!r}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM the collector and wait for it to exit (and its output to be read)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit and for both output streams to be fully read."""
        rc = self.proc.wait(timeout=timeout)
        self._out.join(timeout)
        self._err.join(timeout)
        self._close()
        return rc

    def _close(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """SIGKILL (cleanup after a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def run_collect(args: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0,
                env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], bytes]:
    """``logpipe collect ARGS`` to completion: (exit status, records, stderr)."""
    proc = subprocess.run([*LOGPIPE, "collect", *args], input=input, capture_output=True,
                          timeout=timeout, env=env,
                          stdin=None if input is not None else subprocess.DEVNULL)
    recs = [orjson.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    return proc.returncode, recs, proc.stderr


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def python_cmd(code: str) -> str:
    """A ``--run`` COMMAND that runs ``code`` with this interpreter (no shell involved)."""
    import shlex
    import sys

    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def env_with(**extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env
