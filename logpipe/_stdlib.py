"""The standard ``logging`` bridge: its records as logpipe records, whoever configured logging first.

SPEC §2: records of ``logging`` (httpx, uvicorn, …) come out in logpipe's format with the same
bindings. Applications and libraries configure ``logging`` too — ``basicConfig()``,
``dictConfig()``, a server's own handlers — before or after ``import logpipe``. The rule, so that
a process never writes two formats on two streams without saying so:

* **Console handlers are taken over.** A ``StreamHandler`` writing to stdout or stderr, on the
  root or on any named logger, is removed (kept aside, and given back on ``stdlib=False``);
  a logger that does not propagate gets logpipe's handler in its place, so its records still
  come out — once, as logpipe records.
* **Other handlers are kept** (files, syslog, sockets, queues, custom classes: the application
  clearly wants them); they go on receiving records in their own format, and one diagnostic on
  stderr names them and says how to change it.
* **After the fact too**: ``logging.Logger.addHandler`` (how every configuration and library
  installs a handler), ``logging.basicConfig``, ``logging.config.dictConfig`` and ``fileConfig``
  (which may also *remove* the bridge) are wrapped, so what they install is adopted by the same
  rule as soon as they return (``logging.config`` is wrapped when the application imports it).
* **Opt-out**: ``configure(stdlib=False)`` or ``LOGPIPE_STDLIB=0`` leaves ``logging`` alone
  (console handlers given back, wrappers removed) and says so once.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from logpipe import _import_hook, diagnostics
from logpipe._processors import TimeStamper, level_name
from logpipe.record import TIME

#: ``(level, message, fields)`` → one logpipe line; set by ``bindings``.
Emit = Callable[[str, Any, dict[str, Any]], None]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

#: ``extra`` keys that only repeat the message for a terminal (uvicorn's ANSI-coloured copy)
_DROPPED_EXTRA = frozenset(("color_message",))

#: loggers whose %-arguments are known fields: they become fields of the record too, so that
#: e.g. uvicorn's own access line (without ``AccessLog``) is still searchable by status
_ARG_FIELDS: dict[str, tuple[str, ...]] = {
    "uvicorn.access": ("client", "method", "path", "http_version", "status"),
}

_stamper = TimeStamper()


class Handler(logging.Handler):
    """Renders ``logging`` records through logpipe's logger: bindings, context, redaction."""

    logpipe_bridge = True

    def __init__(self, emit: Emit, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        level = level_name(record.levelno)
        try:
            try:
                msg: Any = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad %-format in a library call
                msg = f"{record.msg!r} % {record.args!r}"
            kw: dict[str, Any] = {TIME: _stamper.format(record.created), "logger": record.name}
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRS and not key.startswith("_") and key not in _DROPPED_EXTRA:
                    kw[key] = value
            names = _ARG_FIELDS.get(record.name)
            if names is not None and isinstance(record.args, tuple) and len(record.args) == len(names):
                kw.update(zip(names, record.args, strict=True))
            if record.exc_info and record.exc_info[0] is not None:
                kw["exc_info"] = record.exc_info
            elif record.exc_text:
                kw["exception"] = record.exc_text
            if record.stack_info:
                kw["stack"] = record.stack_info
        except Exception:  # noqa: BLE001 - logging.Handler.handleError would print to stderr
            msg, kw = getattr(record, "msg", ""), {}
        self._emit(level, msg, kw)


#: logging's own module lock (an RLock), not one of ours: dictConfig holds it while it adds
#: handlers (which calls back into ``adopt``), so a second lock would invite a lock-order deadlock
_lock: Any = getattr(logging, "_lock", None) or threading.RLock()
_handler: Handler | None = None
#: console handlers taken over: (logger, handler), given back by ``disable``
_taken: list[tuple[logging.Logger, logging.Handler]] = []
#: handlers already named in a diagnostic (each is reported once)
_reported: set[int] = set()
_opted_out_said = False
_adopting = False


def enable(level: int, emit: Emit) -> None:
    """Install (or keep) the bridge at ``level``, adopt what is configured, wrap the config calls."""
    global _handler
    with _lock:
        if _handler is not None and _handler.level == level:
            return  # bind() and the like: nothing changed here
        first = _handler is None
        if _handler is None:
            _handler = Handler(emit)
            _wrap(logging.Logger, "addHandler")
            _wrap(logging, "basicConfig")
            _import_hook.when_imported("logging.config", _wrap_config)
        _handler.setLevel(level)
        # the root's default WARNING would hide library INFO records the user asked for
        logging.getLogger().setLevel(level)
        if first:
            adopt()


def disable(explicit: bool) -> None:
    """Remove the bridge, give back the console handlers it took, unwrap the config calls."""
    global _handler, _opted_out_said
    with _lock:
        handler, _handler = _handler, None
        if handler is not None:
            for lg in _loggers():
                if handler in lg.handlers:
                    lg.removeHandler(handler)
            for lg, h in _taken:
                if h not in lg.handlers:
                    lg.addHandler(h)
            _taken.clear()
            _unwrap(logging.Logger, "addHandler")
            _unwrap(logging, "basicConfig")
            config = sys.modules.get("logging.config")
            if config is not None:
                for name in ("dictConfig", "fileConfig"):
                    _unwrap(config, name)
        if explicit and not _opted_out_said:
            _opted_out_said = True
            diagnostics.emit(
                "info",
                "logpipe: the standard logging module is left alone (configure(stdlib=False) or "
                "LOGPIPE_STDLIB=0): its records keep their own handlers and format, not logpipe's; "
                "drop the opt-out to have them as logpipe records",
                key="logpipe.stdlib.off",
            )


def installed() -> bool:
    """True while the bridge's handler is in place."""
    return _handler is not None


def adopt() -> None:
    """Apply the rule (module docstring) to every logger as configured right now."""
    global _adopting
    with _lock:
        handler = _handler
        if handler is None or _adopting:
            return  # our own addHandler calls below come back here
        _adopting = True
        try:
            _adopt(handler)
        finally:
            _adopting = False


def _adopt(handler: Handler) -> None:
    """One pass of the rule over every logger (``adopt`` holds the lock)."""
    root = logging.getLogger()
    kept: list[str] = []
    for lg in _loggers():
        for h in list(lg.handlers):
            if h is handler or getattr(h, "logpipe_bridge", False):
                continue
            if _is_console(h):
                lg.removeHandler(h)
                _taken.append((lg, h))
            elif not isinstance(h, logging.NullHandler) and id(h) not in _reported:
                _reported.add(id(h))
                kept.append(f"{lg.name if lg is not root else 'root'}: {_describe(h)}")
    if handler not in root.handlers:
        root.addHandler(handler)
    # a logger whose console handler was taken prints through ours only while it does not
    # propagate (dictConfig sets ``propagate`` after adding handlers, so this is re-checked)
    for lg, _h in _taken:
        if lg is not root:
            if lg.propagate and handler in lg.handlers:
                lg.removeHandler(handler)
            elif not lg.propagate and handler not in lg.handlers:
                lg.addHandler(handler)
    if kept:
        diagnostics.emit(
            "warning",
            "logpipe: standard logging records also go to handlers the application configured, "
            f"in their own format ({'; '.join(kept)}); remove them to have only logpipe records, "
            "or configure(stdlib=False) to leave logging to them",
            key=f"logpipe.stdlib.kept.{len(_reported)}",
        )


def _loggers() -> list[logging.Logger]:
    root = logging.getLogger()
    others = [lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    return [root, *others]


def _is_console(h: logging.Handler) -> bool:
    """A handler that prints to this process's stdout/stderr (not a file, not a socket)."""
    if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
        return False
    stream = getattr(h, "stream", None)
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return stream is not None and any(stream is c for c in consoles if c is not None)


def _describe(h: logging.Handler) -> str:
    target = getattr(h, "baseFilename", None) or getattr(h, "address", None)
    return f"{type(h).__name__}({target})" if target else type(h).__name__


# --- wrapping the configuration calls ----------------------------------------------------------
def _wrap_config(module: ModuleType) -> None:
    with _lock:
        if _handler is not None:
            _wrap(module, "dictConfig")
            _wrap(module, "fileConfig")


def _wrap(module: Any, name: str) -> None:
    original = getattr(module, name, None)
    if original is None or getattr(original, "_logpipe_original", None) is not None:
        return

    def configured(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        finally:
            adopt()

    configured._logpipe_original = original  # type: ignore[attr-defined]
    configured.__wrapped__ = original  # type: ignore[attr-defined]
    configured.__name__ = name
    configured.__doc__ = original.__doc__
    setattr(module, name, configured)


def _unwrap(module: Any, name: str) -> None:
    original = getattr(getattr(module, name, None), "_logpipe_original", None)
    if original is not None:
        setattr(module, name, original)
