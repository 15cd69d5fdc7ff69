"""The status publisher (what collect/sink write for ``logpipe status``) and the rules by which
``logpipe status`` says a person is needed."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

from logpipe import _statusfile, diagnostics, status


class _StatsSink:
    """A sink with the Splunk sink's ``stats()`` shape."""

    name = "splunk"

    def __init__(self) -> None:
        self.st: dict[str, Any] = {
            "spooled": 30, "delivered": 10, "retried": 4, "quarantined": 1, "left_in_spool": 19,
            "spool": {"items": 3, "bytes": 5000},
            "endpoints": [{"url": "http://127.0.0.1:1", "up": False, "last_error": "refused",
                           "last_success": 1000.0}]}

    def stats(self) -> dict[str, Any]:
        return self.st


def test_publisher_maps_stats_and_keeps_the_last_error(tmp_path: Path) -> None:
    """A sink's stats() becomes the published counters, spool depth, endpoints and last
    success; its last warning ("splunk: …") is the last error, with its time; the file is
    replaced atomically in <state>/status/<pid>.json."""
    sink = _StatsSink()
    pub = _statusfile.Publisher(str(tmp_path), "sink splunk", [], [sink])
    buf = io.BytesIO()
    buf.fileno = lambda: -1  # type: ignore[method-assign]
    diagnostics.set_stream(buf)
    try:
        diagnostics.warning("splunk: http://127.0.0.1:1: refused; retrying")
    finally:
        diagnostics.set_stream(None)
    pub.publish()
    doc = json.loads((tmp_path / "status" / f"{os.getpid()}.json").read_bytes())
    [s] = doc["sinks"]
    assert (s["delivered"], s["retried"], s["quarantined"], s["spooled"]) == (10, 4, 1, 30)
    assert (s["spool_items"], s["spool_bytes"], s["spool_records"]) == (3, 5000, 19)
    assert s["endpoints"] == [{"url": "http://127.0.0.1:1", "up": False, "last_error": "refused"}]
    assert s["last_success"] == 1000.0 and s["last_error"]["text"].startswith("splunk: ")
    assert s["last_error"]["time"] > 1000.0 and s["spool_oldest_age"] >= 0
    diagnostics.remove_listener(pub._on_diagnostic)


def _write_status(state: Path, pid: int, sinks: list[dict[str, Any]], stopped: bool = False) -> None:
    d = state / "status"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{pid}.json").write_text(json.dumps({"pid": pid, "command": "sink splunk",
                                               "stopped": stopped, "sinks": sinks}))


def test_rules_for_a_person_needed(tmp_path: Path) -> None:
    """Alive and caught up: no problem. A last error newer than the last success, a spool
    older than --max-lag, or a stopped/dead process with spooled batches: a problem each."""
    now = time.time()
    ok = {"name": "splunk", "spool_items": 0, "spool_oldest_age": 0.0, "last_success": now,
          "last_error": {"time": now - 60, "text": "splunk: old"}}
    _write_status(tmp_path, os.getpid(), [ok])
    assert status.gather(str(tmp_path), max_lag=30).problems == []
    late = {**ok, "spool_items": 2, "spool_oldest_age": 45.0,
            "last_error": {"time": now + 1, "text": "splunk: refused"}}
    _write_status(tmp_path, os.getpid(), [late])
    problems = status.gather(str(tmp_path), max_lag=30).problems
    assert len(problems) == 2 and "spool 45s behind" in problems[0] and "refused" in problems[1]
    _write_status(tmp_path, os.getpid(), [{**ok, "spool_items": 2}], stopped=True)
    [problem] = status.gather(str(tmp_path), max_lag=30).problems
    assert "not running" in problem
    text = status.render(status.gather(str(tmp_path), max_lag=30))
    assert "stopped" in text and "PROBLEM:" in text


def test_tailed_file_merged_across_checkpoint_files(tmp_path: Path) -> None:
    """One file held by three command lines' checkpoint files — a stopped one's shorter
    fingerprint at an older offset, a running one's (its .lock held, its pid in it) at the
    end, and a ghost of an earlier file that had the inode (fingerprint not matching) at 0 —
    is one row: 0 bytes behind, attributed to the running one's pid; no problem."""
    import fcntl

    from logpipe.checkpoint import fingerprint

    log = tmp_path / "a.log"
    data = b'{"message": "a1"}\n{"message": "a2"}\n'
    log.write_bytes(data)
    st = os.stat(log)
    tail = tmp_path / "state" / "tail"
    tail.mkdir(parents=True)

    def entry(fp_len: int, offset: int, fp: str | None = None) -> dict[str, Any]:
        return {"dev": st.st_dev, "ino": st.st_ino, "fp": fp or fingerprint(data[:fp_len]),
                "fp_len": fp_len, "offset": offset, "path": str(log), "seen": 1.0}

    for key, e in (("stopped", entry(18, 18)), ("running", entry(36, 36)),
                   ("ghost", entry(36, 0, fp="0" * 16))):
        (tail / f"{key}.json").write_text(json.dumps({"version": 1, "files": [e]}))
        (tail / f"{key}.lock").write_text("4242\n" if key == "running" else "1\n")
    fd = os.open(tail / "running.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rep = status.gather(str(tmp_path / "state"), max_lag=30)
    finally:
        os.close(fd)
    [row] = rep.files
    assert (row["bytes_behind"], row["collector_running"], row["collector_pid"]) == (0, True, 4242)
    assert rep.problems == []
