"""The disk spool keeps order, survives restarts and kill -9, bounds itself by blocking, and cleans up."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logpipe import diagnostics
from logpipe.errors import DiskFullError, UsageError
from logpipe.spool import HDR_SIZE, Spool, _segments
from tests.helpers import until, wait_for

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]  # the repository (tests/unit/spool/ → ../../..)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)



async def drain(s: Spool, max_items: int = 1000, max_bytes: int = 1 << 20) -> list[bytes]:
    """Take and mark done everything currently in the spool."""
    out: list[bytes] = []
    while (c := await s.next_chunk(max_items, max_bytes, timeout=0)) is not None:
        out.extend(c.items)
        s.done(c.id)
    return out


def segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".seg"))


@pytest.fixture
def diag() -> Any:
    stream = io.BytesIO()
    diagnostics.set_stream(stream)
    yield stream
    diagnostics.set_stream(None)


# ----------------------------------------------------------------------------- order and chunks


def test_items_come_out_in_append_order_within_chunk_limits(tmp_path: Path) -> None:
    """Chunks hand out items in append order, ≤ max_items and ≤ max_bytes (one oversized item alone)."""
    items = [f"item-{i}".encode() * (1 + i % 3) for i in range(50)] + [b"X" * 500]

    async def scenario() -> list[list[bytes]]:
        async with Spool(str(tmp_path / "sp"), segment_bytes=256) as s:
            for i in range(0, len(items), 7):
                await s.append(items[i:i + 7])
            chunks = []
            while (c := await s.next_chunk(4, 40, timeout=0)) is not None:
                chunks.append(c.items)
                s.done(c.id)
            assert s.is_empty and s.pending_bytes == 0
            return chunks

    chunks = run(scenario())
    assert [i for c in chunks for i in c] == items
    for c in chunks:
        assert 1 <= len(c) <= 4
        assert len(c) == 1 or sum(map(len, c)) <= 40
    assert chunks[-1] == [b"X" * 500]


def test_concurrent_consumers_get_disjoint_chunks_in_order(tmp_path: Path) -> None:
    """Several senders pulling at once (requests in flight) get disjoint chunks; by chunk id they
    cover every item exactly once, in order."""
    items = [b"%04d" % i for i in range(400)]

    async def consumer(s: Spool, got: list[tuple[int, list[bytes]]]) -> None:
        while (c := await s.next_chunk(7, 1000, timeout=0.2)) is not None:
            got.append((c.id, c.items))
            await asyncio.sleep(0)
            s.done(c.id)

    async def scenario() -> list[tuple[int, list[bytes]]]:
        async with Spool(str(tmp_path / "sp"), segment_bytes=500) as s:
            got: list[tuple[int, list[bytes]]] = []
            tasks = [asyncio.create_task(consumer(s, got)) for _ in range(3)]
            for i in range(0, 400, 20):
                await s.append(items[i:i + 20])
            await asyncio.gather(*tasks)
            assert s.is_empty
            return got

    got = run(scenario())
    assert [i for _, c in sorted(got) for i in c] == items


def test_close_wakes_a_waiting_next_chunk(tmp_path: Path) -> None:
    """close() makes a next_chunk that is waiting for data return None instead of hanging."""

    async def scenario() -> None:
        s = Spool(str(tmp_path / "sp"))
        await s.open()
        waiter = asyncio.create_task(s.next_chunk(10, 1000, timeout=None))
        await asyncio.sleep(0)
        await s.close()
        assert await asyncio.wait_for(waiter, 5) is None

    run(scenario())


def test_items_are_opaque_bytes(tmp_path: Path) -> None:
    """Any bytes round-trip unchanged: newlines, NULs, every byte value, the empty item."""
    items = [b"", b"\n", b"a\nb\r\n", bytes(range(256)), b"\x00" * 10, b'{"event":"x"}\n{"event"']

    async def scenario() -> list[bytes]:
        async with Spool(str(tmp_path / "sp")) as s:
            await s.append(items)
        async with Spool(str(tmp_path / "sp")) as s:
            return await drain(s)

    assert run(scenario()) == items


def test_next_chunk_times_out_then_wakes_on_append(tmp_path: Path) -> None:
    """next_chunk returns None after its timeout when empty, and a waiting call wakes on append."""

    async def scenario() -> None:
        async with Spool(str(tmp_path / "sp")) as s:
            t0 = time.monotonic()
            assert await s.next_chunk(10, 1000, timeout=0.1) is None
            assert time.monotonic() - t0 >= 0.1
            waiter = asyncio.create_task(s.next_chunk(10, 1000, timeout=10))
            await asyncio.sleep(0)
            await s.append([b"late"])
            c = await asyncio.wait_for(waiter, 5)
            assert c is not None and c.items == [b"late"]

    run(scenario())


def test_release_hands_items_out_again_in_order_before_later_ones(tmp_path: Path) -> None:
    """Released chunks come back first, lowest position first, before anything not yet handed out."""

    async def scenario() -> None:
        async with Spool(str(tmp_path / "sp")) as s:
            await s.append([b"%d" % i for i in range(10)])
            a = await s.next_chunk(3, 1000, 0)
            b = await s.next_chunk(3, 1000, 0)
            c = await s.next_chunk(2, 1000, 0)
            assert a and b and c
            assert (a.items, b.items, c.items) == ([b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6", b"7"])
            s.release(b.id)
            s.release(a.id)
            s.done(c.id)
            again = await s.next_chunk(2, 1000, 0)  # smaller limit: a released chunk is split
            assert again is not None and again.items == [b"0", b"1"]
            rest = await s.next_chunk(10, 1000, 0)
            assert rest is not None and rest.items == [b"2"]
            b2 = await s.next_chunk(10, 1000, 0)
            assert b2 is not None and b2.items == [b"3", b"4", b"5"]
            tail = await s.next_chunk(10, 1000, 0)
            assert tail is not None and tail.items == [b"8", b"9"]
            for ch in (again, rest, b2, tail):
                s.done(ch.id)
            assert s.is_empty
            with pytest.raises(ValueError, match="not out"):
                s.done(a.id)

    run(scenario())


def test_done_out_of_order_commits_only_contiguous_prefix(tmp_path: Path) -> None:
    """A later chunk done before an earlier one does not move the cursor past the earlier one."""

    async def scenario() -> None:
        d = str(tmp_path / "sp")
        async with Spool(d) as s:
            await s.append([b"a", b"b", b"c"])
            first = await s.next_chunk(1, 100, 0)
            second = await s.next_chunk(2, 100, 0)
            assert first and second
            s.done(second.id)
            assert s.pending_items == 3
        async with Spool(d) as s:
            assert await drain(s) == [b"a", b"b", b"c"]  # b, c again: bounded duplicates, no loss

    run(scenario())


# ----------------------------------------------------------------------------- restart and crashes


def test_restart_recovers_undelivered_items_in_order(tmp_path: Path) -> None:
    """After close and reopen, exactly the items not done are delivered, in order."""

    async def scenario() -> None:
        d = str(tmp_path / "sp")
        async with Spool(d, segment_bytes=100) as s:
            await s.append([b"%03d" % i for i in range(60)])
            for _ in range(4):
                c = await s.next_chunk(5, 1000, 0)
                assert c is not None
                s.done(c.id)
            out = await s.next_chunk(5, 1000, 0)  # handed out, never done: must come back
            assert out is not None
        async with Spool(d, segment_bytes=100) as s:
            assert s.pending_items == 40
            assert await drain(s) == [b"%03d" % i for i in range(20, 60)]
            await s.append([b"new"])
        async with Spool(d, segment_bytes=100) as s:
            assert await drain(s) == [b"new"]

    run(scenario())


WRITER = r"""
import asyncio, sys
from logpipe.spool import Spool

async def main():
    s = Spool(sys.argv[1], segment_bytes=200_000)
    await s.open()
    i = 0
    while True:
        await s.append([b"%08d:" % n + b"x" * (n * 997 % 20000) for n in range(i, i + 5)])
        i += 5
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()

asyncio.run(main())
"""


def expected_item(n: int) -> bytes:
    return b"%08d:" % n + b"x" * (n * 997 % 20000)


def test_kill9_writer_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """kill -9 of a process in the middle of appends: every item whose append returned is recovered,
    in order, with no gap or garbage; a torn last record is dropped, not misread."""
    d = tmp_path / "sp"
    with subprocess.Popen([sys.executable, "-c", WRITER, str(d)], stdout=subprocess.PIPE, cwd=ROOT) as proc:
        assert proc.stdout is not None
        acked = 0
        try:
            while acked < 300:
                line = proc.stdout.readline()
                assert line, "writer died"
                acked = int(line)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for line in proc.stdout.read().splitlines():  # acks printed before the kill
            acked = int(line)

    async def scenario() -> list[bytes]:
        async with Spool(str(d), segment_bytes=200_000) as s:
            return await drain(s, max_bytes=4 << 20)

    got = run(scenario())
    assert len(got) >= acked
    assert got == [expected_item(n) for n in range(len(got))]


CONSUMER = r"""
import asyncio, sys
from logpipe.spool import Spool

async def main():
    s = Spool(sys.argv[1], segment_bytes=300)
    await s.open()
    for i in range(0, 200, 10):
        await s.append([b"%04d" % n for n in range(i, i + 10)])
    done = 0
    while done < 120:
        c = await s.next_chunk(7, 10_000, 0)
        s.done(c.id)
        done += len(c.items)
    sys.stdout.write(f"{done}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()   # hang until killed

asyncio.run(main())
"""


def test_kill9_consumer_resumes_from_persisted_cursor(tmp_path: Path) -> None:
    """kill -9 after chunks were done and the cursor persisted: reopening delivers exactly the rest,
    and the consumed segments are gone."""
    d = tmp_path / "sp"

    def cursor_moved() -> bool:
        try:
            doc = orjson.loads((d / "cursor").read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return False
        return bool(doc["segment"] > 1)

    with subprocess.Popen([sys.executable, "-c", CONSUMER, str(d)], stdout=subprocess.PIPE, cwd=ROOT) as proc:
        try:
            assert proc.stdout is not None
            done = int(proc.stdout.readline())
            wait_for(cursor_moved, timeout=10, message="cursor persisted")
            wait_for(lambda: "0000000000000001.seg" not in segments(d), timeout=10, message="segment cleanup")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    async def scenario() -> list[bytes]:
        async with Spool(str(d), segment_bytes=300) as s:
            return await drain(s)

    assert run(scenario()) == [b"%04d" % n for n in range(done, 200)]


def test_torn_or_corrupt_tail_is_dropped_and_spool_continues(tmp_path: Path, diag: io.BytesIO) -> None:
    """A partial last frame (crash mid-write) or a bad CRC is cut off at open with a warning; the
    items before it and items appended afterwards are delivered, in order."""
    d = tmp_path / "sp"

    async def write(items: list[bytes]) -> None:
        async with Spool(str(d)) as s:
            await s.append(items)

    run(write([b"one", b"two"]))
    seg = d / segments(d)[-1]
    good_size = seg.stat().st_size
    with open(seg, "ab") as f:  # a frame announcing 100 bytes, only 10 of them written
        f.write(struct.pack("<II", 100, 0) + b"0123456789")

    async def reopen_append_drain() -> list[bytes]:
        async with Spool(str(d)) as s:
            assert s.pending_items == 2
            await s.append([b"three"])
        async with Spool(str(d)) as s:
            return await drain(s)

    assert run(reopen_append_drain()) == [b"one", b"two", b"three"]
    assert b"torn write" in diag.getvalue()
    assert seg.stat().st_size == good_size + HDR_SIZE + len(b"three")

    # flip the last payload byte of "three": its CRC no longer matches
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))

    async def reopen() -> list[bytes]:
        async with Spool(str(d)) as s:
            return await drain(s)

    assert run(reopen()) == []  # one, two were done above; the corrupt three is dropped, not misread
    assert seg.stat().st_size == good_size


def test_corrupt_cursor_redelivers_rather_than_loses(tmp_path: Path, diag: io.BytesIO) -> None:
    """An unreadable cursor file means re-sending what is still spooled (duplicates), never loss."""
    d = tmp_path / "sp"

    async def first() -> None:
        async with Spool(str(d)) as s:
            await s.append([b"a", b"b", b"c"])
            c = await s.next_chunk(1, 100, 0)
            assert c is not None
            s.done(c.id)

    run(first())
    (d / "cursor").write_bytes(b"{not json")

    async def second() -> list[bytes]:
        async with Spool(str(d)) as s:
            return await drain(s)

    assert run(second()) == [b"a", b"b", b"c"]
    assert b"unreadable cursor" in diag.getvalue()


# ----------------------------------------------------------------------- bound, cleanup, lock, disk full


def test_full_spool_blocks_append_and_resumes_when_drained(tmp_path: Path, diag: io.BytesIO) -> None:
    """Over max_bytes, append blocks (nothing dropped) with ONE warning, and resumes once items are done."""

    async def scenario() -> None:
        async with Spool(str(tmp_path / "sp"), max_bytes=1000) as s:
            await s.append([b"a" * 100] * 8)  # 8 * 108 = 864 bytes
            blocked = asyncio.create_task(s.append([b"b" * 100] * 2))
            await until(lambda: b"is full" in diag.getvalue(), message="full warning")
            assert not blocked.done()
            third = asyncio.create_task(s.append([b"c"]))
            await asyncio.sleep(0.05)
            assert not blocked.done() and not third.done()
            c = await s.next_chunk(3, 10_000, 0)
            assert c is not None
            s.done(c.id)  # 864 - 324 + 216 <= 1000: room again
            await asyncio.wait_for(blocked, 5)
            await asyncio.wait_for(third, 5)
            assert await drain(s) == [b"a" * 100] * 5 + [b"b" * 100] * 2 + [b"c"]

    run(scenario())
    assert diag.getvalue().count(b"is full") == 1


def test_single_append_larger_than_bound_into_empty_spool_does_not_deadlock(tmp_path: Path) -> None:
    """An append bigger than max_bytes is accepted when the spool is empty (else it could never go in)."""

    async def scenario() -> list[bytes]:
        async with Spool(str(tmp_path / "sp"), max_bytes=100) as s:
            await asyncio.wait_for(s.append([b"z" * 500]), 5)
            return await drain(s)

    assert run(scenario()) == [b"z" * 500]


def test_consumed_segments_are_deleted(tmp_path: Path) -> None:
    """Segments roll at segment_bytes; once consumed and the cursor persisted, they are deleted."""
    d = tmp_path / "sp"

    async def scenario() -> None:
        async with Spool(str(d), segment_bytes=200) as s:
            for i in range(30):
                await s.append([b"%02d" % i + b"." * 50])
            assert len(segments(d)) >= 8
            got = await drain(s, max_items=3)
            assert len(got) == 30
            await until(lambda: len(segments(d)) == 1, message="segments deleted")
            assert s.is_empty and s.pending_bytes == 0

    run(scenario())
    assert len(segments(d)) == 1


def test_reader_at_the_end_of_a_segment_goes_on_after_that_segment_is_deleted(tmp_path: Path) -> None:
    """A consumer that read to the very end of a segment, which then rolled over, was done and
    deleted by the cursor save, gets the next segment's items — the read position names the
    deleted segment and must not reach the reader (it raised KeyError, which killed the Splunk
    sink's taker: the sink stopped sending silently). The cursor saved names a live segment, and
    a reopen hands out exactly what is not done."""
    d = tmp_path / "sp"
    record = HDR_SIZE + 100

    async def scenario() -> None:
        async with Spool(str(d), segment_bytes=HDR_SIZE + 3 * record) as s:
            await s.append([b"a" * 100] * 3)                 # fills segment 1 exactly
            first = await s.next_chunk(10, 1 << 20, timeout=0)
            assert first is not None and len(first.items) == 3
            await s.append([b"b" * 100, b"c" * 100])         # rolls over to segment 2
            s.done(first.id)                                # segment 1 is consumed ...
            await until(lambda: len(segments(d)) == 1, message="segment 1 deleted")  # ... and gone
            assert s.unread_items
            second = await s.next_chunk(1, 1 << 20, timeout=0)
            assert second is not None and second.items == [b"b" * 100]
            s.done(second.id)
            cursor = orjson.loads((d / "cursor").read_bytes())
            assert f"{cursor['segment']:016d}.seg" in segments(d)
        async with Spool(str(d)) as s:
            assert await drain(s) == [b"c" * 100]

    run(scenario())


def test_second_spool_on_same_directory_is_refused(tmp_path: Path) -> None:
    """flock: a second Spool on a directory in use raises a clear UsageError; after close it opens."""
    d = str(tmp_path / "sp")

    async def scenario() -> None:
        first = Spool(d)
        await first.open()
        with pytest.raises(UsageError, match=r"in use by another logpipe process \(pid \d+\)") as err:
            await Spool(d).open()
        assert "\n" not in str(err.value)
        await first.close()
        async with Spool(d):
            pass

    run(scenario())


def test_unusable_directory_is_a_usage_error(tmp_path: Path) -> None:
    """A spool path that is a file gives a one-line UsageError, not a traceback."""
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UsageError, match="cannot use directory"):
        run(Spool(str(f / "sp")).open())


def test_disk_full_raises_one_line_and_keeps_the_spool_consistent(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while appending → DiskFullError (one line); no partial frame is left behind and the spool
    keeps working once space is back. (ENOSPC is injected at the write call: no unprivileged way to
    fill a real filesystem here.)"""
    real = _segments.write_all
    d = str(tmp_path / "sp")

    def full(fd: int, parts: list[bytes]) -> None:
        data = b"".join(parts)
        os.write(fd, data[: len(data) // 2])  # half written, as a real ENOSPC can leave it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async def scenario() -> list[bytes]:
        async with Spool(d) as s:
            await s.append([b"before"])
            monkeypatch.setattr(_segments, "write_all", full)
            with pytest.raises(DiskFullError) as err:
                await s.append([b"lost-" * 20, b"also"])
            assert "disk full" in str(err.value) and "\n" not in str(err.value)
            assert s.pending_items == 1
            monkeypatch.setattr(_segments, "write_all", real)
            await s.append([b"after"])
        async with Spool(d) as s:
            return await drain(s)

    assert run(scenario()) == [b"before", b"after"]


def test_after_disk_full_a_drained_spool_gives_its_space_back(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """After an ENOSPC append, once every record is done the next append first cuts the segment
    back to its magic (segments otherwise roll only at segment_bytes, so a drained one on a small
    disk was never freed), saves the cursor at its start, then appends; a reopen finds exactly
    the new record. (ENOSPC injected here; tests/e2e/test_splunk_full_disk.py fills a tmpfs.)"""
    real = _segments.write_all
    d = tmp_path / "sp"

    def full(fd: int, parts: list[bytes]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async def scenario() -> list[bytes]:
        async with Spool(str(d)) as s:
            await s.append([b"x" * 5000, b"y" * 5000])
            monkeypatch.setattr(_segments, "write_all", full)
            with pytest.raises(DiskFullError):
                await s.append([b"held"])
            assert s.disk_full and s.stats()["disk_full"] is True
            monkeypatch.setattr(_segments, "write_all", real)
            assert await drain(s) == [b"x" * 5000, b"y" * 5000]
            await s.append([b"held"])
            assert not s.disk_full
            (seg,) = d.glob("*.seg")
            assert seg.stat().st_size == HDR_SIZE * 2 + len(b"held")
            assert orjson.loads((d / "cursor").read_bytes())["offset"] == HDR_SIZE
        async with Spool(str(d)) as s:
            return await drain(s)

    assert run(scenario()) == [b"held"]


def test_no_segment_left_new_one_is_numbered_past_the_cursor(tmp_path: Path) -> None:
    """A crash can leave a cursor naming a segment that is gone and no segment at all (all were
    done and deleted). The segment made at open must be numbered past that cursor: numbered
    below it, it would be taken as consumed — and its records deleted — at the next open."""
    d = tmp_path / "sp"
    d.mkdir()
    (d / "cursor").write_bytes(orjson.dumps({"version": 1, "segment": 5, "offset": 99}))

    async def scenario() -> list[bytes]:
        s = Spool(str(d))
        await s.open()
        await s.append([b"kept"])
        await _crash(s)  # kill -9: the stale cursor stays
        assert [p.name for p in d.glob("*.seg")] == [f"{6:016d}.seg"]
        async with Spool(str(d)) as s:
            return await drain(s)

    assert run(scenario()) == [b"kept"]


# ----------------------------------------------------------------------------- model-based


ops = st.one_of(
    st.tuples(st.just("append"), st.lists(st.binary(max_size=40), min_size=1, max_size=4)),
    st.tuples(st.just("next"), st.integers(1, 5), st.integers(1, 120)),
    st.tuples(st.just("done"), st.integers(0, 10)),
    st.tuples(st.just("release"), st.integers(0, 10)),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash")),
    st.tuples(st.just("settle")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=30))
# read to the end of segment 1, roll over, done, the save deletes segment 1, read on (the
# Splunk sink's stall: random programs almost never hit it, 0 in 3 x 400 examples)
@example([("append", [b"x" * 40, b"y" * 40]), ("next", 5, 120), ("append", [b"z"]), ("done", 0),
          ("settle",), ("next", 5, 120)])
def test_spool_matches_a_model(program: list[tuple[Any, ...]]) -> None:
    """Any sequence of append/next/done/release/reopen/crash/settle behaves like the model:
    chunks are the lowest not-yet-handed-out items in order, nothing is lost, and a reopen
    re-delivers exactly the items from the first one not done."""
    with tempfile.TemporaryDirectory() as tmp:
        run(_check_program(tmp, program))


async def _crash(s: Spool) -> None:
    """Abandon ``s`` as a kill -9 would: no cursor write, descriptors (and the flock) just dropped.

    Holding the cursor-save lock first makes sure no cursor write is half-way in a worker thread.
    """
    await s._cursor.lock.acquire()
    if s._cursor.task is not None:
        s._cursor.task.cancel()
    s._log.close()
    s._reader.close()
    s._files.unlock()
    s._closed = True


async def _settle(s: Spool) -> None:
    """Let the background cursor save run to the end now, without its CURSOR_INTERVAL wait
    (the model's steps otherwise come faster than any save, and never see segments deleted)."""
    task = s._cursor.task
    if task is not None and not task.done():
        s._cursor.wake.set()  # ends the save's interval wait (close() uses it the same way)
        await task
        s._cursor.wake.clear()


async def _check_program(directory: str, program: list[tuple[Any, ...]]) -> None:
    items: list[bytes] = []          # model: item at each position (after the committed prefix)
    state: list[str] = []            # "p" pending, "o" out, "d" done
    out: dict[int, list[int]] = {}   # chunk id -> positions
    s = Spool(directory, segment_bytes=64)
    await s.open()
    try:
        for op in program:
            if op[0] == "append":
                await s.append(op[1])
                items.extend(op[1])
                state.extend("p" * len(op[1]))
            elif op[0] == "next":
                _, max_items, max_bytes = op
                c = await s.next_chunk(max_items, max_bytes, timeout=0)
                pending = [i for i, x in enumerate(state) if x == "p"]
                if not pending:
                    assert c is None
                    continue
                assert c is not None
                p0 = pending[0]
                k = len(c.items)
                assert 1 <= k <= max_items
                assert k == 1 or sum(map(len, c.items)) <= max_bytes
                assert all(state[p] == "p" for p in range(p0, p0 + k))
                assert c.items == items[p0:p0 + k]
                for p in range(p0, p0 + k):
                    state[p] = "o"
                out[c.id] = list(range(p0, p0 + k))
            elif op[0] in ("done", "release"):
                if not out:
                    continue
                cid = sorted(out)[op[1] % len(out)]
                for p in out.pop(cid):
                    state[p] = "d" if op[0] == "done" else "p"
                (s.done if op[0] == "done" else s.release)(cid)
            elif op[0] == "settle":  # the cursor save catches up now (consumed segments go)
                await _settle(s)
            elif op[0] == "reopen":  # everything from the first not-done item comes back
                await s.close()
                committed = next((i for i, x in enumerate(state) if x != "d"), len(state))
                items, state, out = items[committed:], ["p"] * (len(items) - committed), {}
                s = Spool(directory, segment_bytes=64)
                await s.open()
            else:  # crash: a suffix comes back, starting at or before the first not-done item
                await _crash(s)
                committed = next((i for i, x in enumerate(state) if x != "d"), len(state))
                s = Spool(directory, segment_bytes=64)
                await s.open()
                k = len(items) - s.pending_items
                assert 0 <= k <= committed
                items, state, out = items[k:], ["p"] * (len(items) - k), {}
            committed = next((i for i, x in enumerate(state) if x != "d"), len(state))
            assert s.pending_items == len(items) - committed
            assert s.is_empty == (committed == len(items))
        # finally: close, reopen, and everything not committed comes back in order
        await s.close()
        committed = next((i for i, x in enumerate(state) if x != "d"), len(state))
        s = Spool(directory, segment_bytes=64)
        await s.open()
        assert await drain(s) == items[committed:]
    finally:
        await s.close()
