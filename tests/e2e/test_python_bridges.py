"""Existing Python code logs through logpipe unchanged (issue #14): ``structlog.get_logger()``,
the standard ``logging`` module whoever configured it first, and ``logpipe.logger`` — each in a
real child interpreter, reading what it wrote on its real stdout and stderr."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests._logger_helpers import lines, run_py

BOUND = {"service": "api", "feature": "store"}


def _diagnostics(stderr: bytes) -> list[dict[str, Any]]:
    """logpipe's own diagnostic lines on stderr (JSON, marked ``"logpipe": "diagnostic"``)."""
    out = []
    for raw in stderr.splitlines():
        rec = orjson.loads(raw)
        assert rec.get("logpipe") == "diagnostic", raw
        out.append(rec)
    return out


def _bound(rec: dict[str, Any]) -> bool:
    return all(rec.get(k) == v for k, v in BOUND.items()) and isinstance(rec.get("pid"), int)


def test_structlog_stdlib_after_basicconfig_and_logger_all_write_logpipe_records() -> None:
    """A service that ran ``logging.basicConfig()`` first, then imports logpipe and binds
    service/feature, then logs through ``structlog.get_logger()`` (with ``bind_contextvars``),
    through ``logging``, and through ``logpipe.logger``: every line on stdout is one logpipe JSON
    record with the bindings, the contextvars merged into all three, nothing on stderr (the
    basicConfig handler was taken over, not left printing a second format)."""
    proc = run_py(
        """
        import logging
        logging.basicConfig(level=logging.INFO)
        import logpipe, structlog
        from structlog.contextvars import bind_contextvars
        logpipe.bind(service="api", feature="store")
        bind_contextvars(request_id="r-7")
        log = structlog.get_logger()
        log.info("from structlog", order_id=1)
        log.bind(cart=3).warning("bound structlog", token="s3cr3t")
        log.debug("below the level")
        logging.getLogger("mylib.esi").info("from %s", "stdlib")
        logpipe.logger.info("from logpipe")
        try:
            {}["k"]
        except KeyError:
            log.exception("structlog exception")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    recs = lines(proc.stdout)
    assert [r["message"] for r in recs] == [
        "from structlog", "bound structlog", "from stdlib", "from logpipe", "structlog exception"]
    assert all(_bound(r) and r["request_id"] == "r-7" for r in recs), recs
    assert list(recs[0])[:3] == ["time", "level", "message"] and recs[0]["order_id"] == 1
    assert recs[1]["level"] == "warning" and recs[1]["cart"] == 3 and recs[1]["token"] == "[REDACTED]"
    assert recs[2]["logger"] == "mylib.esi" and recs[2]["level"] == "info"
    assert recs[4]["level"] == "error" and recs[4]["exception"].endswith("KeyError: 'k'")
    assert "event" not in recs[0]


def test_bound_loggers_from_either_side_interoperate() -> None:
    """``structlog.get_logger().bind()`` and ``logpipe.logger.bind()`` share one class: each
    side's bound copy has the other's methods, ``logpipe.context()`` reaches structlog loggers,
    a later ``logpipe.bind``/``configure(level=)`` reaches loggers created before it, and a
    module-level ``structlog.get_logger()`` made before logpipe was imported is bridged too."""
    proc = run_py(
        """
        import structlog
        early = structlog.get_logger(component="early")  # lazy: resolved at first use
        import logpipe
        mine = logpipe.logger.bind(b=2)
        theirs = structlog.get_logger().bind(c=3)
        assert isinstance(theirs, type(mine)), (type(mine), type(theirs))
        logpipe.bind(service="api", feature="store")
        with logpipe.context(request_id="r-1"):
            theirs.bind(d=4).info("theirs")
            mine.bind(e=5).info("mine")
        early.info("early")
        logpipe.configure(level="warning")
        theirs.info("hidden")
        early.warning("shown")
        """
    )
    assert proc.returncode == 0, proc.stderr
    theirs, mine, early, shown = lines(proc.stdout)
    assert all(_bound(r) for r in (theirs, mine, early, shown))
    assert (theirs["c"], theirs["d"], theirs["request_id"]) == (3, 4, "r-1")
    assert (mine["b"], mine["e"], mine["request_id"]) == (2, 5, "r-1")
    assert early["component"] == "early"
    assert shown["message"] == "shown" and shown["level"] == "warning"


def test_structlog_capture_logs_still_captures_through_the_bridge() -> None:
    """An application's tests that use ``structlog.testing.capture_logs`` keep working: inside the
    block structlog's events are captured (not written), at every level; after it, the same
    logger writes logpipe records again."""
    proc = run_py(
        """
        import sys, logpipe, structlog
        from structlog.testing import capture_logs
        log = structlog.get_logger()
        with capture_logs() as cap:
            log.info("captured", a=1)
            log.bind(b=2).debug("quiet")
        log.info("after")
        print(cap, file=sys.stderr)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().strip() == (
        "[{'a': 1, 'event': 'captured', 'log_level': 'info'}, "
        "{'b': 2, 'event': 'quiet', 'log_level': 'debug'}]")
    (after,) = lines(proc.stdout)
    assert after["message"] == "after" and isinstance(after["pid"], int)


def test_get_logger_on_every_call_goes_through_logpipe() -> None:
    """``structlog.get_logger()`` called on every log call (plain, with a name, with initial
    values) writes logpipe records: process-wide bindings and contextvars added after the first
    call appear on the next ones, redaction applies, a ``configure(level=)`` after the first
    call filters the next ones (both ways), ``capture_logs`` captures these calls, and a pickled
    logger still logs. The plain form hands out one shared proxy (what makes it cheap); with
    initial values it does not."""
    proc = run_py(
        """
        import pickle, sys, logpipe, structlog
        from structlog.contextvars import bind_contextvars
        from structlog.testing import capture_logs
        def work(n):
            structlog.get_logger().info("plain", n=n, password="pw")
            structlog.get_logger("mod.a").debug("named", n=n)
            structlog.get_logger(component="c").warning("valued", n=n)
        logpipe.bind(service="api")
        work(1)
        logpipe.bind(feature="store")
        bind_contextvars(request_id="r-9")
        logpipe.configure(level="debug")
        work(2)
        logpipe.configure(level="warning")
        work(3)
        with capture_logs() as cap:
            work(4)
        logpipe.configure(level="info")
        work(5)
        pickle.loads(pickle.dumps(structlog.get_logger("mod.a"))).info("unpickled", n=6)
        print([(e["event"], e["n"]) for e in cap], file=sys.stderr)
        assert structlog.get_logger() is structlog.get_logger()
        assert structlog.get_logger("mod.a") is structlog.get_logger("mod.a")
        assert structlog.get_logger(component="c") is not structlog.get_logger(component="c")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().strip() == "[('plain', 4), ('named', 4), ('valued', 4)]"
    recs = lines(proc.stdout)
    assert [(r["message"], r["n"], r["level"]) for r in recs] == [
        ("plain", 1, "info"), ("valued", 1, "warning"),
        ("plain", 2, "info"), ("named", 2, "debug"), ("valued", 2, "warning"),
        ("valued", 3, "warning"),
        ("plain", 5, "info"), ("valued", 5, "warning"), ("unpickled", 6, "info")]
    assert all(r["service"] == "api" and isinstance(r["pid"], int) for r in recs)
    assert all("feature" not in r and "request_id" not in r for r in recs[:2])
    assert all(_bound(r) and r["request_id"] == "r-9" for r in recs[2:])
    assert all(r["password"] == "[REDACTED]" for r in recs if r["message"] == "plain")
    assert all(r["component"] == "c" for r in recs if r["message"] == "valued")
    assert all("event" not in r for r in recs)


@pytest.mark.parametrize("how", ["configure", "reset_defaults"])
def test_application_configuring_structlog_later_ends_the_per_call_shortcut(how: str) -> None:
    """Loggers handed out by ``structlog.get_logger()`` while the bridge owned structlog — one
    kept at module level and already used, and the per-call form — follow the application's
    own ``structlog.configure`` (or structlog's defaults after ``reset_defaults``) from their
    next call, and ``structlog.get_logger`` is structlog's own function again."""
    change = {
        "configure": "structlog.configure(processors=[structlog.processors.add_log_level,"
                     " structlog.processors.JSONRenderer()])",
        "reset_defaults": "structlog.reset_defaults()\n"
                          "structlog.configure(processors=[structlog.processors.JSONRenderer()])",
    }[how]
    proc = run_py(f"""
import logpipe, structlog
import structlog._config
log = structlog.get_logger()
log.info("bridged", n=1)
structlog.get_logger().info("bridged", n=2)
{change}
log.info("mine", n=3)
structlog.get_logger().info("mine", n=4)
assert structlog.get_logger is structlog._config.get_logger, structlog.get_logger
""")
    assert proc.returncode == 0, proc.stderr
    recs = lines(proc.stdout)
    assert [r.get("message") for r in recs[:2]] == ["bridged", "bridged"]
    assert all(isinstance(r["pid"], int) for r in recs[:2])
    mine = {"event": "mine", "level": "info"} if how == "configure" else {"event": "mine"}
    assert recs[2:] == [{**mine, "n": 3}, {**mine, "n": 4}]


def test_import_logpipe_alone_then_structlog_is_bridged() -> None:
    """Only ``import logpipe`` (no logpipe call at all), then the application imports structlog:
    its default logger writes logpipe records with the environment's bindings."""
    proc = run_py(
        """
        import logpipe
        import structlog
        structlog.get_logger().info("hello", n=1)
        """,
        env={**_env(), "LOGPIPE_SERVICE": "svc"},
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = lines(proc.stdout)
    assert (rec["message"], rec["service"], rec["n"], rec["level"]) == ("hello", "svc", 1, "info")


def _env() -> dict[str, str]:
    from tests._logger_helpers import logger_child_env

    return logger_child_env()


# --- an application that configured structlog itself -----------------------------------------
APP_CHAIN = """
import structlog
structlog.configure(processors=[
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.JSONRenderer(),
])
"""


@pytest.mark.parametrize("order", ["structlog first", "logpipe first"])
def test_application_structlog_configuration_is_kept_and_said_once(order: str) -> None:
    """An application that configures structlog itself — before logpipe loads, or after —
    keeps its configuration (its own renderer's lines, ``event`` key and all) and gets exactly
    one diagnostic on stderr naming ``logpipe.processors``."""
    setup = APP_CHAIN + "import logpipe\n"
    if order == "logpipe first":
        setup = "import logpipe, structlog\nstructlog.get_logger().info('bridged')\n" + APP_CHAIN
    proc = run_py(setup + """
logpipe.bind(service="api")
structlog.get_logger().info("mine", a=1)
logpipe.configure(level="debug")
structlog.get_logger().info("again")
""")
    assert proc.returncode == 0, proc.stderr
    recs = lines(proc.stdout)
    if order == "logpipe first":  # before the application's configure: the bridge
        bridged = recs.pop(0)
        assert bridged["message"] == "bridged" and isinstance(bridged["pid"], int)
    first, second = recs
    assert first == {"a": 1, "event": "mine", "level": "info"}
    assert second == {"event": "again", "level": "info"}
    (diag,) = _diagnostics(proc.stderr)
    assert "logpipe.processors" in diag["message"] and "left its configuration alone" in diag["message"]


@pytest.mark.parametrize("ending", ["renderer", "write"])
def test_logpipe_processors_in_an_application_chain_give_the_same_record(ending: str) -> None:
    """With ``*logpipe.processors.CHAIN`` added before the application's own JSON renderer (or
    ``logpipe.processors.write`` ending its chain), the application's structlog writes the same
    record as ``logpipe.logger`` for the same call — bindings, context, contextvars, level
    filter, redaction, exception — and no diagnostic is printed (the chain uses logpipe)."""
    tail = ("structlog.processors.JSONRenderer()" if ending == "renderer"
            else "logpipe.processors.write")
    proc = run_py(f"""
import logpipe, logpipe.processors, structlog
from structlog.contextvars import bind_contextvars
structlog.configure(processors=[
    structlog.contextvars.merge_contextvars,
    *logpipe.processors.CHAIN,
    {tail},
])
logpipe.bind(service="api", feature="store")
bind_contextvars(request_id="r-2")
with logpipe.context(user="u1"):
    for log in (structlog.get_logger(), logpipe.logger):
        log.info("placed", order_id=7, password="pw", nested={{"api_key": "k"}})
        log.debug("hidden")
        log.warn("careful")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed")
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    recs = lines(proc.stdout)
    assert len(recs) == 6
    theirs, ours = recs[:3], recs[3:]
    for a, b in zip(theirs, ours, strict=True):
        assert a.pop("time")[:10] == b.pop("time")[:10]
        if "exception" in a:
            assert a.pop("exception").splitlines()[-1] == b.pop("exception").splitlines()[-1]
        assert a == b
    assert ours[0]["password"] == "[REDACTED]" and ours[0]["nested"] == {"api_key": "[REDACTED]"}
    assert _bound(ours[0]) and ours[0]["request_id"] == "r-2" and ours[0]["user"] == "u1"
    assert [r["level"] for r in ours] == ["info", "warning", "error"]


# --- the standard logging module, whoever configured it first --------------------------------
@pytest.mark.parametrize("setup", [
    "logging.basicConfig(level=logging.INFO, format='%(levelname)s:%(name)s:%(message)s')",
    "logging.config.dictConfig({'version': 1, 'handlers': {'h': {'class': 'logging.StreamHandler'}},"
    " 'loggers': {'lib': {'handlers': ['h'], 'propagate': False, 'level': 'INFO'}},"
    " 'root': {'handlers': ['h'], 'level': 'INFO'}})",
    "logging.getLogger('lib').addHandler(logging.StreamHandler(sys.stdout))",
    "logging.basicConfig(force=True, level=logging.INFO)",
    "logging.config.dictConfig({'version': 1, 'root': {'level': 'INFO', 'handlers': []}})",
])
@pytest.mark.parametrize("when", ["before", "after"])
def test_stdlib_console_handlers_are_taken_over_before_or_after_import(setup: str, when: str) -> None:
    """``basicConfig()`` (with ``force=True`` too), ``dictConfig()`` (a non-propagating logger
    included, or a root with no handler at all) or a library's own console handler, set up
    before or after ``import logpipe``: each record comes out once, as a logpipe record with the
    bindings, and nothing else is printed on stdout or stderr."""
    before, after = (setup, "") if when == "before" else ("", setup)
    proc = run_py(f"""
import logging, logging.config, sys
{before}
import logpipe
logpipe.bind(service="api", feature="store")
{after}
logging.getLogger("lib").info("lib says %d", 1)
logging.getLogger("other").warning("other says")
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    recs = lines(proc.stdout)
    assert [(r["logger"], r["message"]) for r in recs] == [("lib", "lib says 1"), ("other", "other says")]
    assert all(_bound(r) for r in recs)


def test_handlers_the_application_wants_are_kept_and_named_once(tmp_path: Any) -> None:
    """A file handler configured before ``import logpipe`` is kept (its file still gets its own
    format) while stdout gets the logpipe record; one diagnostic names the handler and how to
    change it, however many records follow."""
    log_file = tmp_path / "app.log"
    proc = run_py(f"""
import logging
logging.basicConfig(filename={str(log_file)!r}, level=logging.INFO, format="%(levelname)s %(message)s")
import logpipe
logpipe.bind(service="api", feature="store")
for i in range(3):
    logging.getLogger("lib").info("n=%d", i)
""")
    assert proc.returncode == 0, proc.stderr
    assert [r["message"] for r in lines(proc.stdout)] == ["n=0", "n=1", "n=2"]
    assert log_file.read_text().splitlines() == ["INFO n=0", "INFO n=1", "INFO n=2"]
    (diag,) = _diagnostics(proc.stderr)
    assert "FileHandler" in diag["message"] and "app.log" in diag["message"]
    assert "configure(stdlib=False)" in diag["message"]


@pytest.mark.parametrize("how", ["env", "configure"])
def test_explicit_opt_out_gives_logging_back_and_says_so_once(how: str) -> None:
    """``LOGPIPE_STDLIB=0`` or ``configure(stdlib=False)``: the application's basicConfig
    handler prints the stdlib record in its own format on stderr, logpipe's records stay on
    stdout, and one diagnostic says logging was left alone and how to change it."""
    opt_out = "logpipe.configure(stdlib=False)" if how == "configure" else ""
    env = {**_env(), "LOGPIPE_STDLIB": "0"} if how == "env" else None
    proc = run_py(f"""
import logging
logging.basicConfig(level=logging.INFO, format="PLAIN %(message)s")
import logpipe
{opt_out}
logging.getLogger("lib").info("stdlib")
logpipe.logger.info("logpipe")
""", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r["message"] for r in lines(proc.stdout)] == ["logpipe"]
    plain = [ln for ln in proc.stderr.splitlines() if not ln.startswith(b"{")]
    assert plain == [b"PLAIN stdlib"]
    (diag,) = _diagnostics(b"\n".join(ln for ln in proc.stderr.splitlines() if ln.startswith(b"{")))
    assert "left alone" in diag["message"] and "stdlib=False" in diag["message"]
