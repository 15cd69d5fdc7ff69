"""logpipe: structured logging and loss-free log aggregation. Public API only.

``from logpipe import logger`` (or any other name below) loads the logger on first use, so
``import logpipe`` stays light: it never imports click, httpx or zstandard, and the ``logpipe``
command — which lives in this package — does not install the logger's stdlib-``logging`` bridge
into the collector, whose stdout is the record stream.
"""

import typing as _typing

from logpipe._version import __version__

if _typing.TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers and IDEs
    from logpipe.bindings import bind, configure, context, logger, unbind

__all__ = ["__version__", "bind", "configure", "context", "logger", "unbind"]

_LAZY = frozenset(("bind", "configure", "context", "logger", "unbind"))


def __getattr__(name: str) -> _typing.Any:
    """PEP 562: load :mod:`logpipe.bindings` when one of its public names is first used."""
    if name in _LAZY:
        from logpipe import bindings

        value = getattr(bindings, name)
        globals()[name] = value  # later lookups are plain module attributes
        return value
    raise AttributeError(f"module 'logpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
