"""rotate/cron.py, the command: --daily, --max-size, globs, symlinks, --dry-run, bad paths."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from logpipe import rotate
from tests._rotate_helpers import (
    json_lines,
    rotated_of,
    run_rotate,
    snapshot,
    stamp_days_ago,
    write_lines,
)


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
    assert len(rotated_of(a)) == 2 and len(rotated_of(b)) == 1 and rotated_of(c) == []

    write_lines(a, [b"more today"])
    write_lines(b, [b"more today"])
    second = run_rotate(str(tmp_path / "*.log"), "--daily")
    assert second.returncode == 0, second.stderr
    assert len(rotated_of(a)) == 2 and len(rotated_of(b)) == 1 and rotated_of(c) == []
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
    assert len(rotated_of(log)) == 1 and log.read_bytes() == b"today\n"


def test_max_size_rotates_only_big_files(tmp_path: Path) -> None:
    """--max-size rotates files at or over SIZE and leaves smaller ones alone."""
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    write_lines(big, json_lines(3000))
    write_lines(small, json_lines(3))
    res = run_rotate(str(tmp_path / "*.log"), "--max-size", "100K")
    assert res.returncode == 0, res.stderr
    assert len(rotated_of(big)) == 1 and rotated_of(small) == []


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
    assert len(rotated_of(logs / "good.log")) == 1


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
    [first] = rotated_of(log)
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

