"""The logger's emit paths: the swappable state, the fused fast path and the processor chain.

:mod:`logpipe.bindings` (the public face) builds a :class:`State` and swaps it in as
:data:`state`; the level methods made by :func:`make_method` read it on every call, so a
``bind``/``configure`` reaches every logger at once. See the ``bindings`` docstring for the
design (pino's pre-rendered "chindings", structlog's filtering methods).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
import structlog.contextvars

from logpipe._output import Writer
from logpipe._processors import (
    OPTIONS,
    REDACTED,
    ConsoleRenderer,
    JSONRenderer,
    Redactor,
    TimeStamper,
    default,
    dumps,
    format_exception,
)
from logpipe.record import LEVEL, MESSAGE, TIME

#: Keys the logger itself sets on every line; a call's own field of that name never splices.
RESERVED = frozenset((TIME, LEVEL, MESSAGE, "exc_info"))
#: Bound on the per-state set of call keys known to need no work (see ``State.safe``).
SAFE_MAX = 2048


# --- state ------------------------------------------------------------------------------------
class State:
    """Everything a call needs, swapped as one object by ``bind``/``unbind``/``configure``."""

    __slots__ = (
        "bound",
        "chain",
        "colors",
        "fmt",
        "fmt_setting",
        "frag",
        "level",
        "redactor",
        "safe",
        "stdlib",
        "writer",
    )

    def __init__(
        self,
        bound: dict[str, Any],
        level: str,
        fmt: str,
        redactor: Redactor,
        writer: Writer,
        stdlib: bool,
    ) -> None:
        self.bound = bound
        self.level = level
        self.redactor = redactor
        self.writer = writer
        self.stdlib = stdlib
        self.fmt_setting = fmt  # as configured: "auto" stays "auto" for the next stream
        self.fmt = "console" if fmt == "console" or (fmt == "auto" and writer.isatty()) else "json"
        self.colors = self.fmt == "console" and writer.isatty() and "NO_COLOR" not in os.environ
        rendered = dumps(redactor.redact(bound))
        #: ``,"service":"api",...`` — the bindings as bytes, spliced into every line
        self.frag = b"," + rendered[1:-1] if len(rendered) > 2 else b""
        #: call keys known to be plain (not secret, not reserved, not bound): the fast path's
        #: whole test is ``safe.issuperset(kw)``, one C-level set operation
        self.safe: set[str] = set()
        renderer = ConsoleRenderer(self.colors) if self.fmt == "console" else JSONRenderer()
        self.chain: tuple[Callable[[Any, str, dict[str, Any]], Any], ...] = (
            format_exception,
            redactor,
            renderer,
        )

    def learn(self, kw: Mapping[Any, Any]) -> None:
        """Remember the call's plain keys so the next call with them takes the fast path."""
        if len(self.safe) >= SAFE_MAX:
            return
        for k in kw:
            if (
                type(k) is str
                and k not in RESERVED
                and k not in self.bound
                and not self.redactor.is_secret(k)
            ):
                self.safe.add(k)


class Ctx:
    """One ``context()`` level: the merged values, their keys, and their pre-rendered fragment."""

    __slots__ = ("fast_for", "frag", "keys", "values")

    def __init__(self, values: dict[str, Any], st: State) -> None:
        self.values = values
        self.keys = frozenset(values)
        rendered = dumps(st.redactor.redact(values))
        self.frag = b"," + rendered[1:-1] if len(rendered) > 2 else b""
        #: the state this fragment was checked against (no clash with its bindings/reserved keys)
        self.fast_for: State | None = None
        self.check(st)

    def check(self, st: State) -> None:
        ok = self.keys.isdisjoint(st.bound) and self.keys.isdisjoint(RESERVED)
        self.fast_for = st if ok else None


ctxvar: ContextVar[Ctx | None] = ContextVar("logpipe_context", default=None)
stamper = TimeStamper()
now = stamper.now
_time_ns = time.time_ns


class _Clock:
    """The fast path's clock: ``{"time":"YYYY-MM-DDTHH:MM:SS.`` as bytes, rendered once a second."""

    __slots__ = ("head", "sec")

    def __init__(self, sec: int) -> None:
        self.sec = sec
        self.head = b'{"time":"' + stamper.format(float(sec))[:20].encode()


_clock = _Clock(0)


def _tick(sec: int) -> _Clock:
    """A new second: swap in a new clock object (atomic for other threads)."""
    global _clock
    _clock = _Clock(sec)
    return _clock



# --- the emit paths ---------------------------------------------------------------------------
#: structlog's registry of its context variables (``"structlog_<key>"`` → ContextVar): empty until
#: the application first calls ``structlog.contextvars.bind_contextvars``, so the common call pays
#: one truth test for merging them. (Private to structlog; tests/e2e/test_python_bridges.py would
#: catch a rename.)
sl_vars: dict[str, ContextVar[Any]] = getattr(structlog.contextvars, "_CONTEXT_VARS", {})
_SL_PREFIX = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)


def structlog_context() -> dict[str, Any]:
    """The values bound with ``structlog.contextvars.bind_contextvars`` in this task/thread."""
    out: dict[str, Any] = {}
    for name, var in tuple(sl_vars.items()):
        value = var.get(Ellipsis)
        if value is not Ellipsis:  # structlog's mark for "unbound"
            out[name[_SL_PREFIX:]] = value
    return out


def interpolate(event: Any, args: tuple[Any, ...]) -> Any:
    """``logger.info("user %s", name)`` as the stdlib does it; a mismatch keeps both, never raises."""
    try:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            return event % args[0]
        return event % args
    except Exception:  # noqa: BLE001
        try:
            return f"{event} {args!r}"
        except Exception:  # noqa: BLE001
            return str(event)


def slow(st: State, level: str, event: Any, kw: dict[str, Any]) -> None:
    """The processor chain: build the full event dict, redact, format the exception, render."""
    if event is None:
        event = kw.pop(MESSAGE, None)
    else:
        kw.pop(MESSAGE, None)
    stamp = kw.pop(TIME, None)  # a call (or a stdlib record) may carry its own time
    ev: dict[str, Any] = {TIME: now() if stamp is None else stamp, LEVEL: level}
    if event is not None:
        ev[MESSAGE] = event
    ev.update(st.bound)
    cv = ctxvar.get()
    if cv is not None:
        ev.update(cv.values)
        if cv.fast_for is not st:
            cv.check(st)
    kw.pop(LEVEL, None)  # the method's level is authoritative: filtering downstream relies on it
    ev.update(kw)
    st.learn(kw)
    out: Any = ev
    for proc in st.chain:
        out = proc(None, level, out)
    st.writer.write(out)


def last_resort(level: str, event: Any, kw: Mapping[str, Any]) -> None:
    """Something above raised (a hostile ``__eq__``/``__hash__``, a broken mapping …): still write
    one line, with every field as its repr, rather than raise into the application."""
    try:
        ev: dict[str, Any] = {TIME: now(), LEVEL: level, MESSAGE: default(event)}
        ev.update(state.bound)
        for k, v in list(kw.items()):
            key = k if isinstance(k, str) else default(k)
            ev[key] = REDACTED if state.redactor.is_secret(key) else default(v)
        state.writer.write(dumps(ev) + b"\n")
    except Exception:  # noqa: BLE001, S110 - nothing more can be done; logging must not raise
        pass


def emit_record(level: str, message: Any, kw: dict[str, Any]) -> None:
    """A standard ``logging`` record (see _stdlib.Handler) → one line, like a call at ``level``."""
    try:
        if sl_vars:
            kw = {**structlog_context(), **kw}
        slow(state, level, message, kw)
    except Exception:  # noqa: BLE001 - SPEC §2: a logging call never raises
        last_resort(level, message, kw)


def nop(self: Any, event: Any = None, /, *args: Any, **kw: Any) -> None:
    """A disabled level: nothing to do (structlog's ``nop``)."""
    return None


def make_method(level: str, fast: bool, chain_aware: bool = False) -> Callable[..., None]:
    """The ``info``/``error``/… method for an enabled level.

    ``chain_aware`` (loggers made by ``structlog.get_logger()``): while structlog's configured
    processor list is not empty — the bridge configures it empty; ``structlog.testing.
    capture_logs`` fills it in place — structlog's own processing runs instead, so an
    application's tests that capture structlog events keep working.

    Long on purpose (over the ~60-line rule, #10): this is the logger's hot path (bench/
    logger.py). ``meth`` is one closure over locals so a logging call makes no further Python
    call on the fast path — every helper call costs a frame per log line — and the two
    variants (fast / not) are written out rather than branched per call.
    """
    # the whole line as one bytes %-format: one C call instead of a join of many pieces
    lvl = b'%b%06dZ","level":"' + level.encode() + b'","message":%b%b%b%b'

    if fast:

        def meth(self: Any, event: Any = None, /, *args: Any, **kw: Any) -> None:
            if chain_aware and self._processors:
                via_structlog(self, level, event, args, kw)
                return None
            try:
                if args:
                    event = interpolate(event, args)
                if self._context:
                    kw = {**self._context, **kw}
                if sl_vars:
                    sc = structlog_context()
                    if sc:
                        kw = {**sc, **kw}
                st = state
                cv = ctxvar.get()
                if (
                    type(event) is str
                    and st.safe.issuperset(kw)
                    and (cv is None or (cv.fast_for is st and cv.keys.isdisjoint(kw)))
                ):
                    try:
                        body = orjson.dumps(kw, default=default, option=OPTIONS)
                        ns = _time_ns()
                        sec = ns // 1_000_000_000
                        clock = _clock
                        if sec != clock.sec:
                            clock = _tick(sec)
                        line = lvl % (
                            clock.head,
                            (ns // 1000) % 1_000_000,
                            orjson.dumps(event),
                            st.frag,
                            b"" if cv is None else cv.frag,
                            b"}\n" if len(body) == 2 else b"," + body[1:] + b"\n",
                        )
                    except Exception:  # noqa: BLE001 - surrogates, huge ints …: the chain copes
                        line = b""
                    # no nested object/array (whose keys would need redaction): the spliced line
                    # is the record; otherwise the chain redacts inside them
                    if line and body.find(b"{", 1) < 0 and body.find(b"[") < 0:
                        st.writer.write(line)
                        return None
                slow(st, level, event, kw)
            except Exception:  # noqa: BLE001 - SPEC §2: a logging call never raises
                last_resort(level, event, kw)
            return None

    else:

        def meth(self: Any, event: Any = None, /, *args: Any, **kw: Any) -> None:
            if chain_aware and self._processors:
                via_structlog(self, level, event, args, kw)
                return None
            try:
                if args:
                    event = interpolate(event, args)
                if self._context:
                    kw = {**self._context, **kw}
                if sl_vars:
                    kw = {**structlog_context(), **kw}
                slow(state, level, event, kw)
            except Exception:  # noqa: BLE001 - SPEC §2: a logging call never raises
                last_resort(level, event, kw)
            return None

    meth.__name__ = level
    meth.__qualname__ = f"BoundLogger.{level}"
    meth.__doc__ = f"Log ``event`` (and the keyword fields) at level ``{level}``."
    return meth



def disabled_unless_chain(level: str) -> Callable[..., None]:
    """A disabled level for loggers made by ``structlog.get_logger()``: nothing, unless
    structlog's processor list is filled (see :func:`make_method`)."""

    def meth(self: Any, event: Any = None, /, *args: Any, **kw: Any) -> None:
        if self._processors:
            via_structlog(self, level, event, args, kw)
        return None

    meth.__name__ = level
    return meth


def via_structlog(self: Any, level: str, event: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    """structlog's processing of one call (``BoundLoggerBase._process_event``); a line the chain
    renders is written like logpipe's own. Never raises."""
    try:
        if args:
            event = interpolate(event, args)
        out, _ = self._process_event(level, event, kw)
    except structlog.DropEvent:
        return
    except Exception:  # noqa: BLE001 - SPEC §2: a logging call never raises
        last_resort(level, event, kw)
        return
    line = out[0] if out else None
    if isinstance(line, str):
        line = line.encode("utf-8", "replace")
    if isinstance(line, bytes | bytearray):
        state.writer.write(bytes(line) if line.endswith(b"\n") else bytes(line) + b"\n")

#: The current state: set by ``bindings`` at import (before any call), read by every call.
state: State


def set_state(st: State) -> None:
    """Swap in ``st`` (one assignment: atomic for the threads reading it)."""
    global state
    state = st
