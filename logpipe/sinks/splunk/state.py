"""What the Splunk sink's parts share: settings, token, channel, counts and the stop/wake events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from logpipe.errors import SinkConfigError
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk.config import Secret, SplunkConfig
from logpipe.sinks.splunk.endpoints import Stopped


@dataclass
class Counts:
    """Events, for the summary and ``stats()``."""

    spooled: int = 0      # this run's input, made durable
    delivered: int = 0    # HEC took them (with --ack: acknowledged)
    resent: int = 0       # sent again (retry, lost ack)
    backlog: int = 0      # spool items found from an earlier run at start
    left_in_spool: int = 0


class Shared:
    """One per sink: handed to the sender and the ack tracker."""

    def __init__(self, config: SplunkConfig, token: Secret) -> None:
        self.config = config
        self.token = token
        #: a new channel GUID per process: ack ids are not persisted, so a restarted sink could
        #: not claim an old channel's ids anyway — its unacked chunks are still in the spool and
        #: are simply sent again. Sent on every request (research/hec.md §9), needed with --ack.
        self.channel = str(uuid.uuid4())
        self.counts = Counts()
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()     # for the taker: appended, settled, resend
        self.settled = asyncio.Event()  # for close(): a chunk finished, or a fatal error
        self.fatal_event = asyncio.Event()
        self.fatal: SinkConfigError | None = None
        #: set by the sink: turns a message into ``fatal`` and stops everything
        self.on_fatal: Callable[[str], None] = lambda message: None

    def fail(self, message: str) -> NoReturn:
        """Sending stops for good (a config error HEC will not change its mind about)."""
        if self.fatal is None:
            self.on_fatal(message)
        raise Stopped

    def raise_if_fatal(self) -> None:
        """Raise the fatal error, if sending stopped for good."""
        if self.fatal is not None:
            raise self.fatal

    def headers(self, gzipped: bool) -> dict[str, str]:
        """Request headers (the only place the token is revealed)."""
        h = {
            "Authorization": "Splunk " + self.token.reveal(),
            _hec.CHANNEL_HEADER: self.channel,
            "Content-Type": "application/json",
        }
        if gzipped:
            h["Content-Encoding"] = "gzip"
        return h
