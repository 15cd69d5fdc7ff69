"""The Splunk HEC protocol without I/O: event envelopes, reply classification, backoff, acks.

Everything here is pure (no sockets, no files, no clock except where passed in), so the sink in
the rest of the package stays about delivery and these rules are unit-tested in isolation. Citations:
``research/hec.md`` and Splunk's pages named there —

- Format events for HEC: https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/format-events-for-http-event-collector
- Troubleshoot HEC, "Possible error codes": https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/troubleshoot-http-event-collector
- Indexer acknowledgment: https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/about-http-event-collector-indexer-acknowledgment
"""

from __future__ import annotations

import enum
import hashlib
import random
import re
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from logpipe import record

EVENT_PATH = "/services/collector/event"
HEALTH_PATH = "/services/collector/health"
ACK_PATH = "/services/collector/ack"
CHANNEL_HEADER = "X-Splunk-Request-Channel"

#: Indexed fields sent with every event (SPEC §4). HEC ``fields`` must be a flat object whose
#: values are strings (or arrays of strings); a nested value is rejected with code 15.
INDEXED_FIELDS = (record.SERVICE, record.FEATURE, record.INSTANCE_ID, record.LEVEL)

#: Bodies smaller than this go uncompressed: gzip's header and CPU cost are not worth it for a
#: few events (the OTel Splunk exporter uses the same 1500-byte threshold).
GZIP_MIN_BYTES = 1500

#: A ``Retry-After`` larger than this is capped: the data is spooled on disk, so we keep
#: probing rather than go silent for hours because of one odd header.
RETRY_AFTER_MAX = 300.0


# --- envelopes ----------------------------------------------------------------------------------
class EnvelopeEncoder:
    """Record (+ its NDJSON line) → one HEC ``/event`` envelope, as bytes.

    Envelope keys are exactly ``time``, ``host``, ``source``, ``sourcetype``, ``index``,
    ``fields``, ``event``: inside a batch, an object with an unknown top-level key is silently
    skipped by Splunk (research/hec.md §3), so nothing else is ever added. Metadata never
    carries over from one object to the next, so every envelope states its own.
    """

    __slots__ = ("_default_host", "_heads", "_host", "_index", "_source", "_sourcetype", "_tcache")

    def __init__(self, *, host: str | None = None, source: str | None = None,
                 sourcetype: str | None = "_json", index: str | None = None,
                 default_host: str = "localhost") -> None:
        self._host = host or None
        self._source = source or None
        self._sourcetype = sourcetype or None
        self._index = index or None
        self._default_host = default_host
        #: "2026-11-23T14:01:51" → b"1795442511." (one datetime parse per second of log time)
        self._tcache: dict[str, bytes] = {}
        #: (host, source, service, feature, instance_id, level) → the envelope bytes between
        #: ``time`` and ``event`` (a handful of distinct values per run)
        self._heads: dict[tuple[Any, ...], tuple[bytes, bytes, int]] = {}

    def epoch_text(self, value: Any) -> bytes:
        """A record's ``time`` → epoch seconds with microseconds, as JSON number text.

        HEC wants ``<sec>.<fraction>`` seconds (Splunk "Format events"); Splunk keeps
        microseconds, so we send exactly six decimals. The canonical RFC 3339 form is converted
        exactly (no float rounding); other forms go through :func:`record.to_epoch`; a record
        without a usable time gets the current time.
        """
        if record.is_canonical_time(value):
            frac = value[20:26]
            if frac.isdigit():
                prefix = value[:19]
                secs = self._tcache.get(prefix)
                if secs is None:
                    try:
                        n = int(datetime.fromisoformat(prefix).replace(tzinfo=UTC).timestamp())
                    except ValueError:
                        n = -1
                    if n >= 0:
                        if len(self._tcache) > 4096:
                            self._tcache.clear()
                        secs = self._tcache[prefix] = f"{n}.".encode()
                if secs is not None:
                    return secs + frac.encode()
        epoch = record.to_epoch(value) if value is not None else None
        if epoch is None:
            epoch = _time.time()
        return f"{epoch:.6f}".encode()

    def metadata(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """``source``, ``host``, ``sourcetype``, ``index``, ``fields`` for ``rec`` (what is set).

        ``source`` comes first (the envelope opens with it) so the sender can find an event's
        source without parsing (see :func:`source_key`).
        """
        meta: dict[str, Any] = {}
        source = self._source
        if source is None:
            s = rec.get(record.SOURCE)
            if isinstance(s, str) and s:
                source = s
            else:
                svc = rec.get(record.SERVICE)
                if isinstance(svc, str) and svc:
                    source = svc
        if source is not None:
            meta["source"] = source
        host = self._host
        if host is None:
            h = rec.get(record.HOST)
            host = h if isinstance(h, str) and h else self._default_host
        meta["host"] = host
        if self._sourcetype is not None:
            meta["sourcetype"] = self._sourcetype
        if self._index is not None:
            meta["index"] = self._index
        fields: dict[str, str] = {}
        for key in INDEXED_FIELDS:
            v = rec.get(key)
            if isinstance(v, str):
                if v:
                    fields[key] = v
            elif isinstance(v, int | float) and not isinstance(v, bool):
                fields[key] = str(v)  # HEC indexed fields are strings (code 15 otherwise)
        if fields:
            meta["fields"] = fields
        return meta

    def _head(self, rec: Mapping[str, Any]) -> tuple[bytes, bytes, int]:
        """(``{"source":…,"time":``, ``,"host":…,"event":``, source group) around the time."""
        meta = self.metadata(rec)
        source = meta.pop("source", None)
        if source is None:
            pre, group = b'{"time":', source_group(b"")
        else:
            text = orjson.dumps(source)
            pre, group = b'{"source":' + text + b',"time":', source_group(text[1:-1])
        return pre, b"," + orjson.dumps(meta)[1:-1] + b',"event":', group

    def encode(self, rec: Mapping[str, Any], line: bytes | None = None) -> bytes:
        """One envelope as compact JSON bytes (the record's own NDJSON bytes reused as ``event``)."""
        return self.encode_many([rec], None if line is None else [line])[0]

    def encode_many(self, records: Sequence[Mapping[str, Any]],
                    lines: Sequence[bytes] | None = None) -> list[bytes]:
        """Envelopes for a batch, in order."""
        return self._encode(records, lines, grouped=False)[0]

    def encode_grouped(self, records: Sequence[Mapping[str, Any]],
                       lines: Sequence[bytes] | None = None) -> dict[int, list[bytes]]:
        """Envelopes for a batch grouped by :func:`source_group` of their ``source``, each group
        in record order (what the sink spools: one item per group)."""
        return self._encode(records, lines, grouped=True)

    def _encode(self, records: Sequence[Mapping[str, Any]], lines: Sequence[bytes] | None,
                grouped: bool) -> dict[int, list[bytes]]:
        """Cached metadata around the time, then ``"event":`` and the record's own NDJSON
        line — no per-record dict or JSON encoding (the hot path)."""
        if lines is None:
            lines = [record.dumps(r) for r in records]
        heads = self._heads
        tcache = self._tcache
        epoch_text = self.epoch_text
        out: dict[int, list[bytes]] = {}
        flat: list[bytes] = []
        if not grouped:
            out[0] = flat
        for rec, line in zip(records, lines, strict=True):
            get = rec.get
            t = get("time")
            tb = None
            if record.is_canonical_time(t):
                secs = tcache.get(t[:19])
                frac = t[20:26]
                if secs is not None and frac.isdigit():
                    tb = secs + frac.encode()
            if tb is None:
                tb = epoch_text(t)
            key = (get("host"), get("source"), get("service"), get("feature"), get("instance_id"),
                   get("level"))
            try:
                head = heads.get(key)
            except TypeError:  # an unhashable value (a list, a dict)
                head = None
            if head is None:
                head = self._head(rec)
                # Only keys of strings (or None) are cached: 1 == 1.0 == True would otherwise
                # share a slot. A lookup can then only hit with equal strings, never with
                # numbers or booleans (no str equals them), so hits need no type check.
                if all(v is None or isinstance(v, str) for v in key):
                    if len(heads) > 4096:
                        heads.clear()
                    heads[key] = head
            env = b"".join((head[0], tb, head[1], line, b"}"))
            if grouped:
                bucket = out.get(head[2])
                if bucket is None:
                    bucket = out[head[2]] = []
                bucket.append(env)
            else:
                flat.append(env)
        return out


def source_key(envelope: bytes) -> bytes:
    """The raw JSON text of an envelope's ``source`` (b"" when it has none), found without
    parsing: the envelope opens with ``{"source":"…",`` and, since every ``"`` inside a JSON
    string is escaped, the first raw ``","time":`` is where that string ends."""
    if not envelope.startswith(b'{"source":"'):
        return b""
    end = envelope.find(b'","time":', 11)
    return envelope[11:end] if end > 0 else b""


def source_group(source_text: bytes) -> int:
    """A stable 32-bit hash of a source's JSON text (as :func:`source_key` returns it): the
    sink sends one group's events through one lane, in order. Stable across processes
    (blake2b, not ``hash``) because it is stored with spooled events."""
    return int.from_bytes(hashlib.blake2b(source_text, digest_size=4).digest(), "big")


def join_body(items: Iterable[bytes]) -> bytes:
    """Envelopes (or bundles: newline-joined runs of them) → one request body: the JSON objects one
    after another, no array, newlines between them (Splunk "Format events for HEC": a batch is
    objects concatenated; whitespace between them is allowed)."""
    return b"\n".join(items)


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
