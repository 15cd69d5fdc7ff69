"""The pipe-ack protocol's two ends (logpipe/pipeack.py), each against a real process on a real
pipe, and the record-size rule that lets ``logpipe sink`` take every record whole."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from logpipe import pipeack, record
from logpipe.errors import SinkError
from logpipe.pipeline import Pipeline, run
from logpipe.sources.stdin import StdinSource
from tests._pipeline_helpers import MemorySink, arun, settle
from tests._sink_cmd_helpers import env_without_colour
from tests.helpers import LOGPIPE, until, wait_for

pytestmark = pytest.mark.timeout(120)


def _acked(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(orjson.loads(f.read())["acked"])
    except FileNotFoundError:
        return None


# --- the reader's side ----------------------------------------------------------------------------
def test_reader_acks_only_bytes_every_sink_accepted_and_removes_its_file_at_eof(tmp_path: Path) -> None:
    """`logpipe sink`'s stdin source on a pipe publishes `acked: 0` before reading, then the bytes
    through the last line that *every* sink accepted — nothing while one sink is stalled — and
    removes the ack file once the input ends (no writer is left to read it)."""
    r, w = os.pipe()
    acker = pipeack.PipeAcker.for_fd(str(tmp_path), r)
    assert acker is not None
    assert _acked(acker.path) == 0
    data = b"".join(b'{"n":%d}\n' % i for i in range(100))
    fast, slow = MemorySink("fast"), MemorySink("slow")
    slow.stall()

    async def go() -> None:
        pipeline = Pipeline([fast, slow])
        stop = asyncio.Event()
        task = asyncio.create_task(run([StdinSource(fd=r, acks=acker)], [fast, slow], stop,
                                       pipeline=pipeline))
        os.write(w, data + b'{"n":"partial')
        await until(timeout=15, predicate=lambda: len(fast.records) >= 100)
        await settle()
        assert _acked(acker.path) == 0  # the slow sink holds nothing yet
        slow.resume()
        # the partial line never is
        await until(timeout=15, predicate=lambda: _acked(acker.path) == len(data))
        os.write(w, b'"}\n')
        os.close(w)
        await task

    try:
        arun(go())
    finally:
        os.close(r)
    assert len(slow.records) == 101
    assert not os.path.exists(acker.path)


# --- the writer's side ----------------------------------------------------------------------------
def _reader(state: Path, r: int, *extra: str) -> subprocess.Popen[bytes]:
    """`logpipe sink ndjson` reading the pipe ``r`` with ``state`` as its state dir."""
    return subprocess.Popen([*LOGPIPE, "sink", "ndjson", *extra], stdin=r,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env_without_colour(LOGPIPE_STATE_DIR=str(state)))


def test_writer_waits_for_a_real_sinks_acks_and_fails_when_it_dies(tmp_path: Path) -> None:
    """Writing into a pipe read by `logpipe sink`: the writer enters ack mode, a write counts once
    the sink acknowledged it; when the sink is killed (-9) with bytes unacknowledged, waiting
    for them raises SinkError (nothing past the last ack is committed)."""
    state = tmp_path / "state"
    r, w = os.pipe()
    proc = _reader(state, r)
    os.close(r)
    try:
        writer = pipeack.PipeWriter.for_fd(str(state), w)
        assert writer is not None
        first = b"".join(b'{"n":%d}\n' % i for i in range(1000))
        writer.written += os.write(w, first)
        arun(writer.wait_acked(len(first)))
        assert writer.mode == "ack" and writer.reader_pid == proc.pid
        assert writer.acked >= len(first)
        proc.send_signal(signal.SIGSTOP)
        writer.written += os.write(w, b'{"n":"never acked"}\n')
        proc.kill()
        proc.wait(10)
        with pytest.raises(SinkError, match=f"pid {proc.pid}.*went away"):
            arun(writer.wait_acked(len(first) + 20))
        writer.close()
        assert not os.path.exists(writer.path)  # its reader is gone: nobody reads it any more
    finally:
        os.close(w)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sink_with_another_state_dir_falls_back_to_write_time_commit_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, diag: io.BytesIO) -> None:
    """A `logpipe sink` that publishes its acks in another state dir is seen (it is logpipe) but
    never found: after the handshake window the writer commits at write time and says why."""
    monkeypatch.setattr(pipeack, "HANDSHAKE_SECONDS", 1.0)
    r, w = os.pipe()
    proc = _reader(tmp_path / "other", r)
    os.close(r)
    try:
        writer = pipeack.PipeWriter.for_fd(str(tmp_path / "state"), w)
        assert writer is not None and writer.mode == "pending"
        writer.written += os.write(w, b'{"n":1}\n')
        arun(writer.wait_acked(8))
        assert writer.mode == "write"
        writer.written += os.write(w, b'{"n":2}\n')
        arun(writer.wait_acked(16), timeout=0.5)  # write mode: no waiting any more
    finally:
        os.close(w)
        proc.wait(30)
    text = diag.getvalue().decode()
    assert "no logpipe sink acknowledged" in text and "another --state-dir" in text, text


def test_sink_still_a_shell_when_the_collector_looks_is_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`collect | sink` as a shell starts it: the sink's side may still be the forked shell when
    the collector first looks. A shell reader is looked at again (up to PROBE_SECONDS) instead
    of being taken for a reader that is not logpipe, and the writer ends in ack mode."""
    import shlex
    import sys

    monkeypatch.setattr(pipeack, "PROBE_SECONDS", 30.0)  # generous on a loaded machine
    state = tmp_path / "state"
    r, w = os.pipe()
    # a busy loop of shell builtins (no child holds the pipe meanwhile), then exec the sink
    script = ("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec "
              + " ".join(shlex.quote(a) for a in [sys.executable, "-m", "logpipe", "sink", "ndjson"]))
    proc = subprocess.Popen(["sh", "-c", script], stdin=r, stdout=subprocess.DEVNULL,
                            env=env_without_colour(LOGPIPE_STATE_DIR=str(state)))
    os.close(r)
    try:
        pipe = pipeack.pipe_id(w)
        assert pipe is not None
        readers = wait_for(lambda: pipeack.pipe_readers(pipe.ino), message="the shell holds it")
        assert [os.path.basename(a[0]) for _, a in readers] == ["sh"]
        writer = pipeack.PipeWriter.for_fd(str(state), w)
        assert writer is not None and writer.mode == "pending"
        writer.written += os.write(w, b'{"n":1}\n')
        arun(writer.wait_acked(writer.written), timeout=60)
        assert writer.mode == "ack" and writer.reader_pid == proc.pid
    finally:
        os.close(w)
        proc.wait(30)


def test_reader_that_is_not_logpipe_means_write_time_commit_at_once(tmp_path: Path,
                                                                    diag: io.BytesIO) -> None:
    """`| cat`: the writer sees a reader that is not logpipe and commits at write time from the
    start, saying so once; an ack file left on this pipe's name by a process that does not hold
    the pipe (a recycled inode) is ignored."""
    state = tmp_path / "state"
    r, w = os.pipe()
    pipe = pipeack.pipe_id(w)
    assert pipe is not None
    stale = pipeack.ack_path(str(state), pipe)
    os.makedirs(os.path.dirname(stale))
    with open(stale, "wb") as f:  # our own pid: alive, but its stdin is not this pipe
        f.write(orjson.dumps({"v": 1, "pid": os.getpid(), "acked": 10**9}))
    cat = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL)
    os.close(r)
    try:
        wait_for(lambda: pipeack.pipe_readers(pipe.ino), message="cat holds the pipe")
        writer = pipeack.PipeWriter.for_fd(str(state), w)
        assert writer is not None and writer.mode == "write"
        arun(writer.wait_acked(1), timeout=0.5)
    finally:
        os.close(w)
        cat.wait(10)
    assert "read by cat, not by a logpipe sink" in diag.getvalue().decode()


def test_stdout_that_is_not_a_pipe_has_no_protocol(tmp_path: Path) -> None:
    """A regular file or /dev/null as stdout: no pipe identity, no acks (bytes in the OS count)."""
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        assert pipeack.PipeWriter.for_fd(str(tmp_path), fd) is None
        assert pipeack.PipeAcker.for_fd(str(tmp_path), fd) is None
    finally:
        os.close(fd)


# --- record size ----------------------------------------------------------------------------------
def _fitted(rec: dict[str, Any], limit: int) -> dict[str, Any]:
    out = pipeack.fit(rec, record.dumps(rec), limit)
    assert len(out) <= limit
    obj = orjson.loads(out)
    assert obj[record.TRUNCATED] is True
    return obj  # type: ignore[no-any-return]


def test_fit_keeps_small_records_and_cuts_the_message_of_big_ones() -> None:
    """A record within the limit is returned as is (same bytes); a bigger one has its message cut
    so the whole record, keys included, fits — and keeps its other keys."""
    small = {"message": "hi", "source": "/var/log/a.log"}
    enc = record.dumps(small)
    assert pipeack.fit(small, enc, 100) is enc
    big = {"message": "x" * 5000, "source": "/var/log/a.log", "service": "a", "seq": 7}
    obj = _fitted(big, 1000)
    assert obj["source"] == "/var/log/a.log" and obj["seq"] == 7
    assert obj["message"].startswith("xxx") and obj["message"].endswith("[truncated by logpipe]")
    assert len(obj["message"]) > 900  # cut only as far as needed


def test_fit_handles_strings_that_grow_when_escaped_and_bulk_outside_strings() -> None:
    """Control characters (6 bytes each once escaped) and a record whose bulk is a list of
    numbers still end within the limit, with their identity keys."""
    obj = _fitted({"message": "\x01" * 3000, "source": "s"}, 1000)
    assert obj["source"] == "s"
    obj = _fitted({"values": list(range(5000)), "source": "s", "service": "svc"}, 1000)
    assert obj["source"] == "s" and obj["service"] == "svc"
    assert obj["message"].startswith('{"values":[0,1,2')
