"""sources/pm2.py: who wrote a PM2 log file — from a dump when neither the apps' processes nor a
``pm2`` command answer, and ``pm2 jlist`` on a worker thread after start-up."""

from __future__ import annotations

import io
import os
from pathlib import Path

import orjson

from logpipe import diagnostics
from logpipe.sources.pm2 import Pm2Registry, parse_jlist
from tests.helpers import wait_for


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


def test_jlist_after_start_up_runs_on_a_worker_and_its_answer_arrives_later(tmp_path: Path) -> None:
    """With a live daemon (rpc.sock, a live pm2.pid) and a ``pm2`` whose second ``jlist`` waits
    (a real process): the start-up refresh waits for jlist (its app known at once); a later
    refresh returns while jlist still runs, keeping the previous answer; once jlist answers,
    the next refresh takes its new app in, without running jlist again."""
    home = _home(tmp_path, None)
    (home / "rpc.sock").write_text("")
    (home / "pm2.pid").write_text(str(os.getpid()))
    logs = home / "logs"
    calls, release, running = tmp_path / "calls", tmp_path / "release", tmp_path / "running"

    def jlist(*names: str) -> str:
        return orjson.dumps([{"name": n, "pm2_env": {
            "name": n, "pm_id": i, "NODE_APP_INSTANCE": 0,
            "pm_out_log_path": str(logs / f"{n}-out.log"),
            "pm_err_log_path": str(logs / f"{n}-error.log")}} for i, n in enumerate(names)]).decode()

    fake = tmp_path / "pm2"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo x >> {calls}\n"
        f"if [ $(wc -l < {calls}) -eq 1 ]; then echo '{jlist('api')}'; exit 0; fi\n"
        f"touch {running}\n"
        f"while [ ! -e {release} ]; do sleep 0.02; done\n"  # the scenario: a daemon that hangs
        f"echo '{jlist('api', 'late')}'\n")
    fake.chmod(0o755)
    reg = Pm2Registry(str(home), pm2_bin=str(fake))
    reg.refresh(force=True)
    assert [a.name for a in reg.apps] == ["api"]
    reg.refresh(min_interval=0)
    wait_for(running.exists, message="the second pm2 jlist to start")
    assert [a.name for a in reg.apps] == ["api"]  # the previous answer, meanwhile
    release.touch()

    def late_known() -> bool:
        reg.refresh()  # rate-limited: only merges the worker's answer
        return [a.name for a in reg.apps] == ["api", "late"]

    wait_for(late_known, message="the worker's jlist answer merged")
    assert calls.read_text().count("x") == 2


def test_parse_jlist_keeps_only_identity() -> None:
    """From pm2 jlist only name, pm_id, instance and log paths are kept (no app env); banner
    lines before the JSON are tolerated; garbage gives no apps."""
    doc = [{"name": "api", "pm_id": 3, "pm2_env": {"NODE_APP_INSTANCE": 1, "SECRET": "s3cr3t",
                                                    "pm_out_log_path": "/l/api-out-3.log",
                                                    "pm_err_log_path": "/dev/null"}}]
    apps = parse_jlist(b"[PM2] banner\n" + orjson.dumps(doc))
    assert len(apps) == 1
    app = apps[0]
    assert (app.name, app.pm_id, app.instance, app.err_path) == ("api", 3, "1", None)
    assert app.out_path is not None and app.out_path.endswith("api-out-3.log")
    assert "s3cr3t" not in repr(app)
    assert parse_jlist(b"not json") == []


def test_pm2_formats_are_read_from_jlist_without_a_warning() -> None:
    """``pm2 jlist``'s ``log_date_format`` and ``log_type`` are kept per app (the decoders use
    them) and no longer warned about: logpipe undoes both formats."""
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        doc = [{"name": n, "pm_id": i, "pm2_env": env} for i, (n, env) in enumerate([
            ("dated", {"log_date_format": "YYYY-MM-DDTHH:mm:ss"}),
            ("wrapped", {"log_type": "json"}),
            ("plain", {"log_type": "raw"})])]
        apps = parse_jlist(orjson.dumps(doc))
    finally:
        diagnostics.set_stream(None)
    assert [(a.name, a.date_format, a.log_type) for a in apps] == [
        ("dated", "YYYY-MM-DDTHH:mm:ss", None), ("wrapped", None, "json"), ("plain", None, "raw")]
    assert buf.getvalue() == b""
