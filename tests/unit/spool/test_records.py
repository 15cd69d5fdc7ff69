"""The spool's records in memory and on disk: items just appended are handed out from memory,
a reader that fell behind the memory bound (or a restarted spool) reads them from disk, in
order either way; a consumer waiting for items never misses an append's wake-up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from logpipe.errors import SinkError
from logpipe.spool import HDR_SIZE, Spool
from logpipe.spool._records import DiskReader, RecentRecords, header
from tests.unit.spool.test_spool import drain, run


async def take_all(s: Spool) -> list[bytes]:
    """Everything in the spool, taken in chunks of at most 7 items (so reads cross chunk limits)."""
    return await drain(s, max_items=7)


def items(n: int, start: int = 0) -> list[bytes]:
    return [f"item-{i:05d}".encode() * (1 + i % 3) for i in range(start, start + n)]


def test_items_just_appended_come_from_memory_not_from_disk(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """While the reader keeps up, no record is read back: the disk reader is never called (it
    raises here) and every item comes out once, in order."""

    def no_disk(*_: object) -> None:
        raise AssertionError("read from disk")

    async def scenario() -> list[bytes]:
        async with Spool(str(tmp_path / "sp")) as s:
            monkeypatch.setattr(DiskReader, "read", no_disk)
            got: list[bytes] = []
            for k in range(5):
                await s.append(items(10, 10 * k))
                got += await take_all(s)
            return got

    assert run(scenario()) == items(50)


def test_a_reader_behind_the_memory_bound_reads_the_rest_from_disk_in_order(tmp_path: Path) -> None:
    """With a 100-byte memory bound and several kilobytes appended before anything is taken, the
    oldest items are no longer in memory: they are read from disk (CRC checked), then the ones
    still in memory follow — each item once, in order, across segment roll-overs."""

    async def scenario() -> list[bytes]:
        async with Spool(str(tmp_path / "sp"), segment_bytes=300, recent_bytes=100) as s:
            for k in range(10):
                await s.append(items(10, 10 * k))
            got = await take_all(s)
            await s.append(items(5, 100))  # memory again once caught up
            return got + await take_all(s)

    assert run(scenario()) == items(105)


def test_after_a_restart_the_items_are_read_from_disk(tmp_path: Path) -> None:
    """A reopened spool has nothing in memory: what was appended and not done comes from disk,
    then what is appended after the restart from memory, in order."""

    async def first() -> None:
        async with Spool(str(tmp_path / "sp")) as s:
            await s.append(items(20))

    async def second() -> list[bytes]:
        async with Spool(str(tmp_path / "sp")) as s:
            await s.append(items(3, 20))
            return await take_all(s)

    run(first())
    assert run(second()) == items(23)


def test_a_consumer_waiting_without_timeout_gets_every_small_append(tmp_path: Path) -> None:
    """The lost wake-up check: a consumer blocked in next_chunk(timeout=None) while 600 rounds of
    one to three small appends race it; after each round it must have everything within a
    deadline — a wake-up lost between its look at the spool and its wait would leave it blocked
    (nothing else wakes it)."""
    rounds = 600

    async def scenario() -> list[bytes]:
        async with Spool(str(tmp_path / "sp")) as s:
            got: list[bytes] = []

            async def consume() -> None:
                while True:
                    chunk = await s.next_chunk(2, 1 << 20)
                    if chunk is None:
                        return
                    got.extend(chunk.items)
                    s.done(chunk.id)

            consumer = asyncio.create_task(consume())
            sent = 0
            for r in range(rounds):
                for _ in range(1 + r % 3):
                    await s.append([b"%d" % sent])
                    sent += 1
                deadline = time.monotonic() + 5
                while len(got) < sent:
                    assert time.monotonic() < deadline, f"round {r}: consumer stuck at {len(got)} of {sent}"
                    await asyncio.sleep(0)
            await s.close()
            await consumer
            return got

    assert run(scenario()) == [b"%d" % i for i in range(sum(1 + r % 3 for r in range(600)))]


def test_recent_records_hand_out_only_from_their_first_position() -> None:
    """RecentRecords answers only for the position of its oldest record (else the disk must),
    honours the item and byte limits (at least one item), and forgets what was read elsewhere."""
    recent = RecentRecords(max_bytes=1 << 20)
    recent.add(1, HDR_SIZE, [b"aa", b"bbb", b"c"])
    assert recent.take((1, 0), 10, 100) is None
    got = recent.take((1, HDR_SIZE), 10, 4)
    assert got == ([b"aa"], [(1, HDR_SIZE * 2 + 2)], (1, HDR_SIZE * 2 + 2))
    recent.drop_before((1, HDR_SIZE * 3 + 5))  # "bbb" was read from disk
    assert recent.take((1, HDR_SIZE * 3 + 5), 10, 100) == ([b"c"], [(1, HDR_SIZE * 4 + 6)],
                                                            (1, HDR_SIZE * 4 + 6))


def test_recent_records_drop_the_oldest_past_their_bound() -> None:
    """Past ``max_bytes`` the oldest records go first; what is left starts at its own position."""
    recent = RecentRecords(max_bytes=5)
    recent.add(2, HDR_SIZE, [b"aaa", b"bbb", b"cc"])
    assert recent.take((2, HDR_SIZE), 10, 100) is None
    assert recent.take((2, HDR_SIZE * 2 + 3), 10, 100) == (
        [b"bbb", b"cc"], [(2, HDR_SIZE * 3 + 6), (2, HDR_SIZE * 4 + 8)], (2, HDR_SIZE * 4 + 8))


def test_a_record_changed_on_disk_stops_the_reader_with_one_line(tmp_path: Path) -> None:
    """A record whose bytes no longer match its CRC is never handed out: SinkError naming the
    segment and the byte."""
    seg = tmp_path / "0000000000000001.seg"
    item = b"hello"
    seg.write_bytes(b"LPSPOOL1" + header(item) + b"jello")
    reader = DiskReader(str(tmp_path), lambda n: str(tmp_path / f"{n:016d}.seg"))
    size = seg.stat().st_size
    with pytest.raises(SinkError, match=r"segment 1 is corrupt at byte 8") as err:
        reader.read((1, HDR_SIZE), 10, 100, (1, size), [1], {1: size})
    assert "\n" not in str(err.value)
    reader.close()
