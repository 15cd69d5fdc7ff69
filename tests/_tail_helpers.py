"""Helpers for the tail/checkpoint tests: an in-memory sink, an in-process tail runner, a
reader for a collector subprocess's NDJSON stdout, and a real sequence writer that rotates its
file by rename or copytruncate, run as ``python tests/_tail_helpers.py write PATH --rate N
--seconds S --rotate-bytes B --mode rename|copytruncate --report R``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

if __name__ == "__main__":  # run as a script: make ``tests`` and ``logpipe`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logpipe.pipeline import Batch, Outcome, Sink, run
from logpipe.sources.tail import TailSource

HELPER = str(Path(__file__).resolve())


class CollectSink(Sink):
    """A real in-memory sink: keeps every record it accepts, in order; can be stalled."""

    name = "collect"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.lines: list[bytes] = []
        self.batches = 0
        self._lock = threading.Lock()
        self._gate: asyncio.Event | None = None
        self._stalled = False

    async def start(self) -> None:
        """Create the stall gate inside the running loop."""
        self._gate = asyncio.Event()
        if not self._stalled:
            self._gate.set()

    def stall(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make writes wait until ``resume()`` (back-pressure)."""
        self._stalled = True
        if self._gate is not None and loop is not None:
            loop.call_soon_threadsafe(self._gate.clear)

    def resume(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Let writes through again."""
        self._stalled = False
        if self._gate is not None and loop is not None:
            loop.call_soon_threadsafe(self._gate.set)

    async def write(self, batch: Batch) -> Outcome:
        """Accept the batch (after the gate opens)."""
        if self._gate is not None:
            await self._gate.wait()
        with self._lock:
            self.records.extend(batch.records)
            self.lines.extend(batch.encoded())
            self.batches += 1
        return Outcome.DELIVERED

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of the records so far (thread-safe)."""
        with self._lock:
            return list(self.records)

    def messages(self) -> list[Any]:
        """Each record's ``message`` (or its ``seq`` when it has one)."""
        return [r.get("seq", r.get("message")) for r in self.snapshot()]


class TailRunner:
    """Runs ``TailSource`` → ``CollectSink`` in a background event loop, so a test can touch
    files synchronously and poll (``wait_for``) for records; ``stop()`` drains and commits."""

    def __init__(self, patterns: list[str], state_dir: str, **kw: Any) -> None:
        kw.setdefault("rescan_interval", 0.2)
        self.source = TailSource(patterns, state_dir, **kw)
        self.sink = CollectSink()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await run([self.source], [self.sink], self._stop)

        try:
            asyncio.run(body())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._ready.set()

    def start(self) -> TailRunner:
        """Start the loop thread."""
        self._thread.start()
        assert self._ready.wait(10), "tail runner did not start"
        return self

    def stop(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Ask the source to stop, wait for drain + final checkpoint; return the records."""
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.sink.resume(self.loop)
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "tail runner did not stop"
        if self.error is not None:
            raise self.error
        return self.sink.snapshot()

    def __enter__(self) -> TailRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()


def run_once(patterns: list[str], state_dir: str, **kw: Any) -> list[dict[str, Any]]:
    """``once=True`` in-process: everything there now, then the final checkpoint."""
    source = TailSource(patterns, state_dir, once=True, **kw)
    sink = CollectSink()

    async def body() -> None:
        await asyncio.wait_for(run([source], [sink], asyncio.Event()), 60)

    asyncio.run(body())
    return sink.snapshot()


@contextlib.contextmanager
def collector_stdout(proc: Any) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Read a collector subprocess's NDJSON stdout on a thread; yields ``records()``."""
    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    def pump() -> None:
        buf = b""
        while True:
            chunk = proc.stdout.read1(1 << 16) if hasattr(proc.stdout, "read1") else proc.stdout.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            *complete, buf = buf.split(b"\n")
            parsed = [orjson.loads(x) for x in complete if x]
            with lock:
                got.extend(parsed)

    t = threading.Thread(target=pump, daemon=True)
    t.start()

    def records() -> list[dict[str, Any]]:
        with lock:
            return list(got)

    try:
        yield records
    finally:
        t.join(10)
        proc.stdout.close()


def seqs(records: list[dict[str, Any]]) -> list[int]:
    """The ``seq`` field of every record that has one, in arrival order."""
    return [r["seq"] for r in records if "seq" in r]


def file_on_inode(directory: Path, ino: int, name: str) -> Path:
    """Create ``name`` on inode ``ino`` (ext4/tmpfs hand a freed inode to the next create);
    skips the test where the filesystem does not."""
    import pytest

    spare = []
    try:
        for i in range(200):
            p = directory / f".probe{i}"
            p.touch()
            if p.stat().st_ino == ino:
                p.rename(directory / name)
                return directory / name
            spare.append(p)
    finally:
        for p in spare:
            p.unlink(missing_ok=True)
    pytest.skip("this filesystem does not reuse inodes promptly")


# --- the subprocess programs --------------------------------------------------------------------
def _write(argv: list[str]) -> int:
    """Write ``{"seq": N, ...}`` lines at ``rate``/s for ``seconds``, rotating every
    ``rotate_bytes`` by rename (keep writing a few lines to the old fd, then reopen: a writer
    that reopens on a signal) or by copytruncate (copy, a few more lines, truncate — those
    are the window lines, reported). The report (JSON) lists the total and the window seqs."""
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rotate-bytes", type=int, default=1 << 20)
    ap.add_argument("--mode", choices=["rename", "copytruncate", "none"], default="rename")
    ap.add_argument("--report", required=True)
    ap.add_argument("--pad", type=int, default=120)
    ap.add_argument("--start", type=int, default=0)
    a = ap.parse_args(argv)
    pad = "x" * a.pad
    f = open(a.path, "ab", buffering=0)  # noqa: SIM115 - reopened on rotation
    written = 0
    seq = a.start
    window: list[int] = []
    rotations = 0
    t0 = time.monotonic()
    tick = 0.01
    per_tick = max(1, int(a.rate * tick))

    def line(n: int) -> bytes:
        return b'{"seq":%d,"pad":"%s"}\n' % (n, pad.encode())

    while time.monotonic() - t0 < a.seconds:
        due = int((time.monotonic() - t0) * a.rate) + per_tick
        burst = b"".join(line(n) for n in range(seq, max(seq, due)))
        if burst:
            f.write(burst)
            seq = max(seq, due)
            written += len(burst)
        if a.mode != "none" and written >= a.rotate_bytes:
            rotations += 1
            rotated = f"{a.path}.{rotations}"
            if a.mode == "rename":
                os.rename(a.path, rotated)
                # a writer keeps writing to its old fd until it reopens (SIGHUP / reloadLogs)
                f.write(b"".join(line(n) for n in range(seq, seq + 50)))
                seq += 50
                f.close()
                f = open(a.path, "ab", buffering=0)  # noqa: SIM115
            else:
                shutil.copyfile(a.path, rotated)
                # lines written after the copy ended and before the truncate: the window
                window_lines = list(range(seq, seq + 20))
                f.write(b"".join(line(n) for n in window_lines))
                seq += 20
                window.extend(window_lines)
                os.truncate(a.path, 0)
            written = 0
        time.sleep(tick)
    f.close()
    Path(a.report).write_bytes(orjson.dumps({"first": a.start, "end": seq, "window": window,
                                             "rotations": rotations,
                                             "seconds": time.monotonic() - t0}))
    return 0


if __name__ == "__main__":
    assert sys.argv[1] == "write", "usage: _tail_helpers.py write PATH ..."
    sys.exit(_write(sys.argv[2:]))
