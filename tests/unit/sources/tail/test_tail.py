"""TailSource: real files, real rotation, real processes and signals (kill -9 included).

In-process tests run ``TailSource`` through ``logpipe.pipeline.run`` into an in-memory sink;
end-to-end tests run the real ``logpipe collect`` (NDJSON on stdout) and read its output.
Figures (duplicates after kill -9, copytruncate window) are printed: ``pytest -s``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from logpipe import checkpoint, diagnostics, identity, record
from logpipe.errors import UsageError
from logpipe.multiline import Joiner
from logpipe.sources import tail as tail_mod
from logpipe.sources._lines import TRUNCATION_MARKER
from logpipe.sources.tail import reader as tail_reader
from tests._tail_helpers import HELPER, TailRunner, collector_stdout, file_on_inode, run_once, seqs
from tests.helpers import LOGPIPE, wait_for


def collector(state: Path, *patterns: str, once: bool = False) -> subprocess.Popen[bytes]:
    """Start ``logpipe collect PATTERN... [--once]`` (NDJSON on stdout; stderr to
    ``<state>.stderr`` so a chatty stderr can never block it)."""
    args = [*LOGPIPE, "collect", "--state-dir", str(state)]
    if once:
        args.append("--once")
    with open(f"{state}.stderr", "ab") as err:
        return subprocess.Popen([*args, *patterns], stdout=subprocess.PIPE, stderr=err)


def writer(path: Path, report: Path, **opts: Any) -> subprocess.Popen[bytes]:
    """Start the sequence writer (see tests/_tail_helpers.py)."""
    args = [sys.executable, HELPER, "write", str(path), "--report", str(report)]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(args)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal a process and wait for it."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(30)


def stderr_of(state: Path) -> str:
    """What the collectors using ``state`` wrote on stderr."""
    p = Path(f"{state}.stderr")
    return p.read_text() if p.exists() else ""


def messages(recs: list[dict[str, Any]]) -> list[Any]:
    return [r.get("message") for r in recs]


# --- basics ---------------------------------------------------------------------------------------
def test_once_reads_all_emits_partial_tail_and_commits(tmp_path: Path) -> None:
    """--once reads every matched file from 0, emits the unterminated last line too, names
    records from the file name, and commits so a second --once reads nothing again."""
    (tmp_path / "api-out-3.log").write_bytes(b'{"msg":"one","level":"warn"}\nplain two\nthr')
    (tmp_path / "worker-error.log").write_bytes(
        b'boom\n{"message":"own","service":"svc","host":"h2","source":"s2","instance_id":"7"}\n')
    state = tmp_path / "state"
    recs = run_once([str(tmp_path / "*.log")], str(state))
    by_msg = {r["message"]: r for r in recs}
    assert sorted(by_msg) == ["boom", "one", "own", "plain two", "thr"]
    # SPEC §1: source = the file path, host = this host; the line's own fields are never
    # overwritten, only what is missing is filled in
    for r in recs:
        if r["message"] != "own":
            assert r["host"] == identity.hostname() and r["source"].startswith(str(tmp_path))
    own = by_msg["own"]
    assert (own["service"], own["host"], own["source"], own["instance_id"]) == ("svc", "h2", "s2", "7")
    assert "pid" not in by_msg["boom"]  # a file has no writer pid to offer
    assert by_msg["one"]["level"] == "warning" and by_msg["one"]["service"] == "api"
    assert by_msg["one"]["pm_id"] == 3 and by_msg["one"]["instance_id"] == "3"
    assert by_msg["boom"]["level"] == "error" and by_msg["boom"]["service"] == "worker"
    assert by_msg["plain two"]["source"] == str(tmp_path / "api-out-3.log")
    assert run_once([str(tmp_path / "*.log")], str(state)) == []


def test_new_file_with_three_lines_within_50ms_is_delivered(tmp_path: Path) -> None:
    """A file created after start and given 3 lines within 50 ms is found by the re-scan
    (≤ 1 s) and all 3 lines arrive, read from offset 0."""
    with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state"), rescan_interval=1.0) as r:
        wait_for(lambda: r.source._scanned, 5, message="the first scan (no files present)")
        t0 = time.monotonic()
        with open(tmp_path / "new.log", "ab", buffering=0) as f:
            for i in range(3):
                f.write(b"line %d\n" % i)
                time.sleep(0.015)
        wait_for(lambda: len(r.sink.records) >= 3, 5, message="3 records")
        elapsed = time.monotonic() - t0
        recs = r.stop()
    assert messages(recs) == ["line 0", "line 1", "line 2"]
    assert elapsed < 2.5, f"new file took {elapsed:.2f}s to deliver"


def test_partial_line_across_restart_is_one_record(tmp_path: Path) -> None:
    """``abc`` (no newline), collector stopped and restarted, then ``def\\n``: exactly one
    record ``abcdef`` — the partial line was neither emitted nor checkpointed."""
    state = tmp_path / "state"
    (tmp_path / "a.log").write_bytes(b"abc")
    (tmp_path / "marker.log").write_bytes(b"marker\n")
    pattern = str(tmp_path / "*.log")
    p1 = collector(state, pattern)
    with collector_stdout(p1) as got1:
        # marker.log is read after a.log in the same pass (glob order): "marker" out means
        # "abc" was read (and held, no newline)
        wait_for(lambda: any(r.get("message") == "marker" for r in got1()), 10, message="marker")
        assert stop(p1) == 0
    assert messages(got1()) == ["marker"]
    with open(tmp_path / "a.log", "ab") as f:
        f.write(b"def\n")
    p2 = collector(state, pattern)
    with collector_stdout(p2) as got2:
        wait_for(lambda: any(r.get("message") == "abcdef" for r in got2()), 10, message="abcdef")
        time.sleep(0.5)
        assert stop(p2) == 0
    assert messages(got2()) == ["abcdef"]


def test_inode_reuse_is_not_mistaken_for_the_old_file(tmp_path: Path) -> None:
    """``rm a.log`` then ``b.log`` on the same inode: b.log is read from 0 (no stale offset,
    0 lines skipped), whether it is longer or shorter than a.log's committed offset."""
    state = tmp_path / "state"
    pattern = str(tmp_path / "*.log")
    a = tmp_path / "a.log"
    a.write_bytes(b"".join(b"old line %03d\n" % i for i in range(50)))
    assert len(run_once([pattern], str(state))) == 50
    old_ino = a.stat().st_ino
    for n_lines in (80, 5):  # longer, then shorter than the old committed offset
        a.unlink() if a.exists() else None
        b = file_on_inode(tmp_path, old_ino, "b.log")
        b.write_bytes(b"".join(b"new line %03d\n" % i for i in range(n_lines)))
        recs = run_once([pattern], str(state))
        assert messages(recs) == [f"new line {i:03d}" for i in range(n_lines)]
        b.rename(a)  # next round: a.log is this file, committed to its end
        assert run_once([pattern], str(state)) == []
        a.unlink()


def test_live_files_sharing_a_banner_are_both_read(tmp_path: Path) -> None:
    """Two live files (different inodes) that start with the same 2 KiB banner are two files,
    not a file and its copy: every line of both arrives — also when the second one holds only
    the banner at first and grows apart later."""
    head = b"".join(b'{"message": "starting worker, loading config section %d"}\n' % i for i in range(40))
    (tmp_path / "w-out-1.log").write_bytes(head + b'{"message": "only in 1"}\n')
    (tmp_path / "w-out-2.log").write_bytes(head + b'{"message": "only in 2"}\n')
    recs = run_once([str(tmp_path / "*.log")], str(tmp_path / "state"))
    assert len(recs) == 82
    assert sorted(m for m in messages(recs) if m.startswith("only")) == ["only in 1", "only in 2"]

    later = tmp_path / "later"
    later.mkdir()
    (later / "w-out-1.log").write_bytes(head + b'{"message": "only in 1"}\n')
    (later / "w-out-2.log").write_bytes(head)
    with TailRunner([str(later / "*.log")], str(tmp_path / "state2"), rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 41, 5)
        with open(later / "w-out-2.log", "ab") as f:
            f.write(b'{"message": "only in 2"}\n')
        wait_for(lambda: len(r.sink.records) >= 82, 10, message="82 records")
        time.sleep(0.3)
        recs = r.stop()
    assert len(recs) == 82
    assert sorted(m for m in messages(recs) if m.startswith("only")) == ["only in 1", "only in 2"]


def test_copy_of_a_live_file_is_not_read_until_the_original_is_truncated(tmp_path: Path) -> None:
    """``cp app.log app.log.1`` (glob matches both) delivers nothing twice — neither while the
    original still holds the content, nor after it is truncated when the original had already
    delivered more than the copy holds; the copy's undelivered tail is read once."""
    import shutil

    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b'{"seq":%d,"pad":"%s"}\n' % (i, b"p" * 60) for i in range(100)))
    with TailRunner([str(tmp_path / "app.log*")], str(tmp_path / "state"), rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 100, 5)
        # round 1: the copy ends beyond what was delivered -> its tail is read from the copy
        r.sink.stall(r.loop)
        with open(log, "ab") as f:
            f.write(b"".join(b'{"seq":%d}\n' % i for i in range(100, 150)))
        shutil.copyfile(log, tmp_path / "app.log.1")
        wait_for(lambda: str(tmp_path / "app.log.1") in r.source._by_path, 5,
                 message="the copy seen (held back) before the truncate")
        os.truncate(log, 0)
        r.sink.resume(r.loop)
        with open(log, "ab") as f:
            f.write(b"".join(b'{"seq":%d,"pad":"%s"}\n' % (i, b"q" * 60) for i in range(150, 160)))
        wait_for(lambda: len(r.sink.records) >= 160, 5, message="160 records")
        # round 2: the original delivers lines the copy does not hold, then is truncated
        shutil.copyfile(log, tmp_path / "app.log.2")
        wait_for(lambda: str(tmp_path / "app.log.2") in r.source._by_path, 5,
                 message="the second copy seen (held back)")
        with open(log, "ab") as f:
            f.write(b"".join(b'{"seq":%d}\n' % i for i in range(160, 170)))
        wait_for(lambda: len(r.sink.records) >= 170, 5, message="170 records")
        os.truncate(log, 0)
        with open(log, "ab") as f:
            f.write(b"".join(b'{"seq":%d}\n' % i for i in range(170, 175)))
        wait_for(lambda: len(r.sink.records) >= 175, 5, message="175 records")
        time.sleep(0.5)
        recs = r.stop()
    assert sorted(seqs(recs)) == list(range(175))


def test_truncate_and_regrow_past_offset_between_polls_is_detected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file truncated and rewritten *longer* than the old offset between two polls (size
    alone sees nothing wrong — rsyslog#511) is detected by its fingerprint and read from 0:
    the new content arrives whole, nothing from the old is repeated, no line starts mid-way."""
    monkeypatch.setattr(tail_reader, "COLD_AFTER", 0.1)  # idle quickly: only the rescan looks
    log = tmp_path / "r.log"
    log.write_bytes(b"".join(b'{"seq":%d,"gen":"old"}\n' % i for i in range(50)))
    with TailRunner([str(log)], str(tmp_path / "state"), rescan_interval=1.0) as r:
        wait_for(lambda: len(r.sink.records) >= 50, 5)
        (f_log,) = r.source._files.values()
        # cold: the reader no longer polls it, so the next look is the rescan's stat (which
        # sees only a bigger size) — the fingerprint, not the size, must tell
        wait_for(lambda: f_log.next_poll == tail_mod._COLD, 5, message="file gone cold")
        with open(log, "r+b") as f:
            f.truncate(0)
            f.write(b"".join(b'{"seq":%d,"gen":"new"}\n' % i for i in range(100, 200)))
        wait_for(lambda: len(r.sink.records) >= 150, 5, message="150 records")
        time.sleep(0.3)
        assert r.source.truncations == 1
        recs = r.stop()
    assert seqs(recs) == list(range(50)) + list(range(100, 200))
    assert [x["gen"] for x in recs] == ["old"] * 50 + ["new"] * 100


def test_excluded_files_are_never_opened(tmp_path: Path) -> None:
    """Files the ``is_excluded`` hook (the feedback guard) vetoes are never opened or read;
    the hook sees each candidate's path and stat."""
    (tmp_path / "app.log").write_bytes(b"mine\n")
    (tmp_path / "own.log").write_bytes(b"logpipe's own output\n")
    asked: list[tuple[str, int]] = []

    def excluded(path: str, st: os.stat_result) -> bool:
        asked.append((path, st.st_ino))
        return path.endswith("own.log")

    with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state"), is_excluded=excluded,
                    rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 5)
        with open(tmp_path / "own.log", "ab") as f:
            f.write(b"more of logpipe's own output\n")
        # own.log grew: looked at again (rescan or inotify event), and still not opened
        wait_for(lambda: sum(p.endswith("own.log") for p, _ in asked) >= 2, 5,
                 message="own.log asked about again")
        held = _open_paths()
        recs = r.stop()
    assert messages(recs) == ["mine"]
    assert not any(h.endswith("own.log") for h in held)
    assert (str(tmp_path / "own.log"), (tmp_path / "own.log").stat().st_ino) in asked


def test_copytruncate_while_down_copy_resumes_twin_is_read(tmp_path: Path) -> None:
    """copytruncate while no collector runs: after the restart the copy (matched by the glob)
    is recognised from the checkpoint — fingerprint *and* the stored sample of the last line
    read — and only its undelivered tail is read; the truncated original is read from 0; a
    different file sharing the first 150 lines (a twin) is read whole."""
    state = tmp_path / "state"
    pattern = str(tmp_path / "app.log*")
    old = [b'{"seq":%d,"pad":"%s"}\n' % (i, b"o" * 40) for i in range(200)]
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(old))
    assert len(run_once([pattern], str(state))) == 200
    with open(log, "ab") as f:
        f.write(b"".join(b'{"seq":%d}\n' % i for i in range(200, 220)))
    import shutil
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    log.write_bytes(b"".join(b'{"seq":%d}\n' % i for i in range(300, 305)))
    (tmp_path / "app.log.twin").write_bytes(
        b"".join(old[:150]) + b"".join(b'{"twin":%d,"pad":"%s"}\n' % (i, b"t" * 60) for i in range(100)))
    recs = run_once([pattern], str(state))
    by_source: dict[str, list[Any]] = {}
    for rec in recs:
        by_source.setdefault(Path(rec["source"]).name, []).append(rec.get("seq", rec.get("twin")))
    assert by_source["app.log.1"] == list(range(200, 220))
    assert by_source["app.log"] == list(range(300, 305))
    assert by_source["app.log.twin"] == list(range(150)) + list(range(100))


def test_double_star_is_recursive_to_depth_8(tmp_path: Path) -> None:
    """``root/**/*.log`` matches files 0 to 8 directory levels below root (Filebeat's cap) and
    not deeper; ``root/**`` means ``root/**/*``; a new file 5 levels down is found by the
    rescan; two ``**`` in one pattern are refused with a one-line UsageError."""
    root = tmp_path / "root"
    d = root
    for depth in range(11):
        d.mkdir()
        (d / f"d{depth}.log").write_bytes(b"at %d\n" % depth)
        (d / f"d{depth}.txt").write_bytes(b"txt %d\n" % depth)
        d = d / f"l{depth + 1}"
    recs = run_once([str(root / "**" / "*.log")], str(tmp_path / "s1"))
    assert sorted(messages(recs)) == [f"at {i}" for i in range(9)]
    recs = run_once([str(root / "**")], str(tmp_path / "s2"))
    assert sorted(messages(recs)) == sorted([f"at {i}" for i in range(9)] +
                                            [f"txt {i}" for i in range(9)])
    with TailRunner([str(root / "**" / "*.log")], str(tmp_path / "s1"), rescan_interval=0.1) as r:
        new = root / "l1" / "l2" / "l3" / "l4" / "l5" / "new.log"
        new.write_bytes(b"late\n")
        wait_for(lambda: r.sink.messages() == ["late"], 10, message="new file 5 levels down")
        recs = r.stop()
    assert messages(recs) == ["late"]
    with pytest.raises(UsageError, match=r"at most one '\*\*'"):
        tail_mod.TailSource([str(root / "**" / "x" / "**" / "*.log")], str(tmp_path / "s3"))


def test_glob_skips_compressed_rotated_files(tmp_path: Path) -> None:
    """``app.log*`` matches ``app.log.1`` (read) but not the compressed archives next to it
    (``.zst``, ``.gz``): those are never read as text."""
    import gzip

    import zstandard

    (tmp_path / "app.log").write_bytes(b"live\n")
    (tmp_path / "app.log.1").write_bytes(b"rotated\n")
    (tmp_path / "app.log.20261123T000000.zst").write_bytes(zstandard.compress(b"old\n" * 100))
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(b"older\n" * 100))
    recs = run_once([str(tmp_path / "app.log*")], str(tmp_path / "state"))
    assert sorted(messages(recs)) == ["live", "rotated"]


@pytest.mark.parametrize("joiner", [None, Joiner], ids=["plain", "multiline-joiner"])
def test_5mb_line_is_truncated_and_flagged_and_the_next_100_arrive_once(tmp_path: Path,
                                                                        joiner: Any) -> None:
    """A 5 MB line written mid-file in pieces (while tailing) becomes one record cut at
    max_line_bytes with ``truncated: true``; the 100 lines after it arrive exactly once, and
    the checkpoint moves past it (a restart re-reads nothing) — with or without the
    multiline joiner the collector uses."""
    state = tmp_path / "state"
    log = tmp_path / "big.log"
    log.write_bytes(b"before\n")
    with TailRunner([str(log)], str(state), joiner_factory=joiner) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 5)
        with open(log, "ab", buffering=0) as f:
            for _ in range(5):
                f.write(b"y" * (1 << 20))
                time.sleep(0.1)
            f.write(b"\n" + b"".join(b"after %03d\n" % i for i in range(100)))
        wait_for(lambda: len(r.sink.records) >= 102, 10, message="102 records")
        time.sleep(0.3)
        recs = r.stop()
    assert len(recs) == 102
    big = recs[1]
    assert big[record.TRUNCATED] is True
    assert big["message"].encode() == b"y" * (1 << 20) + TRUNCATION_MARKER
    assert messages(recs[2:]) == [f"after {i:03d}" for i in range(100)]
    assert not any(record.TRUNCATED in x for x in recs[2:])
    assert run_once([str(log)], str(state)) == []


def test_a_cut_line_ends_the_multiline_group_held_before_it(tmp_path: Path) -> None:
    """With the multiline joiner, a line cut at max_line_bytes is never joined: the traceback
    held before it goes out as one record (not flagged), the cut line is its own record with
    ``truncated: true`` and the marker, the lines after it are read normally, and the
    checkpoint ends at the file's end (a second run reads nothing)."""
    log = tmp_path / "tb.log"
    state = tmp_path / "state"
    long = b"  " + b"z" * 200
    log.write_bytes(b"Traceback (most recent call last):\n"
                    + b'  File "app.py", line 1, in <module>\n'
                    + long + b"\n" + b"ValueError: boom\n" + b"done\n")
    recs = run_once([str(log)], str(state), joiner_factory=Joiner, max_line_bytes=64)
    assert messages(recs) == [
        'Traceback (most recent call last):\n  File "app.py", line 1, in <module>',
        (long[:64] + TRUNCATION_MARKER).decode(),
        "ValueError: boom",
        "done",
    ]
    assert [x.get(record.TRUNCATED, False) for x in recs] == [False, True, False, False]
    assert run_once([str(log)], str(state), joiner_factory=Joiner, max_line_bytes=64) == []


def test_invalid_utf8_and_nul_bytes_are_kept_never_fatal(tmp_path: Path) -> None:
    """Invalid UTF-8 becomes U+FFFD, NUL bytes survive inside messages, a JSON line with a bad
    byte still parses — and the lines after them are read."""
    log = tmp_path / "odd.log"
    log.write_bytes(b"bad \xff\xfe bytes\n" + b"nul\x00inside\n" + b'{"msg":"j\xffson","n":1}\n'
                    + b"\x00\x00\x00\n" + b"fine\n")
    recs = run_once([str(log)], str(tmp_path / "state"))
    assert messages(recs) == ["bad \ufffd\ufffd bytes", "nul\x00inside", "j\ufffdson", "\x00\x00\x00", "fine"]
    assert recs[2]["n"] == 1
    for r in recs:  # every record still encodes as one NDJSON line
        assert b"\n" not in record.dumps(r)


def test_deleted_while_open_is_drained_and_closed(tmp_path: Path) -> None:
    """A file deleted while the pipeline is stalled is still read to its end through the open
    fd (its unterminated last line included), then closed — no deleted file is held open."""
    log = tmp_path / "gone.log"
    log.write_bytes(b"first\n")
    with TailRunner([str(log)], str(tmp_path / "state"), rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 5)
        r.sink.stall(r.loop)
        with open(log, "ab") as f:
            f.write(b"".join(b'{"seq":%d}\n' % i for i in range(50_000)) + b"last-partial")
        log.unlink()
        # the scan sees the path gone while the reader is blocked
        wait_for(lambda: all(f.path is None for f in list(r.source._files.values())), 10,
                 message="deletion noticed while stalled")
        r.sink.resume(r.loop)
        wait_for(lambda: len(r.sink.records) >= 50_002, 20, message="all lines")
        wait_for(lambda: not _holds_deleted(), 5, message="fd closed")
        recs = r.stop()
    assert seqs(recs) == list(range(50_000))
    assert recs[-1]["message"] == "last-partial"


#: A writer that appends each line it reads on stdin to a file it opened once (never reopens).
LINE_WRITER = ("import sys\n"
               "f = open(sys.argv[1], 'ab', buffering=0)\n"
               "for line in sys.stdin.buffer:\n"
               "    f.write(line)\n"
               "    print('ok', flush=True)\n")


def test_renamed_away_file_still_written_is_not_closed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A file renamed to a name no glob matches while its writer (another process, not yet
    reopened) keeps it open for writing stays followed past the idle-close spell: a line the
    writer sends after a long quiet spell still arrives, exactly once. Once the writer has
    closed it, the file is closed after the idle spell (no fd held for ever)."""
    monkeypatch.setattr(tail_reader, "DETACHED_IDLE_CLOSE", 0.3)
    log = tmp_path / "app.log"
    log.touch()
    w = subprocess.Popen([sys.executable, "-c", LINE_WRITER, str(log)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert w.stdin is not None and w.stdout is not None

    def send(text: bytes) -> None:
        assert w.stdin is not None and w.stdout is not None
        w.stdin.write(text + b"\n")
        w.stdin.flush()
        assert w.stdout.readline() == b"ok\n"

    try:
        with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state"),
                        rescan_interval=0.1) as r:
            send(b"one")
            wait_for(lambda: r.sink.messages() == ["one"], 10, message="first line")
            (f,) = r.source._files.values()
            log.rename(tmp_path / "app.log.1")  # *.log does not match it: detached
            wait_for(lambda: f.path is None, 10, message="rename noticed")
            detached = f.detached_at
            # the idle spell passed and the writer check postponed the close (twice, so the
            # file sat well past DETACHED_IDLE_CLOSE at EOF)
            wait_for(lambda: f.detached_at > detached, 10, message="first postponement")
            again = f.detached_at
            wait_for(lambda: f.detached_at > again, 10, message="second postponement")
            assert f.fd is not None and f.key in r.source._files
            send(b"two")
            wait_for(lambda: r.sink.messages() == ["one", "two"], 10, message="late line")
            w.stdin.close()
            assert w.wait(10) == 0
            wait_for(lambda: f.key not in r.source._files and f.fd is None, 10,
                     message="closed once nobody writes it")
            recs = r.stop()
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        w.stdin.close()
        w.stdout.close()
    assert [x["message"] for x in recs] == ["one", "two"]


def _open_paths() -> list[str]:
    """What this process's file descriptors point at."""
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            out.append(os.readlink(fd))
        except OSError:  # closed meanwhile (e.g. the listing's own fd)
            continue
    return out


def _holds_deleted() -> bool:
    return any(p.endswith("gone.log (deleted)") for p in _open_paths())


def test_backpressure_keeps_rotation_tracking_and_new_files(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With the sink stalled, the reader pauses but discovery and rotation tracking go on:
    a file renamed away (name not matched) and its successor are both tracked while stalled
    and read in full after the sink resumes — the renamed file has no give-up timer while it
    has unread data (stalled far longer than the idle-close spell, here cut to 0.2 s);
    nothing is checkpointed while stalled."""
    monkeypatch.setattr(tail_reader, "DETACHED_IDLE_CLOSE", 0.2)
    log = tmp_path / "app.log"
    log.write_bytes(b'{"seq":0}\n')
    state = tmp_path / "state"
    with TailRunner([str(log)], str(state), rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 5)
        wait_for(lambda: _checkpoint_offsets(state) == {str(log): 10}, 5, message="first checkpoint")
        r.sink.stall(r.loop)
        with open(log, "ab") as f:
            f.write(b"".join(b'{"seq":%d}\n' % i for i in range(1, 40_001)))
        (f_log,) = r.source._files.values()
        wait_for(lambda: f_log.pos > 10, 5, message="the reader into the new lines (then stalled)")
        os.rename(log, tmp_path / "app.log.1")
        with open(tmp_path / "app.log.1", "ab") as f:  # the writer's old fd, still writing
            f.write(b"".join(b'{"seq":%d}\n' % i for i in range(40_001, 40_101)))
        log.write_bytes(b"".join(b'{"seq":%d}\n' % i for i in range(40_101, 41_000)))
        ino_old = (tmp_path / "app.log.1").stat().st_ino
        ino_new = log.stat().st_ino
        # the scanner (own task) notices the rename and the successor while the reader waits
        wait_for(lambda: {ino_old, ino_new} <= {e["ino"] for e in _checkpoint_entries(state)},
                 10, message="rename and successor tracked while stalled")
        (f_old,) = [f for f in r.source._files.values() if f.key[1] == ino_old]
        wait_for(lambda: f_old.path is None, 10, message="rename noticed")
        stalled_at = time.monotonic()
        wait_for(lambda: time.monotonic() - stalled_at > 1.0, 5, message="a long stall")
        cp = {e["ino"]: e["offset"] for e in _checkpoint_entries(state)}
        assert cp[ino_old] == 10, "checkpoint advanced while the sink was stalled"
        assert cp.get(log.stat().st_ino, 0) == 0
        r.sink.resume(r.loop)
        wait_for(lambda: len(r.sink.records) >= 41_000, 20, message="all records")
        recs = r.stop()
    assert sorted(seqs(recs)) == list(range(41_000))


def _checkpoint_entries(state: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in (state / "tail").glob("*.json"):
        out.extend(orjson.loads(p.read_bytes())["files"])
    return out


def _checkpoint_offsets(state: Path) -> dict[str, int]:
    return {e["path"]: e["offset"] for e in _checkpoint_entries(state) if not e.get("retired")}


def test_multiline_joiner_commits_only_lines_that_left_it(tmp_path: Path) -> None:
    """With a joiner, a held group is not checkpointed: a restart while a traceback is held
    re-reads it, and the joined record arrives once, whole."""
    class PairJoiner:
        """Joins each 'A' line with the line after it (a trivial joiner)."""

        def __init__(self) -> None:
            self.held: tuple[bytes, int] | None = None
            self.idle_deadline: float | None = None

        @property
        def pending(self) -> int:
            return 0 if self.held is None else 1

        def push(self, line: bytes, end: int) -> list[tuple[bytes, int]]:
            if self.held is not None:
                joined = (self.held[0] + b"\n" + line, end)
                self.held = None
                self.idle_deadline = None
                return [joined]
            if line.startswith(b"A"):
                self.held = (line, end)
                self.idle_deadline = time.monotonic() + 30
                return []
            return [(line, end)]

        def flush(self) -> list[tuple[bytes, int]]:
            out = [self.held] if self.held is not None else []
            self.held = None
            self.idle_deadline = None
            return out

    log = tmp_path / "m.log"
    state = tmp_path / "state"
    log.write_bytes(b"one\nA-start\n")
    with TailRunner([str(log)], str(state), joiner_factory=PairJoiner) as r:
        wait_for(lambda: len(r.sink.records) >= 1, 5)
        wait_for(lambda: any(f.lines.held == 1 for f in list(r.source._files.values())), 5,
                 message="A-start held by the joiner")
        recs1 = r.stop()
    assert messages(recs1) == ["one"]
    assert _checkpoint_offsets(state) == {str(log): 4}
    with open(log, "ab") as f:
        f.write(b"continued\ntwo\n")
    with TailRunner([str(log)], str(state), joiner_factory=PairJoiner) as r:
        wait_for(lambda: len(r.sink.records) >= 2, 5)
        time.sleep(0.3)
        recs2 = r.stop()
    assert messages(recs2) == ["A-start\ncontinued", "two"]
    assert _checkpoint_offsets(state) == {str(log): log.stat().st_size}


def test_real_joiner_traceback_then_json_chunks(tmp_path: Path) -> None:
    """With multiline.Joiner: a traceback written in one chunk and JSON lines in the next
    becomes one traceback record followed by the JSON records, in order, each once; the
    offset is committed to the end."""
    log = tmp_path / "w-error.log"
    state = tmp_path / "state"
    log.write_bytes(b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n")
    with TailRunner([str(log)], str(state), joiner_factory=Joiner, rescan_interval=0.1) as r:
        wait_for(lambda: any(f.lines.held > 0 for f in list(r.source._files.values())), 5,
                 message="the first chunk held by the joiner")
        with open(log, "ab") as f:
            f.write(b"ValueError: bad\n" + b"".join(b'{"seq":%d}\n' % i for i in range(5)))
        wait_for(lambda: len(r.sink.records) >= 6, 5, message="6 records")
        time.sleep(0.3)
        recs = r.stop()
    assert recs[0]["message"] == ('Traceback (most recent call last):\n  File "x.py", line 1, in '
                                  "<module>\nValueError: bad")
    assert recs[0]["level"] == "error"
    assert seqs(recs[1:]) == list(range(5)) and len(recs) == 6
    assert _checkpoint_offsets(state) == {str(log): log.stat().st_size}


def test_open_file_cap_closes_idle_files_and_reopens_them(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With more files than the fd cap, idle files are closed and reopened (after an identity
    check) when they grow: every line of every file arrives once, and the cap holds."""
    monkeypatch.setattr(tail_reader, "COLD_AFTER", 0.1)  # files go idle (evictable) quickly
    for i in range(12):
        (tmp_path / f"f{i:02d}.log").write_bytes(b"f%d first\n" % i)
    with TailRunner([str(tmp_path / "*.log")], str(tmp_path / "state"), max_open=4,
                    rescan_interval=0.1) as r:
        wait_for(lambda: len(r.sink.records) >= 12, 20, message="12 first lines")
        for i in range(12):
            with open(tmp_path / f"f{i:02d}.log", "ab") as f:
                f.write(b"f%d second\n" % i)
        wait_for(lambda: len(r.sink.records) >= 24, 30, message="24 records")
        assert r.source._open <= 4
        recs = r.stop()
    got = sorted(messages(recs))
    assert got == sorted([f"f{i} first" for i in range(12)] + [f"f{i} second" for i in range(12)])


def test_idle_files_cost_one_stat_per_rescan(tmp_path: Path) -> None:
    """With 1,000 quiet files, once read, the reader stops polling them (only the 1 s rescan
    stats them): no reader polls in a 3 s idle window and under 4 % of a core of CPU
    (measured ~0.7 % in bench/collector.py)."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(1000):
        (d / f"svc{i:04d}.log").write_bytes(b'{"message":"hello %d"}\n' % i)
    with TailRunner([str(d / "*.log")], str(tmp_path / "state"), rescan_interval=1.0) as r:
        wait_for(lambda: len(r.sink.records) >= 1000, 30, message="1000 records")
        src = r.source
        wait_for(lambda: all(f.next_poll == tail_mod._COLD for f in list(src._files.values())), 10,
                 message="all files cold")
        pumps = 0
        real_pump = src._pump

        async def counting_pump(f: Any, emit: Any) -> bool:
            nonlocal pumps
            pumps += 1
            return await real_pump(f, emit)

        src._pump = counting_pump  # type: ignore[method-assign]
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(3.0)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
        r.stop()
    print(f"\nidle: 1000 files, {pumps} reader polls, CPU {cpu * 100:.2f}% of a core")
    assert pumps == 0
    assert cpu < 0.04


# --- end to end: real collector processes -------------------------------------------------------
@pytest.mark.slow
def test_rename_rotation_stress_every_seq_once(tmp_path: Path) -> None:
    """A writer at 5k lines/s renames its file away every ~1 MB for 20 s (and keeps writing to
    the old fd briefly, like a writer that reopens on a signal); the collector tails only the
    live name: every sequence number arrives, 0 duplicates."""
    log = tmp_path / "app.log"
    log.touch()
    report = tmp_path / "report.json"
    proc = collector(tmp_path / "state", str(log))
    with collector_stdout(proc) as got:
        w = writer(log, report, rate=5000, seconds=20, rotate_bytes=1 << 20, mode="rename")
        assert w.wait(60) == 0
        rep = orjson.loads(report.read_bytes())
        total = rep["end"]
        wait_for(lambda: len(got()) >= total, 60, interval=0.2, message=f"{total} records")
        time.sleep(0.5)
        assert stop(proc) == 0
    s = seqs(got())
    print(f"\nrename stress: {total} lines, {rep['rotations']} rotations in {rep['seconds']:.1f}s; "
          f"received {len(s)}, duplicates {len(s) - len(set(s))}")
    assert total >= 5000 * 20 * 0.9
    assert rep["rotations"] >= 10
    assert sorted(s) == list(range(total))


@pytest.mark.slow
def test_kill9_then_restart_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the collector mid-stream (rotation going on, also while it is down), then a
    restart: 0 lines lost; duplicates only from what was delivered after the last checkpoint
    write (≤ 1 s before the kill plus the batch in flight)."""
    log = tmp_path / "app.log"
    log.touch()
    report = tmp_path / "report.json"
    state = tmp_path / "state"
    pattern = str(tmp_path / "app.log*")  # rotated files stay visible across the restart
    w = writer(log, report, rate=5000, seconds=8, rotate_bytes=512 << 10, mode="rename")
    p1 = collector(state, pattern)
    with collector_stdout(p1) as got1:
        wait_for(lambda: len(got1()) >= 15_000, 30, message="15k records before the kill")
        p1.send_signal(signal.SIGKILL)
        p1.wait(10)
    first = seqs(got1())
    time.sleep(1.0)  # the writer goes on (and rotates) while no collector runs
    p2 = collector(state, pattern)
    with collector_stdout(p2) as got2:
        assert w.wait(60) == 0
        total = orjson.loads(report.read_bytes())["end"]
        wait_for(lambda: set(seqs(got2())) | set(first) >= set(range(total)), 60, interval=0.2,
                 message="every seq after restart")
        time.sleep(0.5)
        assert stop(p2) == 0
    second = seqs(got2())
    dups = sorted(set(first) & set(second))
    missing = set(range(total)) - set(first) - set(second)
    rate = 5000
    print(f"\nkill -9: first run {len(first)} records, second {len(second)}, total {total}; "
          f"duplicates {len(dups)} (≈{len(dups) / rate:.2f}s of traffic), lost {len(missing)}")
    assert not missing
    assert len(second) == len(set(second)) and len(first) == len(set(first))
    # Acks come back in output order and a checkpoint snapshots all of them, so what run 2
    # repeats is exactly the suffix of run 1's output written after the last checkpoint.
    if dups:
        assert set(first[len(first) - len(dups):]) == set(dups)
    assert len(dups) <= rate * 2.5, "more duplicates than ~1 s of checkpoint lag"


@pytest.mark.slow
def test_copytruncate_loses_only_the_rotators_window(tmp_path: Path) -> None:
    """copytruncate every ~1 MB at 5k lines/s, glob matching the copies: the copies are
    recognised by fingerprint (not re-read), truncation is detected, 0 duplicates, and the
    only missing lines are those the rotator wrote between copy-end and truncate."""
    log = tmp_path / "app.log"
    log.touch()
    report = tmp_path / "report.json"
    proc = collector(tmp_path / "state", str(tmp_path / "app.log*"))
    with collector_stdout(proc) as got:
        w = writer(log, report, rate=5000, seconds=10, rotate_bytes=1 << 20, mode="copytruncate")
        assert w.wait(60) == 0
        rep = orjson.loads(report.read_bytes())
        total, window = rep["end"], set(rep["window"])
        need = set(range(total)) - window
        wait_for(lambda: set(seqs(got())) >= need, 60, interval=0.2, message="all non-window seqs")
        time.sleep(1.0)
        assert stop(proc) == 0
    s = seqs(got())
    missing = set(range(total)) - set(s)
    print(f"\ncopytruncate: {total} lines, {rep['rotations']} rotations, window {len(window)} "
          f"lines, missing {len(missing)} (all in window: {missing <= window}), "
          f"duplicates {len(s) - len(set(s))}")
    assert rep["rotations"] >= 5
    assert missing <= window
    assert len(s) == len(set(s))


def test_two_collectors_same_state_dir_refuse_clearly(tmp_path: Path) -> None:
    """A second collector with the same inputs and state dir exits 2 with one clear line
    (no traceback); one with other inputs runs beside it, but a file the first one reads is
    refused — with a warning naming it — not read twice; a file nobody reads is read."""
    (tmp_path / "a.log").write_bytes(b"x\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.log").write_bytes(b"y\n")
    state = tmp_path / "state"
    p1 = collector(state, str(tmp_path / "*.log"))
    with collector_stdout(p1) as got:
        wait_for(lambda: len(got()) >= 1, 10)
        before = stderr_of(state)
        p2 = collector(state, str(tmp_path / "*.log"))
        out, _ = p2.communicate(timeout=30)
        assert p2.returncode == 2
        err = stderr_of(state)[len(before):]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("logpipe: another logpipe collector (pid ")
        assert "Traceback" not in err and out == b""
        before = stderr_of(state)
        p3 = collector(state, str(tmp_path / "a.log"), str(other / "b.log"), once=True)
        out3, _ = p3.communicate(timeout=30)
        err3 = stderr_of(state)[len(before):]
        assert p3.returncode == 0 and b'"y"' in out3 and b'"x"' not in out3
        assert f"not reading {tmp_path / 'a.log'}: another logpipe collector" in err3
        assert stop(p1) == 0
    assert messages(got()) == ["x"]


def test_unfinished_reports_unread_files(tmp_path: Path) -> None:
    """checkpoint.unfinished is True for a file the collector knows but has not finished, and
    False once it has committed the file's end."""
    log = tmp_path / "u.log"
    log.write_bytes(b"a\nb\n")
    state = tmp_path / "state"
    assert not checkpoint.unfinished(str(state), log.stat())
    run_once([str(log)], str(state))
    assert not checkpoint.unfinished(str(state), log.stat())
    with open(log, "ab") as f:
        f.write(b"c\n")
    assert checkpoint.unfinished(str(state), log.stat())
    diagnostics.reset()
