"""logpipe's own diagnostics: JSON lines on stderr, marked as logpipe's, rate-limited per key.

They never enter the record stream (research/collector.md §6: shippers that log per record and
re-ingest their own output amplify forever). Each line carries ``"logpipe": "diagnostic"`` so
a collector that somehow reads one back can recognise and drop it (see ``record.is_own``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import orjson

from logpipe import record

#: Same key repeated within this many seconds is suppressed and counted (Vector's internal
#: log rate limiting; research/collector.md §6 asks ≤ 1 line per key per 10 s).
RATE_LIMIT_SECONDS = 10.0

_lock = threading.Lock()
_last: dict[str, tuple[float, int]] = {}
_stream: IO[bytes] | None = None
_listeners: list[Callable[[dict[str, Any]], None]] = []


def add_listener(fn: Callable[[dict[str, Any]], None]) -> None:
    """Call ``fn({time: epoch, level, message})`` for every diagnostic, also those the rate limit
    keeps off stderr (the status publisher's "last error")."""
    _listeners.append(fn)


def remove_listener(fn: Callable[[dict[str, Any]], None]) -> None:
    """Stop calling ``fn``."""
    with contextlib.suppress(ValueError):
        _listeners.remove(fn)


def set_stream(stream: IO[bytes] | None) -> None:
    """Send diagnostics to ``stream`` (binary) instead of stderr; ``None`` restores stderr."""
    global _stream
    _stream = stream


def emit(level: str, message: str, *, key: str | None = None, **fields: Any) -> None:
    """Write one diagnostic line, unless ``key`` (default: the message) was emitted recently.

    Never raises: a diagnostic that cannot be written is dropped.
    """
    if _listeners:  # every occurrence, rate-limited or not (status wants the latest error)
        seen = {record.TIME: time.time(), record.LEVEL: level, record.MESSAGE: message}
        for fn in list(_listeners):
            with contextlib.suppress(Exception):
                fn(seen)
    k = key or message
    now = time.monotonic()
    with _lock:
        last = _last.get(k)
        if last is not None and now - last[0] < RATE_LIMIT_SECONDS:
            _last[k] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        _last[k] = (now, 0)
    rec: dict[str, Any] = {
        record.TIME: record.format_time(time.time()),
        record.LEVEL: level,
        record.MESSAGE: message,
        record.SERVICE: "logpipe",
        record.PID: os.getpid(),
        record.OWN_MARK_KEY: record.OWN_MARK_VALUE,
    }
    if suppressed:
        rec["suppressed"] = suppressed
    for name, value in fields.items():
        rec.setdefault(name, value)
    try:
        out = _stream if _stream is not None else sys.stderr.buffer
        out.write(_render(rec, out))
        out.flush()
    except Exception:  # noqa: BLE001, S110 - a diagnostic must never take the process down
        pass


def _render(rec: dict[str, Any], out: IO[bytes]) -> bytes:
    """A JSON line; on a terminal, one human line (``12:01:03 warning splunk: …``)."""
    try:
        tty = os.isatty(out.fileno())
    except (OSError, ValueError, AttributeError):
        tty = False
    if not tty:
        return orjson.dumps(rec, default=repr) + b"\n"
    from logpipe._console import visible

    extra = " ".join(f"{k}={orjson.dumps(v, default=repr).decode()}" for k, v in rec.items()
                     if k not in _HEAD and not isinstance(v, dict))
    line = f"{str(rec[record.TIME])[11:19]} {rec[record.LEVEL]} {visible(rec[record.MESSAGE])}"
    return (line + (f" ({extra})" if extra else "") + "\n").encode("utf-8", "replace")


_HEAD = frozenset((record.TIME, record.LEVEL, record.MESSAGE, record.SERVICE, record.PID,
                   record.OWN_MARK_KEY))


def info(message: str, **fields: Any) -> None:
    """``emit("info", ...)``."""
    emit("info", message, **fields)


def warning(message: str, **fields: Any) -> None:
    """``emit("warning", ...)``."""
    emit("warning", message, **fields)


def error(message: str, **fields: Any) -> None:
    """``emit("error", ...)``."""
    emit("error", message, **fields)


def reset() -> None:
    """Forget rate-limit state (tests)."""
    with _lock:
        _last.clear()
