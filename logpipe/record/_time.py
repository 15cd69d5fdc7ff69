"""Record times: the one canonical-time check, the one RFC 3339 formatter, and the parser of
every time form other loggers write (epoch s/ms/µs/ns, RFC 3339 with any offset,
python-json-logger's ``asctime``, Go's ``time.Time`` string)."""

from __future__ import annotations

import math
import re
import time as _time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeGuard

#: Times Splunk indexes sensibly: from the epoch up to (not including) 2101-01-01T00:00:00Z.
#: Anything outside is "implausible" (SPEC §4): the record gets the read time instead.
MIN_EPOCH = 0.0
MAX_EPOCH = 4133980800.0


class TimeFormatter:
    """Epoch seconds → ``2026-11-23T14:01:51.123456Z`` (RFC 3339 UTC, microseconds, ``Z``).

    The ``YYYY-MM-DDTHH:MM:SS.`` prefix is rendered once per second and reused (structlog's
    ``_make_stamper`` idea), about 4 times cheaper than formatting each time. :meth:`now` reads
    the clock in integer nanoseconds, so its microseconds are exact (truncated).
    """

    __slots__ = ("_prefix", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def _prefix_for(self, sec: int) -> str:
        if sec != self._sec:
            t = _time.gmtime(sec)
            prefix = (
                f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
            )
            # one tuple assignment, so another thread never pairs a new second with an old prefix
            self._prefix, self._sec = prefix, sec
            return prefix
        return self._prefix

    def format(self, epoch: float) -> str:
        """Epoch seconds → the canonical time string (rounded to the microsecond)."""
        sec = math.floor(epoch)
        micros = round((epoch - sec) * 1_000_000)
        if micros >= 1_000_000:
            sec += 1
            micros -= 1_000_000
        return f"{self._prefix_for(sec)}{micros:06d}Z"

    def now(self) -> str:
        """The current time."""
        ns = _time.time_ns()
        return f"{self._prefix_for(ns // 1_000_000_000)}{(ns // 1000) % 1_000_000:06d}Z"


_FORMATTER = TimeFormatter()


def format_time(epoch: float) -> str:
    """Epoch seconds → RFC 3339 UTC with microseconds and ``Z`` (``2026-11-23T14:01:51.123456Z``)."""
    return _FORMATTER.format(epoch)


def now() -> str:
    """The current time as :func:`format_time` renders it."""
    return _FORMATTER.now()


# --- the one canonical-time check ---------------------------------------------------------------
_CANONICAL_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.", re.ASCII).fullmatch
#: "YYYY-MM-DDTHH:MM:SS." prefixes seen to be real times between 1970 and 2100 (a handful of
#: distinct seconds per chunk; bounded)
_SECONDS: set[str] = set()


def _check_second(prefix: str) -> bool:
    if not _CANONICAL_SECOND(prefix):
        return False
    try:
        epoch = datetime.fromisoformat(prefix[:19]).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return False
    if not MIN_EPOCH <= epoch < MAX_EPOCH:
        return False
    if len(_SECONDS) > 4096:
        _SECONDS.clear()
    _SECONDS.add(prefix)
    return True


def is_canonical_time(value: Any) -> TypeGuard[str]:
    """True when ``value`` is exactly SPEC §1's form — ``2026-11-23T14:01:51.123456Z``, a real
    date and time, between 1970 and 2100 — so it can be passed on untouched. The one check:
    every module that asks "is this time canonical" calls this (the collector's hot path too:
    a set lookup of the second, ~50 ns)."""
    return (value.__class__ is str and len(value) == 27 and value[26] == "Z"
            and (value[:20] in _SECONDS or _check_second(value[:20]))
            and value[20:26].isdigit() and value.isascii())


# --- parsing every other form -------------------------------------------------------------------
def _epoch_from_number(value: float) -> float | None:
    """Seconds, milliseconds, microseconds or nanoseconds since the epoch, told apart by size;
    ``None`` outside 1970 and 2100 (or not finite)."""
    if not math.isfinite(value) or value < 0:
        return None
    if value < 1e11:  # seconds (a 1e11 s would be the year 5138)
        epoch = float(value)
    elif value < 1e14:
        epoch = value / 1e3
    elif value < 1e17:
        epoch = value / 1e6
    else:
        epoch = value / 1e9
    return epoch if MIN_EPOCH <= epoch < MAX_EPOCH else None


#: Go's ``time.Time.String()`` (logrus's default, ``fmt.Print(time.Now())``):
#: ``2014-03-10 19:57:38.562264131 -0400 EDT``, perhaps with a monotonic ``m=+0.000012``.
_GO_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))? ([+-])(\d\d)(\d\d)(?: [A-Za-z0-9+-]+)?"
    r"(?: m=[+-]\d+\.\d+)?", re.ASCII).fullmatch


def _go_time(s: str) -> datetime | None:
    m = _GO_TIME(s)
    if m is None:
        return None
    day, clock, frac, sign, hh, mm = m.groups()
    offset = timedelta(hours=int(hh), minutes=int(mm))
    tz = timezone(-offset if sign == "-" else offset)
    try:
        dt = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=tz)
    except ValueError:
        return None
    if frac:
        dt += timedelta(microseconds=int(frac[:6].ljust(6, "0")))
    return dt


def to_epoch(value: Any, *, naive_local: bool = False) -> float | None:
    """A time value as a line may carry it → epoch seconds, or ``None`` when it is not a time or
    lies outside 1970 and 2100.

    Accepts epoch s/ms/µs/ns (number or digit string), ISO 8601 / RFC 3339 strings with any
    offset (``,`` or ``.`` before the fraction; beyond microseconds is truncated) and Go's
    ``time.Time`` string. A time without an offset is UTC, or the host's local time with
    ``naive_local`` (python-json-logger's ``asctime``).
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
        dt: datetime | None = datetime.fromisoformat(s)
    except ValueError:
        dt = _go_time(s)
        if dt is None:
            return None
    assert dt is not None
    if dt.tzinfo is None and not naive_local:
        dt = dt.replace(tzinfo=UTC)
    try:
        epoch = dt.timestamp()  # a naive dt is local time here
    except (OverflowError, OSError, ValueError):
        return None
    return epoch if MIN_EPOCH <= epoch < MAX_EPOCH else None


def normalise_time(value: Any, *, naive_local: bool = False) -> str | None:
    """A time value → the canonical RFC 3339 UTC string, or ``None`` when it is not a time (or
    lies outside 1970 and 2100)."""
    if is_canonical_time(value):
        return str(value)
    epoch = to_epoch(value, naive_local=naive_local)
    if epoch is None:
        return None
    try:
        return format_time(epoch)
    except (OverflowError, OSError, ValueError):
        return None
