"""status.py: what ``logpipe status`` concludes from what processes published — which need a
person (PROBLEM lines, exit 1), alive / stopped / DEAD, the table and ``--json``. (Against real
collectors and the HEC double: tests/e2e/test_status.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from logpipe import status
from logpipe._statusfile import status_dir

NOW = 1_796_132_415.0


def _publish(state: Path, name: str, doc: dict[str, Any]) -> None:
    d = Path(status_dir(str(state)))
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_bytes(orjson.dumps(doc))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_problems_from_published_sinks(tmp_path: Path) -> None:
    """A dead process with spooled batches, a live one whose spool is older than ``max_lag`` or
    whose last error is newer than its last success: one PROBLEM each. A live, current sink and
    a process that stopped cleanly are no problem; garbage files are skipped."""
    me, dead = os.getpid(), _dead_pid()
    sink = {"name": "splunk", "delivered": 5}
    _publish(tmp_path, "a", {"command": "sink", "pid": dead, "sinks": [{**sink, "spool_items": 3}]})
    _publish(tmp_path, "b", {"command": "sink", "pid": me, "sinks": [
        {**sink, "spool_oldest_age": 900},
        {**sink, "name": "file", "last_error": {"time": NOW, "text": "disk full"},
         "last_success": NOW - 60}]})
    _publish(tmp_path, "c", {"command": "collect", "pid": me, "sinks": [
        {**sink, "spool_oldest_age": 5, "last_error": {"time": NOW - 60, "text": "old"},
         "last_success": NOW}]})
    _publish(tmp_path, "d", {"command": "collect", "pid": dead, "stopped": True, "sinks": [sink]})
    (Path(status_dir(str(tmp_path))) / "junk.json").write_bytes(b"{not json")
    rep = status.gather(str(tmp_path), max_lag=300, now=NOW)
    assert [(p["command"], p["alive"]) for p in rep.processes] == [
        ("sink", False), ("sink", True), ("collect", True), ("collect", False)]
    assert rep.problems == [
        f"sink (pid {dead}) splunk: 3 batches spooled and the process is not running",
        f"sink (pid {me}) splunk: spool 900s behind",
        f"sink (pid {me}) file: last error 'disk full'"]
    doc = rep.to_json()
    assert doc["ok"] is False and doc["problems"] == rep.problems
    table = status.render(rep, now=NOW)
    assert "DEAD" in table and "stopped" in table and "alive" in table
    assert table.count("PROBLEM: ") == 3


def test_nothing_published_is_ok(tmp_path: Path) -> None:
    """An empty state dir: no files, no processes, no problems; the table ends with OK."""
    rep = status.gather(str(tmp_path), max_lag=300, now=NOW)
    assert (rep.files, rep.processes, rep.problems) == ([], [], [])
    assert rep.to_json()["ok"] is True
    assert status.render(rep, now=NOW).rstrip().endswith("OK")
