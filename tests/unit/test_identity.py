"""identity.py: who wrote a line — PM2's file-name rules, and service / instance_id from the
LOGPIPE_* and PM2 environment (SPEC §2, §3)."""

from __future__ import annotations

import socket

import pytest

from logpipe import identity
from logpipe.identity import FileIdentity, from_filename


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # PM2: <name>-out.log / <name>-error.log, -<pm_id> for instances and cluster mode
        ("/home/u/.pm2/logs/api-out.log", FileIdentity("api", "out", None)),
        ("api-error.log", FileIdentity("api", "err", None)),
        ("api-error-3.log", FileIdentity("api", "err", 3)),
        ("api-out-0.log", FileIdentity("api", "out", 0)),
        ("api-err-12.log", FileIdentity("api", "err", 12)),
        # pm2-logrotate's copies: <base>__<date>.log, the same app and stream
        ("api-out__2026-12-01_13-40-15.log", FileIdentity("api", "out", None)),
        ("api-error-3__2026-12-01_13-40-15.log", FileIdentity("api", "err", 3)),
        # hyphens in the app name, a stream word inside it
        ("queue-watcher-out-2.log", FileIdentity("queue-watcher", "out", 2)),
        ("my-error-page-out.log", FileIdentity("my-error-page", "out", None)),
        # rotation suffixes after the extension are ignored
        ("api-out.log.1", FileIdentity("api", "out", None)),
        ("/var/log/api.log.20261201T134015.zst", FileIdentity("api", None, None)),
        # other names: the name is the service; stdout/stderr suffixes give the stream
        ("api.log", FileIdentity("api", None, None)),
        ("billing.ndjson", FileIdentity("billing", None, None)),
        ("worker.stderr.log", FileIdentity("worker", "err", None)),
        ("worker_stdout.txt", FileIdentity("worker", "out", None)),
        ("api-output.log", FileIdentity("api-output", None, None)),
        ("", FileIdentity("unknown", None, None)),
    ],
)
def test_file_name_rules(path: str, expected: FileIdentity) -> None:
    """A file's name → service, stream (``out``/``err``) and PM2 ``pm_id``, as PM2 and
    pm2-logrotate name their files; directories and rotation suffixes ignored."""
    assert from_filename(path) == expected


@pytest.mark.parametrize(
    ("env", "argv", "service", "instance"),
    [
        ({"LOGPIPE_SERVICE": "gw", "LOGPIPE_INSTANCE_ID": "7", "name": "api", "pm_id": "4",
          "NODE_APP_INSTANCE": "1"}, ["x.py"], "gw", "7"),
        ({"name": "api", "pm_id": "4", "NODE_APP_INSTANCE": "2"}, ["x.py"], "api", "2"),
        ({"name": "api", "pm_id": "4"}, ["x.py"], "api", "4"),
        ({"name": "api", "pm_id": "4", "NODE_APP_INSTANCE": ""}, ["x.py"], "api", "4"),
        ({"LOGPIPE_SERVICE": "", "LOGPIPE_INSTANCE_ID": ""}, ["/srv/api/main.py"], "main", "0"),
        ({"name": "not-pm2"}, ["/srv/billing_worker.py"], "billing_worker", "0"),
        ({}, ["/srv/pkg/__main__.py"], "pkg", "0"),
    ],
    ids=["logpipe-env-wins", "pm2-cluster", "pm2-fork-pm_id", "empty-instance-skipped",
         "empty-logpipe-env-skipped", "name-without-pm_id-is-not-pm2", "python-m-package"],
)
def test_service_and_instance_from_env(env: dict[str, str], argv: list[str], service: str,
                                       instance: str) -> None:
    """service ← LOGPIPE_SERVICE, else PM2's ``name`` (only under PM2: ``name`` and ``pm_id``),
    else the program name; instance_id ← LOGPIPE_INSTANCE_ID, else NODE_APP_INSTANCE, else
    pm_id, else "0" (empty values count as unset)."""
    assert identity.service_from_env(env, argv) == service
    assert identity.instance_from_env(env) == instance


def test_under_pm2_needs_name_and_pm_id() -> None:
    """PM2 puts both ``name`` and ``pm_id`` in its apps' environment; either alone is not PM2."""
    assert identity.under_pm2({"name": "api", "pm_id": "0"})
    assert not identity.under_pm2({"pm_id": "0"})
    assert not identity.under_pm2({"name": "api"})


@pytest.mark.parametrize(
    ("argv", "name"),
    [(["/srv/api/main.py"], "main"), (["app.pyz"], "app"), (["gui.pyw"], "gui"),
     (["/usr/bin/celery", "worker"], "celery"), (["/srv/pkg/__main__.py"], "pkg"),
     (["-c"], "python"), (["-"], "python"), ([""], "python"), ([], "python")],
)
def test_program_name(argv: list[str], name: str) -> None:
    """The program's name: the script's base name without .py/.pyz/.pyw, the package of a
    ``__main__.py``, ``python`` for ``-c``, stdin or an interactive interpreter."""
    assert identity.program_name(argv) == name


def test_hostname_is_this_hosts_name() -> None:
    """``hostname()`` is ``socket.gethostname()`` (cached: the same object each call)."""
    assert identity.hostname() == (socket.gethostname() or "localhost")
    assert identity.hostname() is identity.hostname()
