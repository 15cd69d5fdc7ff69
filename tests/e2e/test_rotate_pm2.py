"""`logpipe rotate` on a real PM2's log files with the documented recipe (rotate; pm2 reloadLogs; rotate)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from logpipe import rotate
from tests._pm2_helpers import Pm2
from tests._rotate_helpers import history, run_rotate
from tests.helpers import wait_for

APP = """\
import itertools, json, sys, time
for i in itertools.count():
    print(json.dumps({"seq": i}), flush=True)
    if i % 20 == 0:
        time.sleep(0.02)  # pacing: ~1k lines/s is the scenario
"""


def test_pm2_rename_reload_rotate_loses_nothing(pm2_bin: Path) -> None:
    """A PM2 fork app writes ~1k numbered lines/s to app-out.log. Three times: `logpipe rotate`
    renames the file (PM2 keeps writing into the renamed one, so it is left uncompressed),
    `pm2 reloadLogs` makes PM2 reopen, a second `logpipe rotate --max-size 1G` (nothing due)
    compresses what PM2 held. Afterwards every line is on disk exactly once, in order, and every
    rotated file is compressed."""
    base = Path(tempfile.mkdtemp(prefix="lp-rot-pm2-"))  # short: PM2's sockets live in PM2_HOME
    pm2 = Pm2(pm2_bin, base / "h")
    app = base / "app.py"
    app.write_text(APP)
    log = pm2.home / "logs" / "app-out.log"
    try:
        pm2("start", str(app), "--name", "app", "--interpreter", sys.executable)
        wait_for(lambda: log.exists() and log.stat().st_size > 2000, timeout=30, message="PM2 output")
        glob = str(pm2.home / "logs" / "*.log")
        for _ in range(3):
            first = run_rotate(glob, "--retain", "100", env=pm2.env)
            assert first.returncode == 0, first.stderr
            assert "still writes to it (PM2: run `pm2 reloadLogs`" in first.stdout
            pm2("reloadLogs")
            second = run_rotate(glob, "--retain", "100", "--max-size", "1G", env=pm2.env)
            assert second.returncode == 0, second.stderr
            assert "rotated 0, compressed 1 " in second.stdout, second.stdout
            size = log.stat().st_size
            wait_for(lambda s=size: log.stat().st_size > s + 2000, message="PM2 writes on")  # type: ignore[misc]
        pm2("stop", "app")
    finally:
        with contextlib.suppress(Exception):
            pm2("kill")
    try:
        rotated = rotate.rotated_files(str(log))
        assert len(rotated) == 3 and all(r.compressed for r in rotated)
        seqs = [orjson.loads(x)["seq"] for x in history(log).splitlines()]
        assert seqs == list(range(len(seqs))) and len(seqs) > 3000
    finally:
        shutil.rmtree(base, ignore_errors=True)
