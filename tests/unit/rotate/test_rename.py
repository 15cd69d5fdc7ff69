"""rotate/rename.py: rename rotation and copytruncate — exact bytes, mode, owner, inode; a
collector tailing meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from logpipe import checkpoint, rotate
from tests._rotate_helpers import (
    WRITER,
    history,
    json_lines,
    read_bytes,
    rotated_of,
    run_rotate,
    write_lines,
)
from tests.helpers import wait_for


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
    rotated = rotated_of(log)
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
    zst = os.stat(rotated_of(log)[0].path)
    assert (zst.st_uid, zst.st_gid) == (65534, 65534)


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
    [r] = rotated_of(log)
    assert r.compressed and read_bytes(r.path) == original
    assert "copytruncate window max " in res.stdout and len(res.stdout.splitlines()) == 1


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

