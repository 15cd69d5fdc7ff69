"""``logpipe collect --pm2`` against a real PM2 (installed from npm) with a private PM2_HOME."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._collect_helpers import Collector, run_collect
from tests._pm2_helpers import Pm2
from tests.helpers import wait_for

APP = """\
import json, os, sys, time
for i in range(3):
    print(json.dumps({"message": f"tick {i}", "n": i, "app_pid": os.getpid()}), flush=True)
print(f"plain on stderr from {os.getpid()}", file=sys.stderr, flush=True)
time.sleep(600)  # stay alive: PM2 restarts an app that exits
"""


@pytest.fixture(scope="module")
def pm2(pm2_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pm2]:
    """PM2 running ``single`` (fork mode) and ``multi`` (``-i 2``: per-instance files
    ``multi-out-<pm_id>.log``); ``pm2 kill`` at teardown whatever happens."""
    # short path: PM2's unix sockets live in PM2_HOME (sun_path is limited to 108 bytes)
    base = Path(tempfile.mkdtemp(prefix="lp-pm2-"))
    home = base / "h"
    app = base / "app.py"
    app.write_text(APP)
    p = Pm2(pm2_bin, home)
    try:
        p.start(app, "single")
        p.start(app, "multi", "-i", "2")
        wait_for(lambda: p.log_lines() >= 12, timeout=30, message="12 lines in PM2's log files")
        yield p
    finally:
        with contextlib.suppress(Exception):
            p("kill")
        shutil.rmtree(base, ignore_errors=True)


def _check(recs: list[dict[str, object]], instances: dict[str, set[str]]) -> None:
    by_svc: dict[str, list[dict[str, object]]] = {}
    for r in recs:
        by_svc.setdefault(str(r["service"]), []).append(r)
    assert set(by_svc) == set(instances), by_svc.keys()
    for svc, want in instances.items():
        rs = by_svc[svc]
        assert len(rs) == 4 * len(want)
        assert {str(r["instance_id"]) for r in rs} == want
        for r in rs:
            assert isinstance(r["pm_id"], int)
            if str(r["message"]).startswith("plain on stderr"):
                assert r["level"] == "error"
            else:
                assert r["level"] == "info" and str(r["message"]).startswith("tick")


def test_collect_pm2_with_jlist(pm2: Pm2, tmp_path: Path) -> None:
    """With pm2 on PATH: every record carries the app's name as service and PM2's instance
    number (NODE_APP_INSTANCE from ``pm2 jlist``) as instance_id — 0 and 1 for ``-i 2`` even
    though their pm_ids are 1 and 2 — and stderr lines are errors."""
    rc, recs, err = run_collect(["--once", "--pm2", str(pm2.home)], env=pm2.env)
    assert rc == 0, err
    _check(recs, {"single": {"0"}, "multi": {"0", "1"}})
    multi = {(r["pm_id"], r["instance_id"]) for r in recs if r["service"] == "multi"}
    assert multi == {(1, "0"), (2, "1")}
    assert b"SECRET" not in err and b"pm2_env" not in err


def test_collect_pm2_without_pm2_on_path_reads_pids_and_environ(pm2: Pm2) -> None:
    """When no ``pm2`` command can be found, PM2_HOME's ``pids/`` files and each app's
    environment in /proc still give the right instance: NODE_APP_INSTANCE 0 and 1 for the
    ``-i 2`` app (pm_ids 1 and 2), 0 for the fork app — and no warning."""
    env = dict(pm2.env, PATH=os.defpath)  # --pm2 without a value reads $PM2_HOME
    rc, recs, err = run_collect(["--once", "--pm2"], env=env)
    assert rc == 0, err
    _check(recs, {"single": {"0"}, "multi": {"0", "1"}})
    multi = {(r["pm_id"], r["instance_id"]) for r in recs if r["service"] == "multi"}
    assert multi == {(1, "0"), (2, "1")}
    assert b"plain lines carry" not in err


def test_pm2_app_started_after_collector(pm2: Pm2, tmp_path: Path) -> None:
    """A PM2 app started while the collector runs is picked up (glob rescan) with its name
    and instance from a refreshed ``pm2 jlist``."""
    app = tmp_path / "late.py"
    app.write_text(APP)
    col = Collector(["--pm2", str(pm2.home)], env=pm2.env)
    try:
        col.wait_records(lambda r: r.get("service") == "multi", n=8, timeout=30)
        pm2.start(app, "late")
        late = col.wait_records(lambda r: r.get("service") == "late", n=4, timeout=30)
    finally:
        rc = col.terminate()
        with contextlib.suppress(AssertionError):
            pm2("delete", "late")
    assert rc == 0, col.stderr
    assert {r["instance_id"] for r in late} == {"0"}
    assert {r["pm_id"] for r in late} == {3}
