"""Shared fixtures: isolated state dirs, a deadline poller, the logpipe command."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from logpipe import diagnostics

T = TypeVar("T")

#: The logpipe CLI as a real subprocess (the installed package, same interpreter).
LOGPIPE = [sys.executable, "-m", "logpipe"]


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own state dir and no inherited LOGPIPE_/PM2 settings."""
    for key in list(os.environ):
        if key.startswith("LOGPIPE_") or key in ("pm_id", "NODE_APP_INSTANCE", "PM2_HOME"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOGPIPE_STATE_DIR", str(tmp_path / "_state"))
    diagnostics.reset()
    yield
