"""Celery workers log through logpipe: the root logger left to logpipe, task id/name bound.

``logpipe.integrations.celery.setup(app)`` (one call, where the Celery app is made):

* ``worker_hijack_root_logger = False``: the worker no longer empties the root logger's
  handlers (which would remove logpipe's bridge); the console handlers it adds for its own
  loggers are taken over by logpipe like any other (see ``logpipe._stdlib``).
* the worker's start-up banner (a block of plain text on stdout, not a log record) is turned
  off, as ``--quiet`` would; "celery@host ready." and the rest stay, as logpipe records.
* every task runs inside ``logpipe.context(task_id=..., task_name=...)`` (``task_prerun`` →
  ``task_postrun``), so each line the task logs — ``logpipe.logger``, ``structlog``,
  ``logging``, celery's own "Task … succeeded" — carries them, with the process-wide bindings.
  Eager tasks (``task_always_eager``) too.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import signals

from logpipe import bindings

__all__ = ["setup"]

_active: dict[str, list[bindings.context]] = {}
_lock = threading.Lock()


def setup(app: Any) -> None:
    """Make ``app``'s workers log through logpipe with each task's id and name bound."""
    app.conf.worker_hijack_root_logger = False
    signals.celeryd_init.connect(_worker_init, weak=False, dispatch_uid="logpipe.celeryd_init")
    signals.task_prerun.connect(_task_prerun, weak=False, dispatch_uid="logpipe.task_prerun")
    signals.task_postrun.connect(_task_postrun, weak=False, dispatch_uid="logpipe.task_postrun")


def _worker_init(instance: Any = None, **_: Any) -> None:
    if instance is not None:
        instance.quiet = True  # no banner: stdout carries records only


def _task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    ctx = bindings.context(task_id=task_id, task_name=getattr(task, "name", None))
    ctx.__enter__()
    with _lock:
        _active.setdefault(str(task_id), []).append(ctx)


def _task_postrun(task_id: str | None = None, **_: Any) -> None:
    with _lock:
        stack = _active.get(str(task_id))
        ctx = stack.pop() if stack else None
        if stack == []:
            del _active[str(task_id)]
    if ctx is not None:
        ctx.__exit__(None, None, None)
