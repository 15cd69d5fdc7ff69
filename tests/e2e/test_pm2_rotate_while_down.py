"""``collect --pm2`` after rotations while it was down, with a real PM2 (issue 15 part 4):
``logpipe rotate`` + ``pm2 reloadLogs`` (the renamed file no ``*.log`` glob matches), then
pm2-logrotate's copytruncate naming — every line once, and the rotated file compressed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson

from tests._collect_helpers import Collector
from tests._pm2_helpers import Pm2
from tests._rotate_helpers import read_bytes, run_rotate
from tests.helpers import wait_for

APP = """\
import itertools, json, time
for i in itertools.count():
    print(json.dumps({"seq": i}), flush=True)
    time.sleep(0.004)  # pacing: the app's rate is the scenario
"""


def _lines_on_disk(logs: Path) -> int:
    """Lines in every app-out file, rotated and compressed ones included."""
    return sum(read_bytes(str(p)).count(b"\n") for p in logs.iterdir()
               if p.is_file() and p.name.startswith("app-out"))


def test_pm2_rotation_while_collector_down_every_line_once(pm2_bin: Path) -> None:
    """A PM2 app writes numbered lines (~200/s). The collector (``--pm2``) is stopped; the
    README's recipe runs (``logpipe rotate --retain 7 logs/*.log``, ``pm2 reloadLogs``): the
    renamed ``app-out.log.<stamp>`` holds lines the collector never read, under a name
    ``*.log`` does not match. Restarted, the collector finds it by identity and reads exactly
    its unread lines; the next rotate run compresses it although the collector holds it, and
    the cron line run beside the running collector (rotate, reloadLogs, rotate) compresses on
    its second run. Then a copytruncate with pm2-logrotate's naming
    (``app-out__2026-12-01_00-00-00.log``) while down. Every line arrives exactly once."""
    base = Path(tempfile.mkdtemp(prefix="lp-pm2rd-"))  # short: PM2's sockets live in PM2_HOME
    pm2 = Pm2(pm2_bin, base / "h")
    app = base / "app.py"
    app.write_text(APP)
    logs = pm2.home / "logs"
    log = logs / "app-out.log"
    glob = str(logs / "*.log")
    collected: list[dict[str, object]] = []

    def collect_until(pred: object, what: str) -> Collector:
        c = Collector(["--pm2", str(pm2.home)], env=pm2.env)
        try:
            wait_for(lambda: pred(collected + c.snapshot()), 60, message=what)  # type: ignore[operator]
            assert c.terminate() == 0
        finally:
            c.kill()
        collected.extend(c.snapshot())
        return c

    try:
        pm2.start(app, "app")
        wait_for(lambda: log.exists() and log.stat().st_size > 2000, 30, message="PM2 output")
        collect_until(lambda recs: len(recs) >= 300, "300 records")
        # --- down: rename rotation + reloadLogs, the app writes on ---
        size = log.stat().st_size
        wait_for(lambda: log.stat().st_size > size + 3000, 30, message="unread lines")
        first = run_rotate(glob, "--retain", "7", env=pm2.env)
        assert first.returncode == 0, first.stderr
        pm2("reloadLogs")
        rotated = [p for p in logs.iterdir() if p.name.startswith("app-out.log.")]
        assert len(rotated) == 1
        wait_for(lambda: log.exists() and log.stat().st_size > 2000, 30, message="the new file")
        # --- restarted: the renamed file's unread lines, then the new file ---
        renamed = {orjson.loads(x)["seq"] for x in rotated[0].read_bytes().splitlines()}
        c = Collector(["--pm2", str(pm2.home)], env=pm2.env)
        try:
            wait_for(lambda: renamed <= {r.get("seq") for r in collected + c.snapshot()},
                     60, message="every line of the renamed file")
            # --- the README's cron line beside the running collector: R && reloadLogs && R ---
            r1 = run_rotate(glob, "--retain", "7", env=pm2.env)
            # the file renamed while down: delivered, compressed though the collector holds it
            assert "compressed 1" in r1.stdout, r1.stdout
            assert Path(f"{rotated[0]}.zst").exists()
            pm2("reloadLogs")
            r2 = run_rotate(glob, "--retain", "7", "--max-size", "1G", env=pm2.env)
            assert "compressed 1" in r2.stdout and "postponed" not in r2.stdout, r2.stdout
            assert c.terminate() == 0
        finally:
            c.kill()
        collected.extend(c.snapshot())
        assert "renamed while the collector was down" in c.stderr.decode()
        # --- down again: pm2-logrotate's copytruncate (app paused: no copy->truncate window) ---
        pid = int(pm2("pid", "app").split()[0])
        os.kill(pid, signal.SIGSTOP)
        try:
            copy = logs / "app-out__2026-12-01_00-00-00.log"
            shutil.copyfile(log, copy)
            os.truncate(log, 0)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: log.stat().st_size > 2000, 30, message="lines after the truncate")
        pm2("stop", "app")
        total = _lines_on_disk(logs)
        collect_until(lambda recs: len([r for r in recs if "seq" in r]) >= total, f"{total} records")
    finally:
        with contextlib.suppress(Exception):
            pm2("kill")
        shutil.rmtree(base, ignore_errors=True)
    # (`pm2 stop` interrupts the app: its KeyboardInterrupt traceback goes to app-error.log)
    odd = [r for r in collected if "seq" not in r and "app-error" not in str(r["source"])]
    assert not odd, odd[:3]
    collected = [r for r in collected if "seq" in r]
    seqs = Counter(int(str(r["seq"])) for r in collected)
    dup = sum(n - 1 for n in seqs.values())
    missing = set(range(max(seqs) + 1)) - set(seqs)
    print(f"\npm2 rotation while down: {len(collected)} records, {len(missing)} missing, "
          f"{dup} duplicated")
    assert not missing and dup == 0
    assert len(collected) == total
    _ = sys  # (the app's interpreter is the test's: Pm2.start)
