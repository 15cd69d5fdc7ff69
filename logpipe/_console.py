"""The one console formatter: a record as a human line, for the logger, the console sink and
``logpipe logs``.

A line reads ``TIME LEVEL service[instance] message key=value ...``; the ``exception`` follows
on indented lines. Colour only when asked (:func:`use_colour` decides for a descriptor, with the
two common overrides: ``NO_COLOR`` (https://no-color.org: "when present and not an empty
string, prevents the addition of ANSI color") and ``FORCE_COLOR`` (https://force-color.org, as
chalk/supports-color and CPython 3.13 read it; ``0``/``false`` mean no colour, as
supports-color reads them). ``NO_COLOR`` wins when both are set, as in CPython's ``_colorize``.

Terminal control characters in a record's text are escaped (``\\x1b``), whoever prints it.
Imported by the logger: this module imports only orjson and :mod:`logpipe.record` (no click,
httpx or zstandard — ``import logpipe`` stays cheap).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from logpipe import record

# SGR sequences (ECMA-48)
RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
BLUE = "\x1b[34m"
MAGENTA = "\x1b[35m"
CYAN = "\x1b[36m"

LEVEL_LABELS = {"debug": "DEBUG", "info": "INFO ", "warning": "WARN ", "error": "ERROR",
                "critical": "CRIT "}
LEVEL_COLOURS = {"debug": BLUE, "info": GREEN, "warning": YELLOW, "error": RED,
                 "critical": BOLD + RED}

#: shown in the line's head, so not repeated as key=value
HEAD_KEYS = frozenset((record.TIME, record.LEVEL, record.MESSAGE, record.SERVICE,
                       record.INSTANCE_ID, record.EXCEPTION))
#: where a line came from: the same on most lines, so printed after the application's own keys
ORIGIN_KEYS = (record.FEATURE, record.HOST, record.PID, record.PM_ID, record.SOURCE)
_ORIGIN = frozenset(ORIGIN_KEYS)
#: characters that make a value ambiguous in ``key=value`` unless quoted
_NEEDS_QUOTES = frozenset(' "=\n\r\t\\')
EXCEPTION_INDENT = "    "
#: C0 controls but tab and newline, DEL and C1: written raw, a record's text could clear the
#: screen, retitle the terminal or hide itself behind a carriage return (terminal escape
#: injection; journalctl likewise escapes them). Shown as ``\x1b``, the way repr() does.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape_control(m: re.Match[str]) -> str:
    return f"\\x{ord(m[0]):02x}"


def visible(text: str) -> str:
    """``text`` with control characters (but tab and newline) escaped; as is when printable."""
    return text if text.isprintable() else _CONTROL.sub(_escape_control, text)


def use_colour(fd: int, environ: Mapping[str, str] | None = None) -> bool:
    """Colour decision for output on ``fd``: NO_COLOR, then FORCE_COLOR, then TERM=dumb, then
    whether ``fd`` is a terminal."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR")
    if force:
        return force.strip().lower() not in ("0", "false")
    if env.get("TERM") == "dumb":
        return False
    try:
        return os.isatty(fd)
    except OSError:
        return False


def format_value(value: Any) -> str:
    """A value for ``key=value``: plain text as is, quoted (JSON string) when it holds spaces,
    quotes, ``=`` or control characters or is empty; numbers, booleans and null as JSON; nested
    values as compact JSON."""
    cls = value.__class__
    if cls is str:
        if not value or not _NEEDS_QUOTES.isdisjoint(value) or not value.isprintable():
            return orjson.dumps(value).decode()
        return value  # type: ignore[no-any-return]
    if cls is int:
        return str(value)
    if isinstance(value, str):  # a str subclass
        return format_value(str(value))
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dict | list):
        try:
            return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # e.g. an int beyond 64 bits deep inside
            return repr(value)
    return repr(value)


class ConsoleFormatter:
    """Renders records as human lines; colour is decided once, at construction."""

    __slots__ = ("_keys", "colour")

    def __init__(self, colour: bool) -> None:
        self.colour = colour
        #: key → its rendered ``key=`` prefix (keys repeat on every line: render each once)
        self._keys: dict[Any, str] = {}

    def format(self, rec: Mapping[str, Any]) -> str:
        """One record → its line(s), ending with a newline."""
        c = self.colour
        time = rec.get(record.TIME)
        time_s = visible(_short_time(time)) if isinstance(time, str) else \
            format_value(time) if time else "-"
        level = rec.get(record.LEVEL, "info")
        level_name = level if isinstance(level, str) else format_value(level)
        label = LEVEL_LABELS.get(level_name) or visible(f"{level_name.upper():<5}")
        service = rec.get(record.SERVICE)
        instance = rec.get(record.INSTANCE_ID)
        who = "" if service is None else visible(_text(service))
        if instance is not None and instance != "":
            who += f"[{visible(_text(instance))}]"
        message = rec.get(record.MESSAGE, "")
        msg = visible(message) if isinstance(message, str) else format_value(message)
        if "\n" in msg:
            msg = msg.rstrip("\n").replace("\n", "\n" + EXCEPTION_INDENT)
        pairs = self._pairs(rec)
        if c:
            head = f"{DIM}{time_s}{RESET} {LEVEL_COLOURS.get(level_name, MAGENTA)}{label}{RESET}"
            if who:
                head += f" {BOLD}{who}{RESET}"
            line = f"{head} {msg}"
        else:
            line = f"{time_s} {label} {who} {msg}" if who else f"{time_s} {label} {msg}"
        if pairs:
            line += " " + " ".join(pairs)
        exc = rec.get(record.EXCEPTION)
        if exc:
            text = visible(exc) if isinstance(exc, str) else orjson.dumps(
                exc, default=repr, option=orjson.OPT_INDENT_2).decode()
            body = EXCEPTION_INDENT + text.rstrip("\n").replace("\n", "\n" + EXCEPTION_INDENT)
            line += f"\n{RED}{body}{RESET}" if c else f"\n{body}"
        return line + "\n"

    def _pairs(self, rec: Mapping[str, Any]) -> list[str]:
        """``key=value`` texts: the application's keys in order, then the origin keys."""
        keys = self._keys
        out: list[str] = []
        for key, value in rec.items():
            if key in HEAD_KEYS or key in _ORIGIN:
                continue
            prefix = keys.get(key)
            if prefix is None:
                prefix = self._prefix(key)
            out.append(prefix + format_value(value))
        for key in ORIGIN_KEYS:
            if key in rec:
                prefix = keys.get(key)
                if prefix is None:
                    prefix = self._prefix(key)
                out.append(prefix + format_value(rec[key]))
        return out

    def _prefix(self, key: Any) -> str:
        k = str(key)
        if not k or not _NEEDS_QUOTES.isdisjoint(k) or not k.isprintable():
            k = orjson.dumps(k).decode()
        prefix = f"{CYAN}{k}{RESET}=" if self.colour else f"{k}="
        if len(self._keys) < 10000:  # bounded: keys are usually a small, fixed set
            self._keys[key] = prefix
        return prefix

    def format_many(self, records: Iterable[Mapping[str, Any]]) -> bytes:
        """Many records → one UTF-8 block (one write per batch)."""
        fmt = self.format
        return "".join([fmt(r) for r in records]).encode("utf-8", "replace")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else format_value(value)


def _short_time(value: str) -> str:
    """``2026-11-23T14:01:51.123456Z`` → ``2026-11-23T14:01:51.123Z`` (milliseconds are enough
    to read; the files and Splunk keep the microseconds)."""
    if record.is_canonical_time(value):
        return value[:23] + "Z"
    return value
