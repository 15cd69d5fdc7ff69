"""Helpers for the Splunk sink tests: input files, sink environments, spool inspection, subprocesses."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from logpipe.sinks.splunk.items import bundle_of
from logpipe.spool import HDR_SIZE, MAGIC
from tests.helpers import LOGPIPE

TOKEN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def records(n: int, sources: Iterable[str] = ("a", "b", "c"), start: int = 0) -> list[dict[str, Any]]:
    """``n`` records, round-robin over ``sources``, each with a global ``seq`` and a per-source ``n``."""
    srcs = list(sources)
    per: dict[str, int] = dict.fromkeys(srcs, 0)
    out = []
    for i in range(start, start + n):
        src = srcs[i % len(srcs)]
        out.append({"time": "2026-11-23T14:01:51.123456Z", "level": "info", "message": f"event {i}",
                    "service": "api", "instance_id": "0", "source": src, "seq": i, "n": per[src]})
        per[src] += 1
    return out


def ndjson(recs: Iterable[dict[str, Any]]) -> bytes:
    """Records as NDJSON bytes."""
    return b"".join(orjson.dumps(r) + b"\n" for r in recs)


def sink_env(state_dir: Path, urls: str | Iterable[str], token: str = TOKEN, **extra: str) -> dict[str, str]:
    """Environment for ``logpipe sink splunk``: URL(s), token, state dir, short test timeouts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    env.update({
        "LOGPIPE_SPLUNK_URL": urls if isinstance(urls, str) else ",".join(urls),
        "LOGPIPE_SPLUNK_TOKEN": token,
        "LOGPIPE_STATE_DIR": str(state_dir),
        "LOGPIPE_SPLUNK_RETRY_MAX": "0.5",
        "LOGPIPE_SPLUNK_DRAIN_TIMEOUT": "20",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def run_sink(env: dict[str, str], stdin: bytes | None = None, args: Iterable[str] = (),
             timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run ``logpipe sink splunk ARGS`` to completion with ``stdin`` (None: empty)."""
    return subprocess.run([*LOGPIPE, "sink", "splunk", *args], input=stdin or b"", env=env,
                          capture_output=True, timeout=timeout, check=False)


def spawn_sink(env: dict[str, str], args: Iterable[str] = (), stderr_path: Path | None = None
               ) -> subprocess.Popen[bytes]:
    """Start ``logpipe sink splunk ARGS`` with a stdin pipe; stderr to ``stderr_path`` if given."""
    err = open(stderr_path, "wb") if stderr_path is not None else subprocess.PIPE  # noqa: SIM115
    try:
        return subprocess.Popen([*LOGPIPE, "sink", "splunk", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    finally:
        if stderr_path is not None:
            err.close()  # type: ignore[union-attr]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for 'HEC refused')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_spooled(spool_dir: Path) -> int:
    """Events in a spool's segment files (read from outside while a sink runs).

    Uses the spool's framing (``<u32 len><u32 crc>payload`` after the segment magic) and the
    sink's items (one per written batch: envelopes joined by newlines); counts what is still on
    disk, done items included until their segment is deleted.
    """
    total = 0
    for seg in sorted(spool_dir.glob("*.seg")):
        data = seg.read_bytes()
        if not data.startswith(MAGIC):
            continue
        off = len(MAGIC)
        while off + HDR_SIZE <= len(data):
            length = struct.unpack_from("<I", data, off)[0]
            if off + HDR_SIZE + length > len(data):
                break
            # item: format byte, source group, (format 2) count, envelopes joined by newlines
            total += bundle_of(data[off + HDR_SIZE:off + HDR_SIZE + length])[1]
            off += HDR_SIZE + length
    return total


def diag_lines(stderr: bytes) -> list[dict[str, Any]]:
    """logpipe's JSON diagnostic lines from a stderr capture (other lines skipped)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("logpipe") == "diagnostic":
                out.append(obj)
    return out


def all_files_text(root: Path) -> bytes:
    """Every regular file under ``root`` concatenated (to grep for a secret)."""
    blobs = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            blobs.append(p.read_bytes())
    return b"\n".join(blobs)
