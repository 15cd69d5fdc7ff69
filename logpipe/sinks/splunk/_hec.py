"""The Splunk HEC protocol without I/O: paths, reply classification, backoff, acks (event
envelopes: :mod:`._envelope`, re-exported here).

Everything here is pure (no sockets, no files, no clock except where passed in), so the sink in
the rest of the package stays about delivery and these rules are unit-tested in isolation. Citations:
``research/hec.md`` and Splunk's pages named there —

- Format events for HEC: https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/format-events-for-http-event-collector
- Troubleshoot HEC, "Possible error codes": https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/troubleshoot-http-event-collector
- Indexer acknowledgment: https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/about-http-event-collector-indexer-acknowledgment
"""

from __future__ import annotations

import enum
import random
import re
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from logpipe.sinks.splunk._envelope import INDEXED_FIELDS as INDEXED_FIELDS  # re-exported
from logpipe.sinks.splunk._envelope import EnvelopeEncoder as EnvelopeEncoder
from logpipe.sinks.splunk._envelope import join_body as join_body
from logpipe.sinks.splunk._envelope import source_group as source_group
from logpipe.sinks.splunk._envelope import source_key as source_key

EVENT_PATH = "/services/collector/event"
HEALTH_PATH = "/services/collector/health"
ACK_PATH = "/services/collector/ack"
CHANNEL_HEADER = "X-Splunk-Request-Channel"

#: Bodies smaller than this go uncompressed: gzip's header and CPU cost are not worth it for a
#: few events (the OTel Splunk exporter uses the same 1500-byte threshold).
GZIP_MIN_BYTES = 1500

#: A ``Retry-After`` larger than this is capped: the data is spooled on disk, so we keep
#: probing rather than go silent for hours because of one odd header.
RETRY_AFTER_MAX = 300.0


# --- reply classification -----------------------------------------------------------------------
class Action(enum.Enum):
    """What the sender must do with a request after HEC's reply."""

    SUCCESS = "success"        # delivered (or: await the ackId)
    RETRY = "retry"            # transient: back off, send the same body again
    SPLIT = "split"            # 413: the request is too large; send it in halves
    BAD_EVENT = "bad_event"    # one event is bad: head delivered, event quarantined, tail resent
    REJECT = "reject"          # this body can never be accepted (quarantine it, keep going)
    CONFIG = "config"          # the destination refuses us: stop sending, keep data, exit non-zero


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classified reply: an action plus what the reply said, for messages."""

    action: Action
    status: int | None = None
    code: int | None = None
    text: str = ""
    ack_id: int | None = None
    #: for BAD_EVENT: the 0-based ``invalid-event-number``; None when HEC did not say
    event_index: int | None = None
    #: seconds, from ``Retry-After``
    retry_after: float | None = None

    def describe(self) -> str:
        """``HTTP 503, HEC code 9: Server is busy`` — for diagnostics (never holds the token)."""
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"HEC code {self.code}")
        head = ", ".join(parts) or "no reply"
        return f"{head}: {self.text}" if self.text else head


#: HEC codes (Splunk "Possible error codes") that mean one event of the batch is malformed:
#: 6 invalid data format, 12 event field required, 13 event field blank, 15 bad indexed fields.
#: Objects before ``invalid-event-number`` were indexed, it and the rest were not
#: (research/hec.md §4; moby/moby#35862), so only the tail is resent.
BAD_EVENT_CODES = frozenset({6, 12, 13, 15})

#: Codes retrying can never fix; the operator must change the token, index or --ack.
CONFIG_HINTS: dict[int, str] = {
    1: "the HEC token is disabled",
    2: "HEC says a token is required",
    3: "HEC rejected the authorization header",
    4: "the HEC token is invalid",
    7: "the index is not allowed for this token (check --index)",
    10: "the token requires indexer acknowledgement: a data channel is missing (use --ack)",
    11: "HEC rejected the data channel",
    14: "indexer acknowledgement is disabled for this token (drop --ack or enable useACK)",
    16: "query-string authorization is not enabled",
    21: "the HEC token is invalid",
    22: "the HEC token is disabled",
}

_TAG_RE = re.compile(rb"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


def parse_body(body: bytes) -> dict[str, Any]:
    """A HEC reply body → its JSON object, or ``{"text": <short plain text>}`` when it is not
    one (load balancers answer 429/502/504 with HTML: research/hec.md §5, SCK#474)."""
    stripped = body.strip()
    if stripped[:1] == b"{" and len(stripped) < 1 << 20:
        try:
            obj = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
    text = _TAG_RE.sub(b" ", stripped[:4096]).decode("utf-8", "replace")
    text = _SPACE_RE.sub(" ", text).strip()
    printable = "".join(ch for ch in text if ch.isprintable())
    return {"text": printable[:1024]}  # classify() scrubs the token, then cuts at 160


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (delta-seconds or an HTTP-date, RFC 9110 §10.2.3) → seconds ≥ 0, capped."""
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (_time.time() if now is None else now)
    return max(0.0, min(seconds, RETRY_AFTER_MAX))


def classify(status: int, body: bytes, retry_after: str | None = None,
             scrub: Callable[[str], str] | None = None) -> Verdict:
    """HEC's reply → what to do. The one place that encodes Splunk's status/code table.

    Rules (Splunk "Possible error codes"; retry consensus of Vector ``src/sinks/util/http.rs``,
    Fluent Bit ``out_splunk``, OTel ``httprequest.go`` — research/hec.md §5):

    - 2xx → SUCCESS, carrying ``ackId`` when the token uses indexer acknowledgement.
    - 5xx except 501, 408, 429 → RETRY (``Retry-After`` honoured); 503 code 9 "Server is busy"
      is the expected case during indexer restarts.
    - 413 → SPLIT (over ``max_content_length``).
    - 400 with code 6/12/13/15 → BAD_EVENT at ``invalid-event-number``.
    - 401, 403 (codes 1-4) and 400 codes 7/10/11/14/16/21/22 → CONFIG: no retry can help.
    - 400 code 5 "No data" → REJECT (that body can never index).
    - anything else (other 4xx, 3xx, 501): CONFIG — not retried blindly, never dropped either.
    """
    obj = parse_body(body) if body else {}
    code = _int_or_none(obj.get("code"))
    raw_text = obj.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    if scrub is not None:
        # before the cut: a reply echoing the Authorization header (a proxy's error page)
        # must not leave even a prefix of the token in a message or the quarantine file
        text = scrub(text)
    text = text[:160]
    after = parse_retry_after(retry_after)

    def v(action: Action, **kw: Any) -> Verdict:
        return Verdict(action, status=status, code=code, text=text, retry_after=after, **kw)

    if 200 <= status < 300:
        return v(Action.SUCCESS, ack_id=_int_or_none(obj.get("ackId")))
    if status in (408, 429) or (500 <= status < 600 and status != 501):
        return v(Action.RETRY)
    if status == 413:
        return v(Action.SPLIT)
    if status in (401, 403):
        return v(Action.CONFIG)
    if status == 400:
        if code in BAD_EVENT_CODES:
            return v(Action.BAD_EVENT, event_index=_int_or_none(obj.get("invalid-event-number")))
        if code == 5:
            return v(Action.REJECT)
        return v(Action.CONFIG)
    return v(Action.CONFIG)


def config_message(verdict: Verdict) -> str:
    """A one-line explanation of a CONFIG verdict (no token, ever)."""
    hint = CONFIG_HINTS.get(verdict.code) if verdict.code is not None else None
    if hint is None:
        if verdict.status in (401, 403):
            hint = "HEC refused the token"
        elif verdict.status in (404, 405):
            hint = "no HEC at this URL (check --url)"
        elif verdict.status is not None and 300 <= verdict.status < 400:
            hint = "HEC answered with a redirect (check the scheme and port of --url)"
        else:
            hint = "HEC refused the request"
    return f"{hint} ({verdict.describe()})"


# --- backoff ------------------------------------------------------------------------------------
class Backoff:
    """Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
    And Jitter"; Vector ``src/sinks/util/retries.rs`` also uses full jitter).

    ``delay(n)`` = uniform(0, min(cap, base·2ⁿ)), and never less than a server's ``Retry-After``.
    There is no attempt limit: the data is on disk (research/hec.md §8.4 — shippers that give
    up after N tries lose data in every long outage).
    """

    __slots__ = ("base", "cap", "rng")

    def __init__(self, base: float = 0.2, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the jitter window for ``attempt`` (0-based)."""
        return float(min(self.cap, self.base * float(2 ** min(attempt, 62))))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        d: float = self.rng.uniform(0.0, self.ceiling(attempt))
        if retry_after is not None:
            d = max(d, min(retry_after, RETRY_AFTER_MAX))
        return d


# --- indexer acknowledgement --------------------------------------------------------------------
def ack_query(ack_ids: Iterable[int]) -> bytes:
    """Body of ``POST /services/collector/ack?channel=…``: ``{"acks":[0,1,5]}`` (Splunk IDXAck)."""
    return orjson.dumps({"acks": sorted(set(ack_ids))})


def parse_ack_reply(body: bytes) -> dict[int, bool]:
    """``{"acks":{"0":true,"1":false}}`` → ``{0: True, 1: False}``; ValueError when malformed.

    ``false`` means pending *or* lost — Splunk cannot tell them apart — so only a timeout turns a
    ``false`` into a resend (Splunk's IDXAck guidance).
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError("ack reply is not JSON") from exc
    acks = obj.get("acks") if isinstance(obj, dict) else None
    if not isinstance(acks, dict):
        raise ValueError("ack reply has no 'acks' object")
    out: dict[int, bool] = {}
    for k, val in acks.items():
        i = _int_or_none(k)
        if i is not None:
            out[i] = val is True
    return out
