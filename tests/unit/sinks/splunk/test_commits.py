"""Group commit: batches handed over close together share one spool append (one fdatasync), each
receipt resolves to SPOOLED only after it, in order; a failed group fails its receipts and every
later one; a stop writes at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from logpipe.errors import SinkError
from logpipe.pipeline import Outcome
from logpipe.sinks.splunk.commits import COMMIT_DELAY, GroupCommit


def items(tag: str, n: int = 2) -> list[tuple[bytes, int]]:
    return [(f"{tag}-{i}".encode(), 1) for i in range(n)]


class Recorder:
    """A write_items that records each group it is given (and can be made to fail)."""

    def __init__(self) -> None:
        self.groups: list[tuple[list[bytes], int]] = []
        self.spooled = 0
        self.fail_with: Exception | None = None

    async def write(self, group: list[tuple[bytes, int]], records: int) -> None:
        await asyncio.sleep(0.01)  # the fdatasync
        if self.fail_with is not None:
            raise self.fail_with
        self.groups.append(([item for item, _ in group], records))

    def counted(self, records: int) -> None:
        self.spooled += records


def test_batches_handed_over_together_share_one_append_and_resolve_in_order() -> None:
    """Three batches queued within the delay go in as one group (one append), in order; no
    receipt resolves before that append returned; each resolves to SPOOLED."""
    rec = Recorder()

    async def go() -> list[Outcome]:
        commits = GroupCommit(rec.write, rec.counted, max_batches=4, max_bytes=1 << 20)
        receipts = [commits.add(items(t), 10) for t in "abc"]
        await asyncio.sleep(0)
        assert not any(r.done() for r in receipts) and rec.groups == []
        return list(await asyncio.gather(*receipts))

    assert asyncio.run(go()) == [Outcome.SPOOLED] * 3
    assert rec.groups == [([b"a-0", b"a-1", b"b-0", b"b-1", b"c-0", b"c-1"], 30)]
    assert rec.spooled == 30


def test_a_full_group_is_written_without_waiting_and_groups_stay_bounded() -> None:
    """As many batches as the pipeline buffer admits are written at once (no delay), and more
    queued batches form further groups of at most that many, in order."""
    rec = Recorder()

    async def go() -> float:
        commits = GroupCommit(rec.write, rec.counted, max_batches=2, max_bytes=1 << 20)
        t0 = time.monotonic()
        receipts = [commits.add(items(t, 1), 1) for t in "abcde"]
        await receipts[1]
        took = time.monotonic() - t0
        await asyncio.gather(*receipts)
        return took

    assert asyncio.run(go()) < COMMIT_DELAY
    assert [g for g, _ in rec.groups] == [[b"a-0", b"b-0"], [b"c-0", b"d-0"], [b"e-0"]]


def test_a_lone_batch_waits_at_most_the_commit_delay_and_a_stop_writes_at_once() -> None:
    """A single batch is written after COMMIT_DELAY (others may join); after hurry() (a stop) a
    batch is written at once."""
    rec = Recorder()

    async def go() -> tuple[float, float]:
        commits = GroupCommit(rec.write, rec.counted, max_batches=4, max_bytes=1 << 20)
        t0 = time.monotonic()
        await commits.add(items("a"), 1)
        lone = time.monotonic() - t0
        commits.hurry()
        t0 = time.monotonic()
        await commits.add(items("b"), 1)
        return lone, time.monotonic() - t0

    lone, hurried = asyncio.run(go())
    assert COMMIT_DELAY <= lone < COMMIT_DELAY + 1.0
    assert hurried < COMMIT_DELAY


def test_a_failed_group_fails_its_receipts_and_every_later_one() -> None:
    """A group whose append raises fails each of its receipts with that error, and so do the
    batches queued after it (nothing after a failed batch may commit); nothing is counted."""
    rec = Recorder()
    rec.fail_with = SinkError("splunk: disk gone")

    async def go() -> list[BaseException | Outcome]:
        commits = GroupCommit(rec.write, rec.counted, max_batches=2, max_bytes=1 << 20)
        receipts = [commits.add(items(t, 1), 1) for t in "abc"]
        return list(await asyncio.gather(*receipts, return_exceptions=True))

    results = asyncio.run(go())
    assert all(isinstance(r, SinkError) and str(r) == "splunk: disk gone" for r in results)
    assert rec.groups == [] and rec.spooled == 0


def test_flush_writes_what_is_queued() -> None:
    """flush() (close) writes the queued batches without waiting out the delay."""
    rec = Recorder()

    async def go() -> float:
        commits = GroupCommit(rec.write, rec.counted, max_batches=4, max_bytes=1 << 20)
        receipt = commits.add(items("a"), 3)
        t0 = time.monotonic()
        await commits.flush()
        assert receipt.done() and receipt.result() is Outcome.SPOOLED
        return time.monotonic() - t0

    assert asyncio.run(go()) < COMMIT_DELAY
    assert rec.spooled == 3


@pytest.mark.parametrize("n", [1, 7])
def test_receipts_resolve_in_write_order(n: int) -> None:
    """Whatever the grouping, receipts resolve in the order the batches were handed over."""
    rec = Recorder()
    order: list[int] = []

    async def go() -> None:
        commits = GroupCommit(rec.write, rec.counted, max_batches=3, max_bytes=1 << 20)
        receipts = [commits.add(items(str(i), 1), 1) for i in range(n)]
        for i, r in enumerate(receipts):
            r.add_done_callback(lambda _, i=i: order.append(i))
        await asyncio.gather(*receipts)

    asyncio.run(go())
    assert order == list(range(n))
