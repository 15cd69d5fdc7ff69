"""Checkpoints: versioned JSON, atomic, one locked file per tailing set, corruption survived,
stale entries forgotten, ``unfinished()`` for ``logpipe rotate``."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from logpipe import checkpoint
from logpipe.checkpoint import CheckpointStore, FileState
from logpipe.errors import UsageError
from logpipe.sources import tail as tail_mod
from tests._tail_helpers import run_once
from tests.helpers import LOGPIPE


def test_roundtrip_is_versioned_json_with_identity_and_offset(tmp_path: Path) -> None:
    """save() writes ``{"version": 1, "files": [...]}`` with dev, inode, fingerprint, length and
    offset; load() gives the same entries back."""
    store = CheckpointStore(str(tmp_path), ["/var/log/*.log"])
    entries = [FileState(1, 2, "ab" * 8, 1024, 4096, "/var/log/a.log", 1700000000.0),
               FileState(1, 3, "cd" * 8, 10, 10, "/var/log/b.log", 1700000001.0, retired=True)]
    store.save(entries)
    doc = orjson.loads(Path(store.path).read_bytes())
    assert doc["version"] == 1 and doc["patterns"] == ["/var/log/*.log"]
    assert doc["files"][0] == {"dev": 1, "ino": 2, "fp": "ab" * 8, "fp_len": 1024, "offset": 4096,
                               "path": "/var/log/a.log", "seen": 1700000000.0, "retired": False}
    assert store.load() == entries
    assert Path(store.path).parent == tmp_path / "tail"
    assert not [p for p in os.listdir(tmp_path / "tail") if p.startswith(".tmp-")]
    store.close()


def test_tailing_sets_get_separate_files_and_the_same_set_is_locked(tmp_path: Path) -> None:
    """Different pattern sets use different files; the same set (in any order, relative or
    absolute) is refused while held, with a UsageError naming the holder; released on close."""
    a = CheckpointStore(str(tmp_path), ["/x/*.log", "/y/b.log"])
    b = CheckpointStore(str(tmp_path), ["/x/*.log"])
    assert a.path != b.path
    with pytest.raises(UsageError, match=rf"another logpipe collector \(pid {os.getpid()}\) is already"):
        CheckpointStore(str(tmp_path), ["/y/b.log", "/x/*.log"])
    a.close()
    CheckpointStore(str(tmp_path), ["/y/b.log", "/x/*.log"]).close()
    b.close()


@pytest.mark.parametrize("content", [
    b"", b"\x00" * 4096, b'{"version": 1, "files": [{"dev": 1', b"not json at all",
    b'{"version": 99, "files": []}', b"[1, 2, 3]", b'{"version": 1, "files": "nope"}',
], ids=["empty", "nuls", "truncated", "garbage", "future-version", "list", "bad-files"])
def test_corrupt_checkpoint_is_reported_once_and_survived(tmp_path: Path, content: bytes,
                                                          diag: io.BytesIO) -> None:
    """A corrupt/truncated/foreign checkpoint: one warning, the files are read from the start
    (nothing lost), and a valid checkpoint replaces it."""
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\n")
    state = tmp_path / "state"
    store = CheckpointStore(str(state), [str(log)])
    store.close()
    Path(store.path).write_bytes(content)
    recs = run_once([str(log)], str(state))
    assert [r["message"] for r in recs] == ["one", "two"]
    warnings = [orjson.loads(x) for x in diag.getvalue().splitlines()]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning" and "starting without it" in warnings[0]["message"]
    assert orjson.loads(Path(store.path).read_bytes())["files"][0]["offset"] == 8
    assert run_once([str(log)], str(state)) == []


def test_malformed_entries_are_skipped_not_fatal(tmp_path: Path) -> None:
    """Entries with missing or wrongly typed fields are dropped; the good ones load."""
    store = CheckpointStore(str(tmp_path), ["/a"])
    good = {"dev": 1, "ino": 2, "fp": "00", "fp_len": 1, "offset": 5}
    Path(store.path).write_bytes(orjson.dumps({"version": 1, "files": [
        good, {"dev": "x"}, 7, {"dev": 1, "ino": 2, "fp": "00", "fp_len": 1, "offset": -1}]}))
    assert [(e.dev, e.ino, e.offset) for e in store.load()] == [(1, 2, 5)]
    store.close()


def test_collector_cli_survives_garbage_checkpoint(tmp_path: Path) -> None:
    """End to end: a collector process started on a garbage checkpoint exits 0, emits every
    line, and says so once on stderr (a JSON diagnostic, no traceback)."""
    log = tmp_path / "a.log"
    log.write_bytes(b"x1\nx2\n")
    state = tmp_path / "state"
    store = CheckpointStore(str(state), [str(log)])
    store.close()
    Path(store.path).write_bytes(b"\x00garbage{{{")
    p = subprocess.run([*LOGPIPE, "collect", "--state-dir", str(state), "--once", str(log)],
                       capture_output=True, timeout=60, check=False)
    assert p.returncode == 0
    assert [orjson.loads(x)["message"] for x in p.stdout.splitlines()] == ["x1", "x2"]
    diags = [orjson.loads(x) for x in p.stderr.splitlines()]  # every stderr line is a diagnostic
    warned = [d for d in diags if d["level"] == "warning"]
    assert len(warned) == 1 and "corrupt" in warned[0]["message"]


def test_entries_of_files_gone_for_long_are_forgotten(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries not seen for FORGET_AFTER are dropped at the next save; live files' entries stay."""
    keep = tmp_path / "keep.log"
    gone = tmp_path / "gone.log"
    keep.write_bytes(b"k\n")
    gone.write_bytes(b"g\n")
    state = tmp_path / "state"
    pattern = str(tmp_path / "*.log")
    run_once([pattern], str(state))
    gone.unlink()
    monkeypatch.setattr(tail_mod, "FORGET_AFTER", -1.0)  # everything unseen is "long gone"
    src = tail_mod.TailSource([pattern], str(state), once=True)
    src._scan()
    src.save()
    src._store.close()
    paths = [e["path"] for e in orjson.loads(Path(src._store.path).read_bytes())["files"]]
    assert paths == [str(keep)]


def test_unfinished_is_cheap_and_tolerant(tmp_path: Path) -> None:
    """unfinished(): True only when a non-retired entry for that (dev, inode) has offset < size;
    a missing state dir, a corrupt file or an unknown file is simply False."""
    log = tmp_path / "r.log"
    log.write_bytes(b"0123456789")
    st = log.stat()
    state = tmp_path / "state"
    assert checkpoint.unfinished(str(state), st) is False
    store = CheckpointStore(str(state), ["/p"])
    store.save([FileState(st.st_dev, st.st_ino, "00", 1, 4, str(log), time.time())])
    assert checkpoint.unfinished(str(state), st) is True
    store.save([FileState(st.st_dev, st.st_ino, "00", 1, 10, str(log), time.time())])
    assert checkpoint.unfinished(str(state), st) is False
    store.save([FileState(st.st_dev, st.st_ino, "00", 1, 4, str(log), time.time(), retired=True)])
    assert checkpoint.unfinished(str(state), st) is False
    (Path(store.dir) / "zz.json").write_bytes(b"garbage")
    assert checkpoint.unfinished(str(state), st) is False
    store.close()


def test_unfinished_with_path_also_compares_the_fingerprint(tmp_path: Path) -> None:
    """Given the path, unfinished() uses the tailer's identity rule: an entry whose fingerprint
    is not the file's first bytes (its inode now holds another file) does not count; a
    matching one (also a short fingerprint of a file that grew since) does."""
    log = tmp_path / "r.log"
    log.write_bytes(b"0123456789\n" * 10)
    st = log.stat()
    state = tmp_path / "state"
    store = CheckpointStore(str(state), ["/p"])
    try:
        for fp, fp_len, expect in ((checkpoint.fingerprint(b"0123456789\n" * 10), 110, True),
                                   (checkpoint.fingerprint(b"0123"), 4, True),
                                   (checkpoint.fingerprint(b"abcd"), 4, False),
                                   (checkpoint.fingerprint(b"x" * 200), 200, False)):
            store.save([FileState(st.st_dev, st.st_ino, fp, fp_len, 50, str(log), time.time())])
            assert checkpoint.unfinished(str(state), st, str(log)) is expect, (fp_len, expect)
            assert checkpoint.unfinished(str(state), st) is True  # dev+inode only, as before
    finally:
        store.close()


def test_reader_api_lists_reads_and_matches_what_the_store_wrote(tmp_path: Path) -> None:
    """The public reader side (what ``logpipe status`` uses): ``checkpoint_files`` lists every
    tailing set's file, ``read_entries`` gives its entries back and raises ValueError for a
    foreign document, ``read_head`` + ``head_matches`` apply the fingerprint rule."""
    log = tmp_path / "a.log"
    log.write_bytes(b"first line\nsecond\n")
    st = log.stat()
    fp = checkpoint.fingerprint(b"first line\n")
    store = CheckpointStore(str(tmp_path), [str(log)])
    entry = FileState(st.st_dev, st.st_ino, fp, 11, 11, str(log), 1700000000.0)
    store.save([entry])
    store.close()
    (tmp_path / "tail" / "foreign.json").write_bytes(b'{"version": 99}')
    files = checkpoint.checkpoint_files(str(tmp_path))
    assert sorted(files) == files and store.path in files and len(files) == 2
    assert checkpoint.read_entries(store.path) == [entry]
    with pytest.raises(ValueError):
        checkpoint.read_entries(str(tmp_path / "tail" / "foreign.json"))
    head = checkpoint.read_head(str(log), st, 64)
    assert head == b"first line\nsecond\n"
    assert checkpoint.head_matches(head, fp, 11)
    assert not checkpoint.head_matches(head, fp, 12)
    assert not checkpoint.head_matches(b"first", fp, 11)  # shorter than the fingerprint
