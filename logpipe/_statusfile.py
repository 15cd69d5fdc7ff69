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
        self._state_dir = state_dir
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
        #: sink name → its last warning/error diagnostic ("splunk: …") as {time, text}
        self._last_problem: dict[str, dict[str, Any]] = {}
        diagnostics.add_listener(self._on_diagnostic)

    def _on_diagnostic(self, rec: dict[str, Any]) -> None:
        if rec.get("level") not in ("warning", "error"):
            return
        text = str(rec.get("message", ""))
        name = text.partition(":")[0]
        if name and " " not in name and not text.startswith("summary"):
            self._last_problem[name] = {"time": rec.get("time"), "text": text}

    def start(self) -> None:
        """Start publishing (inside the running event loop); first forget processes that died
        with nothing left in a spool (killed; a restart replaces them)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._dir):
                _forget_if_dead_and_empty(entry.path)
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
        diagnostics.remove_listener(self._on_diagnostic)
        final = self.snapshot(stopped=True)
        if any(s.get("spool_items") for s in final["sinks"]):
            self.publish(stopped=True)  # stopped with records left: status shows them
        else:
            with contextlib.suppress(OSError):
                os.unlink(self._path)  # a clean stop leaves nothing behind

    def snapshot(self, stopped: bool = False) -> dict[str, Any]:
        """The state as published."""
        now = time.time()
        return {"pid": os.getpid(), "command": self._command, "started": self._started,
                "updated": now, "stopped": stopped,
                "sources": [self._part(s, now) for s in self._sources],
                "sinks": [self._part(s, now, sink=True) for s in self._sinks]}

    def _part(self, obj: Any, now: float, sink: bool = False) -> dict[str, Any]:
        name = str(getattr(obj, "name", type(obj).__name__))
        own = getattr(obj, "status", None)
        out: dict[str, Any] = {"name": name}
        if callable(own):
            with contextlib.suppress(Exception):
                out.update(own())
            return out
        counts = getattr(self._outcomes, "get", lambda _k: None)(name) if sink else None
        if counts:
            out.update({getattr(k, "value", str(k)): v for k, v in counts.items()})
        for attr in ("delivered", "spooled", "resent", "quarantined", "lines_read", "bytes_read"):
            value = getattr(obj, attr, None)
            if isinstance(value, int):
                out[attr] = value
        if sink:
            stats = getattr(obj, "stats", None)
            if callable(stats):  # the Splunk sink's own counters, where it has them
                with contextlib.suppress(Exception):
                    _from_stats(stats(), out)
            self._sink_extras(obj, name, out, now)
        return out

    def _sink_extras(self, obj: Any, name: str, out: dict[str, Any], now: float) -> None:
        """Spool depth and age, last success / last error, endpoints (a Splunk-like sink)."""
        spool = getattr(obj, "_spool", None)
        if spool is not None and "spool_items" not in out:
            with contextlib.suppress(Exception):
                out["spool_items"] = int(spool.pending_items)  # batches, this run's and older
                out["spool_bytes"] = int(spool.pending_bytes)
                # records this process spooled and has not delivered (nor quarantined) yet
                out["spool_records"] = max(0, out.get("spooled", 0) - out.get("delivered", 0)
                                           - out.get("quarantined", 0))
        seen = self._seen.setdefault(name, {"delivered": 0, "last_success": None,
                                            "spool_since": None})
        if out.get("delivered", 0) > seen["delivered"]:
            seen["delivered"], seen["last_success"] = out["delivered"], now
        if out.get("last_success"):  # the sink knows better than the publisher's tick
            seen["last_success"] = out["last_success"]
        if out.get("spool_items"):
            # The spool holds every record until delivered, so "non-empty since" alone would
            # grow forever under steady load: while deliveries advance, the oldest record is
            # at most as old as the last success. An estimate, not the record's own age.
            seen["spool_since"] = seen["spool_since"] or now
            since = max(seen["spool_since"], seen["last_success"] or 0.0)
            out["spool_oldest_age"] = round(now - since, 3)
        else:
            seen["spool_since"] = None
            out["spool_oldest_age"] = 0.0 if "spool_items" in out else None
        out["last_success"] = seen["last_success"]
        out["last_error"] = self._last_problem.get(name)
        endpoints = getattr(obj, "endpoints", None)
        if isinstance(endpoints, list) and "endpoints" not in out:
            out["endpoints"] = [{"url": str(getattr(ep, "display", "?")),
                                 "up": not getattr(ep, "failures", 0)} for ep in endpoints]

    def publish(self, stopped: bool = False) -> None:
        """Write the state now (never raises: status is best effort). Only where the process
        already keeps state (checkpoints, a spool): a run that uses no state dir (``collect
        --run … --to console``) creates none."""
        if not os.path.isdir(self._dir):
            if not os.path.isdir(self._state_dir):
                return
            with contextlib.suppress(OSError):
                os.mkdir(self._dir)
        with contextlib.suppress(OSError):
            _write(self._path, orjson.dumps(self.snapshot(stopped), default=str))


def _from_stats(st: dict[str, Any], out: dict[str, Any]) -> None:
    """A sink's ``stats()`` (delivered, retried, quarantined, spooled, left_in_spool, spool
    {items, bytes}, endpoints [{url, up, last_error, last_success}]) → the published keys."""
    for key in ("delivered", "retried", "quarantined", "spooled"):
        if isinstance(st.get(key), int):
            out[key] = st[key]
    spool = st.get("spool")
    if isinstance(spool, dict):
        out["spool_items"] = spool.get("items")
        out["spool_bytes"] = spool.get("bytes")
    if isinstance(st.get("left_in_spool"), int):
        out["spool_records"] = st["left_in_spool"]
    eps = st.get("endpoints")
    if isinstance(eps, list):
        out["endpoints"] = [{"url": e.get("url"), "up": bool(e.get("up")),
                             "last_error": e.get("last_error")} for e in eps if isinstance(e, dict)]
        successes = [e["last_success"] for e in eps
                     if isinstance(e, dict) and isinstance(e.get("last_success"), int | float)]
        if successes:
            out["last_success"] = max(successes)


def _forget_if_dead_and_empty(path: str) -> None:
    if not path.endswith(".json"):
        return
    try:
        with open(path, "rb") as fh:
            doc = orjson.loads(fh.read())
        pid = int(doc["pid"])
        if any(s.get("spool_items") for s in doc.get("sinks", [])):
            return
        os.kill(pid, 0)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            os.unlink(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
