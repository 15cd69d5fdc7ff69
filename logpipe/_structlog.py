"""The structlog bridge: ``structlog.get_logger()`` anywhere in the process is logpipe's logger.

When it installs (the choice, documented in the README): as soon as both logpipe and structlog
are imported, in either order. ``import logpipe`` stays light — it imports neither structlog nor
the logger; :func:`arm` only watches for structlog (``logpipe._import_hook``). When the
application imports structlog (or already had), logpipe's logger loads and, unless structlog is
already configured, becomes structlog's configuration:

* ``wrapper_class`` is :class:`logpipe.bindings.StructlogBoundLogger`, so
  ``structlog.get_logger()`` returns (a subclass of) the class ``logpipe.logger`` is — same
  fast path, same record, same process-wide bindings, level, redaction; ``.bind()`` copies
  from either side are interchangeable, and values bound with
  ``structlog.contextvars.bind_contextvars`` are merged into both. (While structlog's processor
  list is filled in place, as ``structlog.testing.capture_logs`` does, structlog processes.)
* ``cache_logger_on_first_use`` is on: safe, because logpipe's settings live on the class and in
  one swappable state, never in the cached logger.

If the application configured structlog itself (``structlog.is_configured()``, or a
``structlog.configure`` call after logpipe loaded — that function is wrapped to notice), its
configuration is kept and one diagnostic on stderr names the processors that make its chain
write logpipe's record (:mod:`logpipe.processors`) — unless its chain already uses them.

The ``logpipe`` command never installs it: the collector's stdout is the record stream.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from logpipe import _import_hook


def arm() -> None:
    """Called by ``import logpipe``: install the bridge once structlog is imported (maybe now)."""
    _import_hook.when_imported("structlog", _structlog_imported)


def _structlog_imported(module: ModuleType) -> None:
    if "logpipe.cli" in sys.modules:
        return  # the logpipe command itself: not a service, its stdout is the record stream
    import logpipe.bindings  # noqa: F401 - loading the logger calls install()


def install() -> None:
    """Make structlog's default configuration logpipe's logger, unless the application has one."""
    import structlog

    from logpipe import bindings

    if structlog.is_configured():
        _say_if_foreign()
    else:
        structlog.configure(
            processors=[],  # logpipe's level methods render and write the line themselves
            wrapper_class=bindings.StructlogBoundLogger,
            context_class=dict,
            logger_factory=_no_logger,
            cache_logger_on_first_use=True,
        )
    _watch_configure(structlog)


def _say_if_foreign() -> None:
    """One diagnostic when the application's structlog configuration does not use logpipe."""
    import structlog

    from logpipe import diagnostics

    global _said
    if _said or _uses_logpipe(structlog.get_config()):
        return
    _said = True
    diagnostics.emit(
        "info",
        "logpipe: structlog is configured by the application, so logpipe left its "
        "configuration alone; to write logpipe records through it, put "
        "*logpipe.processors.CHAIN before its renderer (or end the chain with "
        "logpipe.processors.write) — see the README, 'Logging from a service'",
        key="logpipe.structlog.configured",
    )


_said = False


def _watch_configure(structlog: Any) -> None:
    """An application that calls ``structlog.configure`` after logpipe loaded replaces the
    bridge — its right — and is told once, as when it had configured structlog first."""
    original = structlog.configure
    if getattr(original, "_logpipe_original", None) is not None:
        return

    def configure(*args: Any, **kwargs: Any) -> None:

        if _is_ours(structlog.get_config().get("wrapper_class")):
            # the bridge's settings go first: the application's call applies to structlog's
            # defaults, as if logpipe had never configured it (not on top of logpipe's wrapper,
            # which would ignore the processors it gives)
            structlog.reset_defaults()
        original(*args, **kwargs)
        _say_if_foreign()

    configure._logpipe_original = original  # type: ignore[attr-defined]
    configure.__wrapped__ = original  # type: ignore[attr-defined]
    configure.__doc__ = original.__doc__
    structlog.configure = configure


def _no_logger(*args: Any) -> None:
    """structlog's logger factory: logpipe writes the line itself, nothing to wrap."""
    return None


def _is_ours(wrapper_class: Any) -> bool:
    from logpipe import bindings

    return isinstance(wrapper_class, type) and issubclass(wrapper_class, bindings.BoundLogger)


def _uses_logpipe(config: dict[str, Any]) -> bool:
    """True when the application's structlog configuration already writes logpipe records."""

    if _is_ours(config.get("wrapper_class")):
        return True
    for proc in config.get("processors", ()):
        module = getattr(proc, "__module__", None) or type(proc).__module__
        if str(module).startswith("logpipe"):
            return True
    return False
