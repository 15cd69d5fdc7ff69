"""Helpers every test module may import: ``from tests.helpers import wait_for, LOGPIPE``."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

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


async def until(predicate: Callable[[], Any], timeout: float = 10.0,  # noqa: ASYNC109 - a poller
                message: str = "condition") -> None:
    """``wait_for`` inside an event loop: poll ``predicate`` (the loop keeps running meanwhile)
    until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.01)
