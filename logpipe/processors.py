"""structlog processors that make an application's own structlog chain write logpipe's record.

For applications that configure structlog themselves (logpipe then leaves that configuration
alone). Put :data:`CHAIN` before your renderer::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        *logpipe.processors.CHAIN,            # filter, time, level, message, bindings, exception, redact
        structlog.processors.JSONRenderer(),  # yours: the event dict is now logpipe's record
    ])

or end the chain with :func:`write` to have logpipe render and write the line (one ``os.write``
on stdout, or wherever ``logpipe.configure(stream=...)`` points), exactly as ``logpipe.logger``
does. Each processor reads logpipe's settings when it runs, so later ``logpipe.bind`` /
``configure`` calls apply. Fields keep the logger's precedence: process-wide bindings, then
``logpipe.context()`` and structlog's contextvars, then the event's own keys.
"""

from __future__ import annotations

from typing import Any

import structlog

from logpipe import _emit, bindings  # noqa: F401 - bindings: the logger is loaded first
from logpipe._processors import (
    LEVEL_ALIASES,
    LEVEL_NUMBERS,
    EventDict,
    JSONRenderer,
    TimeStamper,
    event_to_message,
    format_exception,
)
from logpipe.record import LEVEL, MESSAGE, TIME

__all__ = [
    "CHAIN",
    "add_bindings",
    "add_level",
    "add_time",
    "event_to_message",
    "filter_by_level",
    "format_exception",
    "redact",
    "write",
]

#: method names that are not level names → the SPEC level they log at
_METHOD_LEVELS = {**LEVEL_ALIASES, "exception": "error", "msg": "info", "log": "info"}


def filter_by_level(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Drop the event (``structlog.DropEvent``) below logpipe's configured level."""
    level = _level(method_name)
    if LEVEL_NUMBERS[level] < LEVEL_NUMBERS[_emit.state.level]:
        raise structlog.DropEvent
    return event_dict


def add_level(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Set ``level`` to the SPEC name of the method called (``warn`` → ``warning``, ``exception``
    → ``error``); a ``level`` the event carries is replaced, as ``logpipe.logger`` does."""
    event_dict[LEVEL] = _level(method_name)
    return event_dict


#: Set ``time`` (RFC 3339 UTC, microseconds, ``Z``) unless the event carries one.
add_time = TimeStamper()


def add_bindings(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Add the process-wide bindings, ``logpipe.context()`` and structlog's contextvars under the
    event's own keys (the event's keys win)."""
    merged: dict[str, Any] = dict(_emit.state.bound)
    cv = _emit.ctxvar.get()
    if cv is not None:
        merged.update(cv.values)
    if _emit.sl_vars:
        merged.update(_emit.structlog_context())
    if not merged:
        return event_dict
    # rebuilt so the record reads like logpipe's: time, level, message first, then bindings
    out: dict[str, Any] = {k: event_dict[k] for k in (TIME, LEVEL, MESSAGE) if k in event_dict}
    out.update(merged)
    out.update(event_dict)
    return out


def redact(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace secret values with ``"[REDACTED]"`` by logpipe's current list (``configure(redact=)``)."""
    return _emit.state.redactor(logger, method_name, event_dict)


_render = JSONRenderer()


def write(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Last in a chain: render the record as logpipe does and write it with logpipe's writer (one
    ``os.write``), then end the chain (``structlog.DropEvent``) — the wrapped logger writes nothing."""
    _emit.state.writer.write(_render(logger, method_name, event_dict))
    raise structlog.DropEvent


#: Everything between structlog's bound context and a renderer, in order.
CHAIN = (filter_by_level, add_time, add_level, event_to_message, add_bindings, format_exception, redact)


def _level(method_name: str) -> str:
    name = _METHOD_LEVELS.get(method_name, method_name)
    return name if name in LEVEL_NUMBERS else "info"
