"""``logpipe logs`` filters: WHEN parsing, level/time/grep/field tests, and a raw-bytes pre-filter.

Times are compared as canonical RFC 3339 strings (``2026-11-23T14:01:51.123456Z``), which sort
as they read, so a record's ``time`` is compared without parsing it. ``--grep`` is a regular
expression on the message, case-insensitive when it has no capital letter (journalctl's "smart
case"). When it is plain text that JSON never escapes, the decompressed bytes are searched for
it first and only the lines holding it are parsed — that is what makes ``--grep`` over
gigabytes of history fast.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from logpipe import record
from logpipe.errors import UsageError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|hours|d|day|days|w|week|weeks)"
                       r"(?:\s+ago)?\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600,
         "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}
#: characters a JSON writer never escapes (Go escapes <, > and &; some writers escape /)
_JSON_SAFE = re.compile(r"^[A-Za-z0-9 _\-.:,;!#@%'=+~`|?*()\[\]{}^$]+$")
_LEVEL_RANK = {name: i for i, name in enumerate(record.LEVELS)}


def parse_when(text: str, now: float | None = None) -> float:
    """``1h``, ``30m``, ``2 days ago``, ``today``, ``yesterday``, ``now``, ``2026-12-01``, RFC 3339
    (naive times are UTC) → epoch seconds. :class:`UsageError` for anything else."""
    now = time.time() if now is None else now
    t = text.strip().lower()
    day = now - now % 86400
    named = {"now": now, "today": day, "yesterday": day - 86400, "tomorrow": day + 86400}
    if t in named:
        return named[t]
    m = _RELATIVE.match(t)
    if m:
        return now - float(m[1]) * _UNIT[m[2].lower()]
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
        try:
            return float(calendar.timegm(time.strptime(t, "%Y-%m-%d")))
        except ValueError:
            pass
    epoch = record.to_epoch(text.strip().replace(" ", "T", 1)) if not t.isdigit() else None
    if epoch is None:
        raise UsageError(f"{text!r} is not a time (examples: 1h, 30m, yesterday, 2026-12-01, "
                         f"2026-12-01T10:00:00Z)")
    return epoch


def parse_level(text: str) -> int:
    """``warning``/``warn``/``err``… → its rank in record.LEVELS."""
    name = record.normalise_level(text)
    if name is None:
        raise UsageError(f"--level {text!r}: expected one of {', '.join(record.LEVELS)}")
    return _LEVEL_RANK[name]


def parse_fields(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` arguments → pairs (the key may be dotted: ``error.type=KeyError``)."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r}: expected KEY=VALUE")
        out.append((key, value))
    return out


def _field(rec: Mapping[str, Any], key: str) -> Any:
    if key in rec:
        return rec[key]
    cur: Any = rec
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_MISSING = object()


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=repr).decode()


@dataclass
class Filter:
    """What a record must satisfy to be printed. Times are canonical RFC 3339 strings."""

    services: frozenset[str] = frozenset()
    min_level: int = 0
    since: str | None = None
    until: str | None = None
    grep: re.Pattern[str] | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)
    instance: str | None = None
    #: bytes every matching line must contain (see module docstring), or None
    needle: bytes | None = None
    #: the needle is matched ignoring ASCII case
    needle_ci: bool = False

    def __call__(self, rec: Mapping[str, Any]) -> bool:
        """True when ``rec`` passes every test."""
        if self.min_level:
            lv = rec.get(record.LEVEL)
            if _LEVEL_RANK.get(lv if isinstance(lv, str) else "", 1) < self.min_level:
                return False
        if self.since is not None or self.until is not None:
            t = time_key(rec)
            if t is None or (self.since is not None and t < self.since) \
                    or (self.until is not None and t > self.until):
                return False
        if self.instance is not None and _as_text(rec.get(record.INSTANCE_ID)) != self.instance:
            return False
        for key, value in self.fields:
            got = _field(rec, key)
            if got is _MISSING or _as_text(got) != value:
                return False
        if self.grep is not None:
            msg = rec.get(record.MESSAGE, "")
            if not self.grep.search(msg if isinstance(msg, str) else _as_text(msg)):
                return False
        return True


def time_key(rec: Mapping[str, Any]) -> str | None:
    """The record's time as a canonical RFC 3339 string (``None`` when it has none)."""
    t = rec.get(record.TIME)
    if t is None:
        return None
    if type(t) is str and len(t) == 27 and t[10] == "T" and t[26] == "Z":
        return t
    return record.normalise_time(t)


def build(*, services: Sequence[str] = (), level: str | None = None, since: str | None = None,
          until: str | None = None, grep: str | None = None, fields: Sequence[str] = (),
          instance: str | None = None, now: float | None = None) -> Filter:
    """The Filter for the command's options (UsageError for a bad value)."""
    f = Filter(services=frozenset(services), fields=parse_fields(fields), instance=instance)
    if level:
        f.min_level = parse_level(level)
    if since:
        f.since = record.format_time(parse_when(since, now))
    if until:
        f.until = record.format_time(parse_when(until, now))
    if grep:
        flags = 0 if any(c.isupper() for c in grep) else re.IGNORECASE
        try:
            f.grep = re.compile(grep, flags)
        except re.error as exc:
            raise UsageError(f"--grep {grep!r}: not a regular expression ({exc})") from None
        if _JSON_SAFE.match(grep) and not re.search(r"[.^$*+?()\[\]{}|\\]", grep):
            f.needle = grep.encode()
            f.needle_ci = bool(flags)
    if f.needle is None:
        # KEY=VALUE: a plain-text value must appear in the raw line too (the longest one is the
        # most selective)
        safe = [v for _, v in f.fields if len(v) >= 3 and _JSON_SAFE.match(v)]
        if safe:
            f.needle = max(safe, key=len).encode()
    return f
