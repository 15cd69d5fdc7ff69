"""Sending: take chunks from the spool, cut them into per-lane requests, POST each until HEC takes it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from logpipe import diagnostics
from logpipe.errors import SinkError
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk._hec import Action, Verdict
from logpipe.sinks.splunk.acks import AckTracker, AwaitingAck
from logpipe.sinks.splunk.endpoints import Endpoint, Endpoints, Stopped, error_verdict
from logpipe.sinks.splunk.items import bundle_of
from logpipe.sinks.splunk.quarantine import Quarantine
from logpipe.sinks.splunk.requests import (
    GZIP_THREAD_MIN,
    Request,
    cut_requests,
    gzip_parts,
    plain_body,
    should_gzip,
    with_index,
)
from logpipe.sinks.splunk.state import Shared
from logpipe.spool import Spool

MAX_ITEMS_PER_CHUNK = 100_000
#: requests queued per lane (the one being sent included) before the taker waits
LANE_DEPTH = 2


@dataclass(eq=False)
class InFlight:
    """One spool chunk being delivered."""

    seq: int
    chunk_id: int
    events: int
    nbytes: int
    #: requests not yet sent
    requests_left: int = 0
    #: requests sent but not yet final (awaiting an ack, or queued for resend)
    unsettled: int = 0
    finished: bool = False


def _unexpected(doing: str, exc: Exception) -> str:
    """The one line that stops the sink after a bug or an unexpected OS error in a task."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    return f"splunk: {doing} stopped by an unexpected error: {reason}{where}"


@dataclass(eq=False)
class LaneQueue:
    """One lane's queue: (chunk, request, is_resend) jobs, sent strictly one after another."""

    jobs: deque[tuple[InFlight, Request, bool]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Sender:
    """The taker task and one sender task per lane (see the package docstring for order)."""

    def __init__(self, shared: Shared, spool: Spool, endpoints: Endpoints, client: httpx.AsyncClient,
                 quarantine: Quarantine) -> None:
        config = shared.config
        self._shared = shared
        self._spool = spool
        self._endpoints = endpoints
        self._client = client
        self._quarantine = quarantine
        self.lanes = [LaneQueue() for _ in range(max(1, config.concurrency))]
        self.acks = AckTracker(shared, endpoints, client, self._acked, self._queue_resend)
        #: ``index`` is added when a request is built, not when the envelope is spooled: a
        #: wrong index (HEC code 7) is fixed by restarting with the right --index, and the
        #: spooled events then go to it.
        self._index_prefix = (b'{"index":' + orjson.dumps(config.index) + b","
                              if config.index else b"")
        self.in_hand: dict[int, InFlight] = {}
        self._seq = 0
        #: the taker's view of what waits in the spool: bytes, and since when
        self.unread_bytes = 0
        self.first_unread: float | None = None
        self.draining = False
        #: events this run appended, and those of them the taker has taken (the taker may take
        #: an item before the sink has counted it in: a difference, never a queue to pop)
        self.appended_events = 0
        self.taken_events = 0
        #: items from an earlier run not yet read back (their event counts are unknown)
        self.backlog_unread = 0
        self._warned_no_ack_id = False

    # ------------------------------------------------------------------ bookkeeping
    def appended(self, events: int, nbytes: int) -> None:
        """The sink spooled ``events`` in items of ``nbytes``: count them and wake the taker."""
        self.appended_events += events
        self.unread_bytes += nbytes
        if self.first_unread is None:
            self.first_unread = time.monotonic()
        self._shared.wake.set()

    def events_in_spool(self) -> int:
        """Events still in the spool that this process knows the count of: read but not done,
        and appended but not read yet (earlier runs' unread items are not counted)."""
        return (sum(w.events for w in self.in_hand.values() if not w.finished)
                + max(0, self.appended_events - self.taken_events))

    def is_drained(self) -> bool:
        """Nothing left: the spool is empty and nothing is in flight."""
        return (self._spool.is_empty and not self.in_hand
                and not any(lane.jobs for lane in self.lanes))

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start the taker, the lane senders and (with --ack) the ack poller."""
        tasks = [asyncio.create_task(self._lane_sender(lane), name=f"splunk-lane-{i}")
                 for i, lane in enumerate(self.lanes)]
        tasks.append(asyncio.create_task(self._guarded("taking from the spool", self._take_chunks()),
                                         name="splunk-taker"))
        if self._shared.config.ack:
            tasks.append(asyncio.create_task(self._guarded("polling acks", self.acks.run()),
                                             name="splunk-ack"))
        return tasks

    async def _guarded(self, doing: str, body: Coroutine[Any, Any, None]) -> None:
        """Run a background task; a spool it cannot read, or any unexpected error, stops the
        sink (data kept). A dead taker or ack poller would otherwise leave events unsent,
        silently, until the drain timeout, and the sink would exit 0 (close() gathers the
        tasks with return_exceptions)."""
        try:
            await body
        except Stopped:
            return
        except SinkError as exc:
            with contextlib.suppress(Stopped):
                self._shared.fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            with contextlib.suppress(Stopped):
                self._shared.fail(_unexpected(doing, exc))

    # ------------------------------------------------------------------ taking chunks

    async def _take_chunks(self) -> None:
        """Takes chunks from the spool once a batch is due (bytes or time), cuts each into
        per-lane requests and queues them; waits while a lane is full or too many acks are pending."""
        spool = self._spool
        shared = self._shared
        while not shared.stop.is_set():
            if any(len(lane.jobs) >= LANE_DEPTH for lane in self.lanes) or (
                    shared.config.ack and self.acks.full):
                await self._wait_wake(1.0)
                continue
            due = self._batch_due()
            if due is None or due > 0:
                await self._wait_wake(1.0 if due is None else due)
                continue
            # up to one full request per lane; each lane's share is cut at --batch-size below
            chunk = await spool.next_chunk(MAX_ITEMS_PER_CHUNK,
                                           shared.config.batch_bytes * len(self.lanes), timeout=0.05)
            if chunk is None:
                if not spool.unread_items:
                    self.first_unread = None
                    self.unread_bytes = 0
                continue
            self.unread_bytes = max(0, self.unread_bytes - chunk.nbytes)
            if not spool.unread_items:
                self.first_unread = None
                self.unread_bytes = 0
            self._queue_chunk(chunk.id, chunk.items, chunk.nbytes)

    def _queue_chunk(self, chunk_id: int, items: list[bytes], nbytes: int) -> None:
        """Cut a chunk into requests of at most --batch-size per lane and queue them."""
        events, requests = cut_requests(items, len(self.lanes), self._shared.config.batch_bytes)
        earlier = min(self.backlog_unread, len(items))  # an earlier run's items come first
        self.backlog_unread -= earlier
        self.taken_events += events - sum(bundle_of(item)[1] for item in items[:earlier])
        self._seq += 1
        work = InFlight(self._seq, chunk_id, events, nbytes)
        work.requests_left = len(requests)
        self.in_hand[work.seq] = work
        for request in requests:
            lane = self.lanes[request.lane]
            lane.jobs.append((work, request, False))
            lane.ready.set()

    def _batch_due(self) -> float | None:
        """Seconds until a batch should go (≤ 0: now); None when nothing is waiting.

        By bytes, a chunk is due once it can fill a request on every lane (``--batch-size`` times the
        lanes): due at one request's worth, a chunk spread over the lanes made requests a
        quarter as big, and httpx spends ~1 ms of CPU per request whatever its size (212 → 137
        requests and ~8 % less CPU per 200k events, bench/RESULTS.md). By time, the batch
        timeout bounds the wait as before."""
        spool = self._spool
        config = self._shared.config
        if self.first_unread is None:
            if spool.unread_items:
                self.first_unread = time.monotonic()
            else:
                return None
        if self.draining or self.unread_bytes >= config.batch_bytes * len(self.lanes):
            return 0.0
        if spool.pending_bytes * 2 >= config.spool_max:
            return 0.0  # the spool is filling up (or full: input waits): no time to lose
        return self.first_unread + config.batch_timeout - time.monotonic()

    async def _wait_wake(self, seconds: float) -> None:
        wake = self._shared.wake
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    # ------------------------------------------------------------------ lanes
    async def _lane_sender(self, lane: LaneQueue) -> None:
        """Sends its lane's requests one at a time, each until HEC takes it (retry in place)."""
        while not self._shared.stop.is_set():
            if not lane.jobs:
                lane.ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.ready.wait(), 1.0)
                continue
            work, request, resend = lane.jobs[0]
            try:
                await self._send(work, request)
            except Stopped:
                return
            except Exception as exc:  # noqa: BLE001 - e.g. the quarantine file cannot be written
                # A dead sender would stall its lane silently until the drain timeout (and
                # asyncio would print a traceback at exit): stop instead, data kept in the spool.
                with contextlib.suppress(Stopped):
                    self._shared.fail(_unexpected("sending", exc))
                return
            lane.jobs.popleft()
            if resend:
                work.unsettled -= 1  # the resent request was replaced by what _send registered
            else:
                work.requests_left -= 1
            self._shared.wake.set()
            self._maybe_finish(work)

    def _queue_resend(self, p: AwaitingAck) -> None:
        lane = self.lanes[p.request.lane]
        lane.jobs.append((p.chunk, p.request, True))
        lane.ready.set()

    # ------------------------------------------------------------------ one request
    async def _send(self, work: InFlight, first: Request) -> None:
        """Deliver ``first`` (a request of ``work``): retries, splits, quarantines; raises Stopped."""
        requests: deque[Request] = deque([first])
        counts = self._shared.counts
        while requests:
            request = requests.popleft()
            verdict, ep = await self._post_until_answered(request)
            action = verdict.action
            if action is Action.SUCCESS:
                self._accepted(work, request, ep, verdict)
                continue
            if action is Action.CONFIG:
                self._shared.fail(verdict.text if verdict.status is None else
                                  f"splunk: {ep.display}: {_hec.config_message(verdict)}")
            envs = request.envelopes()
            if action is Action.SPLIT:
                if len(envs) == 1:
                    await self._quarantine.add(envs, 0, verdict, ep, "larger than the HEC accepts (413)")
                else:
                    mid = len(envs) // 2
                    requests.extendleft([request.again(envs[mid:]), request.again(envs[:mid])])
            elif action is Action.BAD_EVENT:
                i = verdict.event_index
                if i is None or not 0 <= i < len(envs):
                    if len(envs) == 1:
                        await self._quarantine.add(envs, 0, verdict, ep, "rejected by HEC")
                    else:  # HEC did not say which: bisect until it is alone
                        mid = len(envs) // 2
                        requests.extendleft([request.again(envs[mid:]), request.again(envs[:mid])])
                    continue
                # Objects before i were indexed; i and the rest were not (research/hec.md §4).
                counts.delivered += i
                await self._quarantine.add(envs[i:i + 1], i, verdict, ep, "rejected by HEC")
                if i + 1 < len(envs):
                    requests.appendleft(request.again(envs[i + 1:]))
            else:  # REJECT
                await self._quarantine.add(envs, None, verdict, ep, "rejected by HEC (request)")

    async def _post_until_answered(self, request: Request) -> tuple[Verdict, Endpoint]:
        """POST ``request`` until HEC gives a non-transient answer (no attempt limit: it is spooled)."""
        parts = with_index(request.parts, self._index_prefix)
        gz = should_gzip(parts, self._shared.config.compression)
        if not gz:
            body = plain_body(parts)
        elif request.nbytes >= GZIP_THREAD_MIN:
            body = await asyncio.to_thread(gzip_parts, parts)
        else:
            body = gzip_parts(parts)
        headers = self._shared.headers(gz)
        while True:
            ep = await self._endpoints.pick(self._shared.stop)
            v = await self._post(ep, body, headers)
            if v.action is Action.RETRY:
                self._endpoints.mark_down(ep, v)
                self._shared.counts.resent += request.events
                continue
            if v.action is not Action.CONFIG or v.status is not None:
                self._endpoints.mark_up(ep)
            return v, ep

    async def _post(self, ep: Endpoint, body: bytes, headers: dict[str, str]) -> Verdict:
        scrub = self._shared.token.scrub
        try:
            r = await self._client.post(ep.event_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return error_verdict(exc, ep, scrub)
        return _hec.classify(r.status_code, r.content, r.headers.get("Retry-After"), scrub=scrub)

    def _accepted(self, work: InFlight, request: Request, ep: Endpoint, v: Verdict) -> None:
        ack = self._shared.config.ack
        if ack and v.ack_id is not None:
            self.acks.add(work, request, ep, v.ack_id)
            work.unsettled += 1
            return
        if ack and not self._warned_no_ack_id:
            self._warned_no_ack_id = True
            diagnostics.warning("splunk: --ack is set but HEC returned no ackId (the token does not use "
                                "indexer acknowledgement); a 200 reply counts as delivered",
                                key="splunk-no-ackid")
        self._shared.counts.delivered += request.events

    def _acked(self, p: AwaitingAck) -> None:
        self._shared.counts.delivered += p.request.events
        p.chunk.unsettled -= 1
        self._maybe_finish(p.chunk)

    def _maybe_finish(self, work: InFlight) -> None:
        if work.finished or work.requests_left > 0 or work.unsettled > 0:
            return
        work.finished = True
        self.in_hand.pop(work.seq, None)
        self._spool.done(work.chunk_id)
        self._shared.wake.set()
        self._shared.settled.set()
