"""The service-side logger (SPEC §2): keys, env/PM2 defaults, bind/context, levels, formats,
redaction, exceptions, the stdlib bridge, never raising, and lines reaching the OS at once."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import logpipe
from logpipe import _emit
from logpipe.errors import UsageError
from tests._logger_helpers import TIME_RE, capture, lines, logger_child_env, run_py
from tests.helpers import wait_for

# --- the record ---------------------------------------------------------------------------------


def test_line_has_spec_keys_in_order_from_env(tmp_path: Path) -> None:
    """A child with LOGPIPE_SERVICE/LOGPIPE_INSTANCE_ID writes one JSON line with time (RFC 3339
    µs Z), level, message, service, feature, instance_id (string), host, pid (int) and the call's
    own fields unchanged, in that order."""
    proc = run_py(
        """
        import logpipe
        from logpipe import logger
        logpipe.bind(feature="store")
        logger.info("order placed", order_id=123, amount=9.99, user="bob")
        """,
        env=logger_child_env(LOGPIPE_SERVICE="api", LOGPIPE_INSTANCE_ID="3"),
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = lines(proc.stdout)
    assert list(rec) == ["time", "level", "message", "service", "instance_id", "host", "pid",
                         "feature", "order_id", "amount", "user"]
    assert re.match(TIME_RE, rec["time"])
    assert rec["level"] == "info" and rec["message"] == "order placed"
    assert rec["service"] == "api" and rec["instance_id"] == "3" and rec["feature"] == "store"
    assert rec["host"] == socket.gethostname()
    assert isinstance(rec["pid"], int) and rec["pid"] > 0
    assert (rec["order_id"], rec["amount"], rec["user"]) == (123, 9.99, "bob")


def test_time_is_now(tmp_path: Path) -> None:
    """``time`` is the moment of the call (UTC), to within the test's own clock reads."""
    from logpipe.record import to_epoch

    with capture(tmp_path) as read:
        before = time.time()
        logpipe.logger.info("tick")
        after = time.time()
    epoch = to_epoch(read()[0]["time"])
    assert epoch is not None and before - 1e-6 <= epoch <= after + 1e-6


def test_service_defaults_to_program_name(tmp_path: Path) -> None:
    """Without LOGPIPE_SERVICE or PM2, ``service`` is the program's name and ``instance_id`` "0"."""
    script = tmp_path / "billing_worker.py"
    script.write_text("from logpipe import logger\nlogger.info('hi')\n")
    proc = subprocess.run([sys.executable, str(script)], env=logger_child_env(), capture_output=True,
                          timeout=30, check=False)
    (rec,) = lines(proc.stdout)
    assert rec["service"] == "billing_worker" and rec["instance_id"] == "0"
    assert "pm_id" not in rec


@pytest.mark.parametrize(
    ("env", "service", "instance", "pm_id"),
    [
        ({"name": "api", "pm_id": "4", "NODE_APP_INSTANCE": "2"}, "api", "2", 4),
        ({"name": "api", "pm_id": "4"}, "api", "4", 4),
        ({"name": "api", "pm_id": "4", "NODE_APP_INSTANCE": "1", "LOGPIPE_SERVICE": "gw",
          "LOGPIPE_INSTANCE_ID": "7"}, "gw", "7", 4),
    ],
    ids=["cluster-instance", "fork-mode-pm_id", "logpipe-env-wins"],
)
def test_pm2_environment(env: dict[str, str], service: str, instance: str, pm_id: int) -> None:
    """Under PM2 (``name`` + ``pm_id`` in the env) service ← LOGPIPE_SERVICE else PM2's name,
    instance_id ← LOGPIPE_INSTANCE_ID else NODE_APP_INSTANCE else pm_id, and pm_id is bound."""
    proc = run_py("from logpipe import logger; logger.info('x')", env=logger_child_env(**env))
    (rec,) = lines(proc.stdout)
    assert (rec["service"], rec["instance_id"], rec["pm_id"]) == (service, instance, pm_id)


# --- bindings and context -----------------------------------------------------------------------


def test_bind_reaches_loggers_cached_before(tmp_path: Path) -> None:
    """A ``logger.bind(...)`` copy made before ``logpipe.bind``/``unbind`` (as another module
    would cache it) writes the later process-wide bindings too, and its own local ones."""
    cached = logpipe.logger.bind(component="cache")
    with capture(tmp_path) as read:
        logpipe.bind(service="api", feature="store")
        cached.info("one")
        logpipe.unbind("feature", "not-bound")
        cached.info("two")
        logpipe.logger.info("three")
    one, two, three = read()
    assert (one["service"], one["feature"], one["component"]) == ("api", "store", "cache")
    assert "feature" not in two and two["component"] == "cache" and two["service"] == "api"
    assert "component" not in three


def test_local_bind_is_local_and_call_fields_override(tmp_path: Path) -> None:
    """``logger.bind`` returns a new logger (the original is unchanged); a call's field overrides
    a bound one of the same name, and a bound ``service`` overrides the process-wide one."""
    with capture(tmp_path) as read:
        log = logpipe.logger.bind(order_id=7, service="orders")
        log.info("a")
        log.info("b", order_id=8)
        logpipe.logger.info("c")
        log.unbind("order_id").info("d")
    a, b, c, d = read()
    assert a["order_id"] == 7 and a["service"] == "orders"
    assert b["order_id"] == 8 and list(b).count("order_id") == 1
    assert "order_id" not in c and c["service"] != "orders"
    assert "order_id" not in d


def test_context_nests_and_restores(tmp_path: Path) -> None:
    """``context()`` adds fields inside its block only; an inner block adds to and overrides the
    outer one; a call's own field overrides the context's; it also works as a decorator."""
    with capture(tmp_path) as read:

        @logpipe.context(job="nightly")
        def job() -> None:
            logpipe.logger.info("in job")

        with logpipe.context(request_id="r-1", user="ann"):
            logpipe.logger.info("outer")
            with logpipe.context(request_id="r-2"):
                logpipe.logger.info("inner")
            logpipe.logger.info("call wins", user="bob")
        logpipe.logger.info("after")
        job()
    outer, inner, call, after, in_job = read()
    assert (outer["request_id"], outer["user"]) == ("r-1", "ann")
    assert (inner["request_id"], inner["user"]) == ("r-2", "ann")
    assert call["user"] == "bob" and list(call).count("user") == 1
    assert "request_id" not in after and "user" not in after
    assert in_job["job"] == "nightly"


def test_context_overrides_binding_and_survives_later_bind(tmp_path: Path) -> None:
    """A context value wins over a process-wide binding of the same key, also after a ``bind()``
    made inside the block, and each key appears once."""
    with capture(tmp_path) as read:
        logpipe.bind(feature="store")
        with logpipe.context(feature="delete"):
            logpipe.logger.info("a")
            logpipe.bind(extra=1)
            logpipe.logger.info("b")
    a, b = read()
    assert a["feature"] == "delete" and b["feature"] == "delete" and b["extra"] == 1
    assert list(a).count("feature") == 1 and list(b).count("feature") == 1


def test_context_is_per_thread_and_per_task(tmp_path: Path) -> None:
    """Context values stay with their thread / asyncio task: concurrent blocks never see each
    other's request ids."""

    async def handle(rid: str) -> None:
        with logpipe.context(request_id=rid):
            await asyncio.sleep(0.01)  # the scenario: the tasks interleave inside their contexts
            logpipe.logger.info("task", expect=rid)

    async def main() -> None:
        await asyncio.gather(*(handle(f"t{i}") for i in range(20)))

    def worker(rid: str, barrier: threading.Barrier) -> None:
        with logpipe.context(request_id=rid):
            barrier.wait()
            logpipe.logger.info("thread", expect=rid)

    with capture(tmp_path) as read:
        asyncio.run(main())
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=worker, args=(f"h{i}", barrier)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    recs = read()
    assert len(recs) == 28
    assert all(r["request_id"] == r["expect"] for r in recs)


# --- levels ---------------------------------------------------------------------------------------


def test_level_filtering_and_reconfigure(tmp_path: Path) -> None:
    """Below the level nothing is written and the method is a plain no-op; ``configure(level=)``
    takes effect for loggers bound before it; ``warn``/``fatal``/``log`` map to the SPEC names."""
    log = logpipe.logger.bind(k=1)
    with capture(tmp_path, level="warning") as read:
        assert type(log).info is _emit.nop
        log.info("hidden")
        log.warn("w")
        logpipe.configure(level="debug")
        log.debug("d")
        log.fatal("f")
        log.log(20, "via log")
        log.log("error", "named")
        assert log.is_enabled_for("debug") and log.get_effective_level() == 10
    assert [(r["level"], r["message"]) for r in read()] == [
        ("warning", "w"), ("debug", "d"), ("critical", "f"), ("info", "via log"), ("error", "named")]


def test_bad_level_or_format_is_a_usage_error() -> None:
    """``configure`` with an unknown level or format raises UsageError with a one-line message,
    and the logger keeps its previous settings."""
    before = _emit.state
    with pytest.raises(UsageError, match="unknown log level 'loud'"):
        logpipe.configure(level="loud")
    with pytest.raises(UsageError, match="unknown log format"):
        logpipe.configure(format="xml")
    with pytest.raises(UsageError, match="list of key names"):
        logpipe.configure(redact="password")
    assert _emit.state is before


def test_env_level_and_bad_env_value() -> None:
    """LOGPIPE_LEVEL=debug enables debug; an unknown LOGPIPE_LEVEL does not stop the service: it
    says so in one warning line and uses info."""
    proc = run_py("from logpipe import logger; logger.debug('dbg')",
                  env=logger_child_env(LOGPIPE_LEVEL="DEBUG"))
    assert [r["message"] for r in lines(proc.stdout)] == ["dbg"]
    proc = run_py("from logpipe import logger; logger.debug('dbg'); logger.info('inf')",
                  env=logger_child_env(LOGPIPE_LEVEL="loud"))
    assert proc.returncode == 0
    warn, inf = lines(proc.stdout)
    assert warn["level"] == "warning" and "LOGPIPE_LEVEL" in warn["message"]
    assert inf["message"] == "inf"


# --- formats --------------------------------------------------------------------------------------


def _run_on_tty(code: str, **env: str) -> bytes:
    """Run ``code`` with stdout on a pseudo-terminal; return what it printed there."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=subprocess.PIPE,
                                env=logger_child_env(**env))
        os.close(slave)
        out = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.stderr is not None
        with proc.stderr:
            err = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, err
        return out
    finally:
        os.close(master)


def test_tty_gets_coloured_console_pipe_gets_json() -> None:
    """With LOGPIPE_FORMAT unset, a TTY on stdout gets coloured human lines (time, LEVEL,
    service[instance], message, key=value); the same program on a pipe writes JSON."""
    code = "from logpipe import logger; logger.warning('disk low', free_mb=12)"
    tty = _run_on_tty(code, LOGPIPE_SERVICE="api").decode()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", tty)
    assert "\x1b[" in tty and "api[0]" in plain and "disk low" in plain and "free_mb=12" in plain
    assert "WARN" in tty and not tty.lstrip().startswith("{")
    proc = run_py(code, env=logger_child_env(LOGPIPE_SERVICE="api"))
    assert lines(proc.stdout)[0]["message"] == "disk low"


def test_format_env_wins_over_tty_and_no_color() -> None:
    """LOGPIPE_FORMAT=json keeps JSON on a TTY; LOGPIPE_FORMAT=console on a TTY with NO_COLOR
    set gives console lines without escape codes."""
    code = "from logpipe import logger; logger.info('hello', n=1)"
    out = _run_on_tty(code, LOGPIPE_FORMAT="json").decode()
    assert out.strip().startswith("{") and '"message":"hello"' in out
    out = _run_on_tty(code, LOGPIPE_FORMAT="console", NO_COLOR="1").decode()
    assert "\x1b[" not in out and "INFO" in out and "hello n=1" in out


def test_console_format_with_exception(tmp_path: Path) -> None:
    """``format="console"`` on a file writes one human line per call (no colours off a TTY)
    followed by the traceback's lines when an exception was logged."""
    with capture(tmp_path, format="console") as _:
        path = Path(_emit.state.writer._owner.name)  # type: ignore[union-attr]
        logpipe.bind(service="api", instance_id="2")
        try:
            raise KeyError("sku")
        except KeyError:
            logpipe.logger.exception("lookup failed", sku="A-1")
        text = path.read_text()
    first, *rest = text.splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ERROR api\[2\] lookup failed sku=A-1 ",
                    first), first
    assert rest[0] == "    Traceback (most recent call last):" and rest[-1] == "    KeyError: 'sku'"


# --- redaction ------------------------------------------------------------------------------------


def test_default_redaction_nested_case_insensitive(tmp_path: Path) -> None:
    """Values of secret keys are "[REDACTED]" at any depth and in any case — in call fields,
    local and process-wide bindings and context — while look-alikes are kept and the
    application's own dict is not modified."""
    payload = {"user": "ann", "Password": "hunter2", "headers": [{"Authorization": "Bearer x"}]}
    with capture(tmp_path) as read:
        logpipe.bind(api_key="k-1")
        with logpipe.context(session_token="t"):
            logpipe.logger.bind(DB_PASSWORD="p").info(
                "login", payload=payload, Cookie="c", tokens_used=5, secretary="kim")
    (rec,) = read()
    assert rec["payload"] == {"user": "ann", "Password": "[REDACTED]",
                              "headers": [{"Authorization": "[REDACTED]"}]}
    assert rec["api_key"] == rec["session_token"] == rec["DB_PASSWORD"] == rec["Cookie"] == "[REDACTED]"
    assert rec["tokens_used"] == 5 and rec["secretary"] == "kim"
    assert payload["Password"] == "hunter2"
    assert payload["headers"] == [{"Authorization": "Bearer x"}]


def test_redaction_list_is_configurable(tmp_path: Path) -> None:
    """``configure(redact=[...])`` replaces the list (``ssn`` now hidden, ``password`` shown);
    ``redact=()`` turns redaction off."""
    with capture(tmp_path, redact=["ssn"]) as read:
        logpipe.logger.info("a", ssn="123", password="pw")
        logpipe.configure(redact=())
        logpipe.logger.info("b", ssn="123")
    a, b = read()
    assert a["ssn"] == "[REDACTED]" and a["password"] == "pw"
    assert b["ssn"] == "123"


# --- exceptions (never raising: test_emit.py) ---------------------------------------------------


def test_exception_is_one_line_with_traceback(tmp_path: Path) -> None:
    """``logger.exception`` and ``exc_info=`` (True or an exception object) give one JSON line
    whose ``exception`` holds the full traceback; ``exc_info=True`` outside ``except`` adds none."""

    def fail() -> None:
        raise ValueError("bad amount")

    with capture(tmp_path) as read:
        try:
            fail()
        except ValueError as exc:
            logpipe.logger.exception("charge failed", order_id=7)
            caught = exc
        logpipe.logger.warning("later", exc_info=caught)
        logpipe.logger.error("no exception", exc_info=True)
    a, b, c = read()
    for rec in (a, b):
        assert rec["exception"].startswith("Traceback (most recent call last):")
        assert "in fail" in rec["exception"] and rec["exception"].endswith("ValueError: bad amount")
        assert "exc_info" not in rec
    assert a["level"] == "error" and a["order_id"] == 7 and b["level"] == "warning"
    assert "exception" not in c and "exc_info" not in c


# --- fork (reaching the OS whole: test_output.py) ------------------------------------------------


def test_forked_child_reports_its_own_pid() -> None:
    """After ``os.fork()`` the child's lines carry the child's pid, the parent's its own."""
    proc = run_py(
        """
        import os
        from logpipe import logger
        logger.info("parent before")
        pid = os.fork()
        if pid == 0:
            logger.info("child", me=os.getpid())
            os._exit(0)
        os.waitpid(pid, 0)
        logger.info("parent after", me=os.getpid())
        """
    )
    before, child, after = lines(proc.stdout)
    assert child["pid"] == child["me"] != before["pid"]
    assert after["pid"] == after["me"] == before["pid"]


# --- the examples the README demo runs ----------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", ["api.py", "worker.py"])
def test_example_runs_a_bounded_loop_and_exits_0(script: str) -> None:
    """``examples/<script> --count 12 --interval 0`` exits 0 and writes only JSON lines with the
    service from LOGPIPE_SERVICE and a feature; the API's request lines carry a request id from
    ``context()``, the worker logs at least one failure with its traceback in ``exception``."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--count", "12", "--interval", "0"],
                          env=logger_child_env(LOGPIPE_SERVICE="svc", LOGPIPE_INSTANCE_ID="1"),
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    recs = lines(proc.stdout)
    assert all(r["service"] == "svc" and r["instance_id"] == "1" and r.get("feature") for r in recs)
    if script == "api.py":
        done = [r for r in recs if r["message"] == "request done"]
        assert len(done) == 12 and all(r["request_id"].startswith("r-1-") for r in done)
        assert all("Bearer" not in str(r.get("headers")) for r in recs)
    else:
        failed = [r for r in recs if r["message"] == "job failed"]
        assert failed and all("PaymentDeclined" in r["exception"] for r in failed)
    assert recs[-1]["message"].endswith("stopped")


def test_example_stops_cleanly_on_sigterm() -> None:
    """SIGTERM (what ``logpipe collect`` sends its children) ends the example with exit 0 and a
    last "stopped" line."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "worker.py"), "--count", "100000",
                             "--interval", "0.01"], stdout=subprocess.PIPE, env=logger_child_env())
    assert proc.stdout is not None
    with proc.stdout:
        first = proc.stdout.readline()
        assert lines(first)[0]["message"] == "worker started"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    last = lines(rest)[-1]
    assert last["message"] == "worker stopped" and last["signalled"] is True


# --- under a real PM2 ---------------------------------------------------------------------------

PM2_APP = """\
import os, signal
from logpipe import logger
for i in range(3):
    logger.info("tick", i=i)
os.kill(os.getpid(), signal.SIGKILL)  # no flush, no exit handlers: PM2's pipe has what we wrote
"""


def test_under_real_pm2_defaults_and_kill_9(tmp_path: Path) -> None:
    """Started by a real PM2 (fork mode, and ``-i 2``), with no LOGPIPE_* settings, each app's
    lines in PM2's log files carry PM2's ``name`` as service, its ``pm_id``, the instance
    (NODE_APP_INSTANCE under ``-i``, else pm_id) — and all 3 lines survive the app SIGKILLing
    itself right after logging."""
    import contextlib
    import shutil
    import tempfile

    from tests._pm2_helpers import Pm2, pm2_bin

    binary = pm2_bin.__wrapped__()  # type: ignore[attr-defined]  # the installer, not the fixture
    base = Path(tempfile.mkdtemp(prefix="lp-lg-"))  # short: PM2's sockets live in PM2_HOME
    app = base / "app.py"
    app.write_text(PM2_APP)
    pm2 = Pm2(binary, base / "h")
    try:
        pm2.start(app, "solo", "--no-autorestart")
        pm2.start(app, "pair", "-i", "2", "--no-autorestart")
        logs = base / "h" / "logs"

        def records() -> list[dict[str, object]]:
            # whole lines only: PM2 may be half-way through writing the last one
            return [r for p in sorted(logs.glob("*-out*.log"))
                    for r in lines(p.read_bytes().rpartition(b"\n")[0])]

        recs = wait_for(lambda: r if len(r := records()) >= 9 else None, timeout=60,
                        message="9 lines in PM2's out files")
    finally:
        with contextlib.suppress(Exception):
            pm2("kill")
        shutil.rmtree(base, ignore_errors=True)
    by_pm_id: dict[object, list[dict[str, object]]] = {}
    for r in recs:
        by_pm_id.setdefault(r["pm_id"], []).append(r)
    assert len(by_pm_id) == 3 and all([r["i"] for r in rs] == [0, 1, 2] for rs in by_pm_id.values())
    solo = [rs for rs in by_pm_id.values() if rs[0]["service"] == "solo"]
    pair = [rs for rs in by_pm_id.values() if rs[0]["service"] == "pair"]
    assert len(solo) == 1 and len(pair) == 2
    assert solo[0][0]["instance_id"] == str(solo[0][0]["pm_id"])
    assert sorted(rs[0]["instance_id"] for rs in pair) == ["0", "1"]
