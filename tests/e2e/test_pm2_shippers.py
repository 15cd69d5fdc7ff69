"""The shipper as a PM2 app beside the apps it ships: no feedback loop, every line once.

Three shapes users deploy run in ONE PM2 daemon (a private PM2_HOME) next to two logging
apps: ``logpipe collect --pm2`` (NDJSON on its stdout, which PM2 writes into the very logs dir
it tails), ``logpipe collect --pm2 --to splunk`` (into the HEC double) and
``bash -c "logpipe collect --pm2 | logpipe sink console"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests._pm2_helpers import Pm2
from tests.doubles.hec_double import HecDouble
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")

N = 150  # iterations per app: a logger line and a print each, a stderr line every 10th

APP = f"""\
import os, sys, time
from logpipe import logger
for i in range({N}):
    logger.info("app line", i=i)
    print(f"plain {{i}} from {{os.getpid()}}", flush=True)
    if i % 10 == 0:
        print(f"stderr {{i}} from {{os.getpid()}}", file=sys.stderr, flush=True)
    time.sleep(0.05)  # pacing: the apps write while the shippers run
time.sleep(3600)  # stay alive: PM2 restarts an app that exits
"""
LINES_PER_APP = 2 * N + N // 10
VENV_BIN = Path(sys.executable).parent


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _start(pm2: Pm2, env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([str(pm2.binary), "start", *args], env=env, capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-1000:]


@pytest.mark.slow
def test_three_shipper_shapes_under_pm2_ship_every_line_once(pm2_bin: Path) -> None:
    """Each shipper's output count equals the apps' line count (2 apps x 315 lines), none of
    them reads its own or another shipper's PM2 files, and the counts stay flat for 8 s once
    the apps are quiet — where before the fix one shipper grew its own file without bound. A
    fourth shipper started afterwards delivers the same 630 lines, and none of them is read
    by the other three; after ``pm2 restart`` of the pipeline shipper nothing is read twice."""
    base = Path(tempfile.mkdtemp(prefix="lp-ship-"))  # short: PM2's sockets live in PM2_HOME
    pm2 = Pm2(pm2_bin, base / "h")
    logs = pm2.home / "logs"
    app = base / "app.py"
    app.write_text(APP)
    hec = HecDouble(token="ship-token").start()
    env = dict(pm2.env, PATH=f"{VENV_BIN}{os.pathsep}{pm2.env['PATH']}")
    try:
        pm2.start(app, "alpha")
        pm2.start(app, "beta")
        wait_for(lambda: _lines(logs / "alpha-out.log") >= 20, timeout=60, message="apps logging")
        logpipe = str(VENV_BIN / "logpipe")
        _start(pm2, dict(env, LOGPIPE_STATE_DIR=str(base / "s1")), logpipe, "--name", "ship-ndjson",
               "--interpreter", sys.executable, "--kill-timeout", "15000", "--", "collect", "--pm2")
        _start(pm2, dict(env, LOGPIPE_STATE_DIR=str(base / "s2"), LOGPIPE_SPLUNK_URL=hec.url,
                         LOGPIPE_SPLUNK_TOKEN=hec.token),
               logpipe, "--name", "ship-hec", "--interpreter", sys.executable,
               "--kill-timeout", "15000", "--", "collect", "--pm2", "--to", "splunk")
        _start(pm2, dict(env, LOGPIPE_STATE_DIR=str(base / "s3")), "bash", "--name", "ship-pipe",
               "--kill-timeout", "15000", "--", "-c", "logpipe collect --pm2 | logpipe sink console")
        want = 2 * LINES_PER_APP
        wait_for(lambda: _lines(logs / "alpha-out.log") + _lines(logs / "alpha-error.log")
                 >= LINES_PER_APP and _lines(logs / "beta-out.log") + _lines(logs / "beta-error.log")
                 >= LINES_PER_APP, timeout=90, message="the apps wrote all their lines")
        assert sum(_lines(logs / f"{a}-{s}.log") for a in ("alpha", "beta")
                   for s in ("out", "error")) == want

        def counts() -> tuple[int, int, int]:
            return (_lines(logs / "ship-ndjson-out.log"), len(hec.events()),
                    _lines(logs / "ship-pipe-out.log"))

        wait_for(lambda: min(counts()) >= want, timeout=90,
                 message=f"every shipper delivered {want} records")
        # an observation window, not a wait: nothing more may arrive (a feedback loop or a
        # duplicate would) — that takes a duration; checked every 0.5 s
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # flat once the apps are quiet
            assert counts() == (want, want, want), counts()
            time.sleep(0.5)
        # a shipper started (or renamed in the ecosystem file) later writes the apps' 630
        # lines at once into a new file: the others must not read a byte of it (the start race)
        _start(pm2, dict(env, LOGPIPE_STATE_DIR=str(base / "s4")), logpipe, "--name", "ship-late",
               "--interpreter", sys.executable, "--", "collect", "--pm2")
        try:
            wait_for(lambda: _lines(logs / "ship-late-out.log") >= want, timeout=60,
                     message="the late shipper delivered the apps' lines")
        except AssertionError:
            pytest.fail(f"{_lines(logs / 'ship-late-out.log')} lines; its stderr: "
                        f"{(logs / 'ship-late-error.log').read_text()[-3000:]}")
        deadline = time.monotonic() + 5  # observation window (as above)
        while time.monotonic() < deadline:
            assert counts() == (want, want, want), counts()
            assert _lines(logs / "ship-late-out.log") == want
            time.sleep(0.5)
        # restarted by PM2 (SIGINT to the whole tree, drained within kill_timeout): the new
        # pipeline resumes from its checkpoint and its files stay excluded for the others
        assert "resuming at byte" not in (logs / "ship-pipe-error.log").read_text()
        pm2("restart", "ship-pipe")
        wait_for(lambda: "resuming at byte" in (logs / "ship-pipe-error.log").read_text(),
                 timeout=60, message="the restarted pipeline resumed from its checkpoints")
        deadline = time.monotonic() + 5  # observation window (as above)
        while time.monotonic() < deadline:
            assert counts() == (want, want, want), counts()
            time.sleep(0.5)
        assert hec.duplicate_count() == 0
        services = {str(e.get("event", {}).get("service")) for e in hec.events()}
        assert services == {"alpha", "beta"}, services
        errs = (logs / "ship-ndjson-error.log").read_text() + (logs / "ship-pipe-error.log").read_text()
        assert "not collecting" in errs and "feedback guard" in errs
        print(f"\nshipper figures: apps wrote {want} lines; ndjson/hec/pipe out = {counts()}")
    finally:
        with contextlib.suppress(Exception):
            pm2("kill")
        hec.stop()
        shutil.rmtree(base, ignore_errors=True)
