"""The service-side logger: ``logger``, process-wide ``bind``/``unbind``, ``context()``, ``configure()``.

SPEC §2. One JSON line per call on stdout, written with a single ``os.write`` under a lock, so each
line reaches the OS before the call returns (no block buffering, even on the pipe or socket PM2
gives a Python app) and lines from threads never interleave.

How it stays fast and still sees later changes (ARCHITECTURE "Ten examples" 2 and 3):

* Level methods live on the :class:`BoundLogger` *class* and are rebuilt by :func:`configure`:
  a disabled level is a plain ``return None`` (structlog's filtering-logger trick), and every
  logger — including ``logger.bind(...)`` copies cached in other modules — sees the change at
  once, because they all look the method up on the same class.
* Process-wide bindings are one merged dict plus its pre-rendered orjson fragment (pino's
  "chindings"), held by one immutable ``_emit.State`` that ``bind``/``configure`` swap
  atomically. A call serialises only its own fields and splices bytes.
* The common call (JSON format, string message, no secret/clashing/nested keys, no exception)
  takes that fused fast path (:mod:`logpipe._emit`); everything else runs the structlog
  processor chain from :mod:`logpipe._processors`. Both produce the same line
  (tests/unit/test_processors_renderers.py).
* ``structlog.get_logger()`` returns this same class (:mod:`logpipe._structlog`), and the
  standard ``logging`` module's records take the chain too (:mod:`logpipe._stdlib`); lines go
  out through :mod:`logpipe._output`.

A call never raises into the application: unserialisable values become their ``repr``, invalid
text is replaced, and a failed write (closed stdout, EPIPE) is dropped.

Field precedence, lowest first: process-wide bindings, ``context()``, values bound with
``structlog.contextvars.bind_contextvars``, ``logger.bind()``, the call's keywords. ``level``
is always the method's (filtering downstream relies on it); a call's ``time`` replaces the
timestamp; ``message`` is the positional message, or the ``message`` keyword when there is none.

Lines go straight to fd 1, past ``sys.stdout``'s buffer: mixed with ``print()`` output on a pipe,
the prints come later unless Python runs unbuffered (``-u``). Lines from several *processes*
sharing one pipe stay whole up to PIPE_BUF (4096 bytes on Linux), which POSIX makes atomic;
longer ones are whole only per process (use one file per process, or the collector's ``--run``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from contextvars import Token
from typing import IO, Any, ClassVar

import structlog

from logpipe import _emit, _stdlib, _structlog, identity
from logpipe._output import FdWriter, Writer, writer_for
from logpipe._processors import (
    DEFAULT_REDACT,
    LEVEL_ALIASES,
    LEVEL_NUMBERS,
    Redactor,
    level_name,
)
from logpipe.errors import UsageError
from logpipe.record import HOST, INSTANCE_ID, PID, PM_ID, SERVICE

__all__ = [
    "DEFAULT_REDACT",
    "ENV_FORMAT",
    "ENV_LEVEL",
    "ENV_STDLIB",
    "BoundLogger",
    "StructlogBoundLogger",
    "bind",
    "configure",
    "context",
    "logger",
    "unbind",
]

ENV_LEVEL = "LOGPIPE_LEVEL"
ENV_FORMAT = "LOGPIPE_FORMAT"
#: ``0``/``false``/``off``/``no``: leave the standard ``logging`` module alone (see _stdlib)
ENV_STDLIB = "LOGPIPE_STDLIB"
FORMATS = ("json", "console", "auto")


def _default_bindings() -> dict[str, Any]:
    """SPEC §2 defaults from the environment: LOGPIPE_*, then PM2's, then the program."""
    env = os.environ
    bound: dict[str, Any] = {
        SERVICE: identity.service_from_env(env),
        INSTANCE_ID: identity.instance_from_env(env),
        HOST: identity.hostname(),
        PID: os.getpid(),
    }
    if identity.under_pm2(env):
        pm_id = env.get("pm_id", "")
        bound[PM_ID] = int(pm_id) if pm_id.isdigit() else pm_id
    return bound


def _parse_level(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return level_name(value)
    if isinstance(value, str):
        name = value.strip().lower()
        name = LEVEL_ALIASES.get(name, name)
        if name in LEVEL_NUMBERS:
            return name
    raise UsageError(
        f"unknown log level {value!r}: use one of {', '.join(LEVEL_NUMBERS)}"
    )


def _parse_format(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in FORMATS:
        return value.strip().lower()
    raise UsageError(f"unknown log format {value!r}: use json, console or auto")


class BoundLogger(structlog.BoundLoggerBase):
    """logpipe's logger: structlog's ``bind``/``unbind``/``new`` plus level methods that
    :func:`configure` rebuilds on the class (disabled ones are ``return None``)."""

    _logger: Any
    _context: dict[str, Any]

    # Filled in by _install_methods(); declared for type checkers.
    debug: ClassVar[Callable[..., None]]
    info: ClassVar[Callable[..., None]]
    warning: ClassVar[Callable[..., None]]
    error: ClassVar[Callable[..., None]]
    critical: ClassVar[Callable[..., None]]
    warn: ClassVar[Callable[..., None]]
    fatal: ClassVar[Callable[..., None]]
    msg: ClassVar[Callable[..., None]]

    def exception(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """Log at ``error`` with the exception being handled as ``exception`` (its traceback)."""
        kw.setdefault("exc_info", True)
        self.error(event, *args, **kw)

    def log(self, level: int | str, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """Log at a level given as a stdlib number or a name."""
        try:
            name = _parse_level(level)
        except UsageError:
            name = "info"
        getattr(self, name)(event, *args, **kw)

    # structlog's FilteringBoundLogger has awaitable twins of the level methods; a line is one
    # write, so they simply call the synchronous method.
    async def adebug(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """``await log.adebug(...)``: same as ``debug``."""
        self.debug(event, *args, **kw)

    async def ainfo(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """``await log.ainfo(...)``: same as ``info``."""
        self.info(event, *args, **kw)

    async def awarning(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """``await log.awarning(...)``: same as ``warning``."""
        self.warning(event, *args, **kw)

    async def aerror(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """``await log.aerror(...)``: same as ``error``."""
        self.error(event, *args, **kw)

    async def acritical(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """``await log.acritical(...)``: same as ``critical``."""
        self.critical(event, *args, **kw)

    async def aexception(self, event: Any = None, /, *args: Any, **kw: Any) -> None:
        """``await log.aexception(...)``: same as ``exception``."""
        self.exception(event, *args, **kw)

    def is_enabled_for(self, level: int | str) -> bool:
        """True when a call at ``level`` would write a line."""
        return LEVEL_NUMBERS[_parse_level(level)] >= LEVEL_NUMBERS[_emit.state.level]

    def get_effective_level(self) -> int:
        """The current minimum level as a stdlib number (structlog's FilteringBoundLogger API)."""
        return LEVEL_NUMBERS[_emit.state.level]


class StructlogBoundLogger(BoundLogger):
    """What ``structlog.get_logger()`` returns under the bridge (:mod:`logpipe._structlog`):
    :class:`BoundLogger`, except that while structlog's processor list is filled in place
    (``structlog.testing.capture_logs``) its level methods run structlog's processing."""


def _install_methods(st: _emit.State) -> None:
    """Rebuild the level methods on the classes for ``st``'s level and format."""
    floor = LEVEL_NUMBERS[st.level]
    fast = st.fmt == "json"
    for name, number in LEVEL_NUMBERS.items():
        enabled = number >= floor
        setattr(BoundLogger, name, _emit.make_method(name, fast) if enabled else _emit.nop)
        setattr(StructlogBoundLogger, name, _emit.make_method(name, fast, chain_aware=True)
                if enabled else _emit.disabled_unless_chain(name))
    for cls in (BoundLogger, StructlogBoundLogger):
        cls.warn = cls.warning
        cls.fatal = cls.critical
        cls.msg = cls.info


# --- public API -------------------------------------------------------------------------------
_config_lock = threading.RLock()


def bind(**values: Any) -> None:
    """Bind ``values`` process-wide: every module's ``logger`` (and its bound copies) writes them
    on every line from now on."""
    with _config_lock:
        st = _emit.state
        _set_state(dict(st.bound, **values), st.level, st.fmt_setting, st.redactor, st.writer, st.stdlib)


def unbind(*keys: str) -> None:
    """Remove process-wide bindings; keys that are not bound are ignored."""
    with _config_lock:
        st = _emit.state
        bound = {k: v for k, v in st.bound.items() if k not in keys}
        _set_state(bound, st.level, st.fmt_setting, st.redactor, st.writer, st.stdlib)


class context(contextlib.ContextDecorator):
    """Bind ``values`` for the current thread / asyncio task until the block ends (contextvars).

    Nests: an inner block adds to (and may override) the outer one. Also a decorator. (A small
    class rather than ``@contextmanager``: it is entered once per request, so it is kept cheap.)
    """

    __slots__ = ("_tokens", "_values")

    def __init__(self, **values: Any) -> None:
        self._values = values
        self._tokens: list[Token[_emit.Ctx | None]] = []  # a stack: the same object may be re-entered

    def __enter__(self) -> None:
        parent = _emit.ctxvar.get()
        merged = {**parent.values, **self._values} if parent is not None else self._values
        self._tokens.append(_emit.ctxvar.set(_emit.Ctx(merged, _emit.state)))

    def __exit__(self, *exc: object) -> None:
        if self._tokens:
            _emit.ctxvar.reset(self._tokens.pop())

    def _recreate_cm(self) -> context:
        # as a decorator, each call (and each thread) gets its own token
        return context(**self._values)


def configure(
    *,
    level: str | int | None = None,
    format: str | None = None,
    redact: Iterable[str] | None = None,
    stream: IO[Any] | int | None = None,
    stdlib: bool | None = None,
) -> None:
    """Change the logger for the whole process; arguments left out keep their current value.

    - ``level``: ``debug`` … ``critical`` (or a stdlib number); default ``LOGPIPE_LEVEL``, else
      ``info``.
    - ``format``: ``json``; ``console`` (for people, coloured on a TTY unless ``NO_COLOR``);
      ``auto`` — console when the stream is a TTY, else JSON. Default ``LOGPIPE_FORMAT``, else
      ``auto``: under PM2, a collector or any pipe/file it is always JSON.
    - ``redact``: the key names whose values are written as ``"[REDACTED]"`` (replaces the
      default list; ``()`` turns redaction off).
    - ``stream``: a file object or descriptor to write to instead of stdout (fd 1).
    - ``stdlib``: route the standard ``logging`` module's records through this logger, taking
      over console handlers whoever installed them (see :mod:`logpipe._stdlib`); on by default
      (``LOGPIPE_STDLIB=0`` turns it off at start-up). ``False`` gives ``logging`` back.

    Raises :class:`logpipe.errors.UsageError` for an unknown level or format.
    """
    with _config_lock:
        st = _emit.state
        new_level = st.level if level is None else _parse_level(level)
        new_fmt = st.fmt_setting if format is None else _parse_format(format)
        redactor = st.redactor if redact is None else Redactor(_names(redact))
        writer = st.writer if stream is None else writer_for(stream)
        use_stdlib = st.stdlib if stdlib is None else bool(stdlib)
        _set_state(dict(st.bound), new_level, new_fmt, redactor, writer, use_stdlib)
        if stdlib is False:
            _stdlib.disable(explicit=True)  # says so once, even when it was never installed


def _names(redact: Iterable[str]) -> list[str]:
    if isinstance(redact, str):
        raise UsageError("redact must be a list of key names, not a string")
    names = list(redact)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise UsageError(f"redact key names must be strings, not {bad[0]!r}")
    return names


def _set_state(
    bound: dict[str, Any], level: str, fmt: str, redactor: Redactor, writer: Writer, stdlib: bool
) -> None:
    st = _emit.State(bound, level, fmt, redactor, writer, stdlib)
    _install_methods(st)
    _emit.set_state(st)
    if stdlib:
        _stdlib.enable(LEVEL_NUMBERS[level], _emit.emit_record)
    elif _stdlib.installed():
        _stdlib.disable(explicit=True)


# --- start-up ---------------------------------------------------------------------------------
def _initial_state() -> None:
    env = os.environ
    problems: list[str] = []
    level, fmt = "info", "auto"
    if env.get(ENV_LEVEL):
        try:
            level = _parse_level(env[ENV_LEVEL])
        except UsageError as exc:
            problems.append(f"{ENV_LEVEL}: {exc}; using info")
    if env.get(ENV_FORMAT):
        try:
            fmt = _parse_format(env[ENV_FORMAT])
        except UsageError as exc:
            problems.append(f"{ENV_FORMAT}: {exc}; using auto")
    # The standard logging module is bridged whoever configured it first (see _stdlib), unless
    # LOGPIPE_STDLIB says no.
    stdlib = env.get(ENV_STDLIB, "").strip().lower() not in ("0", "false", "off", "no")
    _set_state(_default_bindings(), level, fmt, Redactor(DEFAULT_REDACT), FdWriter(1), stdlib)
    if not stdlib:
        _stdlib.disable(explicit=True)
    for problem in problems:
        # a bad setting must not stop the service from starting; say so in its own log
        logger.warning(problem)


def _after_fork_in_child() -> None:
    """A forked child has its own pid and must not inherit a lock held by another thread."""
    global _config_lock
    _config_lock = threading.RLock()
    st = _emit.state
    st.writer.lock = threading.Lock()
    if st.bound.get(PID) is not None and st.bound.get(PID) != os.getpid():
        bound = dict(st.bound)
        bound[PID] = os.getpid()
        _set_state(bound, st.level, st.fmt_setting, st.redactor, st.writer, st.stdlib)


logger: BoundLogger = BoundLogger(None, (), {})
_initial_state()
os.register_at_fork(after_in_child=_after_fork_in_child)
_structlog.install()
