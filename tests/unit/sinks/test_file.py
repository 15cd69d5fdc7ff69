"""The self-rotating file sink: real `logpipe sink file` processes, real rotation, real limits."""

from __future__ import annotations

import asyncio
import io
import os
import re
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from logpipe import rotate
from logpipe.feedback import SINK_DIR_MARKER
from logpipe.pipeline import Batch
from logpipe.rotate import RotateOptions
from logpipe.sinks.file import FileSink, safe_service
from tests._rotate_helpers import history, read_bytes
from tests.helpers import LOGPIPE, wait_for

SERVICES = ["api", "queue-watcher", "billing"]


def _records(n: int, start: int = 0, pad: int = 110) -> list[bytes]:
    """``n`` ~200-byte NDJSON records that the stdin source passes through byte-for-byte (they
    already carry time/level/source/host), spread over SERVICES."""
    out = []
    for i in range(start, start + n):
        out.append(orjson.dumps({
            "time": "2026-11-23T14:01:51.123456Z", "level": "info", "source": "t", "host": "h",
            "service": SERVICES[i % 3], "seq": i, "message": "x" * pad,
        }))
    return out


def _sink(directory: Path, *extra: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*LOGPIPE, "sink", "file", "--dir", str(directory), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **kw)  # type: ignore[call-overload]


def _by_service(lines: list[bytes]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for line in lines:
        out.setdefault(orjson.loads(line)["service"], []).append(line)
    return out


def test_40k_records_rotate_compress_and_add_up_exactly(tmp_path: Path) -> None:
    """40k records through `logpipe sink file --max-size 512K`: per service, the rotated files
    (decompressed, oldest first) followed by the live file are exactly that service's input
    lines, in order; no file exceeds 512K or holds a split line or another service's line; the
    marker file is there. A second run with --retain 3 keeps exactly 3 rotated files per log."""
    d = tmp_path / "logs"
    lines = _records(40_000)
    proc = _sink(d, "--max-size", "512K", "--retain", "1000")
    _, err = proc.communicate(b"".join(line + b"\n" for line in lines), timeout=120)
    assert proc.returncode == 0, err.decode()

    assert (d / SINK_DIR_MARKER).exists()
    expected = _by_service(lines)
    for service, want in expected.items():
        log = d / f"{service}.log"
        rotated = rotate.rotated_files(str(log))
        assert len(rotated) >= 5 and all(r.compressed for r in rotated)
        for part in [read_bytes(r.path) for r in rotated] + [log.read_bytes()]:
            assert len(part) <= 512 * 1024
            assert part.endswith(b"\n")
            assert {orjson.loads(x)["service"] for x in part.splitlines()} == {service}
        assert history(log) == b"".join(line + b"\n" for line in want)
    assert sorted(p.name for p in d.glob("*.log")) == sorted(f"{s}.log" for s in SERVICES)

    proc = _sink(d, "--max-size", "512K", "--retain", "3")
    _, err = proc.communicate(b"".join(line + b"\n" for line in _records(9_000, 40_000)), timeout=120)
    assert proc.returncode == 0, err.decode()
    for service in SERVICES:
        assert len(rotate.rotated_files(str(d / f"{service}.log"))) == 3


class _PacedWriter(threading.Thread):
    """Feeds numbered lines into a pipe at ``rate`` lines/s (in small bursts) until stopped."""

    def __init__(self, pipe: io.BufferedWriter, rate: int) -> None:
        super().__init__(daemon=True)
        self.pipe, self.rate = pipe, rate
        self.sent = 0
        self.stop = threading.Event()
        self.elapsed = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        burst = self.rate // 100
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate) + burst
            if due > self.sent:
                self.pipe.write(b"".join(line + b"\n" for line in _records(due - self.sent, self.sent)))
                self.pipe.flush()
                self.sent = due
            time.sleep(0.01)  # pacing: a writer at ``rate`` lines/s is the scenario
        self.elapsed = time.monotonic() - t0


def test_no_line_lost_or_duplicated_under_forced_rotations(tmp_path: Path) -> None:
    """A writer at >= 5k lines/s into `logpipe sink file --max-size 256K` (rotating itself) while
    `logpipe rotate` force-rotates its files >= 200 times (every 20th run a real `logpipe
    rotate` process, the rest the same engine in-process for speed): every line is present
    exactly once, in order, per service."""
    d = tmp_path / "logs"
    proc = _sink(d, "--max-size", "256K")
    assert proc.stdin is not None
    writer = _PacedWriter(proc.stdin, rate=6000)  # type: ignore[arg-type]
    writer.start()
    wait_for(lambda: all((d / f"{s}.log").exists() for s in SERVICES), message="sink files")
    runs = 0
    sink_out = io.StringIO()
    while runs < 210:
        if runs % 20 == 0:
            res = subprocess.run([*LOGPIPE, "rotate", str(d / "*.log"), "--retain", "10000"],
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            sink_out.write(res.stdout)
        else:
            assert rotate.main(RotateOptions(paths=[str(d / "*.log")], retain=10_000,
                                             state_dir=str(tmp_path / "_state")), out=sink_out) == 0
        runs += 1
    writer.stop.set()
    writer.join()
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()

    assert writer.sent / writer.elapsed >= 5000, f"writer only reached {writer.sent / writer.elapsed:.0f}/s"
    rotations = sum(len(rotate.rotated_files(str(d / f"{s}.log"))) for s in SERVICES)
    assert rotations >= 200 * 2  # each run rotated (almost) every service's file
    # and `logpipe rotate` itself (not only the sink's own --max-size rotation) did >= 200
    by_rotate = sum(int(m) for m in re.findall(r"^logpipe rotate: rotated (\d+)",
                                                 sink_out.getvalue(), re.M))
    assert by_rotate >= 200, sink_out.getvalue()[-500:]
    expected = _by_service(_records(writer.sent))
    for service in SERVICES:
        got = history(d / f"{service}.log")
        assert got == b"".join(line + b"\n" for line in expected[service])


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_file_size_limit_is_one_clear_error_and_keeps_whole_lines(tmp_path: Path) -> None:
    """When the disk refuses more bytes (here RLIMIT_FSIZE → EFBIG, as a full disk would give
    ENOSPC), the sink exits non-zero with one `logpipe: file sink: …` line, no traceback, and the
    file holds only whole lines: an exact prefix of the input."""
    d = tmp_path / "logs"
    d.mkdir()
    # the limit is above one batch (≤ 1 MiB), so the first batch always fits; ~5 MB in all
    lines = [line for line in _records(30_000, pad=400) if b'"service":"api"' in line]
    limit = 1_500_000
    proc = _sink(d, preexec_fn=lambda: _limit_file_size(limit))
    _, err = proc.communicate(b"".join(line + b"\n" for line in lines), timeout=60)
    text = err.decode()
    assert proc.returncode != 0
    assert "Traceback" not in text
    errors = [ln for ln in text.splitlines() if ln.startswith("logpipe:")]
    assert len(errors) == 1, text
    assert errors[0].startswith(f"logpipe: file sink: {d / 'api.log'} reached the file size limit")
    data = (d / "api.log").read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")
    assert data == b"".join(line + b"\n" for line in lines[: data.count(b"\n")])


def test_service_names_are_made_safe() -> None:
    """Service names become safe file stems: no path traversal, no dot files, bounded length;
    no service → `unknown`."""
    assert safe_service("api") == "api"
    assert safe_service("../../etc/passwd") == "_.._etc_passwd"
    assert safe_service(".hidden") == "hidden"
    assert safe_service("..") == "unknown"
    assert safe_service(None) == "unknown"
    assert safe_service("") == "unknown"
    assert safe_service("a b/c\x00d") == "a_b_c_d"
    assert len(safe_service("x" * 5000)) == 100
    assert safe_service(42) == "42"


def _write(sink: FileSink, recs: list[dict[str, object]]) -> None:
    async def go() -> None:
        await sink.start()
        await sink.write(Batch(recs))
        await sink.close()

    asyncio.run(go())


def test_files_stay_inside_the_directory(tmp_path: Path) -> None:
    """Records with hostile or missing service names land in safe files inside DIR only."""
    d = tmp_path / "logs"
    recs: list[dict[str, object]] = [
        {"service": "../../escape", "m": 1}, {"service": ".hidden", "m": 2}, {"m": 3},
        {"service": {"nested": 1}, "m": 4}, {"service": "x" * 300, "m": 5},
    ]
    _write(FileSink(str(d)), recs)
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted([SINK_DIR_MARKER, rotate.LOCK_NAME, "_.._escape.log", "hidden.log",
                            "unknown.log", "_nested_1_.log", "x" * 100 + ".log"])
    assert list(tmp_path.iterdir()) == [d]
    assert orjson.loads((d / "unknown.log").read_bytes()) == {"m": 3}


def test_daily_rotates_at_first_write_of_a_new_utc_day(tmp_path: Path) -> None:
    """--daily: a file started yesterday (xattr evidence) is rotated before the first write today,
    the new lines go to a fresh file, and a second write the same day does not rotate again."""
    d = tmp_path / "logs"
    d.mkdir()
    log = d / "api.log"
    log.write_bytes(b'{"service":"api","old":1}\n')
    try:
        os.setxattr(log, rotate.CREATED_XATTR, str(int(time.time() - 86400)).encode())
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    _write(FileSink(str(d), daily=True), [{"service": "api", "new": 1}])
    _write(FileSink(str(d), daily=True), [{"service": "api", "new": 2}])
    [r] = rotate.rotated_files(str(log))
    assert read_bytes(r.path) == b'{"service":"api","old":1}\n'
    assert log.read_bytes() == b'{"service":"api","new":1}\n{"service":"api","new":2}\n'


def test_sink_lets_go_of_a_file_rotated_by_cron_while_idle(tmp_path: Path) -> None:
    """An idle sink notices within about a second that `logpipe rotate` renamed its file, so the
    run compresses the rotated file at once (not postponed), and the next lines go to the fresh
    file."""
    d = tmp_path / "logs"
    proc = _sink(d)
    assert proc.stdin is not None
    lines = [line for line in _records(30) if b'"api"' in line]
    proc.stdin.write(b"".join(line + b"\n" for line in lines[:5]))
    proc.stdin.flush()
    log = d / "api.log"
    wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") == 5, message="first lines")
    out = io.StringIO()
    t0 = time.monotonic()
    assert rotate.main(RotateOptions(paths=[str(log)]), out=out) == 0
    assert "compressed 1" in out.getvalue() and "postponed" not in out.getvalue()
    assert time.monotonic() - t0 < rotate.WRITER_WAIT_SECONDS + 1
    proc.stdin.write(b"".join(line + b"\n" for line in lines[5:]))
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    for stream in (proc.stdout, proc.stderr):
        assert stream is not None
        stream.close()
    [r] = rotate.rotated_files(str(log))
    assert read_bytes(r.path) == b"".join(line + b"\n" for line in lines[:5])
    assert log.read_bytes() == b"".join(line + b"\n" for line in lines[5:])


def test_missing_dir_option_is_a_usage_error() -> None:
    """`logpipe sink file` without --dir → one clear line, exit 2."""
    res = subprocess.run([*LOGPIPE, "sink", "file"], input=b"", capture_output=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.decode().strip().splitlines()[-1].startswith("logpipe: the file sink needs a directory")


def test_full_disk_that_frees_up_loses_nothing(tmp_path: Path) -> None:
    """ENOSPC on a real (small tmpfs) disk: the sink warns, waits and retries instead of failing
    or dropping (multilog's rule); once space is freed it finishes, exit 0, and the file holds
    exactly the input — the failed attempt's partial batch was cut back off."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); EFBIG test covers the error path")
    try:
        (mnt / "D").mkdir()
        (mnt / "D" / SINK_DIR_MARKER).write_bytes(b"made before the disk filled up\n")
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # fill the disk to the last byte
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        lines = [line for line in _records(6000) if b'"service":"api"' in line]  # ~400 KiB
        proc = _sink(mnt / "D")
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"".join(line + b"\n" for line in lines))
        proc.stdin.close()
        warning = proc.stderr.readline().decode()
        assert "disk full writing" in warning and "retrying" in warning
        filler.unlink()
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read().decode()
        assert "Traceback" not in rest and "logpipe: " not in rest
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()
        assert (mnt / "D" / "api.log").read_bytes() == b"".join(line + b"\n" for line in lines)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_copytruncate_of_the_sinks_files_loses_nothing(tmp_path: Path) -> None:
    """`logpipe rotate --copytruncate` on files logpipe's sink is writing at 6k lines/s: the sink
    holds the writer lock while appending, so the copy→truncate window is closed for it — 40
    runs later every line is present exactly once, in order."""
    d = tmp_path / "logs"
    proc = _sink(d)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    writer = _PacedWriter(proc.stdin, rate=6000)  # type: ignore[arg-type]
    writer.start()
    wait_for(lambda: all((d / f"{s}.log").exists() for s in SERVICES), message="sink files")
    for _ in range(40):
        assert rotate.main(RotateOptions(paths=[str(d / "*.log")], retain=10_000, copytruncate=True,
                                         state_dir=str(tmp_path / "_state")), out=io.StringIO()) == 0
        time.sleep(0.02)  # pacing: rotate repeatedly while the writer writes
    writer.stop.set()
    writer.join()
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    expected = _by_service(_records(writer.sent))
    for service in SERVICES:
        assert len(rotate.rotated_files(str(d / f"{service}.log"))) >= 30
        assert history(d / f"{service}.log") == b"".join(line + b"\n" for line in expected[service])
