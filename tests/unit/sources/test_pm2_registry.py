"""Who wrote a PM2 log file when neither the apps' processes nor a ``pm2`` command answer."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from logpipe import diagnostics
from logpipe.sources.pm2 import Pm2Registry, parse_jlist


def _home(tmp_path: Path, dump: list[dict[str, object]] | None) -> Path:
    home = tmp_path / "h"
    (home / "logs").mkdir(parents=True)
    if dump is not None:
        (home / "dump.pm2").write_bytes(orjson.dumps(dump))
    return home


def test_dump_gives_instances_of_stopped_apps(tmp_path: Path) -> None:
    """``dump.pm2`` (``pm2 save``; PM2 leaves ``pm_id`` out of it) names each app's files and
    ``NODE_APP_INSTANCE``: a per-instance file gets its instance and the pm_id of its name's
    suffix, a fork app's file its instance and no pm_id; nothing is warned."""
    logs = tmp_path / "h" / "logs"
    dump = [{"name": "api", "NODE_APP_INSTANCE": i, "instance_var": "NODE_APP_INSTANCE",
             "pm_out_log_path": str(logs / f"api-out-{i + 3}.log"),
             "pm_err_log_path": str(logs / f"api-error-{i + 3}.log"), "SECRET": "s3cr3t"}
            for i in (0, 1)]
    dump.append({"name": "cron", "NODE_APP_INSTANCE": 0, "pm_out_log_path": str(logs / "cron-out.log"),
                 "pm_err_log_path": str(logs / "cron-error.log")})
    home = _home(tmp_path, dump)
    reg = Pm2Registry(str(home), pm2_bin="")
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        reg.refresh(force=True)
        d1, lv1 = reg.origin(str(logs / "api-error-4.log"))
        d2, _ = reg.origin(str(logs / "cron-out.log"))
    finally:
        diagnostics.set_stream(None)
    assert (d1["service"], d1["pm_id"], d1["instance_id"], lv1) == ("api", 4, "1", "error")
    assert (d2["service"], d2.get("pm_id"), d2["instance_id"]) == ("cron", None, "0")
    assert buf.getvalue() == b""
    assert "s3cr3t" not in repr(reg.apps)


def test_no_source_warns_once_per_file(tmp_path: Path) -> None:
    """No process, no ``pm2`` command, no dump: the record keeps the name's service and pm_id
    but gets no instance_id (a pm_id is not an instance number), and one warning per file
    says what is missing."""
    home = _home(tmp_path, None)
    reg = Pm2Registry(str(home), pm2_bin="")
    path = str(home / "logs" / "api-out-2.log")
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        d, _ = reg.origin(path)
        reg.origin(path)
    finally:
        diagnostics.set_stream(None)
    assert (d["service"], d["pm_id"], "instance_id" in d) == ("api", 2, False)
    msgs = [orjson.loads(x)["message"] for x in buf.getvalue().splitlines()]
    assert len(msgs) == 1 and "no instance_id" in msgs[0] and "dump.pm2" in msgs[0], msgs


def test_apps_running_logpipe_are_known_from_their_command() -> None:
    """jlist/dump entries whose script or arguments run logpipe (the shipper, ``bash -c
    "logpipe … | logpipe …"``) are flagged, so their files stay excluded while stopped; an
    app that merely has logpipe in a path or an argument value is not."""
    doc = [{"name": "ship", "pm_id": 0, "pm2_env": {"pm_exec_path": "/venv/bin/logpipe",
                                                     "args": ["collect", "--pm2"]}},
           {"name": "pipe", "pm_id": 1, "pm2_env": {
               "pm_exec_path": "/usr/bin/bash",
               "args": ["-c", "logpipe collect --pm2 | logpipe sink console"]}},
           {"name": "api", "pm_id": 2, "pm2_env": {"pm_exec_path": "/srv/logpipe-demo/api.py",
                                                    "args": ["--log", "logpipe.txt"]}}]
    assert [a.runs_logpipe for a in parse_jlist(orjson.dumps(doc))] == [True, True, False]
