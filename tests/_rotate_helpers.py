"""Helpers for the rotation and file-sink tests: run `logpipe rotate`, read a log's whole history."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import orjson
import zstandard

from logpipe import rotate
from tests.helpers import LOGPIPE


def run_rotate(*args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`logpipe rotate ARGS` as a real process; returns the completed process (text)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([*LOGPIPE, "rotate", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def write_lines(path: Path, lines: list[bytes], mode: str = "ab") -> None:
    """Append whole lines (each gets a newline)."""
    with open(path, mode) as fh:
        fh.write(b"".join(line + b"\n" for line in lines))


def json_lines(n: int, start: int = 0, service: str = "api", pad: int = 60,
               time_text: str | None = None) -> list[bytes]:
    """``n`` distinct NDJSON lines ``{"seq": i, ...}``."""
    out = []
    for i in range(start, start + n):
        rec: dict[str, object] = {"seq": i, "service": service, "message": "m" * pad}
        if time_text:
            rec = {"time": time_text, **rec}
        out.append(orjson.dumps(rec))
    return out


def read_bytes(path: str) -> bytes:
    """A file's bytes, decompressing ``.zst``."""
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".zst"):
        return b"".join(_chunks(data))
    return data


def _chunks(data: bytes) -> list[bytes]:
    out = []
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as r:
        while chunk := r.read(1 << 20):
            out.append(chunk)
    return out


def history(log: Path) -> bytes:
    """A log's rotated files (oldest first, decompressed) followed by the live file."""
    parts = [read_bytes(f.path) for f in rotate.rotated_files(str(log))]
    if log.exists():
        parts.append(log.read_bytes())
    return b"".join(parts)


def snapshot(directory: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """name → (mode, size, mtime_ns, content) of every entry (for "changes nothing")."""
    snap = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        content = b"" if entry.is_symlink() or entry.is_dir() else Path(entry.path).read_bytes()
        snap[entry.name] = (st.st_mode, st.st_size, st.st_mtime_ns, content)
    return snap


def stamp_days_ago(days: float) -> str:
    """A rotated-name timestamp ``days`` ago."""
    return rotate.stamp(time.time() - days * 86400)


#: A foreign writer: appends ``{"seq": i}`` lines at RATE/s for SECONDS with O_APPEND. With
#: ``reopen`` it stats the path before each burst and reopens when it was renamed (what
#: Python's WatchedFileHandler, or PM2 after `pm2 reloadLogs`, does); without, it keeps its fd
#: (a copytruncate writer). Prints the number of lines written.
WRITER = r"""
import os, sys, time
path, rate, seconds, reopen = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
ino = os.fstat(fd).st_ino
sent, t0 = 0, time.monotonic()
while time.monotonic() - t0 < seconds:
    due = int((time.monotonic() - t0) * rate) + 1
    if reopen:
        try:
            cur = os.stat(path).st_ino
        except FileNotFoundError:
            cur = None
        if cur != ino:
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            ino = os.fstat(fd).st_ino
    if due > sent:
        os.write(fd, b"".join(b'{"seq":%d,"service":"app"}\n' % i for i in range(sent, due)))
        sent = due
    time.sleep(0.005)  # pacing: the writer's rate is the scenario
print(sent)
"""


def rotated_of(log: Path) -> list[rotate.RotatedFile]:
    """The rotated files of ``log``, oldest first (``rotate.rotated_files``)."""
    return rotate.rotated_files(str(log))


def capture_main(opts: rotate.RotateOptions) -> str:
    """``rotate.main(opts)`` in-process; asserts exit 0 and returns what it printed."""
    import io

    out = io.StringIO()
    assert rotate.main(opts, out=out) == 0
    return out.getvalue()
