"""The record: key names, normalisation of whatever a process wrote, NDJSON encode/decode.

A record is a plain ``dict`` that goes straight through orjson. This package is the only place
that knows the key names and the aliases other loggers use (SPEC §1): ``_rules`` holds the alias
table (one place), ``_time`` the one canonical-time check, the one RFC 3339 formatter and the
time parser. Nothing here raises on bad input — a line that is not a JSON object becomes
``{"message": <line>}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

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
    parse_plain,
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
    "EXCEPTION", "EXCEPTION_SOURCES", "FEATURE", "HOST", "HOST_ALIASES", "INSTANCE_ID", "LEVEL",
    "LEVELS", "LEVEL_ALIASES", "LOCAL_TIME_KEYS", "LOGGER", "LOGURU", "MAX_EPOCH", "MESSAGE",
    "MESSAGE_ALIASES", "MIN_EPOCH", "OWN_MARK_KEY", "OWN_MARK_VALUE", "PID", "PM_ID",
    "SERVICE", "SERVICE_ALIASES", "SOURCE", "TIME", "TIME_ALIASES", "TIME_ORIGINAL",
    "TRUNCATED", "LineNormaliser", "TimeFormatter", "decode_text", "dumps", "format_time",
    "is_canonical_time", "is_own", "normalise", "normalise_level", "normalise_time", "now",
    "parse_line", "to_epoch",
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
        canonical = is_canonical_time
        fragments = self._fragments
        n_frag = len(fragments)
        bits = [(k, v, 1 << i) for i, (k, v, _) in enumerate(fragments)]
        time_bit = 1 << n_frag
        level_bit = time_bit << 1
        # the bytes spliced before the closing brace, per set of missing keys (bit i: default
        # i; then time, level), built once per batch (the read time is the batch's)
        tails: dict[int, bytes] = {}
        for line in lines:
            if line and line[0] == 123 and line[-1] == 125:  # b"{" ... b"}"
                try:
                    obj = loads(line)
                except decode_error:
                    obj = None
                # (logpipe's own mark is in needs_work: such lines take the slow path)
                if type(obj) is dict and needs_work.isdisjoint(obj):
                    t = obj.get(TIME)
                    lv = obj.get(LEVEL)
                    if (t is None or canonical(t)) and (
                            lv is None or (type(lv) is str and lv in levels)):
                        missing = 0
                        for k, v, bit in bits:
                            if k not in obj:
                                obj[k] = v
                                missing |= bit
                        if t is None:
                            obj[TIME] = received
                            missing |= time_bit
                        if lv is None:
                            obj[LEVEL] = "info"
                            missing |= level_bit
                        add_rec(obj)
                        if not missing:
                            add_out(line)
                            continue
                        tail = tails.get(missing)
                        if tail is None:
                            tail = tails[missing] = self._tail(missing, received)
                        if len(obj) == missing.bit_count():  # the line was an empty object
                            add_out(b"{" + tail[1:])
                        else:
                            add_out(line[:-1] + tail)
                        continue
            res = self._slow(line, received)
            if res is not None:
                add_rec(res[0])
                add_out(res[1])
        return recs, outs

    def _tail(self, missing: int, received: str) -> bytes:
        """``,"key":value,…}`` for the keys whose bits are set in ``missing``."""
        parts = [frag for i, (_, _, frag) in enumerate(self._fragments) if missing >> i & 1]
        n = len(self._fragments)
        if missing >> n & 1:
            parts.append(b'"time":"' + received.encode() + b'"')
        if missing >> (n + 1) & 1:
            parts.append(b'"level":"info"')
        return b"," + b",".join(parts) + b"}"

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
        text = rec.get(MESSAGE)
        if len(rec) == 1 and text.__class__ is str and (line[0] != 123 or text == decode_text(line)):
            if text.startswith(_PLAIN_SHAPES) or "\n" in text:
                parse_plain(rec, text)  # stdlib's LEVEL:logger:message, a joined traceback, Node
            defaults.setdefault(LEVEL, self._plain_level)
        else:
            defaults.setdefault(LEVEL, "info")
        normalise(rec, defaults)
        return rec, dumps(rec)


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
