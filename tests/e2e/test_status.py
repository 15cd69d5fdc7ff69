"""``logpipe status`` end to end: a Splunk sink through a HEC outage (the strict HEC double
stopped and restarted) — growing spool, last error, non-zero past --max-lag, then zero lag and
exit 0 after recovery; a collector killed with kill -9 while lines are still undelivered is shown
as not running with data behind; a file two command lines' checkpoints hold is shown once, at the
highest offset, attributed to the running collector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests._splunk_helpers import TOKEN, ndjson, records, sink_env, spawn_sink
from tests.doubles.hec_double import HecDouble
from tests.helpers import LOGPIPE, wait_for

pytestmark = pytest.mark.timeout(120)


def _status(state: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = subprocess.run([*LOGPIPE, "status", "--json", "--state-dir", str(state), *args],
                         capture_output=True, timeout=60)
    return res.returncode, json.loads(res.stdout)


def _splunk(doc: dict[str, Any]) -> dict[str, Any]:
    """The running splunk sink's published state ({} before it first published)."""
    sinks = [s for p in doc["processes"] if p["alive"] for s in p["sinks"] if s["name"] == "splunk"]
    assert len(sinks) <= 1
    return dict(sinks[0]) if sinks else {}


def test_hec_outage_spool_grows_then_drains(tmp_path: Path) -> None:
    """While HEC is down the published spool grows, the last error is shown with the endpoint
    down, and status exits 1 (and names the spool past --max-lag 1); once HEC is back the
    spool drains to zero, lag is 0, the endpoint is up and status exits 0."""
    state = tmp_path / "state"
    with HecDouble(token=TOKEN) as hec:
        sink = spawn_sink(sink_env(state, hec.url), stderr_path=tmp_path / "err")
        assert sink.stdin is not None
        try:
            sink.stdin.write(ndjson(records(10)))
            sink.stdin.flush()
            wait_for(lambda: _status(state)[0] == 0 and _splunk(_status(state)[1]).get("delivered") == 10,
                     timeout=60, message="10 delivered, status 0")
            hec.stop()
            sink.stdin.write(ndjson(records(20, start=10)))
            sink.stdin.flush()
            wait_for(lambda: (_splunk(_status(state)[1]).get("spool_records") or 0) >= 20,
                     timeout=60, message="20 records spooled")
            wait_for(lambda: _splunk(_status(state)[1]).get("last_error"), timeout=60,
                     message="the last error published")
            sink.stdin.write(ndjson(records(5, start=30)))
            sink.stdin.flush()
            wait_for(lambda: (_splunk(_status(state)[1]).get("spool_records") or 0) >= 25,
                     timeout=60, message="the spool growing to 25")
            wait_for(lambda: (_splunk(_status(state)[1]).get("spool_oldest_age") or 0) > 1.5,
                     timeout=60, message="spool age past 1.5 s")
            code, doc = _status(state, "--max-lag", "1")
            s = _splunk(doc)
            assert code == 1 and len(s["endpoints"]) == 1
            assert s["endpoints"][0]["url"] == hec.url and s["endpoints"][0]["up"] is False
            assert "refused" in s["endpoints"][0]["last_error"]
            assert "splunk" in s["last_error"]["text"] and TOKEN not in json.dumps(doc)
            assert any("spool" in p and "behind" in p for p in doc["problems"])
            assert any("last error" in p for p in doc["problems"])
            hec.start()
            wait_for(lambda: _status(state)[0] == 0, timeout=60, message="status 0 after recovery")
            code, doc = _status(state)
            s = _splunk(doc)
            assert s["delivered"] == 35 and s["spool_records"] == 0 and s["spool_items"] == 0
            assert s["spool_oldest_age"] == 0
            assert s["endpoints"][0]["up"] and doc["problems"] == []
            assert len(hec.events()) >= 35
        finally:
            sink.stdin.close()
            sink.wait(timeout=60)


def test_dead_collector_with_data_behind(tmp_path: Path) -> None:
    """Running and caught up: exit 0, the process alive and zero bytes behind. After kill -9
    and more lines: the file shows the bytes and records behind, no collector running, the
    process not alive, and exit 1."""
    log, state = tmp_path / "api.log", tmp_path / "state"
    log.write_text('{"message": "one"}\n')
    proc = subprocess.Popen([*LOGPIPE, "collect", str(log), "--to", f"file:{tmp_path / 'out'}",
                             "--state-dir", str(state)], stderr=subprocess.DEVNULL)
    try:
        def caught_up() -> bool:
            code, doc = _status(state)
            return code == 0 and bool(doc["files"]) and doc["files"][0]["bytes_behind"] == 0 \
                and any(p["alive"] for p in doc["processes"])
        wait_for(caught_up, timeout=60, message="a caught-up, alive collector")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with open(log, "a") as fh:
        fh.write('{"message": "two"}\n{"message": "three"}\n')
    code, doc = _status(state)
    assert code == 1
    f = doc["files"][0]
    assert f["path"] == str(log) and f["records_behind"] == 2 and not f["collector_running"]
    assert f["bytes_behind"] == os.path.getsize(log) - len('{"message": "one"}\n')
    assert not any(p["alive"] for p in doc["processes"])
    assert any("no collector running" in p for p in doc["problems"])


def test_file_shown_once_across_command_lines(tmp_path: Path) -> None:
    """Checkpoints are per file identity, shared by the command lines of a state dir: with
    `collect A B` running and a `collect A` that was started (it left A to the first) and then
    stopped — its checkpoint file stays, holding A at an older offset — status shows A once,
    at the running collector's offset (0 bytes behind once that one caught up), attributed to
    that collector's pid, and exits 0. Before the merge, A was listed twice, the stopped
    command line's copy "17 bytes behind and no collector running", exit 1."""
    a, b, state = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "state"
    a.write_text('{"message": "a1"}\n')
    b.write_text('{"message": "b1"}\n')

    def collect(*files: Path, err: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / err, "wb") as fh:  # the child keeps its own descriptor
            return subprocess.Popen([*LOGPIPE, "collect", *map(str, files), "--to",
                                     f"file:{tmp_path / err}.out", "--state-dir", str(state)],
                                    stderr=fh)

    def rows(path: Path) -> list[dict[str, Any]]:
        return [f for f in _status(state)[1]["files"] if f["path"] == str(path)]

    both = collect(a, b, err="both")
    try:
        wait_for(lambda: [f["bytes_behind"] for f in rows(a) + rows(b)] == [0, 0], timeout=60,
                 message="collect A B caught up")
        only_a = collect(a, err="only_a")
        try:
            wait_for(lambda: "not reading" in (tmp_path / "only_a").read_text(), timeout=60,
                     message="collect A leaving A to collect A B")
        finally:
            only_a.send_signal(signal.SIGTERM)
            assert only_a.wait(timeout=60) == 0
        assert len(list((state / "tail").glob("*.json"))) == 2  # the stopped one's file stays
        with open(a, "a") as fh:
            fh.write('{"message": "a2"}\n')
        wait_for(lambda: any(f["bytes_behind"] == 0 and f["collector_running"] for f in rows(a)),
                 timeout=60, message="A delivered by collect A B")
        code, doc = _status(state)
        a_rows = [f for f in doc["files"] if f["path"] == str(a)]
        assert len(a_rows) == 1, a_rows
        row = a_rows[0]
        assert row["bytes_behind"] == 0 and row["records_behind"] == 0
        assert row["collector_running"] and row["collector_pid"] == both.pid
        assert len(doc["files"]) == 2 and doc["problems"] == [] and code == 0
        text = subprocess.run([*LOGPIPE, "status", "--state-dir", str(state)], capture_output=True,
                              text=True, timeout=60).stdout
        assert sum(str(a)[-40:] in line for line in text.splitlines()) == 1
        assert f"running (pid {both.pid})" in text
    finally:
        both.send_signal(signal.SIGTERM)
        both.wait(timeout=60)
