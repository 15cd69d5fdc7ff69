"""record._rules: the alias table applied to what loggers write — documented Go lines (zap,
logrus, log/slog: Go is not installed here), GCP, ECS shapes, loguru, exceptions, plain text,
big integers and NaN. The real npm/PyPI loggers are in tests/e2e/test_real_loggers.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logpipe import diagnostics, record

READ = "2026-12-04T10:00:00.000000Z"
DEFAULTS = {"source": "/var/log/app.log", "service": "app", "host": "collector-host"}


def norm(line: str | bytes, plain_level: str = "info") -> dict[str, Any]:
    """One line through the collector's normaliser (file origin defaults, read time READ)."""
    out = record.LineNormaliser(DEFAULTS, plain_level=plain_level)(
        line.encode() if isinstance(line, str) else line, READ)
    assert out is not None
    rec, data = out
    assert json.loads(data) == json.loads(json.dumps(rec))  # bytes and dict agree
    return rec


def test_logrus_json_formatter_line() -> None:
    """logrus JSONFormatter, the line from its README (sirupsen/logrus README.md, "With
    log.SetFormatter(&log.JSONFormatter{})"): Go's time.Time string is read."""
    rec = norm('{"level":"warning","msg":"The group\'s number increased tremendously!",'
               '"number":122,"omg":true,"time":"2014-03-10 19:57:38.562471297 -0400 EDT"}')
    assert rec == {"level": "warning", "message": "The group's number increased tremendously!",
                   "number": 122, "omg": True, "time": "2014-03-10T23:57:38.562471Z", **DEFAULTS}


def test_slog_json_handler_line() -> None:
    """log/slog JSONHandler, the line from its package doc (golang/go src/log/slog/doc.go)."""
    rec = norm('{"time":"2022-11-08T15:28:26.000000000-05:00","level":"INFO","msg":"hello",'
               '"count":3}')
    assert rec == {"time": "2022-11-08T20:28:26.000000Z", "level": "info", "message": "hello",
                   "count": 3, **DEFAULTS}


def test_zap_json_lines() -> None:
    """zap's JSON encoder, lines from its examples (uber-go/zap example_test.go, Example: the
    time stubbed to epoch 0 as ``ts``); its ``dpanic`` level is an error in production."""
    rec = norm('{"level":"error","ts":0,"msg":"Oh no!","user":"jane@test.com","visits":42}')
    assert rec == {"level": "error", "time": "1970-01-01T00:00:00.000000Z", "message": "Oh no!",
                   "user": "jane@test.com", "visits": 42, **DEFAULTS}
    # zapcore.EpochTimeEncoder (the production default) writes float seconds under "ts"
    assert norm('{"level":"dpanic","ts":1679472893.2944522,"msg":"m"}')["level"] == "error"
    assert norm('{"level":"info","ts":1679472893.2944522,"msg":"m"}')["time"] == \
        "2023-03-22T08:14:53.294452Z"


def test_gcp_structured_logging_keys_are_left_alone() -> None:
    """GCP's severity is the level; logging.googleapis.com/… keys stay as they are (Cloud
    Logging "Structured logging" special fields)."""
    rec = norm('{"severity":"ERROR","message":"x","time":"2020-10-12T07:20:50.52Z",'
               '"logging.googleapis.com/trace":"projects/p/traces/abc",'
               '"logging.googleapis.com/labels":{"a":"b"}}')
    assert rec["level"] == "error" and "severity" not in rec
    assert rec["time"] == "2020-10-12T07:20:50.520000Z"
    assert rec["logging.googleapis.com/trace"] == "projects/p/traces/abc"
    assert rec["logging.googleapis.com/labels"] == {"a": "b"}


def test_ecs_nested_shapes() -> None:
    """ECS nested ``log.level`` and ``service.name`` (as de-dotted by ECS tools): the level and
    the service are taken, the rest of ``log`` and ``service`` kept; error.message is the message
    only when there is none."""
    rec = norm('{"@timestamp":"2026-01-01T00:00:00Z","log":{"level":"warn","logger":"x"},'
               '"service":{"name":"billing","version":"1.2"},'
               '"error":{"message":"disk full","stack_trace":"Error: disk full\\n  at x"}}')
    assert rec["level"] == "warning" and rec["log"] == {"logger": "x"}
    assert rec["service"] == "billing" and rec["service.version"] == "1.2"
    assert rec["message"] == "disk full" and rec["exception"] == "Error: disk full\n  at x"
    assert rec["error"]["stack_trace"] == rec["exception"]  # the original is kept


def test_host_and_app_name() -> None:
    """hostname → host (the collector's host does not get added beside it); a line's own host
    wins; bunyan's name is the service only when the line has none."""
    assert norm('{"hostname":"web-1","pid":1,"name":"shop","msg":"m"}')["host"] == "web-1"
    rec = norm('{"hostname":"web-1","pid":1,"name":"shop","msg":"m"}')
    assert (rec["service"], "hostname" in rec, "name" in rec) == ("shop", False, False)
    rec = norm('{"hostname":"web-1","host":"h","service":"own","name":"shop","msg":"m"}')
    assert (rec["host"], rec["service"], rec["name"]) == ("h", "own", "shop")
    # python-json-logger's "name" is a logger name, not an app: no hostname, no rename
    assert norm('{"name":"shop.payments","message":"m"}')["service"] == "app"


@pytest.mark.parametrize(("line", "exc"), [
    ('{"msg":"m","err":{"type":"Error","message":"b","stack":"Error: b\\n    at f"}}',
     "Error: b\n    at f"),  # pino / bunyan
    ('{"message":"m","stack":"Error: w\\n    at g"}', "Error: w\n    at g"),  # winston
    ('{"message":"m","error.stack_trace":"T"}', "T"),  # ECS dotted
    ('{"message":"m","stack_trace":"java.lang.X\\n\\tat y"}', "java.lang.X\n\tat y"),  # logstash
    ('{"message":"m","exc_info":"Traceback (most recent call last):\\nE: x"}',
     "Traceback (most recent call last):\nE: x"),  # python-json-logger
    ('{"message":"m","stacktrace":["a","b"]}', "a\nb"),
])
def test_exception_from_any_key_is_copied_and_kept(line: str, exc: str) -> None:
    """Whatever key the logger used, ``exception`` gets the text; the original stays."""
    rec = norm(line)
    assert rec["exception"] == exc
    original = json.loads(line)
    original.pop("msg", None)  # renamed to message
    assert {k: rec[k] for k in original} == original


def test_exception_is_never_overwritten_and_stack_info_is_not_an_exception() -> None:
    """A line's own ``exception`` wins; the stdlib's stack_info ("Stack (most recent call
    last)") is not copied into it."""
    assert norm('{"message":"m","exception":"E","stack":"S"}')["exception"] == "E"
    assert "exception" not in norm('{"message":"m","stack":"Stack (most recent call last):\\n"}')


def test_loguru_keeps_what_it_does_not_map() -> None:
    """loguru's record: extra never overwrites the mapped keys (a colliding one stays under
    ``loguru.extra``); everything else of ``record`` is under ``loguru`` (nothing lost)."""
    line = {"text": "t | INFO | m\n", "record": {
        "elapsed": {"repr": "0:00:01", "seconds": 1.0}, "exception": None,
        "extra": {"order": 7, "message": "not me"}, "file": {"name": "a.py", "path": "/a.py"},
        "function": "f", "level": {"icon": "i", "name": "WARNING", "no": 30}, "line": 3,
        "message": "m", "module": "a", "name": "app", "process": {"id": 42, "name": "Main"},
        "thread": {"id": 1, "name": "T"}, "time": {"repr": "r", "timestamp": 1700000000.5}}}
    rec = norm(json.dumps(line))
    assert (rec["message"], rec["level"], rec["time"], rec["pid"], rec["order"]) == (
        "m", "warning", "2023-11-14T22:13:20.500000Z", 42, 7)
    inner: dict[str, Any] = line["record"]  # type: ignore[assignment]
    assert rec["loguru"] == {**{k: v for k, v in inner.items() if k not in ("message", "extra")},
                             "extra": {"message": "not me"}}  # the one extra key not moved out
    assert "exception" not in rec and rec["text"] == "t | INFO | m\n"


def test_unreadable_time_alias_stays_with_one_diagnostic(capfd: pytest.CaptureFixture[str]) -> None:
    """A time alias that is not a time stays as it was and the read time is used; a bad
    ``time`` is moved to ``time_original``; the operator is told once (rate-limited)."""
    diagnostics.reset()
    rec = norm('{"timestamp":"yesterday","message":"m"}')
    assert (rec["time"], rec["timestamp"]) == (READ, "yesterday")
    rec = norm('{"time":"later","message":"m"}')
    assert (rec["time"], rec["time_original"]) == (READ, "later")
    err = capfd.readouterr().err
    assert err.count("record time") == 1, err


def test_stdlib_default_format_plain_lines() -> None:
    """``LEVEL:logger:message`` lines get their level and logger; other plain lines the
    stream's level; a joined logging.exception record splits message and exception."""
    assert norm("WARNING:shop.cart:low stock") | {} == {
        "message": "low stock", "level": "warning", "logger": "shop.cart", "time": READ,
        **DEFAULTS}
    assert norm("something odd", plain_level="error")["level"] == "error"
    assert "logger" not in norm("ERROR happened: not the stdlib format")
    rec = norm("ERROR:shop.payments:payment failed\nTraceback (most recent call last):\n"
               '  File "a.py", line 1, in <module>\nValueError: boom')
    assert (rec["message"], rec["level"], rec["logger"]) == ("payment failed", "error",
                                                             "shop.payments")
    assert rec["exception"].startswith("Traceback") and rec["exception"].endswith("boom")


def test_big_integers_and_nan_in_reencoded_lines() -> None:
    """A line that must be re-encoded keeps integers beyond 64 bits exactly; a Python writer's
    NaN keeps the line a JSON object."""
    out = record.LineNormaliser(DEFAULTS)(
        b'{"msg":"m","n":%d,"neg":%d,"f":1.5}' % (2**64, -(2**63) - 1), READ)
    assert out is not None
    assert json.loads(out[1])["n"] == 2**64 and json.loads(out[1])["neg"] == -(2**63) - 1
    rec = norm('{"msg":"m","ratio":NaN,"top":-Infinity}')
    assert (rec["message"], rec["ratio"], rec["top"]) == ("m", "NaN", "-Infinity")


@pytest.mark.parametrize(("value", "name"), [
    ("SUCCESS", "info"),  # loguru
    ("dpanic", "error"),  # zap
    ("WARN", "warning"), (50, "error"), ("60", "critical"), ("notice", "info"),
])
def test_other_loggers_level_names(value: object, name: str) -> None:
    """Level names and numbers of the loggers in the table map to SPEC's five levels."""
    assert record.normalise_level(value) == name
