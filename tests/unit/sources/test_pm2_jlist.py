"""sources/_pm2_jlist.py: ``pm2 jlist`` run as a real process — its stdout parsed, a failure
said in one warning (never jlist's output, which holds apps' environments), a missing command
survived. (A hung one: tests/e2e/test_pm2_jlist.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

from logpipe import diagnostics
from logpipe.sources._pm2_jlist import JlistWorker, run_jlist
from tests.helpers import wait_for


def _fake(tmp_path: Path, body: str) -> str:
    fake = tmp_path / "pm2"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(0o755)
    return str(fake)


def _warnings(buf: io.BytesIO) -> list[str]:
    return [json.loads(x)["message"] for x in buf.getvalue().splitlines()]


def test_run_jlist_parses_stdout_and_says_failures_without_their_output(tmp_path: Path) -> None:
    """Exit 0: stdout goes to ``parse`` (PM2_HOME set to the home asked); exit 3 with a secret
    on stdout: [] and one warning naming the status, not the output; no such command: [] and
    a warning naming the error."""
    ok = _fake(tmp_path, 'echo "$PM2_HOME"\n')
    assert run_jlist(ok, "/srv/pm2", lambda out: [out.strip()]) == [b"/srv/pm2"]
    bad = _fake(tmp_path, "echo SECRET=s3cr3t\nexit 3\n")
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        assert run_jlist(bad, "/h", lambda out: [out]) == []
        diagnostics.reset()
        assert run_jlist(str(tmp_path / "missing"), "/h", lambda out: [out]) == []
    finally:
        diagnostics.set_stream(None)
    said = _warnings(buf)
    assert said[0].startswith("pm2 jlist exited with 3;") and "s3cr3t" not in buf.getvalue().decode()
    assert said[1].startswith("pm2 jlist failed (FileNotFoundError);")


def test_worker_answers_once_fresh(tmp_path: Path) -> None:
    """``ask`` runs jlist on the worker; its answer replaces the last one and ``take_fresh`` is
    True exactly once after it."""
    worker = JlistWorker(lambda out: out.split())
    assert worker.answer == [] and not worker.take_fresh()
    worker.ask(_fake(tmp_path, "echo a b\n"), "/h")
    wait_for(worker.take_fresh, message="the worker's answer")
    assert worker.answer == [b"a", b"b"] and not worker.take_fresh()
