"""Servers that configure logging themselves, made to write logpipe records: one call each.

Each lives in its own module, imported only when used (``import logpipe`` loads none of them, nor
the servers): :mod:`~logpipe.integrations.asgi` (an access-log middleware for uvicorn or any ASGI
server), :mod:`~logpipe.integrations.gunicorn` (a ``--logger-class``),
:mod:`~logpipe.integrations.celery` (per-task bindings, the worker's root logger left to logpipe).
"""

import importlib as _importlib
from typing import Any as _Any

_MODULES = frozenset(("asgi", "celery", "gunicorn"))


def __getattr__(name: str) -> _Any:
    """PEP 562: ``logpipe.integrations.gunicorn`` works without importing it by name first."""
    if name in _MODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
