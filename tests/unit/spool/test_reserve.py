"""The spool's reserve on a real full disk (a 1 MiB tmpfs): released on ENOSPC so what was read
still goes in, re-created only once there is room again, and reported missing at open."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from logpipe.errors import DiskFullError, UsageError
from logpipe.spool import Spool
from logpipe.spool._segments import RESERVE_NAME

RESERVE = 192 << 10
ITEM = bytes(8 << 10)


async def _fill(s: Spool) -> int:
    """Append ITEM until the disk refuses one even with the reserve gone; the count appended
    after the reserve was released."""
    after = 0
    while True:
        held = s.reserve_held
        try:
            await s.append([ITEM])
        except DiskFullError:
            return after
        if not held or not s.reserve_held:
            after += 1


async def _drain(s: Spool) -> None:
    while (chunk := await s.next_chunk(1000, 1 << 20, timeout=0)) is not None:
        s.done(chunk.id)


def test_reserve_is_released_on_a_full_disk_and_recreated_once_drained(small_tmpfs: Path) -> None:
    """At open the reserve file holds RESERVE bytes; when the disk fills, the append that meets
    ENOSPC releases it and succeeds, and about RESERVE more bytes still go in; the reserve cannot
    come back while the disk is full, and does once the spool is drained."""
    directory = small_tmpfs / "spool"

    async def main() -> None:
        async with Spool(str(directory), max_bytes=1 << 30, reserve_bytes=RESERVE) as s:
            reserve = directory / RESERVE_NAME
            assert s.reserve_held and reserve.stat().st_size == RESERVE
            assert reserve.stat().st_blocks * 512 >= RESERVE  # really allocated, not sparse
            after = await _fill(s)
            assert not s.reserve_held and not reserve.exists()
            # the released space took (nearly) the whole reserve's worth of records
            assert after * len(ITEM) >= RESERVE - 2 * len(ITEM), after
            assert not await s.restore_reserve()  # still full
            await _drain(s)
            assert await s.restore_reserve()
            assert s.reserve_held and reserve.stat().st_size == RESERVE
            await s.append([b"after"])  # and the spool works again
    asyncio.run(main())


def test_open_on_a_full_disk_has_no_reserve_until_there_is_room(small_tmpfs: Path) -> None:
    """A restart on a full disk: open succeeds but says the reserve is missing (the sink then
    reads no input); once space is back, restore_reserve() makes it."""
    directory = small_tmpfs / "spool"
    filler = small_tmpfs / "filler"

    async def main() -> None:
        s = Spool(str(directory), max_bytes=1 << 30, reserve_bytes=RESERVE)
        await s.open()
        await s.close()
        os.unlink(directory / RESERVE_NAME)
        with open(filler, "wb") as f, pytest.raises(OSError):
            while True:
                f.write(bytes(64 << 10))
                f.flush()
        async with Spool(str(directory), max_bytes=1 << 30, reserve_bytes=RESERVE) as s:
            assert not s.reserve_held
            assert not (directory / RESERVE_NAME).exists()  # no partial reserve left behind
            os.unlink(filler)
            assert await s.restore_reserve()
            assert (directory / RESERVE_NAME).stat().st_size == RESERVE
    asyncio.run(main())


def test_the_reserve_counts_toward_the_bound_until_a_stop(tmp_path: Path) -> None:
    """max_bytes covers data + reserve: appends block at max_bytes - reserve; use_reserve()
    (a stop) lets what was read take the reserve's share; a reserve over half the bound is refused."""
    with pytest.raises(UsageError):
        Spool(str(tmp_path / "x"), max_bytes=100_000, reserve_bytes=60_000)

    async def main() -> None:
        async with Spool(str(tmp_path / "s"), max_bytes=100_000, reserve_bytes=40_000) as s:
            item = bytes(10_000 - 8)  # one record = 10,000 bytes with its frame
            await s.append([item] * 6)
            blocked = asyncio.ensure_future(s.append([item]))
            await asyncio.sleep(0.2)  # nothing can wake it: asserting it stayed blocked
            assert not blocked.done()
            s.use_reserve()
            await asyncio.wait_for(blocked, 5)
            await s.append([item] * 3)  # up to max_bytes in all
            assert s.pending_bytes == 100_000
    asyncio.run(main())
