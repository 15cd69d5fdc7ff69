"""The dead-letter file: envelopes HEC will never accept, appended with the reason (fsynced)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson

from logpipe import diagnostics, record
from logpipe.sinks.splunk._hec import Verdict
from logpipe.sinks.splunk.endpoints import Endpoint


class Quarantine:
    """``<state dir>/quarantine/splunk.ndjson``: one JSON line per envelope set aside."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0

    async def add(self, envelopes: list[bytes], index: int | None, v: Verdict, ep: Endpoint,
                  why: str) -> None:
        """Append the envelopes + reason to the file (fsynced), say so in one diagnostic line."""
        now = record.now()
        lines = []
        for k, envelope in enumerate(envelopes):
            try:
                orjson.loads(envelope)
                env: Any = orjson.Fragment(envelope)
            except orjson.JSONDecodeError:
                env = envelope.decode("utf-8", "replace")
            lines.append(orjson.dumps({
                "time": now, "sink": "splunk", "reason": why, "endpoint": ep.display,
                "http_status": v.status, "hec_code": v.code, "hec_text": v.text,
                "event_index": index if index is not None else k, "envelope": env,
            }) + b"\n")
        await asyncio.to_thread(append_durably, self.path, b"".join(lines))
        self.count += len(envelopes)
        where = (f"event {index} of the request" if index is not None
                 else f"{len(envelopes)} events")
        diagnostics.error(f"splunk: {where} {why} ({v.describe()}); quarantined in "
                          f"{self.path}", key=f"splunk-quarantine:{v.code}")


def append_durably(path: str, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0600, its directory 0700) and fsync."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
