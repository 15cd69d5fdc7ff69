"""The alias table: what other loggers write, and how it becomes SPEC §1's keys.

Each rule names the logger it comes from (README "What the collector understands" lists the
same). A *path* is a top-level key (which may itself contain dots: ECS's ``"log.level"``) or a
tuple of keys into nested objects (``("err", "stack")``). Renames never overwrite a key the line
already has; copies (exceptions) keep the original.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from math import isfinite
from typing import Any

from logpipe.record._time import is_canonical_time, normalise_time, now

Path = str | tuple[str, ...]

MESSAGE = "message"
TIME = "time"
LEVEL = "level"
HOST = "host"
SERVICE = "service"
EXCEPTION = "exception"
PID = "pid"
LOGGER = "logger"
#: where the original of an unreadable / implausible ``time`` is kept
TIME_ORIGINAL = "time_original"
#: what loguru's ``record`` holds beyond the keys mapped below, kept whole under one key
LOGURU = "loguru"

# --- the table -----------------------------------------------------------------------------------
#: message: pino/bunyan/zap/slog/logrus ``msg``, structlog ``event``; ECS's ``error.message``
#: only when the line has no message at all (winston's ``format.errors`` without a message).
MESSAGE_ALIASES: tuple[str, ...] = ("msg", "event")
MESSAGE_FALLBACKS: tuple[Path, ...] = (("error", "message"), "error.message")
#: time keys, first readable wins: winston/structlog ``timestamp``, ECS ``@timestamp``, zap
#: ``ts``, python-json-logger ``asctime`` (the host's local time, ``2026-12-01 13:40:15,173``)
TIME_ALIASES: tuple[str, ...] = ("timestamp", "@timestamp", "ts", "asctime")
#: keys whose offset-less times are local time, not UTC
LOCAL_TIME_KEYS = frozenset(("asctime",))
#: level: stdlib/python-json-logger ``levelname``, GCP ``severity``, ECS ``log.level`` (dotted,
#: as ecs-pino-format and ecs-logging write it, or nested)
LEVEL_ALIASES: tuple[Path, ...] = ("levelname", "severity", "log.level", ("log", "level"))
#: host: pino/bunyan ``hostname``, ECS ``host.hostname``
HOST_ALIASES: tuple[Path, ...] = ("hostname", "host.hostname")
#: service: ECS ``service.name`` (dotted or nested); bunyan's (and named pino's) ``name`` when
#: the line carries their ``hostname`` (see :data:`APP_NAME_KEY`)
SERVICE_ALIASES: tuple[Path, ...] = ("service.name", ("service", "name"))
APP_NAME_KEY = "name"
APP_NAME_MARKER = "hostname"
#: stack traces, copied (as text) into ``exception``: pino/bunyan ``err.stack``, ECS
#: ``error.stack_trace``, winston ``format.errors({stack: true})``'s ``stack``, logstash-style
#: ``stack_trace``, python-json-logger ``exc_info``, ``stacktrace``
EXCEPTION_SOURCES: tuple[Path, ...] = (("err", "stack"), ("error", "stack_trace"),
                                       "error.stack_trace", "stack", "stack_trace", "exc_info",
                                       "stacktrace")

#: Top-level keys whose presence sends a JSON line down the slow path (renames to do). Not
#: ``service`` (every logpipe line has it): ECS's nested ``{"service": {"name": …}}`` comes with
#: ECS's ``log.level``, which is here.
NEEDS_WORK = frozenset(
    [p if isinstance(p, str) else p[0] for p in (
        *MESSAGE_ALIASES, *TIME_ALIASES, *LEVEL_ALIASES, *HOST_ALIASES, "service.name",
        *EXCEPTION_SOURCES, *MESSAGE_FALLBACKS, APP_NAME_MARKER, "record")])


def _get(rec: Mapping[str, Any], path: Path) -> Any:
    if isinstance(path, str):
        return rec.get(path)
    obj: Any = rec
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _pop(rec: dict[str, Any], path: Path) -> None:
    if isinstance(path, str):
        rec.pop(path, None)
        return
    parent: Any = rec
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
        if not parent and len(path) == 2:
            rec.pop(path[0], None)  # ``{"log": {}}`` left by taking its level goes too


def _take(rec: dict[str, Any], key: str, aliases: tuple[Path, ...]) -> None:
    """Move the first alias holding a non-empty string to ``key`` (unless ``key`` is set)."""
    if key in rec and not isinstance(rec[key], dict):
        return
    for path in aliases:
        v = _get(rec, path)
        if isinstance(v, str) and v:
            nested = rec.pop(key) if isinstance(rec.get(key), dict) else None
            if isinstance(path, tuple) and nested is not None:
                nested.pop(path[-1], None)  # the path ran through the nested object itself
            else:
                _pop(rec, path)
            if nested:  # ECS nested ``service``: the rest kept, as dotted keys
                for sub, subv in nested.items():
                    rec.setdefault(f"{key}.{sub}", subv)
            rec[key] = v
            return


def rename(rec: dict[str, Any], received: str | None, normalise_level: Any) -> None:
    """Apply the whole table to ``rec`` in place. ``received`` is the read time (for a time that
    cannot be read); ``normalise_level`` maps a level value to a name of LEVELS or ``None``."""
    if "record" in rec and "text" in rec:  # loguru serialize=True: {"text": …, "record": {…}}
        _unwrap_loguru(rec)
    if MESSAGE not in rec:
        for path in MESSAGE_ALIASES:
            if path in rec:
                rec[MESSAGE] = rec.pop(path)
                break
        else:
            for fallback in MESSAGE_FALLBACKS:
                v = _get(rec, fallback)
                if isinstance(v, str):
                    rec[MESSAGE] = v
                    break
    _rename_time(rec, received)
    _rename_level(rec, normalise_level)
    if APP_NAME_MARKER in rec:
        # bunyan always names its logger (pino when asked): on a line carrying their
        # ``hostname``, ``name`` is the app's name
        name = rec.get(APP_NAME_KEY)
        if SERVICE not in rec and isinstance(name, str) and name:
            rec[SERVICE] = rec.pop(APP_NAME_KEY)
        _take(rec, HOST, HOST_ALIASES)
    elif "host.hostname" in rec:
        _take(rec, HOST, HOST_ALIASES)
    _take(rec, SERVICE, SERVICE_ALIASES)
    if EXCEPTION not in rec:
        _copy_exception(rec)


def _rename_time(rec: dict[str, Any], received: str | None) -> None:
    if TIME in rec:
        t = rec[TIME]
        if is_canonical_time(t):
            return
        canonical = normalise_time(t)
        if canonical is not None:
            rec[TIME] = canonical
            return
        # unreadable or implausible (before 1970, after 2100, NaN, 1e300, "yesterday"): the read
        # time, the original kept beside it, and the operator told (rate-limited)
        # (NaN and ±Infinity, which a Python writer may emit, as text: JSON has no such numbers)
        rec.setdefault(TIME_ORIGINAL, repr(t) if isinstance(t, float) and not isfinite(t) else t)
        rec[TIME] = received or now()
        _warn_time(TIME, t)
        return
    bad: str | None = None
    for alias in TIME_ALIASES:
        if alias in rec:
            canonical = normalise_time(rec[alias], naive_local=alias in LOCAL_TIME_KEYS)
            if canonical is not None:
                del rec[alias]
                rec[TIME] = canonical
                return
            bad = bad or alias
    if bad is not None:  # the alias stays as it was (the original); the read time is filled in
        _warn_time(bad, rec[bad])


def _warn_time(key: str, value: Any) -> None:
    from logpipe import diagnostics  # here: diagnostics imports record

    diagnostics.warning(
        f"record time {key}={str(value)[:64]!r} is not a time between 1970 and 2100; the read "
        f"time is used (the original is kept in the record)", key="record-time")


def _rename_level(rec: dict[str, Any], normalise_level: Any) -> None:
    if LEVEL in rec:
        lvl = rec[LEVEL]
        name = normalise_level(lvl)
        if name is not None:
            rec[LEVEL] = name
        return
    for path in LEVEL_ALIASES:
        v = _get(rec, path)
        if v is not None:
            name = normalise_level(v)
            if name is not None:
                _pop(rec, path)
                rec[LEVEL] = name
                return


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
        return "\n".join(value)
    return None


def _copy_exception(rec: dict[str, Any]) -> None:
    for path in EXCEPTION_SOURCES:
        text = _as_text(_get(rec, path))
        # the stdlib's stack_info ("Stack (most recent call last):") is not an exception
        if text is not None and not text.startswith("Stack (most recent call last)"):
            rec[EXCEPTION] = text
            return


_TRACEBACK = "Traceback (most recent call last):"


def _unwrap_loguru(rec: dict[str, Any]) -> None:
    """loguru ``serialize=True`` → message, level, time, pid, logger, exception, ``extra`` as the
    record's own fields. What is not moved out of loguru's ``record`` (its ``level`` and
    ``time`` objects, file, function, line, thread, …, and any ``extra`` key the record already
    has) stays under ``loguru``: nothing is dropped."""
    inner = rec.get("record")
    text = rec.get("text")
    if not (isinstance(inner, dict) and isinstance(text, str) and "message" in inner
            and isinstance(inner.get("level"), dict)):
        return
    rest = dict(inner)
    del rec["record"]
    if MESSAGE not in rec:
        rec[MESSAGE] = rest.pop("message")
    name = rest["level"].get("name")
    if isinstance(name, str):
        rec.setdefault(LEVEL, name)
    t = rest.get("time")
    if isinstance(t, dict) and isinstance(t.get("timestamp"), int | float):
        rec.setdefault(TIME, t["timestamp"])
    proc = rest.get("process")
    if isinstance(proc, dict) and isinstance(proc.get("id"), int):
        rec.setdefault(PID, proc["id"])
    if isinstance(rest.get("name"), str):
        rec.setdefault(LOGGER, rest["name"])
    if rest.get("exception") is not None and EXCEPTION not in rec:
        at = text.find(_TRACEBACK)
        rec[EXCEPTION] = (text[at:] if at >= 0 else text).rstrip("\n")
    extra = rest.pop("extra", None)
    if isinstance(extra, dict):
        taken = {k: v for k, v in extra.items() if k in rec}
        for k, v in extra.items():
            rec.setdefault(k, v)
        if taken:
            rest["extra"] = taken  # keys the record already had stay with loguru
    elif extra is not None:
        rest["extra"] = extra
    rec[LOGURU] = rest


# --- plain text -------------------------------------------------------------------------------
#: stdlib logging's default format (``logging.basicConfig()``): ``LEVEL:logger:message``
_STDLIB_DEFAULT = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):([^:\s]*):(.*)", re.DOTALL).match
#: the last line of a Node.js crash report
_NODE_FOOTER = re.compile(r"\nNode\.js v\d+[\d.]*\s*$").search
_NODE_ERROR_LINE = re.compile(r"^\[?\w*(?:Error|Exception|Rejection)\]?(?::.*)?$", re.MULTILINE).search


def parse_plain(rec: dict[str, Any], text: str) -> None:
    """A plain-text line (possibly joined by the multiline joiner) → level, ``logger``,
    ``message`` and ``exception`` where its shape says so; otherwise left as it is."""
    first = text[:1]
    if first in "DIWEC" and ":" in text[:10]:
        m = _STDLIB_DEFAULT(text)
        if m is not None:
            rec[LEVEL] = m.group(1).lower()
            rec[LOGGER] = m.group(2)
            rec[MESSAGE] = text = m.group(3)
    if "\n" not in text:
        return
    at = text.find("\n" + _TRACEBACK)
    if at >= 0:  # a plain line with the traceback logging.exception prints after it
        rec[MESSAGE] = text[:at]
        rec[EXCEPTION] = text[at + 1:]
        rec.setdefault(LEVEL, "error")
        return
    if _NODE_FOOTER(text):  # a Node.js crash report: the error line is the message
        m = _NODE_ERROR_LINE(text)
        rec[MESSAGE] = m.group(0) if m else text.split("\n", 1)[0]
        rec[EXCEPTION] = text
        rec.setdefault(LEVEL, "critical")
