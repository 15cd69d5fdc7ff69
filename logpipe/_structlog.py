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
* ``structlog.get_logger`` (and ``getLogger``) is wrapped while the bridge owns the configuration:
  without initial values it returns one shared lazy proxy per positional arguments, so the
  per-call form ``structlog.get_logger().info(...)`` costs a dict lookup instead of building and
  resolving a new proxy every call (bench/logger.py: from 2.6-3.1 to 1.1-1.3 times the cost of
  ``logpipe.logger.info``). A shared proxy resolves to the same logger a fresh one would
  (settings live on the class and the state, see above); when the bridge stops owning the
  configuration (the application's ``structlog.configure``, ``reset_defaults``), the wrapper
  steps aside, is removed, and the proxies it handed out forget their cached logger, so they
  follow the application's configuration from their next call.

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

    _forget_proxies()
    if structlog.is_configured():
        _say_if_foreign()
    else:
        processors: list[Any] = []  # logpipe's level methods render and write the line themselves
        structlog.configure(
            processors=processors,
            wrapper_class=bindings.StructlogBoundLogger,
            context_class=dict,
            logger_factory=_no_logger,
            cache_logger_on_first_use=True,
        )
        _wrap_get_logger(structlog, processors)
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

        _unwrap_get_logger(structlog)
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


# --- the per-call form: structlog.get_logger().info(...) --------------------------------------
#: shared proxies handed out by the wrapped ``get_logger``, by its positional arguments
_proxies: dict[tuple[Any, ...], Any] = {}
#: bound on ``_proxies`` (``get_logger(f"req-{n}")`` must not grow it forever)
PROXIES_MAX = 1024


def _wrap_get_logger(structlog: Any, processors: list[Any]) -> None:
    """Make ``structlog.get_logger()`` return a shared proxy (with initial values: a new one, as
    structlog does) while the bridge owns structlog's configuration — recognised by identity:
    logpipe's wrapper class and the very processor list the bridge configured (``capture_logs``
    fills that list in place, which changes neither)."""
    original = getattr(structlog.get_logger, "_logpipe_original", structlog.get_logger)
    private = getattr(structlog, "_config", None)  # structlog's private module: checked, not trusted
    config: Any = getattr(private, "_CONFIG", None)
    base = getattr(private, "BoundLoggerLazyProxy", None)
    if base is None or getattr(config, "default_processors", None) is not processors:
        return  # not the structlog this was written against: the plain (slower) path is correct
    from logpipe.bindings import StructlogBoundLogger

    proxy_class = _proxy_class(base)

    def get_logger(*args: Any, **initial_values: Any) -> Any:
        if config.default_wrapper_class is not StructlogBoundLogger or (
            config.default_processors is not processors
        ):
            # no longer the bridge's configuration (reset_defaults, or a configure this wrapper
            # did not see): structlog's own function, and stop wrapping
            _unwrap_get_logger(structlog)
            return original(*args, **initial_values)
        if initial_values:  # values differ per call: a new proxy, still without the detour
            return proxy_class(None, logger_factory_args=args, initial_values=initial_values)
        try:
            return _proxies[args]
        except KeyError:
            proxy = proxy_class(None, logger_factory_args=args)  # what original(*args) builds
            if len(_proxies) < PROXIES_MAX:
                _proxies[args] = proxy
            return proxy
        except TypeError:  # unhashable factory arguments
            return original(*args)

    get_logger._logpipe_original = original  # type: ignore[attr-defined]
    get_logger.__wrapped__ = original  # type: ignore[attr-defined]
    get_logger.__doc__ = original.__doc__
    get_logger.__name__ = original.__name__
    structlog.get_logger = structlog.getLogger = get_logger


#: the logger methods a shared proxy looks up without structlog's ``__getattr__`` detour
PROXIED = ("debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg",
           "log", "adebug", "ainfo", "awarning", "aerror", "aexception", "acritical")


def _proxy_class(base: type) -> type:
    """structlog's lazy proxy, with the level methods as properties: ``proxy.info`` finds the
    (cached) logger's method directly instead of failing the normal lookup first and landing
    in ``__getattr__`` (2.8 → 2.1 µs a call). The property asks ``self.bind()`` every time, so
    a proxy that forgot its cached logger resolves again, like structlog's own."""

    def method(name: str) -> property:
        return property(lambda self: getattr(self.bind(), name), doc=f"The logger's ``{name}``.")

    def __reduce__(self: Any) -> tuple[Any, ...]:
        # pickles (and copies) as structlog's own proxy, without the cached logger (a closure)
        return base, (None,), {k: v for k, v in vars(self).items() if k != "bind"}

    return type("BoundLoggerLazyProxy", (base,), {
        "__module__": __name__, "__reduce__": __reduce__, **{n: method(n) for n in PROXIED}})


def _unwrap_get_logger(structlog: Any) -> None:
    """Give structlog its own ``get_logger`` back; the proxies handed out re-resolve."""
    original = getattr(structlog.get_logger, "_logpipe_original", None)
    if original is not None:
        structlog.get_logger = structlog.getLogger = original
    _forget_proxies()


def _forget_proxies() -> None:
    """Drop the shared proxies; each one handed out forgets its cached logger (structlog caches it
    as an instance attribute ``bind``), so its next call resolves against the configuration then."""
    proxies = list(_proxies.values())
    _proxies.clear()
    for proxy in proxies:
        vars(proxy).pop("bind", None)


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
