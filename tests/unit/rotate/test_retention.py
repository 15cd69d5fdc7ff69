"""rotate/retention.py: what retention deletes, and who still needs a rotated file (writers, collectors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from logpipe import rotate
from logpipe.rotate import RotateOptions
from logpipe.rotate import cron as rotate_cron
from tests._rotate_helpers import (
    capture_main,
    json_lines,
    read_bytes,
    rotated_of,
    run_rotate,
    stamp_days_ago,
    write_lines,
)
from tests.helpers import wait_for


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
    kept = rotated_of(api)
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
    assert rotated_of(a) == []
    assert a.exists() and a.stat().st_size == 0

    for days in (40, 20, 1):
        write_lines(tmp_path / f"b.log.{stamp_days_ago(days)}.zst", [b"old"])
    write_lines(b, json_lines(10))
    res = run_rotate(str(b), "--retain", "10", "--max-age", "7", "--max-size", "1G")
    assert res.returncode == 0, res.stderr
    assert [r.stamp[:8] for r in rotated_of(b)] == [stamp_days_ago(1)[:8]]
    assert "deleted 2" in res.stdout


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
        out = capture_main(RotateOptions(paths=[str(log)], retain=5))
        [r] = rotated_of(log)
        assert not r.compressed
        assert f"pid {writer.pid} still writes to it" in out
        writer.stdin.write("line-2\n")  # still lands in the renamed file
        writer.stdin.flush()
        wait_for(lambda: Path(r.path).read_bytes().count(b"\n") == 3, message="late line")
    finally:
        writer.stdin.close()
        writer.wait(timeout=10)
    capture_main(RotateOptions(paths=[str(log)], retain=5, max_size=1 << 30))
    [r] = rotated_of(log)
    assert r.compressed
    assert read_bytes(r.path) == b"line-0\nline-1\nline-2\n"


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

