"""Servers that configure logging themselves write logpipe records (issue #14): uvicorn with the
ASGI access log, gunicorn with logpipe's ``--logger-class``, a celery task with ``setup(app)`` —
each a real server process on 127.0.0.1 (a listening socket handed over as a file descriptor,
so no port can be taken in between), one real HTTP request, its real stdout read back."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests._logger_helpers import lines, logger_child_env, run_py
from tests.helpers import wait_for

BOUND = {"service": "api", "feature": "store"}


class _Server:
    """A child process listening on a socket the test opened; its stdout read as it comes."""

    def __init__(self, argv: list[str], cwd: Path | None = None, **env: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.fd = self.sock.fileno()
        self.out: list[bytes] = []
        self.proc = subprocess.Popen(
            [a.replace("{fd}", str(self.fd)) for a in argv], cwd=cwd, env=logger_child_env(**env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(self.fd,))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(ln) for ln in list(self.out)]

    def get(self, path: str) -> httpx.Response:
        """One request, retried (with a deadline) until the server accepts it."""
        def attempt() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)
            except httpx.TransportError:
                return None
        return wait_for(attempt, timeout=60, message="the server's first response")

    def request_then_stop(self, path: str, logger: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
        """GET ``path``, wait until a record of ``logger`` came out, stop the server (whatever
        happened); stderr must be empty. Returns the response and every record."""
        try:
            resp = self.get(path)
            wait_for(lambda: any(r.get("logger") == logger for r in self.records()), timeout=30,
                     message=f"the {logger} record")
        finally:
            err = self.stop()
        assert err == b""
        return resp, self.records()

    def stop(self) -> bytes:
        """SIGTERM, wait, return stderr; every stdout line must then be one JSON record."""
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=30)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return err


def _has_bindings(rec: dict[str, Any]) -> bool:
    return all(rec.get(k) == v for k, v in BOUND.items())


UVICORN_APP = """
import logpipe, structlog, uvicorn
from logpipe.integrations.asgi import AccessLog
logpipe.bind(service="api", feature="store")
log = structlog.get_logger()

async def app(scope, receive, send):
    with logpipe.context(request_id="r-1"):
        log.info("handling", path=scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})

uvicorn.run(AccessLog(app), fd=int(__import__("sys").argv[1]), access_log=False, lifespan="off")
"""


def test_uvicorn_access_log_is_a_record_with_request_fields() -> None:
    """``uvicorn.run(AccessLog(app), access_log=False)``: uvicorn's own messages, the app's
    structlog line and one access record per request — ``method``, ``path``, ``query``,
    ``status``, ``duration_ms``, ``bytes`` as fields — are logpipe records with the bindings;
    stdout holds nothing else and stderr nothing at all."""
    server = _Server([sys.executable, "-c", textwrap.dedent(UVICORN_APP), "{fd}"])
    resp, recs = server.request_then_stop("/items/7?full=1", "access")
    assert resp.status_code == 200 and resp.text == "hello"
    assert recs and all(_has_bindings(r) and isinstance(r["pid"], int) for r in recs), recs
    (access,) = [r for r in recs if r.get("logger") == "access"]
    assert access["message"] == "GET /items/7 200" and access["level"] == "info"
    assert (access["method"], access["path"], access["query"], access["status"], access["bytes"]) == (
        "GET", "/items/7", "full=1", 200, 5)
    assert isinstance(access["duration_ms"], float) and 0 <= access["duration_ms"] < 60_000
    (handled,) = [r for r in recs if r["message"] == "handling"]
    assert handled["request_id"] == "r-1" and handled["path"] == "/items/7"
    assert any(r.get("logger", "").startswith("uvicorn") for r in recs)  # uvicorn's own, adopted


def test_uvicorn_own_access_log_records_have_request_fields() -> None:
    """Without ``AccessLog``, uvicorn's default configuration (dictConfig'd after ``import
    logpipe``) is taken over: its access line is a logpipe record with ``client``, ``method``,
    ``path``, ``status`` fields and the bindings, and nothing reaches stderr."""
    app = UVICORN_APP.replace("AccessLog(app)", "app").replace("access_log=False", "access_log=True")
    server = _Server([sys.executable, "-c", textwrap.dedent(app), "{fd}"])
    resp, recs = server.request_then_stop("/ping", "uvicorn.access")
    assert resp.status_code == 200
    assert all(_has_bindings(r) for r in recs), recs
    (access,) = [r for r in recs if r.get("logger") == "uvicorn.access"]
    assert (access["method"], access["path"], access["status"]) == ("GET", "/ping", 200)
    assert access["client"].startswith("127.0.0.1:")


GUNICORN_APP = """
import logpipe, structlog
logpipe.bind(feature="store")
log = structlog.get_logger()

def app(environ, start_response):
    log.info("handling", path=environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""


def test_gunicorn_logger_class_gives_records_with_request_fields(tmp_path: Path) -> None:
    """``gunicorn --logger-class logpipe.integrations.gunicorn.Logger`` (a sync worker): the
    master's and worker's messages (``gunicorn.error``) and one access record per request —
    ``method``, ``path``, ``status``, ``duration_ms``, ``user_agent`` — are logpipe records with
    the process-wide bindings (the worker's with the app's ``feature`` and its own pid)."""
    (tmp_path / "wsgiapp.py").write_text(textwrap.dedent(GUNICORN_APP))
    import gunicorn

    # gunicorn 27 opens a control socket under ~/.gunicorn unless told not to
    extra = ["--no-control-socket"] if int(gunicorn.__version__.split(".")[0]) >= 27 else []
    server = _Server([sys.executable, "-m", "gunicorn", "--logger-class",
                      "logpipe.integrations.gunicorn.Logger", "-w", "1", "-k", "sync", *extra,
                      "--bind", "fd://{fd}", "wsgiapp:app"], cwd=tmp_path, LOGPIPE_SERVICE="api")
    resp, recs = server.request_then_stop("/orders?id=3", "gunicorn.access")
    assert resp.status_code == 200 and resp.text == "hello"
    assert all(r["service"] == "api" and isinstance(r["pid"], int) for r in recs), recs
    (access,) = [r for r in recs if r.get("logger") == "gunicorn.access"]
    assert _has_bindings(access) and access["message"] == "GET /orders 200"
    assert (access["method"], access["path"], access["query"], access["status"]) == (
        "GET", "/orders", "id=3", 200)
    assert isinstance(access["duration_ms"], float) and access["user_agent"].startswith("python-httpx")
    (handled,) = [r for r in recs if r["message"] == "handling"]
    assert _has_bindings(handled) and handled["pid"] == access["pid"]
    master = [r for r in recs if r.get("logger") == "gunicorn.error"]
    assert any("Booting worker" in r["message"] for r in master)
    assert len({r["pid"] for r in master}) == 2  # master and worker, each its own pid


CELERY_APP = """
import logging, logpipe, structlog
from celery import Celery
from logpipe.integrations.celery import setup
logpipe.bind(service="api", feature="store")
app = Celery("billing")
app.conf.task_always_eager = True
setup(app)

@app.task(name="billing.add")
def add(x, y):
    logpipe.logger.info("adding", x=x, y=y)
    structlog.get_logger().info("via structlog")
    logging.getLogger("billing").info("via logging")
    return x + y

result = add.delay(2, 3)
logpipe.logger.info("done", value=result.get(), task_id_seen=result.id,
                    hijack=app.conf.worker_hijack_root_logger)
"""


def test_celery_task_records_carry_task_id_and_name() -> None:
    """A celery task (eager) after ``logpipe.integrations.celery.setup(app)``: everything it logs
    — ``logpipe.logger``, ``structlog``, ``logging`` — is a logpipe record with the bindings and
    the task's ``task_id``/``task_name``; after the task they are unbound; the worker would not
    hijack the root logger."""
    proc = run_py(CELERY_APP, timeout=60)
    assert proc.returncode == 0, proc.stderr
    recs = lines(proc.stdout)
    assert all(_has_bindings(r) for r in recs), recs
    done = recs[-1]
    assert done["message"] == "done" and done["value"] == 5 and done["hijack"] is False
    assert "task_id" not in done
    in_task = [r for r in recs if r["message"] in ("adding", "via structlog", "via logging")]
    assert [r["message"] for r in in_task] == ["adding", "via structlog", "via logging"]
    assert all(r["task_id"] == done["task_id_seen"] and r["task_name"] == "billing.add" for r in in_task)
    assert in_task[2]["logger"] == "billing"


CELERY_TASKS = """
import logging, logpipe, structlog
from celery import Celery
from logpipe.integrations.celery import setup
logpipe.bind(service="api", feature="store")
app = Celery("tasks", broker="filesystem://")
app.conf.broker_transport_options = {
    "data_folder_in": "queue", "data_folder_out": "queue", "data_folder_processed": "done"}
setup(app)

@app.task(name="billing.add", ignore_result=True)
def add(x, y):
    structlog.get_logger().info("adding", x=x, y=y)
    logging.getLogger("billing").info("via logging")
    return x + y
"""


def test_celery_worker_logs_records_with_task_fields(tmp_path: Path) -> None:
    """A real ``celery worker`` (solo pool, a filesystem broker in tmp_path) with ``setup(app)``:
    the worker's own messages ("ready", "received", "succeeded") and the task's lines are
    logpipe records with the bindings — the root logger was not hijacked — and the task's lines
    and celery's "succeeded" carry ``task_id``/``task_name``; no banner on stdout."""
    (tmp_path / "tasks.py").write_text(textwrap.dedent(CELERY_TASKS))
    (tmp_path / "queue").mkdir()
    (tmp_path / "done").mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo", "-l", "INFO",
         "--without-heartbeat", "--without-mingle", "--without-gossip"],
        cwd=tmp_path, env=logger_child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.extend(worker.stdout or []), daemon=True)
    reader.start()

    def messages() -> list[str]:
        return [orjson.loads(ln).get("message", "") for ln in list(out)]

    try:
        wait_for(lambda: any(m.endswith("ready.") for m in messages()), timeout=60,
                 message="the worker to be ready")
        sent = run_py("import tasks; print(tasks.add.delay(2, 3).id)", cwd=tmp_path,
                      env=logger_child_env(PYTHONPATH=str(tmp_path)))
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.decode().strip().splitlines()[-1]
        wait_for(lambda: any("succeeded" in m for m in messages()), timeout=60,
                 message="the task to succeed")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        reader.join(timeout=30)
        if worker.stdout is not None:
            worker.stdout.close()
    # celery prints "worker: Warm shutdown" with a plain print at exit: the one non-record line
    recs = [orjson.loads(ln) for ln in out if ln.startswith(b"{")]
    plain = [ln for ln in out if ln.strip() and not ln.startswith(b"{")]
    assert all(b"shutdown" in ln.lower() for ln in plain), plain
    assert all(_has_bindings(r) for r in recs), recs
    by_message = {r["message"]: r for r in recs}
    for message in ("adding", "via logging"):
        rec = by_message[message]
        assert (rec["task_id"], rec["task_name"]) == (task_id, "billing.add"), rec
    (succeeded,) = [r for r in recs if "succeeded" in r["message"]]
    assert succeeded["task_id"] == task_id and succeeded["logger"] == "celery.app.trace"
    assert any(r.get("logger") == "celery.worker.strategy" for r in recs)  # "received"
