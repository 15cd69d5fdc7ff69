"""Sending: take chunks from the spool, cut them into per-lane requests, POST each until HEC takes it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
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
from logpipe.sinks.splunk.items import from_item
from logpipe.sinks.splunk.quarantine import Quarantine
from logpipe.sinks.splunk.state import Shared
from logpipe.spool import Spool

#: gzip level 1: JSON logs compress ~8-10x even at the fastest level, and CPU is the budget
GZIP_LEVEL = 1
#: Bodies above this are compressed in a worker thread (zlib releases the GIL).
GZIP_THREAD_MIN = 32 << 10
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


@dataclass(slots=True, eq=False)
class Request:
    """What one POST carries: bundles (or single envelopes, once split), kept whole so the
    body is a join of a few bundles, not of every event."""

    bundles: list[bytes]
    events: int

    def envelopes(self) -> list[bytes]:
        """The single envelopes, in order (needed only to split or isolate a bad event)."""
        out: list[bytes] = []
        for bundle in self.bundles:
            out.extend(bundle.split(b"\n"))
        return out

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.bundles))


def _unexpected(doing: str, exc: Exception) -> str:
    """The one line that stops the sink after a bug or an unexpected OS error in a task."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    return f"splunk: {doing} stopped by an unexpected error: {reason}{where}"


def _request(envelopes: list[bytes]) -> Request:
    return Request(envelopes, len(envelopes))


@dataclass(eq=False)
class LaneQueue:
    """One lane's queue: (chunk, request, is_resend) jobs, sent strictly one after another."""

    jobs: deque[tuple[InFlight, Request, bool]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def gzip(body: bytes) -> bytes:
    """gzip ``body`` at GZIP_LEVEL (wbits 31: the gzip container HEC expects)."""
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(body) + c.flush()


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
        #: events per spooled item not yet read back, in spool order (this run's appends)
        self.item_events: deque[int] = deque()
        #: items from an earlier run not yet read back (their event counts are unknown)
        self.backlog_unread = 0
        self._warned_no_ack_id = False

    # ------------------------------------------------------------------ bookkeeping
    def appended(self, events_per_item: list[int], nbytes: int) -> None:
        """The sink spooled these items: count them and wake the taker."""
        self.item_events.extend(events_per_item)
        self.unread_bytes += nbytes
        if self.first_unread is None:
            self.first_unread = time.monotonic()
        self._shared.wake.set()

    def events_in_spool(self) -> int:
        """Events still in the spool that this process knows the count of: read but not done,
        and appended but not read yet (earlier runs' unread items are not counted)."""
        return (sum(w.events for w in self.in_hand.values() if not w.finished)
                + sum(self.item_events))

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
        by_lane: dict[int, list[tuple[bytes, int]]] = {}
        n_lanes = len(self.lanes)
        events = 0
        for item in items:
            group, bundle = from_item(item)
            n = bundle.count(b"\n") + 1
            by_lane.setdefault(group % n_lanes, []).append((bundle, n))
            events += n
            if self.backlog_unread:
                self.backlog_unread -= 1
            elif self.item_events:
                self.item_events.popleft()
        self._seq += 1
        work = InFlight(self._seq, chunk_id, events, nbytes)
        jobs: list[tuple[int, Request]] = []
        limit = self._shared.config.batch_bytes
        for k, bundles in by_lane.items():
            cur: list[bytes] = []
            size = count = 0
            for bundle, n in bundles:
                # a bundle over --batch-size goes as single envelopes
                runs = [(bundle, n)] if len(bundle) <= limit else [
                    (env, 1) for env in bundle.split(b"\n")]
                for run, m in runs:
                    if cur and size + len(run) > limit:
                        jobs.append((k, Request(cur, count)))
                        cur, size, count = [], 0, 0
                    cur.append(run)
                    size += len(run) + 1
                    count += m
            jobs.append((k, Request(cur, count)))
        work.requests_left = len(jobs)
        self.in_hand[work.seq] = work
        for k, request in jobs:
            lane = self.lanes[k]
            lane.jobs.append((work, request, False))
            lane.ready.set()

    def _batch_due(self) -> float | None:
        """Seconds until a batch should go (≤ 0: now); None when nothing is waiting."""
        spool = self._spool
        config = self._shared.config
        if self.first_unread is None:
            if spool.unread_items:
                self.first_unread = time.monotonic()
            else:
                return None
        if self.draining or self.unread_bytes >= config.batch_bytes:
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
    def _lane_of(self, envelope: bytes) -> int:
        """Which lane sends this envelope: a hash of its ``source``, so one source's events
        always go through one lane, one request at a time, in order."""
        n = len(self.lanes)
        if n == 1:
            return 0
        return _hec.source_group(_hec.source_key(envelope)) % n

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
        lane = self.lanes[self._lane_of(p.request.bundles[0])]
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
                    requests.extendleft([_request(envs[mid:]), _request(envs[:mid])])
            elif action is Action.BAD_EVENT:
                i = verdict.event_index
                if i is None or not 0 <= i < len(envs):
                    if len(envs) == 1:
                        await self._quarantine.add(envs, 0, verdict, ep, "rejected by HEC")
                    else:  # HEC did not say which: bisect until it is alone
                        mid = len(envs) // 2
                        requests.extendleft([_request(envs[mid:]), _request(envs[:mid])])
                    continue
                # Objects before i were indexed; i and the rest were not (research/hec.md §4).
                counts.delivered += i
                await self._quarantine.add(envs[i:i + 1], i, verdict, ep, "rejected by HEC")
                if i + 1 < len(envs):
                    requests.appendleft(_request(envs[i + 1:]))
            else:  # REJECT
                await self._quarantine.add(envs, None, verdict, ep, "rejected by HEC (request)")

    async def _post_until_answered(self, request: Request) -> tuple[Verdict, Endpoint]:
        """POST ``request`` until HEC gives a non-transient answer (no attempt limit: it is spooled)."""
        prefix = self._index_prefix
        bundles = request.bundles
        if prefix:
            # every envelope starts with "{", and a raw newline only ever separates envelopes
            nl_prefix = b"\n" + prefix
            bundles = [prefix + b[1:].replace(b"\n{", nl_prefix) for b in bundles]
        body = _hec.join_body(bundles)
        gz = len(body) >= _hec.GZIP_MIN_BYTES
        if gz:
            body = await asyncio.to_thread(gzip, body) if len(body) >= GZIP_THREAD_MIN else gzip(body)
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
