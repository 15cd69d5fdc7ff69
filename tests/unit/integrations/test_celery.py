"""integrations/celery.py: ``setup(app)`` and the task context, in-process with an eager task
(a real worker: tests/e2e/test_servers.py)."""

from __future__ import annotations

from pathlib import Path

import logpipe
from tests._logger_helpers import capture


def test_setup_binds_task_id_and_name_around_each_task(tmp_path: Path) -> None:
    """After ``setup(app)`` the worker keeps its hands off the root logger, and a task's lines
    carry its ``task_id`` and ``task_name`` (eager tasks too) — only while the task runs."""
    from celery import Celery

    from logpipe.integrations import celery as lp_celery

    app = Celery("t", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True
    lp_celery.setup(app)
    assert app.conf.worker_hijack_root_logger is False

    @app.task(name="orders.charge")
    def charge(n: int) -> int:
        logpipe.logger.info("charging", n=n)
        return n * 2

    with capture(tmp_path) as read:
        result = charge.apply_async(args=(21,), task_id="t-42")
        logpipe.logger.info("after")
    assert result.get() == 42
    inside, after = read()
    assert (inside["task_id"], inside["task_name"], inside["n"]) == ("t-42", "orders.charge", 21)
    assert "task_id" not in after and "task_name" not in after
    assert lp_celery._active == {}


def test_worker_init_turns_the_banner_off() -> None:
    """The worker's start-up banner (plain text on stdout) is turned off, as ``--quiet``."""
    from types import SimpleNamespace

    from logpipe.integrations import celery as lp_celery

    worker = SimpleNamespace(quiet=False)
    lp_celery._worker_init(instance=worker)
    assert worker.quiet is True
