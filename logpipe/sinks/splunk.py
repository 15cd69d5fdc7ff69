"""The Splunk HEC sink: spool to disk, then batch, gzip, POST, retry, quarantine, ack, fail over.

Data path::

    write(batch) ─► envelopes (_hec) ─► Spool.append (fsync) ─► Outcome.SPOOLED
                                             │
              senders (--concurrency) ◄──────┘  chunks by bytes (--batch-size) and time
                 │  gzip, POST /services/collector/event, round robin over healthy --url's
                 ├─ 2xx ─────────► spool.done   (with --ack: after /ack says true)
                 ├─ 5xx/408/429/network ─► same chunk again, capped backoff + jitter, Retry-After,
                 │                         next healthy endpoint first; no attempt limit
                 ├─ 413 ─► halves;  400 bad event i ─► head delivered, i quarantined, tail resent
                 └─ 401/403/bad index/… ─► stop sending, keep the spool, SinkConfigError

A batch is durable (spooled) before ``write`` returns, so the collector's checkpoint may
advance; delivery continues in the background and across restarts (the spool replays on open).

Order, per source: each chunk is split into ``--concurrency`` lanes by a hash of the event's
``source``; a lane sends one request at a time and retries it in place (a 413 half, a bad
event's tail) before the next, so the events of one source reach HEC in the order they were
written — through outages and restarts too. Different sources go out in parallel. (Vector and
Fluent Bit keep several requests in flight with no per-source order; a single-source stream,
e.g. plain stdin, therefore has one request in flight here.)

Duplicates: at-least-once. A request whose reply was lost (timeout, cut connection) is sent
again, and with ``--ack`` a request not acknowledged within the ack timeout is sent again
(Splunk's IDXAck guidance says to expect duplicates); a chunk whose lanes were only partly
delivered when the sink stopped is sent again whole on the next run; after a crash, chunks done
since the spool's last cursor write are sent again.

Spool items: one per source group of a written batch — a format byte, the 4-byte source group
(the lane key) and the envelopes joined by newlines — so the spool frames and checksums once per
group, not per event. Envelopes are spooled with their host/source/sourcetype; ``--index`` is
added when a request is built, so fixing a refused index (HEC code 7) and restarting delivers
what was spooled.

Tuning through the environment (tests use short values):
``LOGPIPE_SPLUNK_TOKEN`` (the token), ``LOGPIPE_SPLUNK_ACK_TIMEOUT`` (300 s),
``LOGPIPE_SPLUNK_ACK_INTERVAL`` (1 s), ``LOGPIPE_SPLUNK_DRAIN_TIMEOUT`` (30 s),
``LOGPIPE_SPLUNK_RETRY_MAX`` (backoff cap, 30 s), ``LOGPIPE_SPLUNK_TIMEOUT`` (request, 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.util
import os
import socket
import ssl
import sys
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    # httpcore runs ``import sniffio`` (inside try/except ImportError) several times per request
    # to tell asyncio from trio; anyio 4 no longer installs sniffio, so each of those imports
    # searched sys.path again (≈ 34 µs, 3 per request). A None entry makes the import fail at
    # once, exactly as it would anyway (Python's documented sys.modules negative entry).
    sys.modules["sniffio"] = None  # type: ignore[assignment]

from logpipe import diagnostics, identity, record
from logpipe.errors import DiskFullError, SinkConfigError, SinkError, UsageError
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks import SinkOptions, _hec
from logpipe.sinks._hec import Action, Verdict
from logpipe.spool import Spool

ENV_TOKEN = "LOGPIPE_SPLUNK_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_ACK_TIMEOUT = "LOGPIPE_SPLUNK_ACK_TIMEOUT"
ENV_ACK_INTERVAL = "LOGPIPE_SPLUNK_ACK_INTERVAL"
ENV_DRAIN_TIMEOUT = "LOGPIPE_SPLUNK_DRAIN_TIMEOUT"
ENV_RETRY_MAX = "LOGPIPE_SPLUNK_RETRY_MAX"
ENV_TIMEOUT = "LOGPIPE_SPLUNK_TIMEOUT"

#: ≤ 1,000,000 uncompressed bytes per request or 1 s, as Vector's ``splunk_hec_logs``
#: (research/hec.md §7): safe under Splunk Cloud's commonly stated 1 MB and 6.x's 1,000,000 B
#: max_content_length; larger requests are still split on 413.
DEFAULT_BATCH_BYTES = 1_000_000
DEFAULT_BATCH_TIMEOUT = 1.0
#: requests in flight (Fluent Bit: 2 workers; OTel: 10 consumers)
DEFAULT_CONCURRENCY = 4
DEFAULT_SPOOL_MAX = 1 << 30
#: Splunk's IDXAck guidance: resend when not acknowledged within ~5 minutes (Kafka Connect
#: had to raise its 120 s to 300 s: splunk/kafka-connect-splunk#122).
DEFAULT_ACK_TIMEOUT = 300.0
#: Splunk suggests polling about every 10 s; one small POST per second per endpoint costs
#: nothing and lets an ``--ack`` run finish within a second of its last ack instead of ten.
DEFAULT_ACK_INTERVAL = 1.0
DEFAULT_DRAIN_TIMEOUT = 30.0
#: backoff cap (Vector: 30 s) and start
DEFAULT_RETRY_MAX = 30.0
RETRY_BASE = 0.2
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Bound on requests awaiting an ack: when reached, senders stop taking chunks, so the spool
#: (and then stdin) absorbs the wait (Vector bounds its pending acks the same way).
MAX_PENDING_ACK_BYTES = 64 << 20
MAX_PENDING_ACKS = 10_000
#: ack ids per /ack query
ACK_QUERY_MAX = 1000
#: gzip level 1: JSON logs compress ~8-10x even at the fastest level, and CPU is the budget
GZIP_LEVEL = 1
#: Bodies above this are compressed in a worker thread (zlib releases the GIL).
GZIP_THREAD_MIN = 32 << 10
MAX_ITEMS_PER_CHUNK = 100_000
#: the start-up health check waits this long per endpoint; a HEC that does not answer in time
#: is "unreachable for now", not fatal (records are spooled)
HEALTH_TIMEOUT = 5.0
#: parts queued per lane (the one being sent included) before the taker waits
LANE_DEPTH = 2


# --- the token ----------------------------------------------------------------------------------
class Secret:
    """A string that never shows itself: ``repr``/``str``/format give ``[REDACTED]``
    (Vector's ``SensitiveString``, lib/vector-common/src/sensitive_string.rs)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value, for the one place that needs it (the Authorization header)."""
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with any occurrence of the secret replaced by ``[REDACTED]``."""
        return text.replace(self._value, "[REDACTED]") if self._value else text

    def __repr__(self) -> str:
        return "[REDACTED]"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "[REDACTED]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def read_token(token_file: str | None, environ: dict[str, str] | None = None) -> Secret:
    """The HEC token from ``--token-file`` (whitespace stripped) or ``LOGPIPE_SPLUNK_TOKEN``.

    Never from the command line (it would show in ``ps`` and shell history). Errors name where
    the token came from, never the token.
    """
    env = os.environ if environ is None else environ
    if token_file:
        try:
            with open(token_file, "rb") as f:
                raw = f.read(64 << 10)
        except OSError as exc:
            raise UsageError(f"splunk: cannot read --token-file {token_file}: {exc.strerror}") from None
        value = raw.decode("utf-8", "replace").strip()
        where = f"--token-file {token_file}"
    else:
        value = env.get(ENV_TOKEN, "").strip()
        where = ENV_TOKEN
        if not value:
            raise UsageError(f"splunk: no HEC token: set {ENV_TOKEN} or pass --token-file FILE "
                             "(the token is never taken from the command line)")
    if not value:
        raise UsageError(f"splunk: {where} is empty")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise UsageError(f"splunk: the token in {where} has characters an HTTP header cannot carry")
    return Secret(value)


def _env_float(name: str, default: float, minimum: float = 0.001) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= minimum:
        raise UsageError(f"{name} must be at least {minimum}")
    return value


# --- endpoints ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Endpoint:
    """One HEC base URL, its health, and the ack ids it issued."""

    base: str
    display: str
    down_until: float = 0.0
    failures: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)

    @property
    def event_url(self) -> str:
        return self.base + _hec.EVENT_PATH

    @property
    def health_url(self) -> str:
        return self.base + _hec.HEALTH_PATH


def parse_endpoint(url: str) -> Endpoint:
    """``https://splunk:8088`` (or a full ``…/services/collector/event`` URL) → Endpoint.

    User info in the URL is dropped (the token travels only in the Authorization header).
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
        raise UsageError(f"splunk: --url {shown!r} is not an http(s) URL (e.g. https://splunk:8088)")
    path = parts.path
    cut = path.find("/services/collector")
    path = path[:cut] if cut >= 0 else path.rstrip("/")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"splunk: --url {parts.scheme}://{host}: bad port") from None
    netloc = host if port is None else f"{host}:{port}"
    base = urlunsplit((parts.scheme, netloc, path, "", ""))
    return Endpoint(base=base, display=base)


# --- work in flight -----------------------------------------------------------------------------
@dataclass(eq=False)
class _Work:
    """One spool chunk being delivered."""

    seq: int
    chunk_id: int
    events: int
    nbytes: int
    #: lane parts not yet sent
    parts_left: int = 0
    #: pieces sent but not yet final (awaiting an ack, or queued for resend)
    unsettled: int = 0
    finished: bool = False


@dataclass(eq=False)
class _Lane:
    """One sender's queue: (work, items, is_resend) jobs, sent strictly one after another."""

    jobs: deque[tuple[_Work, _Part, bool]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True, eq=False)
class _Part:
    """What one request carries: segments of one or more envelopes joined by newlines (spooled
    groups, kept whole so a request body is a join of a few segments, not of every event)."""

    segs: list[bytes]
    events: int

    def envelopes(self) -> list[bytes]:
        """The single envelopes, in order (needed only to split or isolate a bad event)."""
        out: list[bytes] = []
        for seg in self.segs:
            out.extend(seg.split(b"\n"))
        return out

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.segs))


def _part(envelopes: list[bytes]) -> _Part:
    return _Part(envelopes, len(envelopes))


@dataclass(eq=False)
class _Pending:
    """A request HEC accepted with an ackId, not yet acknowledged."""

    work: _Work
    part: _Part
    endpoint: Endpoint
    ack_id: int
    sent: float
    nbytes: int


class _Stopped(Exception):
    """Internal: sending stops (fatal config error or shutdown); the chunk stays spooled."""


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _os_error(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and not isinstance(cur, ssl.SSLError) and cur.strerror:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _gzip(body: bytes) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip container
    return c.compress(body) + c.flush()


# --- the sink -----------------------------------------------------------------------------------
class SplunkSink(Sink):
    """Splunk HTTP Event Collector sink (see the module docstring)."""

    name = "splunk"

    def __init__(
        self,
        urls: list[str],
        token: Secret,
        *,
        spool_dir: str,
        quarantine_path: str,
        spool_max: int = DEFAULT_SPOOL_MAX,
        encoder: _hec.EnvelopeEncoder | None = None,
        index: str | None = None,
        ack: bool = False,
        ca_file: str | None = None,
        insecure: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        ack_interval: float = DEFAULT_ACK_INTERVAL,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        retry_max: float = DEFAULT_RETRY_MAX,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        progress: bool | None = None,
    ) -> None:
        if not urls:
            raise UsageError("splunk: no HEC URL: pass --url or set LOGPIPE_SPLUNK_URL")
        self.endpoints = [parse_endpoint(u) for u in urls]
        self._token = token
        self._spool_dir = spool_dir
        self._spool_max = spool_max
        self._quarantine_path = quarantine_path
        self._encoder = encoder or _hec.EnvelopeEncoder(default_host=identity.hostname())
        #: ``index`` is added when a request is built, not when the envelope is spooled: a
        #: wrong index (HEC code 7) is fixed by restarting with the right --index, and the
        #: spooled events then go to it.
        self._index_prefix = b'{"index":' + orjson.dumps(index) + b"," if index else b""
        self._ack = ack
        self._ca_file = ca_file
        self._insecure = insecure
        self._batch_bytes = batch_bytes
        self._batch_timeout = batch_timeout
        self._concurrency = concurrency
        self._ack_timeout = ack_timeout
        self._ack_interval = ack_interval
        self._drain_timeout = drain_timeout
        self._request_timeout = request_timeout
        self._backoff = _hec.Backoff(base=RETRY_BASE, cap=retry_max)
        self._progress_on = progress
        #: a new channel GUID per process: ack ids are not persisted, so a restarted sink could
        #: not claim an old channel's ids anyway — its unacked chunks are still in the spool and
        #: are simply sent again. Sent on every request (research/hec.md §9), needed with --ack.
        self.channel = str(uuid.uuid4())
        self._spool: Spool | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._fatal: SinkConfigError | None = None
        self._fatal_evt = asyncio.Event()
        self._wake = asyncio.Event()  # for the sender taking chunks: appended, settled, resend
        self._settled = asyncio.Event()  # for close(): a chunk finished, or a fatal error
        self._lanes = [_Lane() for _ in range(max(1, concurrency))]
        self._in_hand: dict[int, _Work] = {}
        self._seq = 0
        self._rr = 0
        self._unread_bytes = 0
        self._first_unread: float | None = None
        self._draining = False
        self._pending_acks = 0
        self._pending_ack_bytes = 0
        self._warned_no_ack_id = False
        self._left_batches = 0
        self._final = False  # close() has counted what is left
        self._progress_shown = False
        self._started = False
        self._closed = False
        self._t0 = time.monotonic()
        # counts, in events
        self.spooled = 0
        self.delivered = 0
        self.resent = 0
        self.quarantined = 0
        self.backlog = 0  # batches found in the spool at start
        self.left_in_spool = 0
        #: events per spooled batch not yet read back, in spool order (this run's appends)
        self._blob_events: deque[int] = deque()
        #: batches from an earlier run not yet read back (their event counts are unknown)
        self._backlog_unread = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_options(cls, options: SinkOptions) -> SplunkSink:
        """Build from CLI options / ``LOGPIPE_*`` environment (token only from env or file)."""
        if not options.splunk_urls:
            raise UsageError("splunk: no HEC URL: pass --url or set LOGPIPE_SPLUNK_URL "
                             "(comma-separated for several indexers)")
        token = read_token(options.splunk_token_file)
        # Read once, then out of the environment: children of ``collect --run`` (and pm2) copy
        # os.environ, and an app that dumps its environment on a crash would otherwise log the
        # token into the very stream we ship. (Sinks are built before sources.)
        os.environ.pop(ENV_TOKEN, None)
        state = options.state_dir
        spool_dir = options.splunk_spool_dir or os.path.join(state, "spool", "splunk")
        encoder = _hec.EnvelopeEncoder(
            host=options.splunk_host, source=options.splunk_source,
            sourcetype=options.splunk_sourcetype, default_host=identity.hostname(),
        )
        return cls(
            options.splunk_urls, token,
            spool_dir=spool_dir,
            quarantine_path=os.path.join(state, "quarantine", "splunk.ndjson"),
            spool_max=options.splunk_spool_max or DEFAULT_SPOOL_MAX,
            encoder=encoder,
            index=options.splunk_index,
            ack=options.splunk_ack,
            ca_file=options.splunk_ca_file,
            insecure=options.splunk_insecure,
            batch_bytes=options.splunk_batch_bytes or DEFAULT_BATCH_BYTES,
            batch_timeout=options.splunk_batch_timeout or DEFAULT_BATCH_TIMEOUT,
            concurrency=options.splunk_concurrency or DEFAULT_CONCURRENCY,
            ack_timeout=_env_float(ENV_ACK_TIMEOUT, DEFAULT_ACK_TIMEOUT),
            ack_interval=_env_float(ENV_ACK_INTERVAL, DEFAULT_ACK_INTERVAL),
            drain_timeout=_env_float(ENV_DRAIN_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, minimum=0.0),
            retry_max=_env_float(ENV_RETRY_MAX, DEFAULT_RETRY_MAX),
            request_timeout=_env_float(ENV_TIMEOUT, DEFAULT_REQUEST_TIMEOUT),
        )

    def _ssl_context(self) -> ssl.SSLContext:
        if self._insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            diagnostics.warning("splunk: --insecure: TLS certificates are NOT verified; anyone on the "
                                "path can read the token and the logs", key="splunk-insecure")
            return ctx
        try:
            return ssl.create_default_context(cafile=self._ca_file)
        except ssl.SSLError:
            raise UsageError(f"splunk: cannot load --ca-file {self._ca_file}: no PEM CA certificate "
                             "in it") from None
        except OSError as exc:
            reason = exc.strerror or "unreadable"
            raise UsageError(f"splunk: cannot load --ca-file {self._ca_file}: {reason}") from None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the spool, check every endpoint (health + token), start the senders.

        Unreachable is not fatal (records are spooled and sent when HEC answers); a refused
        token or an untrusted certificate is (SinkConfigError, one line, spool kept).
        """
        tls = any(ep.base.startswith("https:") for ep in self.endpoints)
        # Loading the system CA store costs ~30 ms per start; with only http:// endpoints no
        # certificate is ever checked, so build the context only when it can matter (a bad
        # --ca-file is still reported, and --insecure still warns).
        verify: ssl.SSLContext | bool = (
            self._ssl_context() if tls or self._ca_file or self._insecure else False)
        n = self._concurrency + len(self.endpoints) + 1
        # TCP_NODELAY: h11 writes a request's head and body separately; with Nagle the body
        # waits for the ACK of the head, which the server delays (~40 ms per request).
        transport = httpx.AsyncHTTPTransport(
            verify=verify, http1=True, http2=False, retries=0,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(self._request_timeout, connect=min(10.0, self._request_timeout)),
        )
        try:
            await self._health_check()
            spool = Spool(self._spool_dir, max_bytes=self._spool_max)
            try:
                await spool.open()
            except OSError as exc:
                raise SinkError(f"splunk: cannot open the spool {self._spool_dir}: {exc.strerror}") from None
        except BaseException:
            await self._client.aclose()
            raise
        self._spool = spool
        self.backlog = self._backlog_unread = spool.pending_items
        if self.backlog:
            diagnostics.info(f"splunk: {self.backlog} batches ({spool.pending_bytes:,} bytes) of events "
                             "from an earlier run are in the spool; sending them first",
                             key="splunk-backlog")
            self._unread_bytes = spool.pending_bytes
            self._first_unread = time.monotonic() - self._batch_timeout
        self._started = True
        self._t0 = time.monotonic()
        self._tasks = [asyncio.create_task(self._lane_sender(lane), name=f"splunk-lane-{i}")
                       for i, lane in enumerate(self._lanes)]
        self._tasks.append(asyncio.create_task(self._taker(), name="splunk-taker"))
        if self._ack:
            self._tasks.append(asyncio.create_task(self._ack_poller(), name="splunk-ack"))
        show = self._progress_on if self._progress_on is not None else _stderr_is_tty()
        if show:
            self._progress_shown = True
            self._tasks.append(asyncio.create_task(self._progress(), name="splunk-progress"))

    async def _health_check(self) -> None:
        results = await asyncio.gather(*(self._check_one(ep) for ep in self.endpoints))
        fatal = [msg for ok, msg in results if ok is None]
        if fatal:
            raise SinkConfigError(fatal[0])
        for ok, msg in results:
            if ok:
                diagnostics.info(msg, key=f"splunk-health:{msg}")
            else:
                diagnostics.warning(msg, key=f"splunk-health:{msg}")

    async def _check_one(self, ep: Endpoint) -> tuple[bool | None, str]:
        """(True, msg) healthy; (False, msg) unreachable/busy — carry on; (None, msg) fatal.

        ``GET /services/collector/health`` says whether HEC takes data (it does not check the
        token: research/hec.md §1); an authenticated empty POST to /event answers 400 code 5
        "No data" when the token is good and 401/403 when it is not.
        """
        assert self._client is not None
        try:
            r = await self._client.get(ep.health_url, timeout=HEALTH_TIMEOUT)
            health = _hec.classify(r.status_code, r.content, scrub=self._token.scrub)
            busy = r.status_code >= 500
            r = await self._client.post(ep.event_url, content=b"", headers=self._headers(False),
                                        timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError as exc:
            v = self._error_verdict(exc, ep)
            if v.action is Action.CONFIG:
                return None, v.text
            return False, (f"splunk: {ep.display} unreachable ({v.text}); records are spooled and "
                           "sent when it answers")
        v = _hec.classify(r.status_code, r.content, scrub=self._token.scrub)
        if v.action is Action.CONFIG:
            return None, f"splunk: {ep.display}: {self._token.scrub(_hec.config_message(v))}"
        if v.code == 5 or v.action is Action.SUCCESS:
            state = f"busy ({health.describe()}), token accepted" if busy else "healthy, token accepted"
            return (not busy), f"splunk: {ep.display} {state}"
        return False, f"splunk: {ep.display} answered {v.describe()}; will retry"

    async def write(self, batch: Batch) -> Outcome:
        """Encode envelopes and append them to the spool (durable); SPOOLED."""
        self._raise_if_fatal()
        spool = self._spool
        if spool is None:
            raise SinkError("splunk: write before start")
        groups = self._encoder.encode_grouped(batch.records, batch.encoded())
        blobs = [_to_blob(g, items) for g, items in groups.items()]
        while True:
            try:
                await self._append(spool, blobs)
                break
            except DiskFullError as exc:
                # transient by the Sink contract: hold the batch (input pauses) and retry
                diagnostics.warning(f"splunk: {exc}; retrying every second, input paused",
                                    key="splunk-disk-full")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._fatal_evt.wait(), 1.0)
                self._raise_if_fatal()
        for items in groups.values():
            self._blob_events.append(len(items))
        self.spooled += len(batch.records)
        self._unread_bytes += sum(map(len, blobs))
        if self._first_unread is None:
            self._first_unread = time.monotonic()
        self._wake.set()
        return Outcome.SPOOLED

    async def _append(self, spool: Spool, blobs: list[bytes]) -> None:
        """``spool.append``, abandoned only if sending stops for good while the spool is full."""
        append = asyncio.ensure_future(spool.append(blobs))
        if not append.done():
            fatal = asyncio.ensure_future(self._fatal_evt.wait())
            try:
                await asyncio.wait({append, fatal}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                fatal.cancel()
            if not append.done():
                append.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await append
                self._raise_if_fatal()
        append.result()

    async def close(self) -> None:
        """Drain (bounded by the drain timeout), stop, close the spool; raise a fatal error."""
        if self._closed:
            self._raise_if_fatal()
            return
        self._closed = True
        if not self._started:
            return
        self._draining = True
        self._wake.set()
        if self._fatal is None and not self._is_drained():
            timeout = self._drain_timeout
            deadline = time.monotonic() + timeout
            while not self._is_drained() and self._fatal is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._settled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), min(left, 0.5))
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        spool = self._spool
        assert spool is not None
        self.left_in_spool = self._in_spool()
        self._left_batches = self._backlog_unread
        self._final = True
        try:
            await spool.close()
        finally:
            if self._client is not None:
                await self._client.aclose()
            if self._progress_shown:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write("\r\x1b[K")
                    sys.stderr.flush()
        if (self.left_in_spool or self._left_batches) and self._fatal is None:
            diagnostics.warning(
                f"splunk: HEC did not take everything within {self._drain_timeout:g}s; "
                f"{self._left_text()} left in spool {self._spool_dir} (sent on the next run)",
                key="splunk-left")
        self._raise_if_fatal()

    def summary(self) -> str | None:
        """``splunk: 120 delivered, 3 retried, 1 quarantined, 121 spooled, 0 left in spool`` (events;
        "spooled" counts this run's input, "left in spool" what the next run will send)."""
        return (f"splunk: {self.delivered} delivered, {self.resent} retried, "
                f"{self.quarantined} quarantined, {self.spooled} spooled, "
                f"{self._left_text('')} left in spool")

    # ------------------------------------------------------------------ state helpers
    def _in_spool(self) -> int:
        """Events still in the spool that this process knows the count of: read but not done,
        and appended but not read yet (earlier runs' unread batches are not counted)."""
        return (sum(w.events for w in self._in_hand.values() if not w.finished)
                + sum(self._blob_events))

    def _left_text(self, unit: str = " events") -> str:
        n = self.left_in_spool if self._final else self._in_spool()
        batches = self._left_batches if self._final else self._backlog_unread
        if n == 1 and unit == " events":
            unit = " event"
        if batches:
            return f"{n}{unit} and {batches} earlier batches"
        return f"{n}{unit}"

    def _is_drained(self) -> bool:
        spool = self._spool
        return (spool is not None and spool.is_empty and not self._in_hand
                and not any(lane.jobs for lane in self._lanes))

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _set_fatal(self, message: str) -> NoReturn:
        if self._fatal is None:
            message = self._token.scrub(message)
            self._fatal = SinkConfigError(
                f"{message}; sending stopped, {self._left_text()} kept in spool {self._spool_dir}")
            diagnostics.error(str(self._fatal), key="splunk-fatal")
            # found by a background sender, maybe while input is idle: stop the pipeline now
            # rather than at the next write/close (issue 5: "exit non-zero in sink mode")
            self.fail(self._fatal)
            self._fatal_evt.set()
            self._settled.set()
            self._stop.set()
            self._wake.set()
        raise _Stopped

    def _headers(self, gzipped: bool) -> dict[str, str]:
        h = {
            "Authorization": "Splunk " + self._token.reveal(),
            _hec.CHANNEL_HEADER: self.channel,
            "Content-Type": "application/json",
        }
        if gzipped:
            h["Content-Encoding"] = "gzip"
        return h

    def _error_verdict(self, exc: BaseException, ep: Endpoint) -> Verdict:
        """A transport error → RETRY, except an untrusted certificate → CONFIG."""
        cert = _cert_error(exc)
        if cert is not None:
            why = cert.verify_message or cert.reason or "verification failed"
            return Verdict(Action.CONFIG, text=(
                f"splunk: TLS certificate of {ep.display} is not trusted ({why}); pass --ca-file "
                "with the CA that signed it (or --insecure to skip verification)"))
        text = str(exc) or type(exc).__name__
        os_error = _os_error(exc)
        if os_error is not None:
            # "Connection refused" rather than httpx's "All connection attempts failed"
            text = os.strerror(os_error.errno) if os_error.errno else str(os_error.strerror)
            if isinstance(os_error, socket.gaierror):
                # a gaierror's errno is an EAI_* code: os.strerror(-2) says "Unknown error -2";
                # its own strerror says "Name or service not known" (a mistyped host name)
                text = str(os_error.strerror)
        text = self._token.scrub(text.splitlines()[0] if text else text)[:160]
        if isinstance(exc, httpx.TimeoutException):
            text = f"timed out ({type(exc).__name__})"
        return Verdict(Action.RETRY, text=text)

    # ------------------------------------------------------------------ endpoints
    async def _pick(self) -> Endpoint:
        """The next healthy endpoint, round robin; when all are down, wait for the first back."""
        while True:
            if self._stop.is_set():
                raise _Stopped
            now = time.monotonic()
            n = len(self.endpoints)
            for k in range(n):
                ep = self.endpoints[(self._rr + k) % n]
                if ep.down_until <= now:
                    self._rr = (self._rr + k + 1) % n
                    return ep
            soonest = min(self.endpoints, key=lambda e: e.down_until)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, soonest.down_until - now))
            if self._stop.is_set():
                raise _Stopped
            soonest.down_until = 0.0  # probe it

    def _mark_down(self, ep: Endpoint, v: Verdict) -> None:
        ep.failures += 1
        delay = self._backoff.delay(ep.failures - 1, v.retry_after)
        ep.down_until = time.monotonic() + delay
        diagnostics.warning(f"splunk: {ep.display}: {self._token.scrub(v.describe())}; retrying "
                            "(records stay spooled)", key=f"splunk-retry:{ep.display}")

    def _mark_up(self, ep: Endpoint) -> None:
        if ep.failures:
            diagnostics.info(f"splunk: {ep.display} is answering again", key=f"splunk-up:{ep.display}")
        ep.failures = 0
        ep.down_until = 0.0

    # ------------------------------------------------------------------ senders
    def _lane_of(self, item: bytes) -> int:
        """Which lane sends this envelope: a hash of its ``source``, so one source's events
        always go through one lane, one request at a time, in order."""
        n = len(self._lanes)
        if n == 1:
            return 0
        return _hec.source_group(_hec.source_key(item)) % n

    async def _taker(self) -> None:
        """The chunk taker; a spool it cannot read stops the sink (data kept)."""
        try:
            await self._take_chunks()
        except SinkError as exc:
            with contextlib.suppress(_Stopped):
                self._set_fatal(str(exc))

    async def _take_chunks(self) -> None:
        """Takes chunks from the spool once a batch is due (bytes or time), splits each into
        per-lane parts and queues them; waits while a lane is full or too many acks are pending."""
        spool = self._spool
        assert spool is not None
        while not self._stop.is_set():
            if any(len(lane.jobs) >= LANE_DEPTH for lane in self._lanes) or (
                    self._ack and (self._pending_acks >= MAX_PENDING_ACKS
                                   or self._pending_ack_bytes >= MAX_PENDING_ACK_BYTES)):
                await self._wait_wake(1.0)
                continue
            due = self._batch_due()
            if due is None or due > 0:
                await self._wait_wake(1.0 if due is None else due)
                continue
            # up to one full request per lane; each lane's share is cut at --batch-size below
            chunk = await spool.next_chunk(MAX_ITEMS_PER_CHUNK, self._batch_bytes * len(self._lanes),
                                           timeout=0.05)
            if chunk is None:
                if not spool.unread_items:
                    self._first_unread = None
                    self._unread_bytes = 0
                continue
            nbytes = chunk.nbytes
            self._unread_bytes = max(0, self._unread_bytes - nbytes)
            if not spool.unread_items:
                self._first_unread = None
                self._unread_bytes = 0
            by_lane: dict[int, list[tuple[bytes, int]]] = {}
            n_lanes = len(self._lanes)
            events = 0
            for blob in chunk.items:
                group, payload = _from_blob(blob)
                n = payload.count(b"\n") + 1
                by_lane.setdefault(group % n_lanes, []).append((payload, n))
                events += n
                if self._backlog_unread:
                    self._backlog_unread -= 1
                elif self._blob_events:
                    self._blob_events.popleft()
            self._seq += 1
            work = _Work(self._seq, chunk.id, events, nbytes)
            jobs: list[tuple[int, _Part]] = []
            limit = self._batch_bytes
            for k, segs in by_lane.items():
                cur: list[bytes] = []
                size = count = 0
                for payload, n in segs:
                    pieces = [(payload, n)] if len(payload) <= limit else [
                        (env, 1) for env in payload.split(b"\n")]  # a group over --batch-size
                    for piece, m in pieces:
                        if cur and size + len(piece) > limit:
                            jobs.append((k, _Part(cur, count)))
                            cur, size, count = [], 0, 0
                        cur.append(piece)
                        size += len(piece) + 1
                        count += m
                jobs.append((k, _Part(cur, count)))
            work.parts_left = len(jobs)
            self._in_hand[work.seq] = work
            for k, part in jobs:
                lane = self._lanes[k]
                lane.jobs.append((work, part, False))
                lane.ready.set()

    async def _lane_sender(self, lane: _Lane) -> None:
        """Sends its lane's parts one at a time, each until HEC takes it (retry in place)."""
        while not self._stop.is_set():
            if not lane.jobs:
                lane.ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.ready.wait(), 1.0)
                continue
            work, part, resend = lane.jobs[0]
            try:
                await self._send(work, part)
            except _Stopped:
                return
            except Exception as exc:  # noqa: BLE001 - e.g. the quarantine file cannot be written
                # A dead sender would stall its lane silently until the drain timeout (and
                # asyncio would print a traceback at exit): stop instead, data kept in the spool.
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
                where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
                with contextlib.suppress(_Stopped):
                    self._set_fatal(f"splunk: sending stopped by an unexpected error: {reason}{where}")
                return
            lane.jobs.popleft()
            if resend:
                work.unsettled -= 1  # the resent piece was replaced by what _send registered
            else:
                work.parts_left -= 1
            self._wake.set()
            self._maybe_finish(work)

    def _queue_resend(self, p: _Pending) -> None:
        lane = self._lanes[self._lane_of(p.part.segs[0])]
        lane.jobs.append((p.work, p.part, True))
        lane.ready.set()

    def _batch_due(self) -> float | None:
        """Seconds until a batch should go (≤ 0: now); None when nothing is waiting."""
        if self._first_unread is None:
            spool = self._spool
            if spool is not None and spool.unread_items:
                self._first_unread = time.monotonic()
            else:
                return None
        if self._draining or self._unread_bytes >= self._batch_bytes:
            return 0.0
        spool = self._spool
        if spool is not None and spool.pending_bytes * 2 >= self._spool_max:
            return 0.0  # the spool is filling up (or full: input waits): no time to lose
        return self._first_unread + self._batch_timeout - time.monotonic()

    async def _wait_wake(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _send(self, work: _Work, first: _Part) -> None:
        """Deliver ``first`` (a part of ``work``): retries, splits, quarantines; raises _Stopped."""
        parts: deque[_Part] = deque([first])
        while parts:
            part = parts.popleft()
            verdict, ep = await self._post_until_answered(work, part)
            action = verdict.action
            if action is Action.SUCCESS:
                self._accepted(work, part, ep, verdict)
                continue
            if action is Action.CONFIG:
                self._set_fatal(verdict.text if verdict.status is None else
                                f"splunk: {ep.display}: {_hec.config_message(verdict)}")
            envs = part.envelopes()
            if action is Action.SPLIT:
                if len(envs) == 1:
                    await self._quarantine(envs, 0, verdict, ep, "larger than the HEC accepts (413)")
                else:
                    mid = len(envs) // 2
                    parts.appendleft(_part(envs[mid:]))
                    parts.appendleft(_part(envs[:mid]))
            elif action is Action.BAD_EVENT:
                i = verdict.event_index
                if i is None or not 0 <= i < len(envs):
                    if len(envs) == 1:
                        await self._quarantine(envs, 0, verdict, ep, "rejected by HEC")
                    else:  # HEC did not say which: bisect until it is alone
                        mid = len(envs) // 2
                        parts.appendleft(_part(envs[mid:]))
                        parts.appendleft(_part(envs[:mid]))
                    continue
                # Objects before i were indexed; i and the rest were not (research/hec.md §4).
                self.delivered += i
                await self._quarantine(envs[i:i + 1], i, verdict, ep, "rejected by HEC")
                if i + 1 < len(envs):
                    parts.appendleft(_part(envs[i + 1:]))
            else:  # REJECT
                await self._quarantine(envs, None, verdict, ep, "rejected by HEC (request)")

    async def _post_until_answered(self, work: _Work, part: _Part) -> tuple[Verdict, Endpoint]:
        """POST ``part`` until HEC gives a non-transient answer (no attempt limit: it is spooled)."""
        prefix = self._index_prefix
        segs = part.segs
        if prefix:
            # every envelope starts with "{", and a raw newline only ever separates envelopes
            nl_prefix = b"\n" + prefix
            segs = [prefix + seg[1:].replace(b"\n{", nl_prefix) for seg in segs]
        body = _hec.join_body(segs)
        gz = len(body) >= _hec.GZIP_MIN_BYTES
        if gz:
            body = await asyncio.to_thread(_gzip, body) if len(body) >= GZIP_THREAD_MIN else _gzip(body)
        headers = self._headers(gz)
        while True:
            ep = await self._pick()
            v = await self._post(ep, body, headers)
            if v.action is Action.RETRY:
                self._mark_down(ep, v)
                self.resent += part.events
                continue
            if v.action is not Action.CONFIG or v.status is not None:
                self._mark_up(ep)
            return v, ep

    async def _post(self, ep: Endpoint, body: bytes, headers: dict[str, str]) -> Verdict:
        assert self._client is not None
        try:
            r = await self._client.post(ep.event_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return self._error_verdict(exc, ep)
        return _hec.classify(r.status_code, r.content, r.headers.get("Retry-After"),
                             scrub=self._token.scrub)

    def _accepted(self, work: _Work, part: _Part, ep: Endpoint, v: Verdict) -> None:
        if self._ack and v.ack_id is not None:
            nbytes = part.nbytes
            old = ep.pending.get(v.ack_id)
            if old is not None:  # HEC restarted its ids: the old request can no longer be claimed
                self._drop_pending(old)
                self._queue_resend(old)
            ep.pending[v.ack_id] = _Pending(work, part, ep, v.ack_id, time.monotonic(), nbytes)
            work.unsettled += 1
            self._pending_acks += 1
            self._pending_ack_bytes += nbytes
            return
        if self._ack and not self._warned_no_ack_id:
            self._warned_no_ack_id = True
            diagnostics.warning("splunk: --ack is set but HEC returned no ackId (the token does not use "
                                "indexer acknowledgement); a 200 reply counts as delivered",
                                key="splunk-no-ackid")
        self.delivered += part.events

    def _maybe_finish(self, work: _Work) -> None:
        if work.finished or work.parts_left > 0 or work.unsettled > 0:
            return
        work.finished = True
        self._in_hand.pop(work.seq, None)
        if self._spool is not None:
            self._spool.done(work.chunk_id)
        self._wake.set()
        self._settled.set()

    # ------------------------------------------------------------------ quarantine
    async def _quarantine(self, items: list[bytes], index: int | None, v: Verdict, ep: Endpoint,
                          why: str) -> None:
        """Append the envelopes + reason to the dead-letter file (fsynced), one diagnostic line."""
        now = record.now()
        lines = []
        for k, item in enumerate(items):
            try:
                orjson.loads(item)
                env: Any = orjson.Fragment(item)
            except orjson.JSONDecodeError:
                env = item.decode("utf-8", "replace")
            lines.append(orjson.dumps({
                "time": now, "sink": "splunk", "reason": why, "endpoint": ep.display,
                "http_status": v.status, "hec_code": v.code, "hec_text": v.text,
                "event_index": index if index is not None else k, "envelope": env,
            }) + b"\n")
        await asyncio.to_thread(_append_durably, self._quarantine_path, b"".join(lines))
        self.quarantined += len(items)
        where = (f"event {index} of the request" if index is not None
                 else f"{len(items)} events")
        diagnostics.error(f"splunk: {where} {why} ({v.describe()}); quarantined in "
                          f"{self._quarantine_path}", key=f"splunk-quarantine:{v.code}")

    # ------------------------------------------------------------------ acks
    def _drop_pending(self, p: _Pending) -> None:
        p.endpoint.pending.pop(p.ack_id, None)
        self._pending_acks -= 1
        self._pending_ack_bytes -= p.nbytes

    async def _ack_poller(self) -> None:
        """Every ack interval, ask each endpoint about the ids it issued (Splunk IDXAck); resend
        what is not acknowledged within the ack timeout (duplicates possible, as Splunk warns)."""
        assert self._client is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._ack_interval)
            for ep in self.endpoints:
                if ep.pending:
                    await self._poll_acks(ep)
            now = time.monotonic()
            for ep in self.endpoints:
                for p in [p for p in ep.pending.values() if now - p.sent > self._ack_timeout]:
                    self._drop_pending(p)
                    self.resent += p.part.events
                    diagnostics.warning(
                        f"splunk: {ep.display}: ack {p.ack_id} not received within "
                        f"{self._ack_timeout:g}s; sending its {p.part.events} events again "
                        "(duplicates possible)", key=f"splunk-ack-timeout:{ep.display}")
                    self._queue_resend(p)

    async def _poll_acks(self, ep: Endpoint) -> None:
        assert self._client is not None
        ids = list(ep.pending)[:ACK_QUERY_MAX]
        url = f"{ep.base}{_hec.ACK_PATH}?channel={self.channel}"
        try:
            r = await self._client.post(url, content=_hec.ack_query(ids), headers=self._headers(False))
        except httpx.HTTPError:
            return  # unreachable for now: the ack timeout decides
        if r.status_code != 200:
            v = _hec.classify(r.status_code, r.content, scrub=self._token.scrub)
            if v.action is Action.CONFIG:
                with contextlib.suppress(_Stopped):
                    self._set_fatal(f"splunk: {ep.display} ack query: {_hec.config_message(v)}")
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
            self._drop_pending(p)
            self.delivered += p.part.events
            p.work.unsettled -= 1
            self._maybe_finish(p.work)
        self._wake.set()

    # ------------------------------------------------------------------ progress
    async def _progress(self) -> None:
        """On a TTY: events/s, spooled, delivered — one line rewritten every second."""
        last_t, last_n = time.monotonic(), 0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)
            now = time.monotonic()
            rate = (self.delivered - last_n) / max(now - last_t, 1e-6)
            last_t, last_n = now, self.delivered
            line = (f"splunk: {rate:,.0f} events/s · spooled {self.spooled:,} · delivered "
                    f"{self.delivered:,} · in spool {self._in_spool():,}")
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\r\x1b[K" + line)
                sys.stderr.flush()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


#: first byte of a spool item: format 1 = 4-byte source group + envelopes joined by newlines
BLOB_V1 = b"\x01"


def _to_blob(group: int, items: list[bytes]) -> bytes:
    """One spool item per source group of a written batch: format byte, the group (so the
    sender need not look into envelopes to pick their lane), then the envelopes joined by
    newlines (an envelope never holds a raw newline: JSON escapes it inside strings). One frame
    and one CRC per group instead of per event keeps the spool's cost per event negligible."""
    head = BLOB_V1 + group.to_bytes(4, "big")
    blob = b"\n".join(items)
    if blob.count(b"\n") == len(items) - 1:
        return head + blob
    fixed = []
    for it in items:  # a source handed a line with a raw newline (whitespace): re-encode it
        if b"\n" in it:
            try:
                it = orjson.dumps(orjson.loads(it))
            except orjson.JSONDecodeError:
                it = it.replace(b"\n", b" ")  # not JSON: HEC will reject it and we quarantine
        fixed.append(it)
    return head + b"\n".join(fixed)


def _from_blob(blob: bytes) -> tuple[int, bytes]:
    """(source group, envelopes joined by newlines) of a spool item."""
    if blob[:1] == BLOB_V1:
        return int.from_bytes(blob[1:5], "big"), blob[5:]
    raise SinkError(f"splunk: unknown item format {blob[:1]!r} in the spool (written by a newer "
                    "logpipe?); move the spool directory aside")


def _append_durably(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["Endpoint", "Secret", "SplunkSink", "parse_endpoint", "read_token"]
