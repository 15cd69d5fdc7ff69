"""``logpipe status`` end to end: a collector killed with kill -9 while lines are still
undelivered is shown as not running with data behind, and status exits non-zero; a running
collector that has delivered everything gives exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import LOGPIPE, wait_for

pytestmark = pytest.mark.timeout(120)


def _status(state: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = subprocess.run([*LOGPIPE, "status", "--json", "--state-dir", str(state)],
                         capture_output=True, timeout=60)
    return res.returncode, json.loads(res.stdout)


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
