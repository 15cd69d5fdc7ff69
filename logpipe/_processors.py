"""Hot-path processors of the service-side logger: time, level, event→message, redaction, exception, render.

Each processor is a small callable configured once in ``__init__`` (structlog's pattern:
``TimeStamper`` + ``_make_stamper``, ``EventRenamer``, ``JSONRenderer``), with the signature
structlog gives processors — ``(logger, method_name, event_dict) -> event_dict`` — so the chain
in :mod:`logpipe.bindings` is an ordinary structlog chain. ``bindings`` also has a fused fast path
for the common call; it must produce exactly what this chain produces (tests/unit/test_processors_renderers.py
checks both against each other).

Nothing here raises on bad input: the renderers fall back to ``repr`` (structlog's
``JSONRenderer(default=repr)`` idea) and, when even that fails, to a sanitised copy.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from types import TracebackType
from typing import Any

import orjson

from logpipe._console import ConsoleFormatter
from logpipe.record import EXCEPTION, LEVEL, MESSAGE, TIME, TimeFormatter

EventDict = MutableMapping[str, Any]

# --- levels -----------------------------------------------------------------------------------
#: Level names (SPEC §1) → the stdlib's numbers, which structlog and ``logging`` share.
LEVEL_NUMBERS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
#: Spellings accepted by ``configure(level=...)`` / ``LOGPIPE_LEVEL`` besides the names above.
LEVEL_ALIASES: dict[str, str] = {"warn": "warning", "fatal": "critical", "trace": "debug"}


def level_name(number: int) -> str:
    """A stdlib level number → the nearest SPEC level at or below it (custom levels included)."""
    if number >= 50:
        return "critical"
    if number >= 40:
        return "error"
    if number >= 30:
        return "warning"
    if number >= 20:
        return "info"
    return "debug"


# --- time -------------------------------------------------------------------------------------
class TimeStamper(TimeFormatter):
    """Adds ``time`` as RFC 3339 UTC with microseconds and ``Z`` (SPEC §1).

    The formatting is :class:`logpipe.record.TimeFormatter` (the one RFC 3339 formatter; its
    ``format``/``now`` render the second's prefix once and reuse it).
    """

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """Processor: set ``time`` unless the event already carries one (stdlib records do)."""
        if TIME not in event_dict:
            event_dict[TIME] = self.now()
        return event_dict


# --- message ----------------------------------------------------------------------------------
def event_to_message(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: structlog's ``event`` becomes SPEC's ``message`` (like structlog's EventRenamer)."""
    if "event" in event_dict:
        event = event_dict.pop("event")
        if event is not None:
            event_dict[MESSAGE] = event
    return event_dict


# --- redaction --------------------------------------------------------------------------------
REDACTED = "[REDACTED]"

#: Keys redacted by default (SPEC §2). Matching is by :meth:`Redactor.is_secret`.
DEFAULT_REDACT: tuple[str, ...] = (
    # SPEC §2's list …
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "authorization",
    "cookie",
    # … and the spellings that commonly carry the same things
    "apikey",
    "private_key",
    "access_key",
)


class Redactor:
    """Replaces values of secret keys with ``"[REDACTED]"``, in nested dicts and lists too.

    A key is secret when, lower-cased with ``-`` and spaces read as ``_``, it equals a listed name
    or ends with ``_<name>``: ``Password``, ``db_password``, ``X-Api-Key``, ``access_token`` and
    ``Set-Cookie`` are secret; ``tokens_used`` and ``secretary`` are not. (Exact or suffix match
    rather than substring: pino's ``redact`` uses explicit paths, and substring matching would
    blank ordinary fields.) Decisions are memoised per key string.
    """

    __slots__ = ("_memo", "names")

    #: bound on the memo so a program that invents keys cannot grow it without limit
    MEMO_MAX = 4096

    def __init__(self, names: Iterable[str] = DEFAULT_REDACT) -> None:
        self.names: frozenset[str] = frozenset(_norm_key(n) for n in names if n)
        self._memo: dict[Any, bool] = {}

    def is_secret(self, key: Any) -> bool:
        """True when values under ``key`` must not be written."""
        hit = self._memo.get(key)
        if hit is None:
            if isinstance(key, str):
                k = _norm_key(key)
                hit = k in self.names or any(k.endswith("_" + n) for n in self.names)
            else:
                hit = False
            if len(self._memo) < self.MEMO_MAX:
                self._memo[key] = hit
        return hit

    def redact(self, value: Any, _depth: int = 0) -> Any:
        """A copy of ``value`` with secret values replaced; ``value`` itself when nothing was."""
        t = type(value)
        if t in _SCALARS or _depth > 64 or not self.names:  # deeper than any real payload
            return value
        if t is dict or (t not in _SEQUENCES and isinstance(value, Mapping)):
            out: dict[Any, Any] | None = None
            memo = self._memo
            for k, v in value.items():
                secret = memo.get(k)
                if secret is None:
                    secret = self.is_secret(k)
                nv = REDACTED if secret else self.redact(v, _depth + 1)
                if nv is not v and out is None:
                    out = dict(value)
                if out is not None:
                    out[k] = nv
            return value if out is None else out
        if t in _SEQUENCES or isinstance(value, list | tuple):
            items = [self.redact(v, _depth + 1) for v in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                return items
            return value
        return value

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """Processor: redact the event dict in place (top level) and copy-on-write below it."""
        if not self.names:
            return event_dict
        memo = self._memo
        for k, v in event_dict.items():  # replacing values while iterating is fine: no resize
            secret = memo.get(k)
            if secret is None:
                secret = self.is_secret(k)
            if secret:
                if k not in _OWN_KEYS:
                    event_dict[k] = REDACTED
            elif type(v) not in _SCALARS:
                event_dict[k] = self.redact(v)
        return event_dict


_SCALARS = frozenset((str, int, float, bool, type(None)))
_SEQUENCES = frozenset((list, tuple))
_OWN_KEYS = frozenset((TIME, LEVEL, MESSAGE))


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


# --- exceptions -------------------------------------------------------------------------------
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def exc_info_tuple(value: Any) -> ExcInfo | None:
    """``exc_info`` as the stdlib accepts it (``True``, an exception, a 3-tuple) → a tuple or None."""
    if value is None or value is False:
        return None
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3 and value[0] is not None:
        return value
    if value is True or value:
        info = sys.exc_info()
        return info if info[0] is not None else None
    return None


def format_exc(info: ExcInfo) -> str:
    """A traceback as the interpreter prints it, without the final newline. Never raises."""
    try:
        return "".join(traceback.format_exception(*info)).rstrip("\n")
    except Exception:  # noqa: BLE001 - a broken __str__ on an exception must not break logging
        return f"{info[0].__name__}: <unprintable exception>"


def format_exception(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: ``exc_info`` (``True``/exception/tuple) → ``exception`` = the formatted traceback."""
    if "exc_info" in event_dict:
        info = exc_info_tuple(event_dict.pop("exc_info"))
        if info is not None:
            event_dict[EXCEPTION] = format_exc(info)
    return event_dict


# --- JSON -------------------------------------------------------------------------------------
OPTIONS = orjson.OPT_NON_STR_KEYS


def default(obj: Any) -> Any:
    """orjson's fallback: bytes are decoded (invalid UTF-8 replaced), sets become lists, anything
    else is its ``repr`` — and an object whose ``repr`` raises still gets a placeholder."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, set | frozenset):
        return list(obj)
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001
        return f"<unrepresentable {type(obj).__name__}>"


def fix_str(s: str) -> str:
    """A str that orjson refuses (lone surrogates, e.g. from undecodable file names) → valid text,
    each bad character replaced by U+FFFD."""
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = s.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def sanitise(obj: Any, _depth: int = 0) -> Any:
    """A copy of ``obj`` that orjson can always serialise (used only after orjson refused)."""
    if _depth > 200:  # orjson's own recursion limit is 254
        return "<too deep>"
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return fix_str(obj)
        return obj
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, float):
        return obj
    if isinstance(obj, Mapping):
        try:
            items = list(obj.items())
        except Exception:  # noqa: BLE001
            return default(obj)
        return {_key(k): sanitise(v, _depth + 1) for k, v in items}
    if isinstance(obj, list | tuple | set | frozenset):
        return [sanitise(v, _depth + 1) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return default(obj)
    try:
        orjson.dumps(obj, default=default, option=OPTIONS)
        return obj
    except Exception:  # noqa: BLE001
        return sanitise(default(obj), _depth + 1)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return sanitise(k)  # type: ignore[no-any-return]
    return str(k) if isinstance(k, int | float | bool) or k is None else default(k)


def dumps(obj: Any) -> bytes:
    """``obj`` → compact JSON bytes. Never raises (repr fallback, then a sanitised copy)."""
    try:
        return orjson.dumps(obj, default=default, option=OPTIONS)
    except Exception:  # noqa: BLE001 - big ints, surrogates, cycles, too deep, hostile objects
        try:
            return orjson.dumps(sanitise(obj), default=default, option=OPTIONS)
        except Exception:  # noqa: BLE001
            return orjson.dumps(f"<unserialisable {type(obj).__name__}>")


class JSONRenderer:
    """Processor (last in the chain): the event dict → one NDJSON line (bytes, with ``\\n``)."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> bytes:
        """Render; never raises."""
        return dumps(event_dict) + b"\n"


# --- console ----------------------------------------------------------------------------------
class ConsoleRenderer:
    """Processor (last in the chain): a line for people, coloured when ``colors`` — the same
    text the console sink and ``logpipe logs`` print for the same record
    (:class:`logpipe._console.ConsoleFormatter`, the one formatter), control characters
    escaped. The traceback, if any, follows on indented lines.
    """

    __slots__ = ("_formatter", "colors")

    def __init__(self, colors: bool = False) -> None:
        self.colors = colors
        self._formatter = ConsoleFormatter(colors)

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> bytes:
        """Render; never raises."""
        try:
            return self._formatter.format(event_dict).encode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            return dumps(event_dict) + b"\n"


#: The type of a chain: structlog processors, the last returning the line's bytes.
Processor = Callable[[Any, str, EventDict], Any]
