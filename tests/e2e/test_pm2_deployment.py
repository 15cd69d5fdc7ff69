"""The README's PM2 deployment, run as written: ``examples/pm2/ecosystem.config.js`` under a
real PM2, the shipper into the HEC double, and ``examples/pm2/crontab``'s rotation line run
with cron's bare environment."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from logpipe.rotate import CREATED_XATTR
from tests._pm2_helpers import Pm2
from tests.doubles.hec_double import HecDouble
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")


def _cron_command(home: Path, state: Path, pm2: Path) -> str:
    """The crontab's command with this test's paths for the example's absolute ones."""
    lines = [ln for ln in (ROOT / "examples/pm2/crontab").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1, lines
    command = lines[0].split(None, 5)[5]
    node = shutil.which("node")
    assert node is not None
    for old, new in (("/home/app/.pm2", str(home)), ("/var/lib/logpipe", str(state)),
                     ("/opt/logpipe/venv/bin/logpipe", str(VENV_BIN / "logpipe")),
                     ("/usr/local/bin/pm2", str(pm2)),
                     ("PATH=/usr/local/bin:", f"PATH={Path(node).parent}:")):
        assert old in command, old
        command = command.replace(old, new)
    return command


@pytest.mark.slow
def test_example_ecosystem_and_cron_line(pm2_bin: Path) -> None:
    """``pm2 start examples/pm2/ecosystem.config.js``: the shipper app delivers the example
    apps' records to HEC — api's two instances as instance_id 0 and 1 with their own pm_ids,
    worker's log_type json chunks as its logger's records — and never its own files. Then
    the crontab line, run with cron's bare environment (``env -i``, PATH=/usr/bin:/bin
    before its own export), exits 0, rotates the logs, and records keep arriving without a
    duplicate."""
    base = Path(tempfile.mkdtemp(prefix="lp-eco-"))  # short: PM2's sockets live in PM2_HOME
    pm2 = Pm2(pm2_bin, base / "h")
    state = base / "state"
    token = base / "token"
    hec = HecDouble(token="eco-token").start()
    token.write_text(hec.token)
    token.chmod(0o600)
    env = dict(pm2.env, LOGPIPE_BIN=str(VENV_BIN / "logpipe"), LOGPIPE_PYTHON=sys.executable,
               LOGPIPE_EXAMPLES=str(ROOT / "examples"), LOGPIPE_SPLUNK_URL=hec.url,
               LOGPIPE_SPLUNK_TOKEN_FILE=str(token), LOGPIPE_STATE_DIR=str(state))
    try:
        proc = subprocess.run([str(pm2_bin), "start", str(ROOT / "examples/pm2/ecosystem.config.js")],
                              env=env, capture_output=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-1000:]

        def by_service(svc: str) -> list[dict[str, object]]:
            return [e["event"] for e in hec.events() if e["event"].get("service") == svc]

        wait_for(lambda: {str(e.get("instance_id")) for e in by_service("api")} == {"0", "1"}
                 and len(by_service("worker")) >= 3, timeout=90, message="api 0/1 and worker")
        services = {e["event"].get("service") for e in hec.events()}
        assert services == {"api", "worker"}, services
        pairs = {(e.get("pm_id"), str(e.get("instance_id"))) for e in by_service("api")}
        assert len(pairs) == 2 and {i for _, i in pairs} == {"0", "1"}, pairs
        assert all("job_id" in e or "message" in e for e in by_service("worker"))
        assert not any("logpipe-shipper" in str(e.get("source")) for e in by_service("worker"))

        before = len(hec.events())
        yesterday = str(int(time.time()) - 86400).encode()
        for log in (pm2.home / "logs").glob("*.log"):  # --daily: "started yesterday"
            try:
                os.setxattr(log, CREATED_XATTR, yesterday)
            except OSError as exc:
                pytest.skip(f"no user xattrs here ({exc}): cannot age the logs for --daily")
        cron = subprocess.run(["env", "-i", f"HOME={base}", "PATH=/usr/bin:/bin", "sh", "-c",
                               _cron_command(pm2.home, state, pm2_bin)],
                              capture_output=True, timeout=120, check=False)
        assert cron.returncode == 0, cron.stderr.decode()[-2000:]
        assert b"not found" not in cron.stderr
        rotated = [p.name for p in (pm2.home / "logs").iterdir() if re.search(r"\.log\.", p.name)]
        assert any(n.startswith("api-out") for n in rotated), (rotated, cron.stdout, cron.stderr)
        wait_for(lambda: len(hec.events()) >= before + 6, timeout=60,
                 message="records keep arriving after the rotation")
        assert hec.duplicate_count() == 0
    finally:
        with contextlib.suppress(Exception):
            pm2("kill")
        hec.stop()
        shutil.rmtree(base, ignore_errors=True)
