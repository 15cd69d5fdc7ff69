"""What a running ``collect``/``sink`` publishes for ``logpipe status``: one JSON file per process
in ``<state dir>/status/<pid>.json``, replaced atomically about once a second (no server, no port).

Data comes through a tiny protocol: a Source or Sink MAY have ``status() -> dict`` (its own
counters: delivered, retried, quarantined, spooled, spool depth/oldest age, HEC last success /
last error / endpoints). Without one, the publisher takes the pipeline's per-sink outcome counts
and the public counters a sink has (``delivered``, ``spooled``, ``resent``, ``quarantined``).
File lag is not published here: ``logpipe status`` computes it from the checkpoints and the files
themselves, which also works for a process that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

import orjson

from logpipe import diagnostics

#: seconds between two publications
INTERVAL = 1.0


def status_dir(state_dir: str) -> str:
    """Where processes publish (``<state dir>/status``)."""
    return os.path.join(state_dir, "status")


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class Publisher:
    """Writes this process's state once a second while the pipeline runs."""

    def __init__(self, state_dir: str, command: str, sources: Sequence[Any], sinks: Sequence[Any],
                 outcomes: Any = None) -> None:
        self._dir = status_dir(state_dir)
        self._path = os.path.join(self._dir, f"{os.getpid()}.json")
        self._command = command
        self._sources = list(sources)
        self._sinks = list(sinks)
        self._outcomes = outcomes
        self._started = time.time()
        self._task: asyncio.Task[None] | None = None
        #: per sink: (delivered count seen, when it last grew), (spool first seen non-empty)
        self._seen: dict[str, dict[str, Any]] = {}
        self._last_problem: dict[str, Any] | None = None
        diagnostics.add_listener(self._on_diagnostic)

    def _on_diagnostic(self, rec: dict[str, Any]) -> None:
        if rec.get("level") in ("warning", "error") and not str(rec.get("message", "")).startswith(
                ("summary", "SIG")):
            self._last_problem = {"time": rec.get("time"), "text": rec.get("message")}

    def start(self) -> None:
        """Start publishing (inside the running event loop)."""
        with contextlib.suppress(OSError):
            os.makedirs(self._dir, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="status-publisher")

    async def _run(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(INTERVAL)

    async def stop(self) -> None:
        """Stop the timer and publish the final state (``stopped``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.publish(stopped=True)
        diagnostics.remove_listener(self._on_diagnostic)

    def snapshot(self, stopped: bool = False) -> dict[str, Any]:
        """The state as published."""
        now = time.time()
        return {"pid": os.getpid(), "command": self._command, "started": self._started,
                "updated": now, "stopped": stopped,
                "sources": [self._part(s, now) for s in self._sources],
                "sinks": [self._part(s, now) for s in self._sinks]}

    def _part(self, obj: Any, now: float) -> dict[str, Any]:
        name = str(getattr(obj, "name", type(obj).__name__))
        own = getattr(obj, "status", None)
        out: dict[str, Any] = {"name": name}
        if callable(own):
            with contextlib.suppress(Exception):
                out.update(own())
            return out
        counts = getattr(self._outcomes, "get", lambda _k: None)(name)
        if counts:
            out.update({getattr(k, "value", str(k)): v for k, v in counts.items()})
        for attr in ("delivered", "spooled", "resent", "quarantined", "lines_read"):
            value = getattr(obj, attr, None)
            if isinstance(value, int):
                out[attr] = value
        spool = getattr(obj, "_spool", None)
        if spool is not None:
            with contextlib.suppress(Exception):
                out["spool_records"] = int(spool.pending_items)
                out["spool_bytes"] = int(spool.pending_bytes)
        seen = self._seen.setdefault(name, {"delivered": 0, "last_success": None,
                                            "spool_since": None})
        if out.get("delivered", 0) > seen["delivered"]:
            seen["delivered"], seen["last_success"] = out["delivered"], now
        if out.get("spool_records"):
            seen["spool_since"] = seen["spool_since"] or now
            out["spool_oldest_age"] = round(now - seen["spool_since"], 3)
        else:
            seen["spool_since"] = None
        out["last_success"] = seen["last_success"]
        if hasattr(obj, "endpoints"):
            out["last_error"] = self._last_problem
        return out

    def publish(self, stopped: bool = False) -> None:
        """Write the state now (never raises: status is best effort)."""
        with contextlib.suppress(OSError):
            _write(self._path, orjson.dumps(self.snapshot(stopped), default=str))
