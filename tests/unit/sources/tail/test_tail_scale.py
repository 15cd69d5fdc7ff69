"""The tail source at scale: files beyond the open-file cap, inotify wake-ups and the polling
fallback, lines of many files in one batch, the name and glob rules those rest on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logpipe import checkpoint
from logpipe.sources.tail import reader as tail_reader
from logpipe.sources.tail.globs import expand, expand_pattern, matches
from logpipe.sources.tail.names import is_rotated_name, rotated_from
from logpipe.sources.tail.notify import DirWatcher
from tests._tail_helpers import TailRunner, run_once
from tests.helpers import wait_for


def _inotify() -> bool:
    try:
        DirWatcher().close()
    except OSError:
        return False
    return True


needs_inotify = pytest.mark.skipif(not _inotify(), reason="no inotify here")


def _offsets(state: Path) -> dict[str, int]:
    store = checkpoint.CheckpointStore(str(state), [])
    try:
        return {st.path: st.offset for st in store.load()}
    finally:
        store.close()


def test_files_beyond_the_cap_are_read_without_waiting_for_idle_files_to_go_cold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 40 files and 4 fds, a file read to its end gives its slot to a waiting file at
    once: every file is read although no file ever goes cold (COLD_AFTER pushed out of
    reach — before, a slot was freed only by a file cold for COLD_AFTER)."""
    monkeypatch.setattr(tail_reader, "COLD_AFTER", 1e6)
    for i in range(40):
        (tmp_path / f"f{i:02d}.log").write_bytes(b"f%d first\n" % i)
    with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state"), max_open=4,
                    notify=False) as r:
        wait_for(lambda: len(r.sink.records) >= 40, 30, message="40 first lines")
        assert r.source._open <= 4
        for i in (0, 17, 39):  # closed meanwhile: reopened when they grow
            with open(tmp_path / f"f{i:02d}.log", "ab") as f:
                f.write(b"f%d second\n" % i)
        wait_for(lambda: len(r.sink.records) >= 43, 30, message="43 records")
        assert r.source._open <= 4
        recs = r.stop()
    got = sorted(x["message"] for x in recs)
    assert got == sorted([f"f{i} first" for i in range(40)] + [f"f{i} second" for i in (0, 17, 39)])


def test_once_reads_every_file_beyond_the_open_cap(tmp_path: Path) -> None:
    """``--once`` with more files than fds reads every file, a cap's worth at a time, and
    commits each one's offset."""
    for i in range(25):
        (tmp_path / f"f{i:02d}.log").write_bytes(b"a%d\nb%d\n" % (i, i))
    recs = run_once([str(tmp_path / "*.log")], str(tmp_path / "state"), max_open=3)
    assert sorted(r["message"] for r in recs) == sorted(
        [f"a{i}" for i in range(25)] + [f"b{i}" for i in range(25)])
    offsets = _offsets(tmp_path / "state")
    assert all(offsets[str(tmp_path / f"f{i:02d}.log")] == len(b"a%d\nb%d\n" % (i, i))
               for i in range(25))


@needs_inotify
def test_a_line_in_a_quiet_file_is_seen_from_inotify_not_the_rescan(tmp_path: Path) -> None:
    """With inotify, a new line in a cold file (no reader polls it) and a new file arrive
    although no rescan runs in the test's time (rescan interval 600 s)."""
    for i in range(20):
        (tmp_path / f"q{i:02d}.log").write_bytes(b"q%d\n" % i)
    with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state"),
                    rescan_interval=600.0) as r:
        wait_for(lambda: len(r.sink.records) >= 20, 10, message="20 first lines")
        src = r.source
        wait_for(lambda: not src._hot, 10, message="every file cold")
        with open(tmp_path / "q07.log", "ab") as f:
            f.write(b"late\n")
        (tmp_path / "new.log").write_bytes(b"brand new\n")
        wait_for(lambda: len(r.sink.records) >= 22, 10, message="22 records")
        recs = r.stop()
    assert sorted(x["message"] for x in recs[20:]) == ["brand new", "late"]


def test_polling_fallback_sees_a_line_in_a_quiet_file_at_the_rescan(tmp_path: Path) -> None:
    """Without inotify (``notify=False``: what non-Linux systems get) the rescan's ``stat``
    finds the line in a cold file, and a rename rotation is still followed."""
    log = tmp_path / "app.log"
    log.write_bytes(b"one\n")
    with TailRunner([str(log)], str(tmp_path / "state"), notify=False, rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 10)
        src = r.source
        assert src._watcher is None
        wait_for(lambda: not src._hot, 10, message="file cold")
        with open(log, "ab") as f:
            f.write(b"two\n")
        wait_for(lambda: len(r.sink.records) >= 2, 10, message="line two")
        os.rename(log, tmp_path / "app.log.1")
        log.write_bytes(b"three\n")
        wait_for(lambda: len(r.sink.records) >= 3, 10, message="line three")
        recs = r.stop()
    assert [x["message"] for x in recs] == ["one", "two", "three"]


def test_one_pass_sends_the_lines_of_many_files_as_few_batches(tmp_path: Path) -> None:
    """200 files found in one pass go out as a handful of batches, not one per file, and
    each file's own checkpoint offset is committed by the shared ack."""
    for i in range(200):
        (tmp_path / f"m{i:03d}.log").write_bytes(b'{"message":"m%d"}\n' % i)
    with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state")) as r:
        wait_for(lambda: len(r.sink.records) >= 200, 20, message="200 records")
        batches = r.sink.batches
        r.stop()
    assert batches <= 10, batches
    offsets = _offsets(tmp_path / "state")
    assert all(offsets[str(tmp_path / f"m{i:03d}.log")] == len(b'{"message":"m%d"}\n' % i)
               for i in range(200))


@pytest.mark.parametrize("name", [
    "app.log.1", "app.log-20261201", "app.log.20261201T000000", "app-out__2026-12-01_00-00-00.log",
    "api-error-1.log", "svc00001.log", "a__b__c.log.gz", "x_.log", ".hidden.log.2"])
def test_rotated_from_names_every_original_is_rotated_name_accepts(name: str) -> None:
    """``rotated_from`` (the index lookup for copytruncate copies) contains every name
    ``is_rotated_name`` would accept as the original — checked against all prefixes and
    prefix+suffix combinations of the name."""
    originals = {name[:i] + name[j:] for i in range(1, len(name)) for j in range(i, len(name) + 1)}
    accepted = {o for o in originals if is_rotated_name(name, o)}
    assert accepted <= rotated_from(name)


def test_glob_match_of_an_event_name_agrees_with_the_glob_pass(tmp_path: Path) -> None:
    """``matches`` (for inotify event names) says yes exactly for the paths a glob pass
    finds: hidden files, archives, deeper or shallower directories, ``**`` levels."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    names = ["a.log", ".h.log", "a.log.gz", "b.txt", "d/c.log", "d/sub/e.log", "d/.f.log", "a.log.1"]
    for n in names:
        (tmp_path / n).write_bytes(b"x\n")
    for pattern in ["*.log", "*.log*", "**/*.log", "d/*.log", str(tmp_path / "a.log")]:
        pat = pattern if os.path.isabs(pattern) else str(tmp_path / pattern)
        globs = expand_pattern(pat)
        found = set(expand(globs))
        candidates = {str(tmp_path / n) for n in names}
        assert {p for p in candidates if matches(globs, p)} == found, pattern


@needs_inotify
def test_a_watched_directory_renamed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    """``mv logs logs.old; mkdir logs``: the watch that followed the old directory is dropped
    and the new one is looked at — a file written there arrives within seconds (not at the
    10 s full rescan), and the old file's last line is still read."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(b"a1\n")
    with TailRunner([str(logs / "*.log")], str(tmp_path / "state"), rescan_interval=0.2) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 10)
        os.rename(logs, tmp_path / "logs.old")
        with open(tmp_path / "logs.old" / "a.log", "ab") as f:
            f.write(b"a2\n")
        wait_for(lambda: len(r.sink.records) >= 2, 5, message="a2 (the move handled)")
        logs.mkdir()
        (logs / "b.log").write_bytes(b"b1\n")
        wait_for(lambda: len(r.sink.records) >= 3, 5, message="b1")
        recs = r.stop()
    assert sorted(x["message"] for x in recs) == ["a1", "a2", "b1"]
