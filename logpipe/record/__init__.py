"""The record: key names, normalisation of whatever a process wrote, NDJSON encode/decode.

A record is a plain ``dict`` that goes straight through orjson. This package is the only place
that knows the key names and the aliases other loggers use (SPEC §1): ``_rules`` holds the alias
table (one place), ``_time`` the one canonical-time check, the one RFC 3339 formatter and the
time parser, ``_normaliser`` the line path's :class:`LineNormaliser` and ``_canonical`` its
check for lines already in the canonical shape (kept as bytes: :class:`NormalisedLines`, whose
dicts are built only when asked for). Nothing here raises on bad input — a line that is not a
JSON object becomes ``{"message": <line>}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from logpipe.record._rules import (
    EXCEPTION_SOURCES,
    HOST_ALIASES,
    LEVEL_ALIASES,
    LOCAL_TIME_KEYS,
    LOGGER,
    LOGURU,
    MESSAGE_ALIASES,
    NEEDS_WORK,
    SERVICE_ALIASES,
    TIME_ALIASES,
    TIME_ORIGINAL,
    rename,
)
from logpipe.record._time import (
    MAX_EPOCH,
    MIN_EPOCH,
    TimeFormatter,
    format_time,
    is_canonical_time,
    normalise_time,
    now,
    to_epoch,
)

__all__ = [
    "EXCEPTION",
    "EXCEPTION_SOURCES",
    "FEATURE",
    "HOST",
    "HOST_ALIASES",
    "INSTANCE_ID",
    "LEVEL",
    "LEVELS",
    "LEVEL_ALIASES",
    "LOCAL_TIME_KEYS",
    "LOGGER",
    "LOGURU",
    "MAX_EPOCH",
    "MESSAGE",
    "MESSAGE_ALIASES",
    "MIN_EPOCH",
    "OWN_MARK_KEY",
    "OWN_MARK_VALUE",
    "PID",
    "PM_ID",
    "SERVICE",
    "SERVICE_ALIASES",
    "SOURCE",
    "TIME",
    "TIME_ALIASES",
    "TIME_ORIGINAL",
    "TRUNCATED",
    "UNSET",
    "Head",
    "LineNormaliser",
    "NormalisedLines",
    "TimeFormatter",
    "decode_text",
    "dumps",
    "format_time",
    "is_canonical_time",
    "is_own",
    "normalise",
    "normalise_level",
    "normalise_time",
    "now",
    "parse_line",
    "to_epoch",
]

# --- key names (SPEC §1) ---------------------------------------------------------------------
TIME = "time"
LEVEL = "level"
MESSAGE = "message"
SERVICE = "service"
FEATURE = "feature"
INSTANCE_ID = "instance_id"
HOST = "host"
PID = "pid"
SOURCE = "source"
EXCEPTION = "exception"
PM_ID = "pm_id"
#: set on records whose line was cut at the line-length limit
TRUNCATED = "truncated"

#: logpipe's own diagnostics carry this key/value; a collector drops such lines if read back.
OWN_MARK_KEY = "logpipe"
OWN_MARK_VALUE = "diagnostic"

LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_SET = frozenset(LEVELS)

_LEVEL_NAMES: dict[str, str] = {
    "trace": "debug",
    "debug": "debug",
    "dbg": "debug",
    "verbose": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "success": "info",  # loguru
    "warn": "warning",
    "warning": "warning",
    "err": "error",
    "error": "error",
    "crit": "critical",
    "critical": "critical",
    "fatal": "critical",
    "alert": "critical",
    "emerg": "critical",
    "emergency": "critical",
    "panic": "critical",
    "dpanic": "error",  # zap: panics in development, logs at error in production
}

# pino numeric levels: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal
_PINO_LEVELS = {10: "debug", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "critical"}

# Keys whose presence means the fast path (keep the line's bytes) is not possible.
_NEEDS_WORK = NEEDS_WORK | {OWN_MARK_KEY}


# --- level --------------------------------------------------------------------------------------
def normalise_level(value: Any) -> str | None:
    """A level as other loggers write it (``WARN``, ``fatal``, pino's ``40``) → a name of LEVELS."""
    if isinstance(value, str):
        name = _LEVEL_NAMES.get(value.strip().lower())
        if name is not None:
            return name
        if value.isdigit():
            value = int(value)
        else:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = int(value)
        if v in _PINO_LEVELS:
            return _PINO_LEVELS[v]
        # other numeric scales: nearest pino decade, clamped
        return _PINO_LEVELS[min(60, max(10, (v // 10) * 10))]
    return None


# --- decoding -----------------------------------------------------------------------------------
def decode_text(line: bytes) -> str:
    """Bytes → str; invalid UTF-8 is replaced (U+FFFD), never fatal."""
    return line.decode("utf-8", "replace")


def parse_line(line: bytes) -> dict[str, Any]:
    """One line (no trailing newline) → a dict: the JSON object it holds, else ``{"message": …}``.

    Never raises. Invalid UTF-8 inside a JSON line is replaced and the JSON kept when it still
    parses. A trailing ``\\r`` is dropped. Integers beyond 64 bits are kept exact (orjson would
    round them to floats), and a Python writer's ``NaN``/``Infinity`` do not turn the object
    into plain text (they become the strings ``"NaN"``/``"Infinity"``).
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if line[:1] == b"{":
        try:
            obj = orjson.loads(line)
            if _LONG_DIGITS(line) is not None:  # rare: maybe an integer orjson cannot hold
                obj = _loads_exact(line, obj)
        except orjson.JSONDecodeError:
            obj = _loads_exact(line, None)
        if isinstance(obj, dict):
            return obj
    return {MESSAGE: decode_text(line)}


#: 19 digits in a row: the shortest integer that may fall outside orjson's range (-2**63 to 2**64)
_LONG_DIGITS = re.compile(rb"\d{19}").search


def _loads_exact(line: bytes, fallback: Any) -> Any:
    """The stdlib parser (exact big integers; ``NaN``/``Infinity`` accepted): the slow path of
    the slow path, for lines orjson refused or may have rounded."""
    try:
        # NaN / Infinity (JSON has no such numbers) are kept as the text the writer wrote
        return json.loads(decode_text(line), parse_constant=str)
    except (ValueError, RecursionError):
        return fallback


def is_own(rec: Mapping[str, Any]) -> bool:
    """True for logpipe's own diagnostics (which must never be collected)."""
    return rec.get(OWN_MARK_KEY) == OWN_MARK_VALUE


def normalise(rec: dict[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Apply the alias table in place (``msg``/``event`` → ``message``, time, level, host,
    service, exception keys, loguru's envelope; see ``_rules``) and fill in what is missing from
    ``defaults``. Existing keys are never overwritten. Returns ``rec``.

    ``defaults`` may hold ``time`` (the receipt time, used when the line has none or has one
    that is not a time between 1970 and 2100 — the original is then kept in
    ``time_original``), ``level`` (the stream's default: ``info``, or ``error`` for stderr) and
    any other key to fill.
    """
    if not _NEEDS_WORK.isdisjoint(rec) or LEVEL in rec or TIME in rec:
        rename(rec, defaults.get(TIME) if defaults else None, normalise_level)
    if defaults:
        for key, value in defaults.items():
            if key not in rec:
                rec[key] = value
    return rec


#: plain lines that :func:`_rules.parse_plain` may read more from (besides multi-line ones)
_PLAIN_SHAPES = ("DEBUG:", "INFO:", "WARNING:", "ERROR:", "CRITICAL:")


# --- encoding -----------------------------------------------------------------------------------
def dumps(rec: Mapping[str, Any]) -> bytes:
    """One record → one NDJSON line without the newline. Never raises: unserialisable values are
    rendered with ``repr``; non-string keys are stringified; integers beyond 64 bits are written
    exactly (as JSON numbers)."""
    try:
        return orjson.dumps(rec, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        pass
    try:  # integers beyond orjson's 64 bits, written as the exact number they are
        return orjson.dumps(_exact_ints(rec), default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # e.g. a dict nested too deep: each value that orjson refuses is rendered with repr,
        # the rest kept as they are
        return orjson.dumps({str(k): _safe_value(v) for k, v in rec.items()})


def _exact_ints(value: Any, depth: int = 0) -> Any:
    if value.__class__ is int and not -(2**63) <= value < 2**64:
        return orjson.Fragment(str(value).encode())
    if depth > 250:
        return value
    if isinstance(value, dict):
        return {k: _exact_ints(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact_ints(v, depth + 1) for v in value]
    return value


def _safe_value(value: Any) -> Any:
    try:
        return orjson.Fragment(orjson.dumps(_exact_ints(value), default=repr,
                                            option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return repr(value)


# The line path (the normaliser and the canonical check, which needs msgspec) is imported on
# first use: a process that only logs (``from logpipe import logger``) never loads it.
_LAZY = {"LineNormaliser": "_normaliser", "NormalisedLines": "_canonical", "Head": "_canonical",
         "UNSET": "_canonical"}

if TYPE_CHECKING:
    from logpipe.record._canonical import UNSET, Head, NormalisedLines
    from logpipe.record._normaliser import LineNormaliser


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
