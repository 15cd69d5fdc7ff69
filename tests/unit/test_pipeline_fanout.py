"""Fan-out through ``logpipe collect --to console --to file:DIR`` with the file sink stalled:
the console keeps delivering only up to the file sink's buffer, the tail checkpoint does not
pass what the file sink has not accepted, and after recovery nothing is lost or duplicated."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from logpipe.pipeline import BATCH_MAX_RECORDS, SINK_BUFFER_BATCHES
from tests._sink_cmd_helpers import count_lines, read_ndjson, split_stderr
from tests.helpers import LOGPIPE, wait_for

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)


def committed_offset(state_dir: Path, path: Path) -> int:
    """The tail checkpoint's committed offset for ``path`` (0 when none was written yet)."""
    st = path.stat()
    best = 0
    for ck in glob.glob(str(state_dir / "tail" / "*.json")):
        try:
            data = json.loads(Path(ck).read_bytes())
        except ValueError:
            continue  # never torn (atomic rename), but be strict only about offsets
        for entry in data.get("files", []):
            if entry.get("ino") == st.st_ino and entry.get("dev") == st.st_dev:
                best = max(best, int(entry["offset"]))
    return best


def append_records(path: Path, start: int, count: int) -> int:
    """Append records n=start..start+count-1 to ``path``; return its new size."""
    with path.open("ab") as f:
        f.write(b"".join(
            json.dumps({"message": f"record {n}", "level": "info", "n": n}).encode() + b"\n"
            for n in range(start, start + count)))
    return path.stat().st_size


def plateau(fn, hold: float = 1.0, timeout: float = 30.0) -> int:  # type: ignore[no-untyped-def]
    """Wait until ``fn()`` is non-zero and unchanged for ``hold`` seconds; return it."""
    deadline = time.monotonic() + timeout
    last, since = fn(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        cur = fn()
        if cur != last:
            last, since = cur, time.monotonic()
        elif cur and time.monotonic() - since >= hold:
            return cur
    raise AssertionError(f"no plateau within {timeout}s (last value {last})")


def test_stalled_file_sink_bounds_console_and_holds_the_checkpoint(tmp_path: Path) -> None:
    """1000 records reach both sinks and are checkpointed. Then the file sink is stalled for
    real (the test holds the exclusive writer lock on DIR/app.log, as a rotation would) while
    60000 more records arrive: the console gets at most the file sink's buffer more (16 batches
    of at most 2048 records), the checkpoint stays exactly at the first 1000 records, and once
    the lock is released every record reaches both sinks exactly once, in order, the
    checkpoint reaches the end of the input, and SIGTERM exits 0."""
    in_dir, out_dir, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    in_dir.mkdir()
    src = in_dir / "app.log"
    first = 1000
    size1 = append_records(src, 0, first)
    console_path = tmp_path / "console.ndjson"
    with console_path.open("wb") as console, (tmp_path / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            [*LOGPIPE, "collect", str(src), "--state-dir", str(state), "--to", "console",
             "--format", "json", "--to", f"file:{out_dir}"],
            stdout=console, stderr=err, stdin=subprocess.DEVNULL)
    try:
        sink_file = out_dir / "app.log"
        wait_for(lambda: count_lines(sink_file) == first, message="first records in the file sink")
        wait_for(lambda: committed_offset(state, src) == size1, message="first checkpoint")
        assert count_lines(console_path) == first

        # stall the file sink: its writes take a shared flock on the file first
        lock_fd = os.open(sink_file, os.O_RDONLY)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            more = 60000
            size2 = append_records(src, first, more)
            wait_for(lambda: count_lines(console_path) > first, message="new records on the console")
            held = plateau(lambda: count_lines(console_path), hold=2.0)
            assert first < held < first + more
            assert held - first <= SINK_BUFFER_BATCHES * BATCH_MAX_RECORDS
            assert count_lines(sink_file) == first
            time.sleep(1.5)  # > the 1 s checkpoint interval: a wrong commit would be on disk now
            assert committed_offset(state, src) == size1
            assert count_lines(console_path) == held
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

        total = first + more
        wait_for(lambda: count_lines(sink_file) == total, timeout=60, message="all in the file")
        wait_for(lambda: count_lines(console_path) == total, message="all on the console")
        wait_for(lambda: committed_offset(state, src) == size2, message="final checkpoint")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "stderr").read_bytes()
    assert b"Traceback" not in stderr
    assert split_stderr(stderr)[1] == []
    assert [r["n"] for r in read_ndjson(sink_file)] == list(range(total))
    assert [r["n"] for r in read_ndjson(console_path)] == list(range(total))


def _limit_file_size() -> None:
    """In the child: files may not grow past 1 MiB, and a write past it fails with EFBIG
    instead of killing the process (SIGXFSZ ignored — the disposition survives exec)."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_failed_file_sink_stops_the_checkpoint_and_a_rerun_loses_nothing(tmp_path: Path) -> None:
    """When the file sink fails for good mid-run (RLIMIT_FSIZE: EFBIG), ``collect`` exits 1 with
    one ``logpipe: file sink: ...`` line; the checkpoint covers no record the file sink lacks;
    a second run without the limit delivers the rest, so every record ends up in the file."""
    in_dir, out_dir, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    in_dir.mkdir()
    src = in_dir / "app.log"
    total = 30000
    append_records(src, 0, total)
    cmd = [*LOGPIPE, "collect", str(src), "--state-dir", str(state), "--once", "--to", "console",
           "--format", "json", "--to", f"file:{out_dir}"]
    first = subprocess.run(cmd, capture_output=True, timeout=60, preexec_fn=_limit_file_size)
    assert first.returncode == 1, first.stderr[-2000:]
    assert b"Traceback" not in first.stderr
    errors = split_stderr(first.stderr)[1]
    assert len(errors) == 1 and errors[0].startswith("logpipe: file sink: ") and "EFBIG" in errors[0]
    in_file = [r["n"] for r in read_ndjson(out_dir / "app.log")]
    assert 0 < len(in_file) < total
    committed = committed_offset(state, src)
    committed_records = src.read_bytes()[:committed].count(b"\n")
    assert committed_records <= len(in_file)

    second = subprocess.run(cmd, capture_output=True, timeout=60)
    assert second.returncode == 0, second.stderr[-2000:]
    in_file = [r["n"] for r in read_ndjson(out_dir / "app.log")]
    assert set(in_file) == set(range(total))
    # the re-read starts at the checkpoint: duplicates only of what was not committed
    assert len(in_file) - total <= total - committed_records
    assert committed_offset(state, src) == src.stat().st_size
