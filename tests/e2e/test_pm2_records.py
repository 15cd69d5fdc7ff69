"""What a PM2 app's lines become: the right instance without a ``pm2`` command, and the same
records whatever PM2 format (``--time``, a custom ``log_date_format``, ``log_type: json``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from logpipe import record
from tests._collect_helpers import Collector
from tests._pm2_helpers import Pm2

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")

CRASHY = """\
import os, sys, time
from logpipe import logger
logger.info("logger line")
print(f"plain stdout {os.getpid()}", flush=True)
print(f"plain stderr {os.getpid()}", file=sys.stderr, flush=True)
marker = sys.argv[1] + os.environ["NODE_APP_INSTANCE"]
if not os.path.exists(marker):
    open(marker, "w").close()
    raise ValueError("boom")
time.sleep(3600)  # stay alive: PM2 restarts an app that exits
"""

FORMATS = """\
import sys, time, traceback
from logpipe import logger
logger.warning("hello", user="u1", n=3)
sys.stdout.write("plain line one\\n"); sys.stdout.flush()
sys.stderr.write("an error line\\n"); sys.stderr.flush()
try:
    raise ValueError("boom")
except ValueError:
    traceback.print_exc()
sys.stderr.flush()
logger.info("done")
time.sleep(3600)  # stay alive: PM2 restarts an app that exits
"""
VARIANTS = {
    "plain": (),
    "dated": ("--time",),
    "custom": ("--log-date-format", "DD/MM/YYYY hh:mm:ss.SSS A"),
    "wrapped": ("--log-type", "json"),
    "wrapdated": ("--log-type", "json", "--log-date-format", "YYYY-MM-DD HH:mm:ss"),
}


@pytest.fixture(scope="module")
def daemon(pm2_bin: Path) -> Iterator[tuple[Pm2, Path]]:
    """A private PM2 (its binary NOT on PATH for the collector) running a filler app (so pm_ids
    and instance numbers differ), ``crashy -i 2`` (crashes once per instance with a traceback,
    PM2 restarts it) and the formats app under each PM2 format."""
    base = Path(tempfile.mkdtemp(prefix="lp-rec-"))  # short: PM2's sockets live in PM2_HOME
    p = Pm2(pm2_bin, base / "h")
    (base / "crashy.py").write_text(CRASHY)
    (base / "fmt.py").write_text(FORMATS)
    (base / "filler.py").write_text("import time\ntime.sleep(3600)  # stay alive\n")
    try:
        p.start(base / "filler.py", "filler")
        p("start", str(base / "crashy.py"), "--name", "crashy", "-i", "2", "--interpreter",
          sys.executable, "--", str(base / "crashed-"))
        for name, extra in VARIANTS.items():
            p.start(base / "fmt.py", name, *extra)
        yield p, base
    finally:
        with contextlib.suppress(Exception):
            p("kill")
        shutil.rmtree(base, ignore_errors=True)


def _env(p: Pm2, base: Path, state: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return dict(os.environ, PM2_HOME=str(p.home), PATH=f"{venv_bin}{os.pathsep}{os.defpath}",
                LOGPIPE_STATE_DIR=str(base / state))


def test_instance_without_pm2_on_path(daemon: tuple[Pm2, Path]) -> None:
    """With no ``pm2`` command findable, every plain stdout line, stderr line and crash
    traceback of ``crashy`` (pm_ids 1 and 2, instances 0 and 1) carries the instance_id and
    pm_id that the logger lines of that same process carry; nothing warns about missing
    attribution."""
    p, base = daemon
    col = Collector(["--pm2"], env=_env(p, base, "s-inst"))
    try:
        col.wait_records(lambda r: r.get("service") == "crashy", n=14, timeout=60)
    finally:
        rc = col.terminate()
    recs = [r for r in col.snapshot() if r.get("service") == "crashy"]
    assert rc == 0, col.stderr
    logger_lines = [r for r in recs if r["message"] == "logger line"]
    ids = {(r["pm_id"], r["instance_id"]) for r in logger_lines}
    assert ids == {(1, "0"), (2, "1")}, ids
    plain = [r for r in recs if r not in logger_lines]
    kinds = {"stdout": 0, "stderr": 0, "traceback": 0}
    for r in plain:
        assert (r.get("pm_id"), r.get("instance_id")) in ids, r
        msg = str(r["message"])
        if msg.startswith("plain stdout"):
            kinds["stdout"] += 1
        elif msg.startswith("plain stderr"):
            kinds["stderr"] += 1
        elif "Traceback" in msg or "ValueError: boom" in str(r.get("exception", "")) + msg:
            kinds["traceback"] += 1
            assert "ValueError: boom" in orjson.dumps(r).decode()
    assert kinds == {"stdout": 4, "stderr": 4, "traceback": 2}, kinds
    assert b"plain lines carry" not in col.stderr


_VOLATILE = {record.TIME, record.SOURCE, record.SERVICE, record.PM_ID, record.INSTANCE_ID,
             record.PID, record.HOST}


def _content(recs: list[dict[str, Any]]) -> list[str]:
    return sorted(orjson.dumps({k: v for k, v in r.items() if k not in _VOLATILE},
                               option=orjson.OPT_SORT_KEYS).decode() for r in recs)


def test_pm2_formats_give_the_same_records(daemon: tuple[Pm2, Path]) -> None:
    """The same app under ``--time``, a custom ``log_date_format``, ``log_type: json`` and json
    with a date format gives exactly the records it gives without them — the logger's JSON
    line with its own level and fields, the plain and stderr lines, the traceback as one
    record — except the time: a plain line takes the PM2 prefix's time (local time read as
    such: within a minute of now) where the line has none."""
    p, base = daemon
    col = Collector(["--pm2"], env=_env(p, base, "s-fmt"))
    per_app = 5  # hello, plain line one, an error line, the traceback, done
    try:
        col.wait_records(lambda r: r.get("service") in VARIANTS, n=per_app * len(VARIANTS),
                         timeout=60)
    finally:
        rc = col.terminate()
    recs = [r for r in col.snapshot() if r.get("service") in VARIANTS]
    assert rc == 0, col.stderr
    by_app: dict[str, list[dict[str, Any]]] = {n: [] for n in VARIANTS}
    for r in recs:
        by_app[str(r["service"])].append(r)
    want = _content(by_app["plain"])
    assert len(want) == per_app, want
    assert any('"user":"u1"' in x and '"level":"warning"' in x for x in want)
    assert any("ValueError: boom" in x and "Traceback" in x for x in want)
    for name in VARIANTS:
        assert _content(by_app[name]) == want, name
    now = record.to_epoch(record.now())
    for name in ("dated", "custom"):
        plain_line = next(r for r in by_app[name] if r["message"] == "plain line one")
        t = record.to_epoch(plain_line["time"])
        assert t is not None and now is not None and abs(now - t) < 60, (name, plain_line["time"])
    # --time has whole seconds: the plain line and the traceback (held by the multiline
    # joiner, emitted later) carry the prefix's time, not the receipt time
    for r in by_app["dated"]:
        if r["message"] == "plain line one" or "Traceback" in str(r["message"]):
            assert str(r["time"]).endswith(".000000Z"), r
    assert b"does not strip" not in col.stderr
