"""The record: key names, normalisation of whatever a process wrote, NDJSON encode/decode.

A record is a plain ``dict`` that goes straight through orjson. This module is the only place
that knows the key names and the aliases other loggers use (SPEC §1); nothing here raises on bad
input — a line that is not a JSON object becomes ``{"message": <line>}``.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

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

# Aliases, in order of preference (the first present wins). pino/bunyan write ``msg``,
# structlog's default is ``event``; ``timestamp``/``ts``/``@timestamp`` are the usual time keys.
MESSAGE_ALIASES = ("msg", "event")
TIME_ALIASES = ("timestamp", "@timestamp", "ts")
LEVEL_ALIASES = ("levelname", "severity")

_LEVEL_NAMES: dict[str, str] = {
    "trace": "debug",
    "debug": "debug",
    "dbg": "debug",
    "verbose": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
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
}

# pino numeric levels: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal
_PINO_LEVELS = {10: "debug", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "critical"}

# Keys whose presence means the fast path (keep the line's bytes) is not possible.
_NEEDS_WORK = frozenset((*MESSAGE_ALIASES, *TIME_ALIASES, *LEVEL_ALIASES))


# --- time ---------------------------------------------------------------------------------------
def format_time(epoch: float) -> str:
    """Epoch seconds → RFC 3339 UTC with microseconds and ``Z`` (``2026-11-23T14:01:51.123456Z``)."""
    secs = math.floor(epoch)
    micros = round((epoch - secs) * 1_000_000)
    if micros >= 1_000_000:
        secs += 1
        micros -= 1_000_000
    t = _time.gmtime(secs)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d}Z"
    )


def now() -> str:
    """The current time as :func:`format_time` renders it."""
    return format_time(_time.time())


def _epoch_from_number(value: float) -> float | None:
    """Seconds, milliseconds, microseconds or nanoseconds since the epoch, told apart by size."""
    if not math.isfinite(value) or value < 0:
        return None
    if value < 1e11:  # seconds until the year 5138
        return float(value)
    if value < 1e14:
        return value / 1e3
    if value < 1e17:
        return value / 1e6
    return value / 1e9


def to_epoch(value: Any) -> float | None:
    """A time value as a line may carry it → epoch seconds, or ``None`` when it is not a time.

    Accepts epoch s/ms/µs/ns (number or digit string) and ISO 8601 / RFC 3339 strings (naive ones
    are taken as UTC).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch_from_number(value)
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    s = value.strip()
    if s[:1].isdigit() and s.replace(".", "", 1).isdigit():
        try:
            return _epoch_from_number(float(s))
        except ValueError:
            return None
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _is_canonical_time(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 27
        and value[10] == "T"
        and value[19] == "."
        and value[26] == "Z"
    )


def normalise_time(value: Any) -> str | None:
    """A time value → canonical RFC 3339 UTC string, or ``None`` when it is not a time."""
    if _is_canonical_time(value):
        return str(value)
    epoch = to_epoch(value)
    if epoch is None:
        return None
    try:
        return format_time(epoch)
    except (OverflowError, OSError, ValueError):
        return None


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
    parses. A trailing ``\\r`` is dropped.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if line[:1] == b"{":
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                obj = orjson.loads(decode_text(line))
            except orjson.JSONDecodeError:
                obj = None
        if isinstance(obj, dict):
            return obj
    return {MESSAGE: decode_text(line)}


def is_own(rec: Mapping[str, Any]) -> bool:
    """True for logpipe's own diagnostics (which must never be collected)."""
    return rec.get(OWN_MARK_KEY) == OWN_MARK_VALUE


def normalise(rec: dict[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rename aliases in place (``msg``/``event`` → ``message``, time and level keys) and fill in
    what is missing from ``defaults``. Existing keys are never overwritten. Returns ``rec``.

    ``defaults`` may hold ``time`` (the receipt time, used when the line has none), ``level``
    (the stream's default: ``info``, or ``error`` for stderr) and any other key to fill.
    """
    if not _NEEDS_WORK.isdisjoint(rec) or LEVEL in rec or TIME in rec:
        _rename_aliases(rec)
    if defaults:
        for key, value in defaults.items():
            if key not in rec:
                rec[key] = value
    return rec


def _rename_aliases(rec: dict[str, Any]) -> None:
    if MESSAGE not in rec:
        for alias in MESSAGE_ALIASES:
            if alias in rec:
                rec[MESSAGE] = rec.pop(alias)
                break
    # time: an existing ``time`` is normalised in place when it parses (pino writes epoch ms)
    if TIME in rec:
        t = rec[TIME]
        if not _is_canonical_time(t):
            canonical = normalise_time(t)
            if canonical is not None:
                rec[TIME] = canonical
    else:
        for alias in TIME_ALIASES:
            if alias in rec:
                canonical = normalise_time(rec[alias])
                if canonical is not None:
                    del rec[alias]
                    rec[TIME] = canonical
                    break
    if LEVEL in rec:
        lvl = rec[LEVEL]
        if lvl not in LEVELS:
            name = normalise_level(lvl)
            if name is not None:
                rec[LEVEL] = name
    else:
        for alias in LEVEL_ALIASES:
            if alias in rec:
                name = normalise_level(rec[alias])
                if name is not None:
                    del rec[alias]
                    rec[LEVEL] = name
                    break


# --- the hot path for sources -------------------------------------------------------------------
class LineNormaliser:
    """Turns raw lines from one origin into (record, NDJSON bytes) pairs, fast.

    ``defaults`` are the keys the origin knows (``source``, ``service``, ``instance_id``,
    ``host``, …); ``plain_level`` is the level of plain-text lines (``error`` for stderr). The
    receipt time is passed per call (one clock read per chunk, not per line).

    Fast path: a line that is a JSON object needing no renames keeps its own bytes; the missing
    keys are spliced in before the closing brace from fragments encoded once, so the line is
    parsed once and never re-serialised. ``batch()`` does a whole chunk in one call.
    """

    __slots__ = ("_defaults", "_fragments", "_plain_level")

    def __init__(self, defaults: Mapping[str, Any], plain_level: str = "info") -> None:
        self._defaults = dict(defaults)
        self._plain_level = plain_level
        # (key, value, b'"key":value') for each default, encoded once
        self._fragments = tuple(
            (k, v, orjson.dumps({k: v}, default=repr)[1:-1]) for k, v in self._defaults.items()
        )

    @property
    def defaults(self) -> dict[str, Any]:
        """The keys this normaliser fills in (a copy)."""
        return dict(self._defaults)

    def __call__(self, line: bytes, received: str) -> tuple[dict[str, Any], bytes] | None:
        """Normalise one line (without its newline). ``None`` for a line to drop (empty, or one
        of logpipe's own diagnostics)."""
        recs, outs = self.batch([line], received)
        if not recs:
            return None
        return recs[0], outs[0]

    def batch(self, lines: list[bytes], received: str) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Normalise many lines (without newlines); dropped lines (blank, logpipe's own
        diagnostics) are left out of both lists."""
        recs: list[dict[str, Any]] = []
        outs: list[bytes] = []
        add_rec = recs.append
        add_out = outs.append
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        needs_work = _NEEDS_WORK
        levels = _LEVEL_SET
        fragments = self._fragments
        time_frag = b'"time":"' + received.encode() + b'"'
        for line in lines:
            if line and line[0] == 123 and line[-1] == 125:  # b"{" ... b"}"
                try:
                    obj = loads(line)
                except decode_error:
                    obj = None
                if type(obj) is dict and needs_work.isdisjoint(obj):
                    t = obj.get(TIME)
                    lv = obj.get(LEVEL)
                    if (
                        (t is None or (type(t) is str and len(t) == 27 and t[10] == "T"
                                       and t[26] == "Z"))
                        and (lv is None or (type(lv) is str and lv in levels))
                        and obj.get(OWN_MARK_KEY) != OWN_MARK_VALUE
                    ):
                        parts = []
                        for k, v, frag in fragments:
                            if k not in obj:
                                obj[k] = v
                                parts.append(frag)
                        if t is None:
                            obj[TIME] = received
                            parts.append(time_frag)
                        if lv is None:
                            obj[LEVEL] = "info"
                            parts.append(b'"level":"info"')
                        add_rec(obj)
                        if not parts:
                            add_out(line)
                        elif len(obj) == len(parts):  # the line was an empty object
                            add_out(b"{" + b",".join(parts) + b"}")
                        else:
                            add_out(line[:-1] + b"," + b",".join(parts) + b"}")
                        continue
            res = self._slow(line, received)
            if res is not None:
                add_rec(res[0])
                add_out(res[1])
        return recs, outs

    def _slow(self, line: bytes, received: str) -> tuple[dict[str, Any], bytes] | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return None
        rec = parse_line(line)
        if is_own(rec):
            return None
        defaults = dict(self._defaults)
        defaults.setdefault(TIME, received)
        # a plain-text line takes the stream's level (error for stderr); a JSON object without
        # a level is info
        plain = len(rec) == 1 and rec.get(MESSAGE) == decode_text(line)
        defaults.setdefault(LEVEL, self._plain_level if plain else "info")
        normalise(rec, defaults)
        return rec, dumps(rec)


# --- encoding -----------------------------------------------------------------------------------
def dumps(rec: Mapping[str, Any]) -> bytes:
    """One record → one NDJSON line without the newline. Never raises: unserialisable values are
    rendered with ``repr``; non-string keys are stringified."""
    try:
        return orjson.dumps(rec, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # e.g. integers beyond 64 bits, or a dict nested too deep: each value that orjson
        # refuses is rendered with repr, the rest kept as they are
        return orjson.dumps({str(k): _safe_value(v) for k, v in rec.items()})


def _safe_value(value: Any) -> Any:
    try:
        return orjson.Fragment(orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return repr(value)


def loads_record(line: bytes) -> dict[str, Any]:
    """An NDJSON line (or plain text) → a normalised record. Never raises."""
    return normalise(parse_line(line))
