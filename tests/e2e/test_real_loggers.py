"""The output of real loggers — pino, bunyan, winston, @elastic/ecs-pino-format (npm), loguru,
python-json-logger, structlog, ecs-logging, the stdlib's default format (PyPI / stdlib) and a
real Node.js crash — written by the loggers themselves into files, collected by a real
``logpipe collect --once``, and checked field by field: message, level, the instant of
``time``, host, service, exception text, the app's own fields, one record per call."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests._collect_helpers import run_collect

#: npm packages, pinned (installed once into the cache, like the PM2 tests' pm2)
NPM_PACKAGES = ("pino@10.4.0", "bunyan@2.0.5", "winston@3.19.0", "@elastic/ecs-pino-format@1.5.0")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "logpipe-test-loggers"
#: a local time zone far from UTC (POSIX TZ string, no tzdata needed): python-json-logger's
#: asctime is local time, so reading it as UTC would be 5 h 30 min off
TZ = "XST-05:30"

# Each generator logs one info record (with the app field order=7) and one error record (with
# an exception) to stdout, and prints [before, after] epoch seconds of each call on stderr.
NODE_GEN = r"""
const which = process.argv[2];
let info, error;
if (which === 'pino') {
  const l = require('pino')();
  info = () => l.info({order: 7}, 'pino hello');
  error = () => l.error(new Error('boom-pino'), 'pino failed');
} else if (which === 'bunyan') {
  const l = require('bunyan').createLogger({name: 'shop-api'});
  info = () => l.info({order: 7}, 'bunyan hello');
  error = () => l.error(new Error('boom-bunyan'), 'bunyan failed');
} else if (which === 'winston') {
  const w = require('winston');
  const l = w.createLogger({format: w.format.combine(w.format.errors({stack: true}),
    w.format.timestamp(), w.format.json()), transports: [new w.transports.Console()]});
  info = () => l.info('winston hello', {order: 7});
  error = () => l.error(new Error('boom-winston'));
} else if (which === 'ecspino') {
  const l = require('pino')(require('@elastic/ecs-pino-format')({serviceName: 'ecs-svc'}));
  info = () => l.info({order: 7}, 'ecs hello');
  error = () => l.error({err: new Error('boom-ecspino')}, 'ecs failed');
}
const bounds = [];
for (const f of [info, error]) { const t0 = Date.now(); f(); bounds.push([t0 / 1e3, Date.now() / 1e3]); }
process.stderr.write(JSON.stringify(bounds));
"""

PY_GEN = r"""
import logging, sys, time
which = sys.argv[1]
def boom():
    raise ValueError("boom-" + which)
if which == "loguru":
    from loguru import logger
    logger.remove(); logger.add(sys.stdout, serialize=True)
    info = lambda: logger.bind(order=7).info("loguru hello")
    error = lambda: logger.exception("loguru failed")
elif which == "structlog":
    import structlog
    structlog.configure(processors=[structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"), structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer()], logger_factory=structlog.PrintLoggerFactory(sys.stdout))
    l = structlog.get_logger()
    info = lambda: l.info("structlog hello", order=7)
    error = lambda: l.exception("structlog failed")
else:
    h = logging.StreamHandler(sys.stdout if which != "stdlib" else sys.stderr)
    if which == "pjl":
        from pythonjsonlogger.json import JsonFormatter
        h.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    elif which == "ecspy":
        import ecs_logging
        h.setFormatter(ecs_logging.StdlibFormatter())
    else:  # the stdlib's default format, as logging.basicConfig() sets it
        h.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    l = logging.getLogger("shop.payments"); l.addHandler(h); l.setLevel(logging.INFO)
    info = lambda: l.info("%s hello", which, extra={"order": 7})
    error = lambda: l.exception("%s failed", which)
bounds = []
for f in (info, error):
    t0 = time.time()
    try:
        boom()
    except ValueError:
        if f is info: f()
        else: f()
    bounds.append([t0, time.time()])
print(__import__("json").dumps(bounds), file=sys.stderr)
"""

NODE_CRASH = "function f() { null.x; }\nf();\n"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """node_modules with the pinned npm loggers, installed once under the cache dir."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed: cannot install pino, bunyan, winston, ecs-pino-format")
    key = "-".join(p.replace("/", "_").replace("@", "") for p in NPM_PACKAGES)
    target = CACHE / key
    if (target / "node_modules").exists():
        return target / "node_modules"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install only once
        if not (target / "node_modules").exists():
            tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=CACHE))
            proc = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
                 str(tmp), *NPM_PACKAGES], capture_output=True, timeout=300, check=False)
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                pytest.fail(f"npm install failed: {proc.stderr.decode()[-500:]}")
            os.replace(tmp, target)  # atomic: a half-installed tree is never used
    return target / "node_modules"


def _python_loggers() -> None:
    for mod in ("loguru", "pythonjsonlogger", "structlog", "ecs_logging"):
        pytest.importorskip(mod, reason=f"{mod} is in the test extras (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory, node_modules: Path
              ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[list[float]]]]:
    """Every logger's output in its own file, one ``collect --once`` over all of them:
    (records by file stem, call-time bounds by file stem)."""
    _python_loggers()
    d = tmp_path_factory.mktemp("loggers")
    env = dict(os.environ, TZ=TZ, NODE_PATH=str(node_modules))
    (d / "gen.js").write_text(NODE_GEN)
    (d / "gen.py").write_text(PY_GEN)
    (d / "crash.js").write_text(NODE_CRASH)
    bounds: dict[str, list[list[float]]] = {}
    jobs = [(n, ["node", str(d / "gen.js"), n]) for n in ("pino", "bunyan", "winston", "ecspino")]
    jobs += [(n, [sys.executable, str(d / "gen.py"), n])
             for n in ("loguru", "structlog", "pjl", "ecspy")]
    for name, argv in jobs:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=True)
        (d / f"{name}.log").write_bytes(proc.stdout)
        bounds[name] = json.loads(proc.stderr)
    # stdlib's default format goes to stderr: a PM2-style -error.log holds it
    proc = subprocess.run([sys.executable, str(d / "gen.py"), "stdlib"], capture_output=True,
                          env=env, timeout=60, check=True)
    out = proc.stderr.rsplit(b"\n[", 1)
    (d / "stdlib-error.log").write_bytes(out[0] + b"\n")
    bounds["stdlib"] = json.loads(b"[" + out[1])
    crash = subprocess.run(["node", str(d / "crash.js")], capture_output=True, env=env, timeout=60)
    assert crash.returncode != 0
    (d / "nodecrash-error.log").write_bytes(b"starting\n" + crash.stderr)
    status, recs, err = run_collect(["--once", str(d / "*.log")], env=env)
    assert status == 0, err
    by: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by.setdefault(Path(r["source"]).name.removesuffix(".log"), []).append(r)
    return by, bounds


def _instant(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def _check_pair(recs: list[dict[str, Any]], bounds: list[list[float]], *, info: str,
                error: str, exc: str, service: str, host: str | None = None) -> None:
    """One record per call; message, level, time within the call, host, service, exception,
    the app's field."""
    assert len(recs) == 2, recs
    i, e = recs
    assert (i["message"], i["level"], e["message"], e["level"]) == (info, "info", error, "error")
    for rec, (lo, hi) in zip(recs, bounds, strict=True):
        assert lo - 0.002 <= _instant(rec["time"]) <= hi + 0.002, (rec["time"], lo, hi)
        assert rec["service"] == service
        assert rec["host"] == (host or socket.gethostname())
        assert "hostname" not in rec and "host.hostname" not in rec
    assert i["order"] == 7
    assert "exception" not in i
    assert exc in e["exception"]


def test_pino(collected: Any) -> None:
    """pino: msg, numeric levels, epoch-ms time, hostname → host; err.stack copied into
    exception and err kept; no name → the file's service."""
    by, bounds = collected
    _check_pair(by["pino"], bounds["pino"], info="pino hello", error="pino failed",
                exc="Error: boom-pino\n    at ", service="pino")
    assert by["pino"][1]["err"]["stack"] == by["pino"][1]["exception"]


def test_bunyan(collected: Any) -> None:
    """bunyan: its ``name`` is the service (the line has none); hostname → host; err.stack."""
    by, bounds = collected
    _check_pair(by["bunyan"], bounds["bunyan"], info="bunyan hello", error="bunyan failed",
                exc="Error: boom-bunyan\n    at ", service="shop-api")
    assert "name" not in by["bunyan"][0] and by["bunyan"][0]["v"] == 0


def test_winston_with_errors_stack(collected: Any) -> None:
    """winston + format.errors({stack: true}): the error's message, its ``stack`` copied into
    exception (kept too), ISO ``timestamp`` → time."""
    by, bounds = collected
    _check_pair(by["winston"], bounds["winston"], info="winston hello", error="boom-winston",
                exc="Error: boom-winston\n    at ", service="winston", host=by["winston"][0]["host"])
    assert by["winston"][1]["stack"] == by["winston"][1]["exception"]
    assert "timestamp" not in by["winston"][0]


def test_ecs_pino_format(collected: Any) -> None:
    """@elastic/ecs-pino-format: log.level, @timestamp, service.name, host.hostname,
    error.stack_trace."""
    by, bounds = collected
    _check_pair(by["ecspino"], bounds["ecspino"], info="ecs hello", error="ecs failed",
                exc="Error: boom-ecspino\n    at ", service="ecs-svc")
    assert "log.level" not in by["ecspino"][1]
    assert by["ecspino"][1]["error"]["stack_trace"] == by["ecspino"][1]["exception"]


def test_loguru_serialize(collected: Any) -> None:
    """loguru serialize=True: message, level name, time from record.time.timestamp, extra as the
    record's own fields, the traceback as exception; the rest of loguru's record under
    ``loguru``."""
    by, bounds = collected
    recs = by["loguru"]
    _check_pair(recs, bounds["loguru"], info="loguru hello", error="loguru failed",
                exc="ValueError: boom-loguru", service="loguru", host=recs[0]["host"])
    assert recs[1]["exception"].startswith("Traceback (most recent call last):")
    assert "record" not in recs[0]
    assert recs[0]["loguru"]["function"] == "<lambda>" and recs[0]["loguru"]["line"] > 0
    assert recs[0]["pid"] > 0 and recs[0]["logger"] == "__main__"


def test_structlog_json(collected: Any) -> None:
    """structlog's JSONRenderer: event → message, ISO timestamp → time, its exception kept."""
    by, bounds = collected
    _check_pair(by["structlog"], bounds["structlog"], info="structlog hello",
                error="structlog failed", exc="ValueError: boom-structlog", service="structlog",
                host=by["structlog"][0]["host"])


def test_python_json_logger_asctime_is_local_time(collected: Any) -> None:
    """python-json-logger: asctime (the host's local time, here UTC+05:30, comma milliseconds)
    is the event's instant; levelname → level; exc_info copied into exception."""
    by, bounds = collected
    _check_pair(by["pjl"], bounds["pjl"], info="pjl hello", error="pjl failed",
                exc="ValueError: boom-pjl", service="pjl", host=by["pjl"][0]["host"])
    assert "asctime" not in by["pjl"][0] and by["pjl"][1]["exc_info"] == by["pjl"][1]["exception"]


def test_ecs_logging_python(collected: Any) -> None:
    """ecs-logging (Python): log.level, @timestamp, error.stack_trace → exception; its nested
    ``log`` (logger, origin) kept."""
    by, bounds = collected
    _check_pair(by["ecspy"], bounds["ecspy"], info="ecspy hello", error="ecspy failed",
                exc='raise ValueError("boom-" + which)', service="ecspy", host=by["ecspy"][0]["host"])
    assert by["ecspy"][0]["log"]["logger"] == "shop.payments"


def test_stdlib_default_format_with_logging_exception(collected: Any) -> None:
    """stdlib ``LEVEL:logger:message`` lines get their level and logger; the traceback that
    logging.exception prints after its line is that record's exception (two calls, two
    records)."""
    by, _ = collected
    recs = by["stdlib-error"]
    assert [(r["level"], r["logger"], r["message"]) for r in recs] == [
        ("info", "shop.payments", "stdlib hello"), ("error", "shop.payments", "stdlib failed")]
    assert recs[1]["exception"].startswith("Traceback (most recent call last):\n")
    assert recs[1]["exception"].endswith("ValueError: boom-stdlib")


def test_node_crash_report_is_one_record(collected: Any) -> None:
    """A real Node.js crash (location, source line, caret, TypeError with its ``at`` lines,
    ``Node.js vX``) is one record, after the unrelated line before it."""
    by, _ = collected
    recs = by["nodecrash-error"]
    assert recs[0]["message"] == "starting"
    assert len(recs) == 2, recs
    crash = recs[1]
    assert crash["message"].startswith("TypeError: Cannot read properties of null")
    assert crash["exception"].split("\n")[-1].startswith("Node.js v")
    assert "    at f (" in crash["exception"] and crash["level"] == "critical"
