"""Indexer acknowledgement (``--ack``): requests HEC took with an ackId, polled until acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from logpipe import diagnostics
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk._hec import Action
from logpipe.sinks.splunk.endpoints import Endpoint, Endpoints, Stopped
from logpipe.sinks.splunk.state import Shared

if TYPE_CHECKING:
    from logpipe.sinks.splunk.requests import Request
    from logpipe.sinks.splunk.sender import InFlight

#: Bound on requests awaiting an ack: when reached, senders stop taking chunks, so the spool
#: (and then stdin) absorbs the wait (Vector bounds its pending acks the same way).
MAX_PENDING_ACK_BYTES = 64 << 20
MAX_PENDING_ACKS = 10_000
#: ack ids per /ack query
ACK_QUERY_MAX = 1000


@dataclass(eq=False)
class AwaitingAck:
    """A request HEC accepted with an ackId, not yet acknowledged."""

    chunk: InFlight
    request: Request
    endpoint: Endpoint
    ack_id: int
    sent: float
    nbytes: int


class AckTracker:
    """Every ack interval, ask each endpoint about the ids it issued (Splunk IDXAck); resend what
    is not acknowledged within the ack timeout (duplicates possible, as Splunk warns)."""

    def __init__(self, shared: Shared, endpoints: Endpoints, client: httpx.AsyncClient,
                 on_acked: Callable[[AwaitingAck], None],
                 resend: Callable[[AwaitingAck], None]) -> None:
        self._shared = shared
        self._endpoints = endpoints
        self._client = client
        self._on_acked = on_acked
        self._resend = resend
        self.count = 0
        self.nbytes = 0

    @property
    def full(self) -> bool:
        """Too many requests await their ack: take no more chunks for now."""
        return self.count >= MAX_PENDING_ACKS or self.nbytes >= MAX_PENDING_ACK_BYTES

    def add(self, chunk: InFlight, request: Request, ep: Endpoint, ack_id: int) -> None:
        """HEC took ``request`` with ``ack_id``: wait for its ack."""
        old = ep.pending.get(ack_id)
        if old is not None:  # HEC restarted its ids: the old request can no longer be claimed
            self.drop(old)
            self._resend(old)
        nbytes = request.nbytes
        ep.pending[ack_id] = AwaitingAck(chunk, request, ep, ack_id, time.monotonic(), nbytes)
        self.count += 1
        self.nbytes += nbytes

    def drop(self, p: AwaitingAck) -> None:
        """Forget ``p`` (acknowledged, timed out or replaced)."""
        p.endpoint.pending.pop(p.ack_id, None)
        self.count -= 1
        self.nbytes -= p.nbytes

    async def run(self) -> None:
        """The poller task (until the sink stops)."""
        shared = self._shared
        config = shared.config
        while not shared.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.stop.wait(), config.ack_interval)
            for ep in self._endpoints:
                if ep.pending:
                    await self._poll(ep)
            now = time.monotonic()
            for ep in self._endpoints:
                for p in [p for p in ep.pending.values() if now - p.sent > config.ack_timeout]:
                    self.drop(p)
                    shared.counts.resent += p.request.events
                    diagnostics.warning(
                        f"splunk: {ep.display}: ack {p.ack_id} not received within "
                        f"{config.ack_timeout:g}s; sending its {p.request.events} events again "
                        "(duplicates possible)", key=f"splunk-ack-timeout:{ep.display}")
                    self._resend(p)

    async def _poll(self, ep: Endpoint) -> None:
        shared = self._shared
        ids = list(ep.pending)[:ACK_QUERY_MAX]
        url = f"{ep.base}{_hec.ACK_PATH}?channel={shared.channel}"
        try:
            r = await self._client.post(url, content=_hec.ack_query(ids), headers=shared.headers(False))
        except httpx.HTTPError:
            return  # unreachable for now: the ack timeout decides
        if r.status_code != 200:
            v = _hec.classify(r.status_code, r.content, scrub=shared.token.scrub)
            if v.action is Action.CONFIG:
                with contextlib.suppress(Stopped):
                    shared.fail(f"splunk: {ep.display} ack query: {_hec.config_message(v)}")
            return
        try:
            acks = _hec.parse_ack_reply(r.content)
        except ValueError:
            return
        for ack_id, ok in acks.items():
            if not ok:
                continue
            p = ep.pending.get(ack_id)
            if p is None:
                continue
            self.drop(p)
            self._on_acked(p)
        shared.wake.set()
