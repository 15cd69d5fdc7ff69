"""Group commit: the batches the pipeline hands over within a few milliseconds go into the spool
with one write and one ``fdatasync``; each batch's *receipt* resolves to ``SPOOLED`` only then.

``write`` returns a receipt (the pipeline contract allows it: the pipeline writes the next batch
while it awaits the receipts, in write order, and the source commits only when a receipt
resolves), so "durable before accepted" holds while several batches share one sync. Without
it a trickle costs one ``fdatasync`` and one thread hop per pipeline batch: 133 a second at
1,000 lines/s from one tailed file (≈ 155 µs of CPU each, bench/RESULTS.md).

A group is written when ``COMMIT_DELAY`` has passed since its first batch, at once when it
holds as much as the sink's pipeline buffer admits (the pipeline would wait for the receipts
anyway), and at once on a stop or at close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from logpipe.pipeline import Outcome

#: how long the first batch of a group waits for others before the group is written
COMMIT_DELAY = 0.05

#: (spool item, its events) of one batch, and the batch's record count
Items = list[tuple[bytes, int]]


class GroupCommit:
    """Collects batches' spool items and writes them as groups through ``write_items``."""

    def __init__(self, write_items: Callable[[Items, int], Awaitable[None]], counted: Callable[[int], None],
                 max_batches: int, max_bytes: int) -> None:
        self._write_items = write_items
        self._counted = counted
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._pending: list[tuple[Items, int, asyncio.Future[Outcome]]] = []
        self._pending_bytes = 0
        self._now = asyncio.Event()  # write the group without waiting out the delay
        self._task: asyncio.Task[None] | None = None
        self._urgent = False

    def add(self, items: Items, records: int) -> asyncio.Future[Outcome]:
        """Queue one batch's items; the receipt resolves when they are durable (or raises)."""
        receipt: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        receipt.add_done_callback(_retrieve)
        self._pending.append((items, records, receipt))
        self._pending_bytes += sum(len(item) for item, _ in items)
        if self._urgent or self._full():
            self._now.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="splunk-commit")
        return receipt

    def hurry(self) -> None:
        """A stop: write what is queued now, and every later batch at once."""
        self._urgent = True
        self._now.set()

    async def flush(self) -> None:
        """Write everything queued (close)."""
        self.hurry()
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while self._pending:
            if not (self._now.is_set() or self._full()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), COMMIT_DELAY)
            if not self._urgent:
                self._now.clear()
            group = self._take_group()
            items = [item for batch_items, _, _ in group for item in batch_items]
            records = sum(n for _, n, _ in group)
            try:
                await self._write_items(items, records)
            except BaseException as exc:
                # the group's batches and every later one fail (the pipeline stops at the first;
                # nothing after a failed batch may be committed, receipts resolve in order)
                for _, _, receipt in group + self._pending:
                    if receipt.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        receipt.cancel()
                    else:
                        receipt.set_exception(exc)
                self._pending, self._pending_bytes = [], 0
                if not isinstance(exc, Exception):
                    raise
                return
            self._counted(records)
            for _, _, receipt in group:
                if not receipt.done():
                    receipt.set_result(Outcome.SPOOLED)


    def _full(self) -> bool:
        return len(self._pending) >= self._max_batches or self._pending_bytes >= self._max_bytes

    def _take_group(self) -> list[tuple[Items, int, asyncio.Future[Outcome]]]:
        """The oldest queued batches, as many as the pipeline buffer admits (at least one): a
        caller that queues more (a test) still appends in pipeline-sized groups."""
        n = nbytes = 0
        while n < len(self._pending) and n < self._max_batches and (not n or nbytes < self._max_bytes):
            nbytes += sum(len(item) for item, _ in self._pending[n][0])
            n += 1
        group, self._pending = self._pending[:n], self._pending[n:]
        self._pending_bytes -= nbytes
        return group


def _retrieve(receipt: asyncio.Future[Outcome]) -> None:
    """Mark a failed receipt's exception as seen: the pipeline stops awaiting receipts at the
    first failure, and asyncio would log every later one as never retrieved."""
    if not receipt.cancelled():
        receipt.exception()
