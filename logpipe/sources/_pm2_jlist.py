"""``pm2 jlist``: run with a timeout, and off the event loop (:class:`JlistWorker`).

A PM2 daemon that hangs makes ``pm2 jlist`` hang: after start-up the registry
(:class:`logpipe.sources.pm2.Pm2Registry`) asks it on a worker thread, one run at a time, and
uses the last answer meanwhile. The run is killed after :data:`JLIST_TIMEOUT`, or when the
process exits (a daemon thread dies at exit; its ``pm2`` must not live on).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from logpipe import diagnostics

JLIST_TIMEOUT = 5.0

#: ``pm2 jlist`` stdout → apps (:func:`logpipe.sources.pm2.parse_jlist`)
Parse = Callable[[bytes], list[Any]]


def run_jlist(pm2_bin: str, home: str, parse: Parse,
              started: Callable[[subprocess.Popen[bytes]], None] | None = None) -> list[Any]:
    """``pm2 jlist`` against ``home`` (5 s timeout) → its apps; [] and one warning on failure.
    ``started`` is given the process as soon as it runs."""
    env = dict(os.environ, PM2_HOME=home)
    try:
        proc = subprocess.Popen([pm2_bin, "jlist"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    except OSError as exc:
        return _failed(f"failed ({type(exc).__name__})")
    if started is not None:
        started(proc)
    with proc:
        try:
            out, _ = proc.communicate(timeout=JLIST_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return _failed("failed (TimeoutExpired)")
    if proc.returncode != 0:
        return _failed(f"exited with {proc.returncode}")
    return parse(out)


def _failed(how: str) -> list[Any]:
    # the message names the failure only; jlist's output (app env) is never logged
    diagnostics.warning(f"pm2 jlist {how}; using PM2's pid files and dump only", key="pm2-jlist")
    return []


class JlistWorker:
    """One ``pm2 jlist`` at a time on a daemon thread; ``answer`` is the last one (a whole
    list, swapped in one assignment), :meth:`take_fresh` says a new one arrived."""

    def __init__(self, parse: Parse) -> None:
        self.answer: list[Any] = []
        self._parse = parse
        self._thread: threading.Thread | None = None
        self._fresh = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    def ask(self, pm2_bin: str, home: str) -> None:
        """Start a run unless one is still going (a hung daemon: up to JLIST_TIMEOUT)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, args=(pm2_bin, home), daemon=True,
                                        name="logpipe-pm2-jlist")
        self._thread.start()

    def _run(self, pm2_bin: str, home: str) -> None:
        self.answer = run_jlist(pm2_bin, home, self._parse, started=self._started)
        self._fresh.set()

    def _started(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    def stop(self) -> None:
        """Kill a ``pm2 jlist`` still running (the process is exiting)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()

    def take_fresh(self) -> bool:
        """True once after each new answer."""
        fresh = self._fresh.is_set()
        self._fresh.clear()
        return fresh
