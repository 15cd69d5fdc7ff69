"""logpipe: structured logging and loss-free log aggregation. Public API only.

``from logpipe import logger`` (or any other name below) loads the logger on first use, so
``import logpipe`` stays light: it never imports click, httpx, zstandard or structlog, and the
``logpipe`` command — which lives in this package — does not install the logger's bridges into
the collector, whose stdout is the record stream.

``import logpipe`` does one thing besides: it arms the structlog bridge (``logpipe._structlog``),
so that once the application imports structlog — before or after this — ``structlog.get_logger()``
is logpipe's logger. ``logpipe.processors`` (structlog processors for an application that
configures structlog itself) and ``logpipe.integrations`` (uvicorn, gunicorn, celery) load when
first used.

The model (sources → pipeline → sinks, acks back to checkpoints) and which folder owns which
part — the commands' bodies, ``record/``, ``pipeline/``, ``sources/``, ``sinks/``, ``spool/``,
``rotate/`` and the ``logs``/``status`` readers — are drawn in ``docs/architecture.md``.
"""

import typing as _typing

from logpipe import _structlog
from logpipe._version import __version__

if _typing.TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers and IDEs
    from logpipe import integrations as integrations
    from logpipe import processors as processors
    from logpipe.bindings import bind, configure, context, logger, unbind

__all__ = ["__version__", "bind", "configure", "context", "logger", "unbind"]

_LAZY = frozenset(("bind", "configure", "context", "logger", "unbind"))
_SUBMODULES = frozenset(("integrations", "processors"))


def __getattr__(name: str) -> _typing.Any:
    """PEP 562: load :mod:`logpipe.bindings` when one of its public names is first used, and the
    public submodules when first named."""
    if name in _LAZY:
        from logpipe import bindings

        value = getattr(bindings, name)
        globals()[name] = value  # later lookups are plain module attributes
        return value
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"logpipe.{name}")
    raise AttributeError(f"module 'logpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY | _SUBMODULES)


_structlog.arm()
