"""A strict Splunk HTTP Event Collector (HEC) double on 127.0.0.1, with fault injection, ack and TLS.

Passing against this server must mean working against a real Splunk: it answers with Splunk's
status/code table (research/hec.md §5, from Splunk's "Troubleshoot HTTP Event Collector" page)
and rejects what Splunk rejects — unlike Fluent Bit's ``in_splunk``, which accepts anything
(ARCHITECTURE.md, example 10). Use it in-process::

    with HecDouble(token=TOKEN, ack=True) as hec:
        ...  # point the sink at hec.url (and hec.ca_file when tls=True)
        hec.wait_for_events(10)
        assert [e["event"] for e in hec.events()] == [...]

or as a subprocess (``python -m tests.doubles.hec_double --port 0 --token T [--ack] [--tls]
[--ca-file F] [--events-file F]``), which prints its port on the first stdout line and serves
until SIGTERM; with ``--events-file`` every accepted envelope is appended there as one JSON line.

Deliberate choices where Splunk is vaguer or looser (each one makes the double stricter):

- A batch body is JSON objects concatenated, whitespace allowed between them (Splunk "Format
  events for HTTP Event Collector"). They are checked in order; the first bad one gets ``400``
  with ``invalid-event-number`` = its 0-based index, and — Splunk's partial indexing
  (moby/moby#35862; research/hec.md §4) — the objects before it ARE indexed, it and the rest
  are not. (Splunk 10.4.3 names one past the bad object for code 7; the double names the bad
  object itself.)
- An unknown top-level envelope key is an error (code 6) even inside a batch, where Splunk
  silently skips the object; a sink must never send one (research/hec.md §3).
- ``time`` must be epoch *seconds* (number or numeric string) below 1e11; Splunk guesses ms/ns
  from 13/19-digit values, which hides unit bugs (Vector#2568), so ``strict_time`` rejects them.
- ``/raw`` is not served (404): logpipe's sink speaks ``/event`` only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import random
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

DEFAULT_TOKEN = "11111111-2222-3333-4444-555555555555"
#: limits.conf [http_input] max_content_length default on current Splunk Enterprise (800 MiB).
DEFAULT_MAX_CONTENT_LENGTH = 838_860_800

EVENT_PATHS = frozenset({"/services/collector", "/services/collector/event", "/services/collector/event/1.0"})
HEALTH_PATHS = frozenset({"/services/collector/health", "/services/collector/health/1.0"})
ACK_PATHS = frozenset({"/services/collector/ack"})
#: The only top-level keys of an /event envelope (Splunk "Format events for HEC").
ENVELOPE_KEYS = frozenset({"time", "host", "source", "sourcetype", "index", "event", "fields"})

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMERIC = re.compile(r"^[0-9]+(\.[0-9]+)?$")

#: Splunk's texts per code (Troubleshoot HTTP Event Collector, "Possible error codes").
TEXTS = {
    0: "Success",
    1: "Token disabled",
    2: "Token is required",
    3: "Invalid authorization",
    4: "Invalid token",
    5: "No data",
    6: "Invalid data format",
    7: "Incorrect index",
    8: "Internal server error",
    9: "Server is busy",
    10: "Data channel is missing",
    11: "Invalid data channel",
    12: "Event field is required",
    13: "Event field cannot be blank",
    14: "ACK is disabled",
    15: "Error in handling indexed fields",
    16: "Query string authorization is not enabled",
    17: "HEC is healthy",
    18: "HEC is unhealthy, queues are full",
    404: "The requested URL was not found on this server.",
    405: "Method Not Allowed",
    413: "Content-Length of request is too large",
}


def _lb_html(status: int) -> bytes:
    """What a load balancer in front of Splunk answers: HTML, not HEC JSON (SCK#474)."""
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>".encode()


class Req(NamedTuple):
    """One answered request: path (no query), HTTP status, HEC ``code`` (None if the body had none)."""

    path: str
    status: int
    code: int | None


@dataclass
class _Channel:
    next_id: int = 0
    # ackId -> (monotonic time it becomes true, lost for ever)
    pending: dict[int, tuple[float, bool]] = field(default_factory=dict)


class _BadEvent(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    double: HecDouble

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, so one slow client cannot stall accept().
        ctx = self.double._ssl_context
        if ctx is not None:
            try:
                request.settimeout(10)
                request = ctx.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError):
                with contextlib.suppress(OSError):
                    request.close()
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            if ctx is not None:
                request.close()  # the TLS wrapper; socketserver closes only the raw socket

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections we cut on purpose (stop(), drop_next) end in socket errors; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like splunkd
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait 40 ms on ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.double._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.double._track(self.connection, False)

    def do_GET(self) -> None:
        self.server.double._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.double._handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.double._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.double._handle(self, "DELETE")

    def do_OPTIONS(self) -> None:
        self.server.double._handle(self, "OPTIONS")


class HecDouble:
    """A strict HEC server on 127.0.0.1 (see the module docstring); a context manager."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        ack: bool = False,
        tls: bool | None = None,
        max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
        indexes: Iterable[str] | None = None,
        disabled_tokens: Iterable[str] = (),
        strict_time: bool = True,
        port: int = 0,
    ) -> None:
        self.token = token
        self.ack = ack
        self.tls = bool(tls)
        self.max_content_length = max_content_length
        self.indexes = None if indexes is None else frozenset(indexes)
        self.disabled_tokens = set(disabled_tokens)
        self.strict_time = strict_time
        #: fault injection: envelopes for which this returns true are refused with code 6, as
        #: Splunk refuses an event it cannot index (logpipe itself never sends a time Splunk
        #: would refuse, so tests pick their bad event this way)
        self.reject_event: Callable[[dict[str, Any]], bool] | None = None
        self.port = port
        self.requests: list[Req] = []
        #: one dict per answered request: method, path, query, status, code, headers, sizes, events
        self.details: list[dict[str, Any]] = []
        self.on_event: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._seen: Counter[str] = Counter()
        self._channels: dict[str, _Channel] = {}
        self._fail_next: tuple[int, int, int | None, float | None] = (0, 503, 9, None)
        self._fail_until: tuple[float, int, int | None, float | None] = (0.0, 503, 9, None)
        self._random: tuple[float, random.Random] | None = None
        self._delay = 0.0
        self._drop_next = (0, True)
        self._ack_delay = 0.0
        self._lose_acks = (0, False)
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self.ca_file: str | None = None
        if self.tls:
            self._setup_tls()

    # ----------------------------------------------------------------- lifecycle

    def _setup_tls(self) -> None:
        import trustme  # test dependency; only needed for TLS mode

        self._tmpdir = tempfile.mkdtemp(prefix="hec-double-")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._ssl_context = ctx
        self.ca_file = f"{self._tmpdir}/ca.pem"
        ca.cert_pem.write_to_path(self.ca_file)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (``https`` in TLS mode)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while something listens on the port."""
        return self._server is not None

    def start(self) -> HecDouble:
        """Listen (again) — on the same port as before once one was chosen."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.double = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hec-double-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: clients now get 'connection refused'."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        """Stop and remove the TLS files."""
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> HecDouble:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    # ----------------------------------------------------------------- what arrived

    def events(self) -> list[dict[str, Any]]:
        """Accepted envelopes (dicts), in the order Splunk indexed them (duplicates included)."""
        with self._lock:
            return list(self._events)

    def payloads(self) -> list[Any]:
        """The ``event`` of each accepted envelope, in order."""
        return [e["event"] for e in self.events()]

    def duplicate_count(self) -> int:
        """How many accepted envelopes were identical to one accepted before."""
        with self._lock:
            return sum(n - 1 for n in self._seen.values())

    def duplicates(self) -> list[dict[str, Any]]:
        """Envelopes accepted more than once (one entry each)."""
        with self._lock:
            return [json.loads(k) for k, n in self._seen.items() if n > 1]

    def wait_for_events(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` envelopes were accepted; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if len(events) >= n:
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"HEC double: {len(events)} events after {timeout}s, wanted {n}")
            time.sleep(0.02)  # the poll interval of this deadline poll

    def statuses(self) -> list[int]:
        """HTTP statuses answered so far, in order."""
        with self._lock:
            return [r.status for r in self.requests]

    def clear(self) -> None:
        """Forget events, duplicates and the request log (not the fault settings)."""
        with self._lock:
            self._events.clear()
            self._seen.clear()
            self.requests.clear()
            self.details.clear()

    # ----------------------------------------------------------------- faults

    def fail_next(self, n: int, status: int = 503, code: int | None = 9,
                  retry_after: float | None = None) -> None:
        """Answer the next ``n`` event requests with ``status``/``code`` (code None: an HTML body,
        like a load balancer's 429/502/504)."""
        with self._lock:
            self._fail_next = (n, status, code, retry_after)

    def fail_for(self, seconds: float, status: int = 503, code: int | None = 9,
                 retry_after: float | None = None) -> None:
        """Answer every event request with ``status``/``code`` for the next ``seconds``."""
        with self._lock:
            self._fail_until = (time.monotonic() + seconds, status, code, retry_after)

    def set_random_5xx(self, p: float, seed: int = 0) -> None:
        """Fail each event request with probability ``p``: 500 (code 8), 502 (LB HTML) or 503 (code 9)."""
        with self._lock:
            self._random = (p, random.Random(seed)) if p > 0 else None

    def set_delay(self, seconds: float) -> None:
        """Index, then wait ``seconds`` before answering (a client timeout then causes duplicates)."""
        with self._lock:
            self._delay = seconds

    def drop_next(self, n: int, indexed: bool = True) -> None:
        """Cut the connection mid-response for the next ``n`` event requests.

        ``indexed`` says whether their events were indexed first (the realistic case: the
        answer, not the data, was lost — so a correct client resends and makes duplicates).
        """
        with self._lock:
            self._drop_next = (n, indexed)

    def set_ack_delay(self, seconds: float) -> None:
        """Ack ids become ``true`` only ``seconds`` after their request."""
        with self._lock:
            self._ack_delay = seconds

    def lose_acks(self, n: int, indexed: bool = False) -> None:
        """The next ``n`` acked requests get ack ids that never become true.

        With ``indexed=False`` (default) their events are not indexed either — what an indexer
        crash before replication looks like — so only a client that resends after its ack
        timeout delivers them.
        """
        with self._lock:
            self._lose_acks = (n, indexed)

    def disable_token(self, token: str | None = None) -> None:
        """Disable ``token`` (default: the valid one): requests then get 403 code 1."""
        with self._lock:
            self.disabled_tokens.add(token or self.token)

    def _busy(self) -> bool:
        return self._fail_next[0] > 0 or time.monotonic() < self._fail_until[0]

    # ----------------------------------------------------------------- HTTP

    def _read_body(self, h: _Handler, path: str) -> bytes | None:
        """The request body, or None after answering 413 (too large to even read)."""
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            parts = []
            total = 0
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > self.max_content_length:
                    self._reply(h, path, 413, 413, close=True)
                    return None
                parts.append(h.rfile.read(size))
                h.rfile.readline()
            return b"".join(parts)
        length = int(h.headers.get("Content-Length") or 0)
        if length > self.max_content_length:
            # splunkd refuses before reading; we close so the unread body cannot desync the stream
            self._reply(h, path, 413, 413, close=True)
            return None
        return h.rfile.read(length) if length else b""

    def _reply(self, h: _Handler, path: str, status: int, code: int | None, *,
               extra: dict[str, Any] | None = None, html: bytes | None = None, close: bool = False,
               retry_after: float | None = None, info: dict[str, Any] | None = None) -> None:
        if html is not None:
            body, ctype = html, "text/html"
        else:
            payload: dict[str, Any] = {"text": TEXTS.get(code or 0, "Error"), "code": code}
            if extra:
                payload.update(extra)
            body = json.dumps(payload, separators=(",", ":")).encode()
            ctype = "application/json; charset=UTF-8"
        with self._lock:
            self.requests.append(Req(path, status, None if html is not None else code))
            d = {"status": status, "code": None if html is not None else code, "path": path}
            d.update(info or {})
            self.details.append(d)
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            h.send_header("Retry-After", f"{retry_after:g}")
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _handle(self, h: _Handler, method: str) -> None:
        url = urlsplit(h.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body(h, path)
        if body is None:
            return
        info: dict[str, Any] = {"method": method, "query": query, "headers": dict(h.headers.items()),
                                "body_bytes": len(body), "client_port": h.client_address[1]}
        known = EVENT_PATHS | HEALTH_PATHS | ACK_PATHS
        if path not in known:
            self._reply(h, path, 404, 404, info=info)
            return
        if method == "OPTIONS":
            self._reply(h, path, 200, 0, info=info)
            return
        if path in HEALTH_PATHS:
            if method != "GET":
                self._reply(h, path, 405, 405, info=info)
            elif self._busy():
                self._reply(h, path, 503, 18, info=info)
            else:
                # 10.4.3 does not check the token on /health (research/hec.md §1)
                self._reply(h, path, 200, 17, info=info)
            return
        if method != "POST":
            self._reply(h, path, 405, 405, info=info)
            return
        auth_code = self._auth(h, query)
        if auth_code is not None:
            self._reply(h, path, 400 if auth_code == 16 else 401 if auth_code in (2, 3) else 403,
                        auth_code, info=info)
            return
        if path in ACK_PATHS:
            self._handle_ack(h, path, query, body, info)
            return
        self._handle_event(h, path, query, body, info)

    def _auth(self, h: _Handler, query: dict[str, str]) -> int | None:
        """None when authorised, else the HEC code (Format events: ``Authorization: Splunk <token>``)."""
        header = h.headers.get("Authorization")
        if header is None:
            # ?token= needs allowQueryStringAuth on the token, which ours never has
            return 16 if "token" in query else 2
        scheme, _, value = header.partition(" ")
        if scheme == "Splunk":
            tok = value.strip()
        elif scheme == "Basic":  # Splunk accepts the token as the Basic password
            try:
                tok = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except ValueError:
                return 3
        else:
            return 3
        if not tok:
            return 3
        with self._lock:
            if tok in self.disabled_tokens:
                return 1
        return None if tok == self.token else 4

    def _channel(self, h: _Handler, query: dict[str, str]) -> tuple[str | None, int | None]:
        chan = h.headers.get("X-Splunk-Request-Channel") or query.get("channel")
        if chan is None:
            return None, (10 if self.ack else None)
        if not _GUID.match(chan):
            return None, 11
        return chan.lower(), None

    def _handle_ack(self, h: _Handler, path: str, query: dict[str, str], body: bytes,
                    info: dict[str, Any]) -> None:
        if not self.ack:
            self._reply(h, path, 400, 14, info=info)
            return
        chan, err = self._channel(h, query)
        if err is not None or chan is None:
            self._reply(h, path, 400, err or 10, info=info)
            return
        if h.headers.get("Content-Encoding"):
            # Vector#23559: an ack query with a gzip header but a plain body is a 400
            body, bad = self._decode(h, body)
            if bad is not None:
                self._reply(h, path, bad[0], bad[1], info=info)
                return
        try:
            req = json.loads(body)
            ids = req["acks"]
            if not isinstance(req, dict) or not isinstance(ids, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self._reply(h, path, 400, 6, info=info)
            return
        now = time.monotonic()
        answer: dict[str, bool] = {}
        with self._lock:
            ch = self._channels.setdefault(chan, _Channel())
            for i in ids:
                state = ch.pending.get(i)
                ok = state is not None and not state[1] and now >= state[0]
                if ok:
                    del ch.pending[i]  # Splunk forgets an id once it answered true
                answer[str(i)] = ok
        payload = json.dumps({"acks": answer}).encode()
        with self._lock:
            self.requests.append(Req(path, 200, None))
            self.details.append({"status": 200, "code": None, "path": path, "acks": answer, **info})
        h.send_response(200)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
        h.wfile.flush()

    def _decode(self, h: _Handler, body: bytes) -> tuple[bytes, tuple[int, int] | None]:
        """Apply Content-Encoding; returns (body, None) or (b"", (status, code))."""
        enc = (h.headers.get("Content-Encoding") or "identity").strip().lower()
        if enc == "identity":
            return body, None
        if enc != "gzip":
            return b"", (415, 6)  # "Splunk does not support deflate" (SC4S PR #2254)
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = d.decompress(body, self.max_content_length + 1)
        except zlib.error:
            return b"", (400, 6)  # gzip header on a plain body (Vector#23559)
        if len(out) > self.max_content_length:
            return b"", (413, 413)
        if not d.eof:
            return b"", (400, 6)
        return out, None

    def _handle_event(self, h: _Handler, path: str, query: dict[str, str], body: bytes,
                      info: dict[str, Any]) -> None:
        chan, err = self._channel(h, query)
        if err is not None:
            self._reply(h, path, 400, err, info=info)
            return
        # injected faults: nothing is indexed
        with self._lock:
            fault: tuple[int, int | None, float | None] | None = None
            n, st, cd, ra = self._fail_next
            if n > 0:
                self._fail_next = (n - 1, st, cd, ra)
                fault = (st, cd, ra)
            elif time.monotonic() < self._fail_until[0]:
                fault = self._fail_until[1:]
            elif self._random is not None and self._random[1].random() < self._random[0]:
                st = self._random[1].choice((500, 502, 503))
                fault = (st, {500: 8, 502: None, 503: 9}[st], None)
        if fault is not None:
            st, cd, ra = fault
            self._reply(h, path, st, cd, html=_lb_html(st) if cd is None else None, retry_after=ra, info=info)
            return
        data, bad = self._decode(h, body)
        if bad is not None:
            self._reply(h, path, bad[0], bad[1], info=info)
            return
        info["decoded_bytes"] = len(data)
        if len(data) > self.max_content_length:
            self._reply(h, path, 413, 413, info=info)
            return
        if not data.strip():
            self._reply(h, path, 400, 5, info=info)
            return
        objs, bad_at, bad_code = self._parse(data)
        with self._lock:
            drop_n, drop_indexed = self._drop_next
            dropping = drop_n > 0
            if dropping:
                self._drop_next = (drop_n - 1, drop_indexed)
            lost, lost_indexed = False, False
            if self.ack and bad_at is None and self._lose_acks[0] > 0:
                lost, lost_indexed = True, self._lose_acks[1]
                self._lose_acks = (self._lose_acks[0] - 1, lost_indexed)
            index_it = (not dropping or drop_indexed) and (not lost or lost_indexed)
            if index_it:
                for obj in objs:
                    self._events.append(obj)
                    self._seen[json.dumps(obj, sort_keys=True, separators=(",", ":"))] += 1
            ack_id = None
            if self.ack and bad_at is None and chan is not None:
                ch = self._channels.setdefault(chan, _Channel())
                ack_id = ch.next_id
                ch.next_id += 1
                ch.pending[ack_id] = (time.monotonic() + self._ack_delay, lost)
            delay = self._delay
            if index_it:
                for cb in self.on_event:  # under the lock so a file of events keeps index order
                    for obj in objs:
                        cb(obj)
        info["events"] = len(objs) if index_it else 0
        info["channel"] = chan
        if delay > 0:
            self._stopping.wait(delay)
        if dropping:
            with self._lock:
                self.requests.append(Req(path, 0, None))
                self.details.append({"status": 0, "code": None, "path": path, "dropped": True, **info})
            # half a status line, then a hard close: the client sees the connection die mid-response
            with contextlib.suppress(OSError):
                h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        if bad_at is not None:
            self._reply(h, path, 400, bad_code, extra={"invalid-event-number": bad_at}, info=info)
            return
        self._reply(h, path, 200, 0, extra=None if ack_id is None else {"ackId": ack_id}, info=info)

    def _parse(self, data: bytes) -> tuple[list[dict[str, Any]], int | None, int]:
        """Valid leading objects, the 0-based index of the first bad one (or None), and its code."""
        try:
            text = data.decode("utf-8")
            utf8_error = False
        except UnicodeDecodeError as e:
            text = data[: e.start].decode("utf-8")
            utf8_error = True
        decoder = json.JSONDecoder(parse_constant=_reject_constant)
        objs: list[dict[str, Any]] = []
        pos, end = 0, len(text)
        while True:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos >= end:
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return objs, len(objs), 6
            try:
                self._check(obj)
            except _BadEvent as bad:
                return objs, len(objs), bad.code
            objs.append(obj)
        if utf8_error:
            return objs, len(objs), 6
        return objs, None, 0

    def _check(self, obj: Any) -> None:
        """Raise _BadEvent(code) unless ``obj`` is an envelope Splunk indexes."""
        if not isinstance(obj, dict):
            raise _BadEvent(6)
        if set(obj) - ENVELOPE_KEYS:
            raise _BadEvent(6)
        if "event" not in obj:
            raise _BadEvent(12)
        ev = obj["event"]
        if ev is None or ev is False:
            raise _BadEvent(6)
        if isinstance(ev, str) and not ev.strip():
            raise _BadEvent(13)
        for key in ("host", "source", "sourcetype", "index"):
            if key in obj and not isinstance(obj[key], str):
                raise _BadEvent(6)
        if "time" in obj:
            t = obj["time"]
            if isinstance(t, bool) or not isinstance(t, int | float | str):
                raise _BadEvent(6)
            if isinstance(t, str):
                if not _NUMERIC.match(t):
                    raise _BadEvent(6)
                t = float(t)
            if not math.isfinite(t) or t < 0 or (self.strict_time and t >= 1e11):
                raise _BadEvent(6)
        if "fields" in obj:
            f = obj["fields"]
            if not isinstance(f, dict):
                raise _BadEvent(15)
            for v in f.values():
                if isinstance(v, str):
                    continue
                if isinstance(v, list) and all(isinstance(x, str) for x in v):
                    continue
                raise _BadEvent(15)
        if self.indexes is not None and obj.get("index") is not None and obj["index"] not in self.indexes:
            raise _BadEvent(7)
        if self.reject_event is not None and self.reject_event(obj):
            raise _BadEvent(6)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def main(argv: list[str] | None = None) -> int:
    """Subprocess mode: print the port, serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m tests.doubles.hec_double",
                                description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=DEFAULT_TOKEN)
    p.add_argument("--ack", action="store_true")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-file", help="copy the TLS CA certificate here")
    p.add_argument("--events-file", help="append each accepted envelope here as a JSON line")
    p.add_argument("--index", action="append", help="allowed index (repeatable; default: any)")
    p.add_argument("--max-content-length", type=int, default=DEFAULT_MAX_CONTENT_LENGTH)
    args = p.parse_args(argv)
    hec = HecDouble(token=args.token, ack=args.ack, tls=args.tls, indexes=args.index,
                    max_content_length=args.max_content_length, port=args.port)
    if args.events_file:
        out = open(args.events_file, "ab")  # noqa: SIM115 - lives as long as the server

        def write(obj: dict[str, Any]) -> None:
            out.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            out.flush()

        hec.on_event.append(write)
    if args.ca_file and hec.ca_file:
        shutil.copyfile(hec.ca_file, args.ca_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with hec:
        sys.stdout.write(f"{hec.port}\n")
        sys.stdout.flush()
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
