"""The identity rules of the tail source and the shared checkpoints, one at a time: rotated
names, per-file locks, merging offsets of several command lines, ``progress`` for rotate, and
a held-back look-alike copy that is never truncated (read after COPY_WAIT, not lost)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from logpipe import checkpoint
from logpipe._filelocks import FileLocks
from logpipe.checkpoint import CheckpointStore, FileState, merge
from logpipe.sources.tail import TailSource, is_rotated_name
from logpipe.sources.tail import discovery as tail_discovery
from tests._tail_helpers import TailRunner, run_once
from tests.helpers import wait_for


@pytest.mark.parametrize(("candidate", "original", "rotated"), [
    ("/l/app.log.1", "/l/app.log", True),
    ("/l/app.log-20261201", "/l/app.log", True),
    ("/l/app.log.20261201T000000", "/l/app.log", True),
    ("/old/app.log.2", "/l/app.log", True),  # logrotate's olddir
    ("/l/api-out__2026-12-01_00-00-00.log", "/l/api-out.log", True),  # pm2-logrotate
    ("/l/api-error-1.log", "/l/api-error.log", False),  # another PM2 instance
    ("/l/api-error-0.log", "/l/api-error-1.log", False),
    ("/l/app.log", "/l/app.log", False),
    ("/l/app.logger", "/l/app.log", False),
    ("/l/b.log", "/l/a.log", False),
])
def test_rotated_names(candidate: str, original: str, rotated: bool) -> None:
    """Only the names rotators give a file count as its rotated names (the name is one of the
    pieces of evidence a copy needs); other instances' files and look-alikes do not."""
    assert is_rotated_name(candidate, original) is rotated


def test_file_locks_conflict_between_holders_and_release(tmp_path: Path) -> None:
    """One identity can be held by one FileLocks at a time (two collectors, or two sources of
    one process); another identity is free; release and close let go."""
    lock = str(tmp_path / "files.lock")
    a, b = FileLocks(lock), FileLocks(lock)
    assert a.acquire((1, 2)) and a.acquire((1, 2))
    assert not b.acquire((1, 2))
    assert b.acquire((1, 3))
    a.release((1, 2))
    assert b.acquire((1, 2))
    b.close()
    assert a.acquire((1, 2)) and a.acquire((1, 3))
    a.close()


def test_merge_keeps_the_highest_offset_per_identity() -> None:
    """Entries of several command lines' files: one per (dev, inode, fingerprint, length),
    with the highest offset, the latest ``seen``, retired if any saw it end."""
    entries = [FileState(1, 2, "aa", 10, 100, "/a", 5.0), FileState(1, 2, "aa", 10, 300, "/a", 1.0),
               FileState(1, 2, "bb", 10, 50, "/a", 1.0, retired=True),
               FileState(1, 2, "bb", 10, 40, "/a", 9.0), FileState(1, 3, "aa", 10, 7, "/b", 1.0)]
    got = {(e.ino, e.fp): (e.offset, e.seen, e.retired) for e in merge(entries)}
    assert got == {(2, "aa"): (300, 5.0, False), (2, "bb"): (50, 9.0, True), (3, "aa"): (7, 1.0, False)}


def test_store_loads_every_command_lines_offsets_and_prunes_stopped_ones(tmp_path: Path) -> None:
    """A store loads its own and the other command lines' files merged; after writing, prune()
    removes the files of command lines whose collector is gone, never a running one's."""
    state = str(tmp_path)
    old = CheckpointStore(state, ["/x/*.log"])
    old.save([FileState(1, 2, "aa", 10, 100, "/x/a.log", time.time())])
    old.close()
    running = CheckpointStore(state, ["/y/*.log"])
    running.save([FileState(1, 3, "cc", 10, 30, "/y/b.log", time.time())])
    new = CheckpointStore(state, ["/x/*.log", "/y/*.log"])
    assert {(e.ino, e.offset) for e in new.load()} == {(2, 100), (3, 30)}
    merged = new.merged()
    new.save(new.load())
    assert new.prune(merged) == [old.path]
    assert os.path.exists(running.path) and not os.path.exists(old.path)
    running.close()
    new.close()


def test_progress_says_unfinished_delivered_or_unknown(tmp_path: Path) -> None:
    """``checkpoint.progress`` (what rotate asks): unknown before any read, delivered once the
    end is committed, unfinished when the file grew — the highest offset of all files counts."""
    log = tmp_path / "p.log"
    log.write_bytes(b"a\nb\n")
    state = str(tmp_path / "state")
    assert checkpoint.progress(state, log.stat(), str(log)) is None
    run_once([str(log)], state)
    assert checkpoint.progress(state, log.stat(), str(log)) == "delivered"
    with open(log, "ab") as f:
        f.write(b"c\n")
    assert checkpoint.progress(state, log.stat(), str(log)) == "unfinished"
    run_once([str(tmp_path / "*.log")], state)  # another command line reads it
    assert checkpoint.progress(state, log.stat(), str(log)) == "delivered"


def test_held_back_lookalike_is_read_after_copy_wait(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotated name with the same content as a live file that is never truncated (a backup
    ``cp``, or a crash log that merely repeats) is held back only COPY_WAIT, then read whole:
    held is never lost."""
    monkeypatch.setattr(tail_discovery, "COPY_WAIT", 0.5)
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b'{"seq":%d,"pad":"%s"}\n' % (i, b"p" * 40) for i in range(50)))
    with TailRunner([str(tmp_path / "app.log*")], str(tmp_path / "state"), rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 50, 10)
        shutil.copyfile(log, tmp_path / "app.log.1")
        wait_for(lambda: len(r.sink.records) >= 100, 10, message="the copy read after COPY_WAIT")
        recs = r.stop()
    by_file: dict[str, list[int]] = {}
    for rec in recs:
        by_file.setdefault(Path(rec["source"]).name, []).append(rec["seq"])
    assert by_file == {"app.log": list(range(50)), "app.log.1": list(range(50))}


def test_identify_rules_without_an_event_loop(tmp_path: Path) -> None:
    """``generations``' rules on a source that never runs: the same inode with the same first
    bytes resumes at its offset; another inode with the same bytes but no rotated name is a
    new file (from 0); a rotated name with the same content is held back while the original
    is live, and is a copy read from where delivery ended once the original was truncated."""
    src = TailSource([str(tmp_path / "*.log")], str(tmp_path / "state"))
    try:
        body = b"".join(b"line %03d of the first file\n" % i for i in range(10))
        a = str(tmp_path / "a.log")
        g = src._new_gen((1, 10), body, 0, a)
        g.committed = g.emitted = 100
        assert src._identify((1, 10), len(body), body, a) == (g, 100, None)
        found = src._identify((1, 11), len(body), body, str(tmp_path / "b.log"))
        assert found is not None and found[1:] == (0, None) and found[0] is not g
        copy = tmp_path / "a.log.1"
        copy.write_bytes(body)
        fd = os.open(copy, os.O_RDONLY)
        try:
            g.retired = True
            found = src._identify((1, 12), len(body), body, str(copy), fd)
            assert found is not None and found[1:] == (100, None)
            assert src._identify((1, 13), len(body), body, str(tmp_path / "c.log"), fd,
                                 known_only=True) is None
        finally:
            os.close(fd)
    finally:
        src._store.close()


def test_copy_found_before_its_truncated_original_is_opened(tmp_path: Path) -> None:
    """A copytruncate copy looked at before the collector has opened its original (the
    original held back by the feedback guard, or later in the scan): the original is looked
    at by path, and, truncated, the copy is read from where delivery ended — not from 0."""
    body = b"".join(b"line %03d of the first file\n" % i for i in range(10))
    log = tmp_path / "app.log"
    log.write_bytes(body)
    st = log.stat()
    src = TailSource([str(tmp_path / "*.log")], str(tmp_path / "state"))
    try:
        g = src._new_gen((st.st_dev, st.st_ino), body, 0, str(log))
        g.committed = g.emitted = len(body)
        copy = tmp_path / "app.log.1"
        copy.write_bytes(body)
        log.write_bytes(b"")  # truncated in place, same inode
        fd = os.open(copy, os.O_RDONLY)
        try:
            found = src._identify((st.st_dev, st.st_ino + 10**6), len(body), body, str(copy), fd)
        finally:
            os.close(fd)
        assert found is not None and found[1:] == (len(body), None) and g.retired
    finally:
        src._store.close()
