"""`logpipe rotate` and the rotation engine: real files, real processes, real locks."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from logpipe import checkpoint, rotate
from logpipe.rotate import RotateOptions
from logpipe.rotate import cron as rotate_cron
from tests._rotate_helpers import (
    WRITER,
    history,
    json_lines,
    read_bytes,
    run_rotate,
    snapshot,
    stamp_days_ago,
    write_lines,
)
from tests.helpers import wait_for


def _rotated(log: Path) -> list[rotate.RotatedFile]:
    return rotate.rotated_files(str(log))


def test_rename_rotation_keeps_exact_bytes_mode_and_owner(tmp_path: Path) -> None:
    """A forced rotation renames, compresses to .zst whose decompressed bytes equal the original
    exactly, and leaves a fresh empty file with the same mode and owner; the .zst keeps the mode."""
    log = tmp_path / "api.log"
    lines = [*json_lines(5000), b"plain text line \xff\xfe not utf-8", b"  indented"]
    write_lines(log, lines)
    os.chmod(log, 0o640)
    original = log.read_bytes()
    before = log.stat()

    res = run_rotate(str(log))

    assert res.returncode == 0, res.stderr
    rotated = _rotated(log)
    assert [r.compressed for r in rotated] == [True]
    assert read_bytes(rotated[0].path) == original
    assert log.exists() and log.stat().st_size == 0
    assert log.stat().st_ino != before.st_ino
    assert oct(log.stat().st_mode & 0o7777) == oct(0o640)
    assert oct(os.stat(rotated[0].path).st_mode & 0o7777) == oct(0o640)
    assert (log.stat().st_uid, log.stat().st_gid) == (before.st_uid, before.st_gid)
    assert res.stdout.startswith("logpipe rotate: rotated 1, compressed 1 (")
    assert len(res.stdout.splitlines()) == 1  # one summary line per run
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_fresh_file_gets_the_previous_owner(tmp_path: Path) -> None:
    """Rotating a file owned by another user (rotate running as root, as from /etc/cron.d)
    creates the fresh file with that owner and group, and the .zst keeps them too."""
    log = tmp_path / "app.log"
    write_lines(log, json_lines(10))
    os.chown(log, 65534, 65534)
    assert run_rotate(str(log)).returncode == 0
    assert (log.stat().st_uid, log.stat().st_gid) == (65534, 65534)
    zst = os.stat(_rotated(log)[0].path)
    assert (zst.st_uid, zst.st_gid) == (65534, 65534)


def test_zst_output_is_standard_zstd(tmp_path: Path) -> None:
    """The .zst is a plain zstd frame with a checksum that the `zstd` CLI can test and decompress."""
    log = tmp_path / "w.log"
    write_lines(log, json_lines(2000))
    original = log.read_bytes()
    assert run_rotate(str(log)).returncode == 0
    zst = _rotated(log)[0].path
    if not any(os.access(os.path.join(d, "zstd"), os.X_OK) for d in os.environ["PATH"].split(":")):
        pytest.skip("zstd CLI not installed")
    out = subprocess.run(["zstd", "-dc", zst], capture_output=True, check=True)
    assert out.stdout == original


def test_retention_is_per_exact_name(tmp_path: Path) -> None:
    """--retain 2 keeps the two newest rotated files of api.log and never touches api-gw.log's
    (pm2-logrotate #128: prefix matching deleted another app's archives)."""
    api, _gw = tmp_path / "api.log", tmp_path / "api-gw.log"
    for days in (5, 4, 3):
        write_lines(tmp_path / f"api.log.{stamp_days_ago(days)}.zst", [b"x"])
        write_lines(tmp_path / f"api-gw.log.{stamp_days_ago(days)}.zst", [b"y"])
        write_lines(tmp_path / f"api.log-other.{stamp_days_ago(days)}.zst", [b"z"])
    write_lines(api, json_lines(10))
    gw_before = sorted(p.name for p in tmp_path.glob("api-gw.log*"))

    res = run_rotate(str(api), "--retain", "2")

    assert res.returncode == 0, res.stderr
    kept = _rotated(api)
    assert len(kept) == 2
    assert kept[-1].stamp >= stamp_days_ago(0.01)  # the new one is among the kept
    assert kept[0].stamp[:8] == stamp_days_ago(3)[:8]  # the newest of the old ones
    assert sorted(p.name for p in tmp_path.glob("api-gw.log*")) == gw_before
    assert len(list(tmp_path.glob("api.log-other.*"))) == 3
    assert "deleted 2" in res.stdout


def test_retain_zero_keeps_none_and_max_age(tmp_path: Path) -> None:
    """--retain 0 deletes every rotated file, including the one just rotated; --max-age deletes
    rotated files older than DAYS even when --retain would keep them."""
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    write_lines(tmp_path / f"a.log.{stamp_days_ago(2)}.zst", [b"old"])
    write_lines(a, json_lines(10))
    assert run_rotate(str(a), "--retain", "0").returncode == 0
    assert _rotated(a) == []
    assert a.exists() and a.stat().st_size == 0

    for days in (40, 20, 1):
        write_lines(tmp_path / f"b.log.{stamp_days_ago(days)}.zst", [b"old"])
    write_lines(b, json_lines(10))
    res = run_rotate(str(b), "--retain", "10", "--max-age", "7", "--max-size", "1G")
    assert res.returncode == 0, res.stderr
    assert [r.stamp[:8] for r in _rotated(b)] == [stamp_days_ago(1)[:8]]
    assert "deleted 2" in res.stdout


def test_daily_rotates_once_per_utc_day_and_catches_up(tmp_path: Path) -> None:
    """--daily rotates a file last rotated on an earlier UTC day (even 3 days ago: a missed cron
    day), then not again the same day; a never-rotated file whose first line is from yesterday
    rotates; one started today does not. No state file: evidence is in names, xattrs, lines."""
    a, b, c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    write_lines(tmp_path / f"a.log.{stamp_days_ago(3)}.zst", [b"old"])
    write_lines(a, [b"plain line"])
    yesterday = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 86400))
    write_lines(b, json_lines(3, time_text=yesterday))
    write_lines(c, json_lines(3, time_text=time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())))

    first = run_rotate(str(tmp_path / "*.log"), "--daily")
    assert first.returncode == 0, first.stderr
    assert len(_rotated(a)) == 2 and len(_rotated(b)) == 1 and _rotated(c) == []

    write_lines(a, [b"more today"])
    write_lines(b, [b"more today"])
    second = run_rotate(str(tmp_path / "*.log"), "--daily")
    assert second.returncode == 0, second.stderr
    assert len(_rotated(a)) == 2 and len(_rotated(b)) == 1 and _rotated(c) == []
    assert "rotated 0" in second.stdout


def test_daily_copytruncate_rotates_once_per_day(tmp_path: Path) -> None:
    """--daily --copytruncate keeps the inode, so the day it was started is re-recorded on it:
    a second run the same day does not rotate again."""
    log = tmp_path / "pm2-out.log"
    write_lines(log, [b"yesterday"])
    os.setxattr(log, rotate.CREATED_XATTR, str(int(time.time() - 86400)).encode())
    assert run_rotate(str(log), "--daily", "--copytruncate").returncode == 0
    write_lines(log, [b"today"])
    res = run_rotate(str(log), "--daily", "--copytruncate")
    assert res.returncode == 0 and "rotated 0" in res.stdout
    assert len(_rotated(log)) == 1 and log.read_bytes() == b"today\n"


def test_max_size_rotates_only_big_files(tmp_path: Path) -> None:
    """--max-size rotates files at or over SIZE and leaves smaller ones alone."""
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    write_lines(big, json_lines(3000))
    write_lines(small, json_lines(3))
    res = run_rotate(str(tmp_path / "*.log"), "--max-size", "100K")
    assert res.returncode == 0, res.stderr
    assert len(_rotated(big)) == 1 and _rotated(small) == []


def test_second_concurrent_run_waits_then_fails_with_lockbusy(tmp_path: Path) -> None:
    """While another run holds DIR/.logpipe-rotate.lock, `logpipe rotate` waits
    LOGPIPE_ROTATE_LOCK_WAIT seconds and exits 3 with a one-line message, changing nothing; when
    the lock is released during its wait, it proceeds."""
    log = tmp_path / "api.log"
    write_lines(log, json_lines(100))
    fd = os.open(tmp_path / rotate.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t0 = time.monotonic()
        res = run_rotate(str(log), env={rotate.LOCK_WAIT_ENV: "0.5"})
        assert res.returncode == 3
        assert time.monotonic() - t0 >= 0.5
        assert res.stderr.startswith("logpipe: another logpipe rotate is running in ")
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert _rotated(log) == []

        proc = subprocess.Popen([sys.executable, "-m", "logpipe", "rotate", str(log)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, rotate.LOCK_WAIT_ENV: "20"})
        lock_path = str(tmp_path / rotate.LOCK_NAME)

        def at_the_lock() -> bool:
            # it has opened DIR/.logpipe-rotate.lock (and polls flock on it)
            try:
                fds = os.listdir(f"/proc/{proc.pid}/fd")
            except OSError:
                return False
            for fd_name in fds:
                try:
                    if os.readlink(f"/proc/{proc.pid}/fd/{fd_name}") == lock_path:
                        return True
                except OSError:
                    continue
            return False

        wait_for(at_the_lock, 20, message="second run reached the lock")
        assert proc.poll() is None and _rotated(log) == []  # waiting, nothing changed
    finally:
        os.close(fd)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(_rotated(log)) == 1


def test_two_real_runs_at_once_rotate_once(tmp_path: Path) -> None:
    """Two `logpipe rotate` processes started together on the same file: one rotates, the other
    waits for the lock and finds only the fresh empty file — no name collision, bytes intact."""
    log = tmp_path / "api.log"
    write_lines(log, json_lines(200_000))  # ~20 MB: the first run holds the lock a while
    original = log.read_bytes()
    procs = [subprocess.Popen([sys.executable, "-m", "logpipe", "rotate", str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rotated = _rotated(log)
    assert len(rotated) == 1 and rotated[0].compressed
    assert read_bytes(rotated[0].path) == original


def test_symlink_out_of_directory_is_refused(tmp_path: Path) -> None:
    """A matched symlink pointing outside its directory is refused with a clear message (exit 1)
    and its target is untouched; other files in the same run are still rotated."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.log"
    write_lines(secret, [b"do not touch"])
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "evil.log").symlink_to(secret)
    write_lines(logs / "good.log", json_lines(5))
    secret_before = snapshot(outside)

    res = run_rotate(str(logs / "*.log"))

    assert res.returncode == 1
    assert f"logpipe: refusing {logs / 'evil.log'}: it is a symlink to {secret}" in res.stderr
    assert "Traceback" not in res.stderr
    assert snapshot(outside) == secret_before
    assert (logs / "evil.log").is_symlink()
    assert len(_rotated(logs / "good.log")) == 1


def test_symlink_named_like_rotated_output_is_never_deleted(tmp_path: Path) -> None:
    """Retention deletes only regular files named as its own output: a symlink wearing a rotated
    name (pointing elsewhere) survives --retain 0."""
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    log = tmp_path / "api.log"
    write_lines(log, json_lines(5))
    link = tmp_path / f"api.log.{stamp_days_ago(9)}.zst"  # one name: the clock moves on
    link.symlink_to(target)
    assert run_rotate(str(log), "--retain", "0").returncode == 0
    assert link.is_symlink()
    assert target.read_bytes() == b"keep me"


def test_dry_run_changes_nothing_and_prints_the_plan(tmp_path: Path) -> None:
    """--dry-run prints what would be rotated/deleted and changes nothing at all (not even a
    lock file)."""
    log = tmp_path / "api.log"
    write_lines(log, json_lines(50))
    for days in (3, 2):
        write_lines(tmp_path / f"api.log.{stamp_days_ago(days)}.zst", [b"x"])
    write_lines(tmp_path / f"api.log.{stamp_days_ago(1)}", [b"uncompressed leftover"])
    before = snapshot(tmp_path)

    res = run_rotate(str(log), "--dry-run", "--retain", "1")

    assert res.returncode == 0, res.stderr
    assert snapshot(tmp_path) == before
    assert f"would rotate {log}" in res.stdout
    assert sum(ln.startswith("would delete ") for ln in res.stdout.splitlines()) == 3
    assert "dry run, nothing changed" in res.stdout


def test_globs_never_rerotate_rotated_files(tmp_path: Path) -> None:
    """`*.log` does not match x.log.<ts>.zst; even `*` (which does) skips rotated outputs; naming
    one explicitly is refused with a message."""
    log = tmp_path / "x.log"
    write_lines(log, json_lines(10))
    assert run_rotate(str(tmp_path / "*.log")).returncode == 0
    [first] = _rotated(log)
    write_lines(log, json_lines(10, start=10))

    res = run_rotate(str(tmp_path / "*"))
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(names) == 3  # x.log, and exactly two rotated files: nothing rotated twice
    assert all(n == "x.log" or rotate.is_rotated_name(n) for n in names)
    assert not any(n.endswith(".zst.zst") or n.count("T") > 1 for n in names)

    res = run_rotate(first.path)
    assert res.returncode == 2
    assert "is a rotated file; refusing to rotate it again" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{d}/nope.log"], "logpipe: {d}/nope.log: no such file"),
        (["{d}/missing-dir/*.log"],
         "logpipe: {d}/missing-dir/*.log: directory {d}/missing-dir does not exist"),
        (["{d}/*.nomatch"], "logpipe: {d}/*.nomatch: no file matches"),
        (["{d}"], "logpipe: {d} is a directory; give log files or a quoted glob such as '{d}/*.log'"),
        (["{d}/**/*.log"],
         "logpipe: {d}/**/*.log: '**' is not supported by logpipe rotate; give one glob per directory"),
    ],
)
def test_bad_paths_give_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    """A missing file, a glob matching nothing, a missing directory, a directory given as a
    file or a recursive ``**`` → one `logpipe: …` line, exit 2, no traceback."""
    res = run_rotate(*[a.format(d=tmp_path) for a in args])
    assert res.returncode == 2
    assert res.stderr.strip() == message.format(d=tmp_path)


def test_copytruncate_keeps_inode_and_bytes(tmp_path: Path) -> None:
    """--copytruncate copies the bytes exactly into the rotated (compressed) file and truncates the
    original in place: same inode, size 0, and the run reports its loss window."""
    log = tmp_path / "pm2-out.log"
    write_lines(log, json_lines(3000))
    original = log.read_bytes()
    ino = log.stat().st_ino
    res = run_rotate(str(log), "--copytruncate")
    assert res.returncode == 0, res.stderr
    assert log.stat().st_ino == ino and log.stat().st_size == 0
    [r] = _rotated(log)
    assert r.compressed and read_bytes(r.path) == original
    assert "copytruncate window max " in res.stdout and len(res.stdout.splitlines()) == 1


def test_no_compress_keeps_plain_rotated_files(tmp_path: Path) -> None:
    """--no-compress leaves the rotated file uncompressed under its rotated name."""
    log = tmp_path / "a.log"
    write_lines(log, json_lines(10))
    original = log.read_bytes()
    assert run_rotate(str(log), "--no-compress").returncode == 0
    [r] = _rotated(log)
    assert not r.compressed and Path(r.path).read_bytes() == original


def test_file_still_open_by_a_writer_is_compressed_next_run(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A foreign writer (PM2 before `pm2 reloadLogs`) still appending to the renamed file: the
    run leaves it uncompressed and says why; lines it appends there are not lost; once the writer
    has let go, the next run compresses it with every line."""
    monkeypatch.setattr(rotate_cron, "WRITER_WAIT_SECONDS", 0.3)
    log = tmp_path / "app-out.log"
    write_lines(log, [b"line-0"])
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,os\nf=open(sys.argv[1],'ab',buffering=0)\n"
         "for line in sys.stdin:\n    f.write(line.encode())\n", str(log)],
        stdin=subprocess.PIPE, text=True)
    assert writer.stdin is not None
    try:
        writer.stdin.write("line-1\n")
        writer.stdin.flush()
        wait_for(lambda: log.read_bytes().count(b"\n") == 2, message="writer's first line")
        out = _capture_main(RotateOptions(paths=[str(log)], retain=5))
        [r] = _rotated(log)
        assert not r.compressed
        assert f"pid {writer.pid} still writes to it" in out
        writer.stdin.write("line-2\n")  # still lands in the renamed file
        writer.stdin.flush()
        wait_for(lambda: Path(r.path).read_bytes().count(b"\n") == 3, message="late line")
    finally:
        writer.stdin.close()
        writer.wait(timeout=10)
    _capture_main(RotateOptions(paths=[str(log)], retain=5, max_size=1 << 30))
    [r] = _rotated(log)
    assert r.compressed
    assert read_bytes(r.path) == b"line-0\nline-1\nline-2\n"


def _capture_main(opts: RotateOptions) -> str:
    import io

    out = io.StringIO()
    assert rotate.main(opts, out=out) == 0
    return out.getvalue()


def test_names_are_unique_and_ordered_within_one_second(tmp_path: Path) -> None:
    """Many rotations in the same second get .1, .2 … suffixes that sort in rotation order, and
    the history (rotated files oldest→newest, then the live file) is the input in order."""
    log = tmp_path / "fast.log"
    expected = b""
    for i in range(12):
        chunk = json_lines(20, start=i * 20)
        write_lines(log, chunk)
        expected += b"".join(line + b"\n" for line in chunk)
        _capture_main(RotateOptions(paths=[str(log)], retain=100))
    rotated = _rotated(log)
    assert len(rotated) == 12
    assert len({(r.stamp, r.seq) for r in rotated}) == 12
    assert history(log) == expected


def test_verification_rejects_a_corrupt_frame(tmp_path: Path) -> None:
    """The verifying writer compress_rotated streams through raises RotateError for a frame
    whose checksum does not match, and for a frame holding another size than the source's (the
    check that runs before an original is removed)."""
    from logpipe.rotate.compress import _VerifyingWriter

    good = zstandard.ZstdCompressor(write_checksum=True).compress(b"hello world\n" * 1000)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    p = tmp_path / "x.zst"

    def verify(data: bytes, expected_size: int) -> None:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            writer = _VerifyingWriter(fd)
            writer.write(data)
            writer.finish(str(p), expected_size)
        finally:
            os.close(fd)

    with pytest.raises(rotate.RotateError, match="failed verification"):
        verify(bytes(bad), 12000)
    with pytest.raises(rotate.RotateError, match="expected 11999"):
        verify(good, 11999)
    verify(good, 12000)
    assert p.read_bytes() == good


@pytest.mark.parametrize("mode", ["rename", "copytruncate"])
def test_collector_tailing_while_rotating(tmp_path: Path, mode: str) -> None:
    """`logpipe collect 'D/*.log'` tails a file a foreign writer appends to at 2k lines/s while
    `logpipe rotate` rotates it 5 times, 1.5 s apart (slower than the collector's 1 s rescan:
    a file renamed away before the collector ever saw it cannot be followed).
    rename mode (the writer reopens, like WatchedFileHandler or PM2 after `pm2 reloadLogs`):
    the collector delivers every line exactly once; rotate leaves a renamed file uncompressed
    while the writer or the collector still has it open.
    copytruncate: every line is still on disk except those written inside rotate's
    copy→truncate window; what the collector misses is measured, reported, and on disk."""
    d = tmp_path / "D"
    d.mkdir()
    log = d / "app.log"
    log.touch()
    out_path = tmp_path / "collected.ndjson"
    env = dict(os.environ)  # same LOGPIPE_STATE_DIR for collector and rotate (conftest)
    with open(out_path, "wb") as out:
        collector = subprocess.Popen([sys.executable, "-m", "logpipe", "collect", str(d / "*.log")],
                                     stdout=out, stderr=subprocess.DEVNULL, env=env)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), "2000", "8.5",
                               "1" if mode == "rename" else "0"], stdout=subprocess.PIPE, text=True)
    try:
        # the collector must have found the file before it is first renamed away (see the docstring)
        wait_for(lambda: out_path.stat().st_size > 0, timeout=30,
                 message="the collector delivering the writer's first lines")
        args = [str(d / "*.log"), "--retain", "1000"] + (["--copytruncate"] if mode != "rename" else [])
        for _ in range(5):
            res = run_rotate(*args, env=env)
            assert res.returncode == 0, res.stderr
            # the scenario: a rotation every 1.5 s while the writer runs (the collector rescans
            # every second; rotating faster is the documented limit, see the docstring)
            time.sleep(1.5)
        sent = int(writer.communicate(timeout=30)[0])
        on_disk = {orjson.loads(x)["seq"] for x in history(log).splitlines()}

        def collected() -> list[int]:
            return [orjson.loads(x)["seq"] for x in out_path.read_bytes().splitlines()]

        if mode == "rename":
            wait_for(lambda: len(collected()) >= sent, timeout=30, message="collector caught up")
        else:
            # some lines are lost in copytruncate's window, so no count to wait for: wait until
            # the collector's checkpoint says it delivered the live file to its end
            state = env["LOGPIPE_STATE_DIR"]
            wait_for(lambda: checkpoint.progress(state, log.stat(), str(log)) == "delivered",
                     timeout=30, message="the collector delivered the live file to its end")
    finally:
        collector.terminate()
        collector.wait(timeout=30)
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    got = collected()
    # a final run compresses what was postponed while the collector was still reading
    assert run_rotate(str(d / "*.log"), "--retain", "1000", "--max-size", "1G").returncode == 0
    assert not [r for r in rotate.rotated_files(str(log)) if not r.compressed]
    assert {orjson.loads(x)["seq"] for x in history(log).splitlines()} == on_disk
    if mode == "rename":
        assert len(rotate.rotated_files(str(log))) == 5
        assert on_disk == set(range(sent))
        assert sorted(got) == list(range(sent)), "lost or duplicated lines"
    else:
        lost_on_disk = sent - len(on_disk)
        missed = set(range(sent)) - set(got)
        print(f"\ncopytruncate: {sent} lines written, {lost_on_disk} lost in rotate's copy→truncate "
              f"window, {len(missed)} not delivered by the collector, "
              f"{len(got) - len(set(got))} duplicates")
        assert lost_on_disk <= 5 * 5  # µs-scale window: at most a burst per rotation
        assert len(got) == len(set(got)), "duplicates"
        assert missed <= on_disk  # what the collector missed is in the rotated copies, not gone


def test_stale_checkpoint_on_a_reused_inode_does_not_block_compression(tmp_path: Path) -> None:
    """A collector checkpoint for a deleted file whose inode the filesystem handed to a new
    log (the collector not running, so the entry is never forgotten) does not make `logpipe
    rotate` postpone that log's compression forever: the fingerprint differs, so it is not the
    file the collector was reading. A file the collector really has not finished (same
    fingerprint) is still postponed."""
    from tests._tail_helpers import file_on_inode, run_once

    state = os.environ["LOGPIPE_STATE_DIR"]  # conftest: the collector's and rotate's default
    d = tmp_path / "d"
    d.mkdir()
    old = d / "old.log"
    write_lines(old, [b"old %d" % i for i in range(20)])
    assert len(run_once([str(d / "*.log")], state)) == 20  # committed: offset = its size
    ino = old.stat().st_ino
    old.unlink()
    app = file_on_inode(d, ino, "app.log")
    write_lines(app, json_lines(200))  # longer than the stale entry's offset
    res = run_rotate(str(app), "--retain", "5")
    assert res.returncode == 0, res.stderr
    rotated = rotate.rotated_files(str(app))
    assert [r.compressed for r in rotated] == [True], (res.stdout, res.stderr)
    assert read_bytes(rotated[0].path) == b"".join(x + b"\n" for x in json_lines(200))

    # the same collector state for a file it has really not finished: postponed, as before
    live = d / "live.log"
    write_lines(live, json_lines(10))
    assert len(run_once([str(d / "*.log")], state)) == 10
    write_lines(live, json_lines(10, start=10))  # not read yet
    res = run_rotate(str(live), "--retain", "5")
    assert res.returncode == 0, res.stderr
    assert [r.compressed for r in rotate.rotated_files(str(live))] == [False]
    assert "collector is still reading" in res.stdout + res.stderr


def test_rotation_while_the_collector_is_down_waits_for_it(tmp_path: Path) -> None:
    """The collector (glob ``app.log*``) is stopped with lines still unread when `logpipe
    rotate` renames the file: rotate leaves the rotated file uncompressed (its checkpoint says
    unfinished) and says so; the restarted collector reads exactly the unread lines from it
    (none twice, none lost); the next rotate run compresses it with every byte."""
    from tests._collect_helpers import run_collect

    d = tmp_path / "d"
    d.mkdir()
    log = d / "app.log"
    write_lines(log, json_lines(100))
    pattern = str(d / "app.log*")
    rc, recs, err = run_collect(["--once", pattern])
    assert rc == 0 and [r["seq"] for r in recs] == list(range(100)), err
    write_lines(log, json_lines(50, start=100))  # written while no collector runs
    everything = log.read_bytes()

    res = run_rotate(str(log), "--retain", "5")
    assert res.returncode == 0, res.stderr
    [r] = rotate.rotated_files(str(log))
    assert not r.compressed and "collector is still reading" in res.stdout + res.stderr

    rc, recs, err = run_collect(["--once", pattern])
    assert rc == 0, err
    assert [x["seq"] for x in recs] == list(range(100, 150))
    assert {x["source"] for x in recs} == {r.path}

    res = run_rotate(str(log), "--retain", "5", "--max-size", "1G")  # nothing new to rotate
    assert res.returncode == 0, res.stderr
    [r] = rotate.rotated_files(str(log))
    assert r.compressed and read_bytes(r.path) == everything
