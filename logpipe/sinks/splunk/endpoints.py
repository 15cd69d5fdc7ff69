"""The HEC endpoints: URL parsing, TLS settings, health (round robin, backoff) and transport errors."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    # httpcore runs ``import sniffio`` (inside try/except ImportError) several times per request
    # to tell asyncio from trio; anyio 4 no longer installs sniffio, so each of those imports
    # searched sys.path again (≈ 34 µs, 3 per request). A None entry makes the import fail at
    # once, exactly as it would anyway (Python's documented sys.modules negative entry).
    sys.modules["sniffio"] = None  # type: ignore[assignment]

import httpx

from logpipe import diagnostics
from logpipe.errors import UsageError
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk._hec import Action, Verdict

if TYPE_CHECKING:
    from logpipe.sinks.splunk.acks import AwaitingAck


#: seconds for each step of the wrong-scheme probe at start
PROBE_TIMEOUT = 2.0


class Stopped(Exception):
    """Internal: sending stops (fatal config error or shutdown); the chunk stays spooled."""


@dataclass(eq=False)
class Endpoint:
    """One HEC base URL, its health, and the ack ids it issued."""

    base: str
    display: str
    down_until: float = 0.0
    failures: int = 0
    #: the last attempt got no HTTP answer at all (refused, reset, timed out)
    unreachable: bool = False
    #: the last error (``HTTP 503, HEC code 9: …`` or ``Connection refused``), for stats()
    last_error: str = ""
    last_success: float | None = None  # time.time()
    pending: dict[int, AwaitingAck] = field(default_factory=dict)

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


def ssl_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The TLS context for ``--ca-file`` / ``--insecure`` (UsageError for a bad CA file)."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        diagnostics.warning("splunk: --insecure: TLS certificates are NOT verified; anyone on the "
                            "path can read the token and the logs", key="splunk-insecure")
        return ctx
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError:
        raise UsageError(f"splunk: cannot load --ca-file {ca_file}: no PEM CA certificate "
                         "in it") from None
    except OSError as exc:
        reason = exc.strerror or "unreadable"
        raise UsageError(f"splunk: cannot load --ca-file {ca_file}: {reason}") from None


class Endpoints:
    """The configured endpoints: round robin over the healthy ones, capped backoff for the rest."""

    def __init__(self, urls: list[str], backoff: _hec.Backoff, scrub: Callable[[str], str]) -> None:
        self.all = [parse_endpoint(u) for u in urls]
        self._backoff = backoff
        self._scrub = scrub
        self._next = 0

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    async def pick(self, stop: asyncio.Event) -> Endpoint:
        """The next healthy endpoint, round robin; when all are down, wait for the first back."""
        while True:
            if stop.is_set():
                raise Stopped
            now = time.monotonic()
            n = len(self.all)
            for k in range(n):
                ep = self.all[(self._next + k) % n]
                if ep.down_until <= now:
                    self._next = (self._next + k + 1) % n
                    return ep
            soonest = min(self.all, key=lambda e: e.down_until)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, soonest.down_until - now))
            if stop.is_set():
                raise Stopped
            soonest.down_until = 0.0  # probe it

    def mark_down(self, ep: Endpoint, v: Verdict) -> None:
        """A transient failure: back off from ``ep`` (Retry-After honoured), say so once."""
        ep.failures += 1
        ep.unreachable = v.status is None
        ep.last_error = self._scrub(v.describe())
        delay = self._backoff.delay(ep.failures - 1, v.retry_after)
        ep.down_until = time.monotonic() + delay
        diagnostics.warning(f"splunk: {ep.display}: {self._scrub(v.describe())}; retrying "
                            "(records stay spooled)", key=f"splunk-retry:{ep.display}")

    def mark_up(self, ep: Endpoint) -> None:
        """``ep`` answered: healthy again."""
        if ep.failures:
            diagnostics.info(f"splunk: {ep.display} is answering again", key=f"splunk-up:{ep.display}")
        ep.failures = 0
        ep.down_until = 0.0
        ep.unreachable = False
        ep.last_success = time.time()

    def all_unreachable(self) -> bool:
        """Every endpoint's last attempt got no HTTP answer: nothing will be delivered soon."""
        return all(ep.unreachable for ep in self.all)


def error_verdict(exc: BaseException, ep: Endpoint, scrub: Callable[[str], str]) -> Verdict:
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
    text = scrub(text.splitlines()[0] if text else text)[:160]
    if isinstance(exc, httpx.TimeoutException):
        text = f"timed out ({type(exc).__name__})"
    return Verdict(Action.RETRY, text=text)


async def scheme_mismatch(ep: Endpoint) -> str | None:
    """Whether ``ep`` failed because its scheme is wrong: an ``https://`` URL whose server answers
    plain HTTP (OpenSSL says only ``WRONG_VERSION_NUMBER``), or an ``http://`` URL whose server
    completes a TLS handshake (it just drops the plain request). A one-line hint, or None."""
    timeout = PROBE_TIMEOUT
    parts = urlsplit(ep.base)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    netloc = parts.netloc
    try:
        if tls:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            try:
                writer.write(b"GET " + _hec.HEALTH_PATH.encode() + b" HTTP/1.0\r\nHost: "
                             + host.encode() + b"\r\n\r\n")
                head = await asyncio.wait_for(reader.read(5), timeout)
            finally:
                writer.close()
            if head == b"HTTP/":
                return (f"splunk: {ep.display}: the server speaks plain HTTP; use "
                        f"http://{netloc}{parts.path}")
            return None
        probe = ssl.create_default_context()
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE  # only asks "does it speak TLS?"; nothing is sent
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=probe, server_hostname=host or None), timeout)
        writer.close()
        return f"splunk: {ep.display}: the server speaks TLS (HTTPS); use https://{netloc}{parts.path}"
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return None


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


def client_for(endpoints: Endpoints, ca_file: str | None, insecure: bool, request_timeout: float,
               connections: int) -> httpx.AsyncClient:
    """The one HTTP client of the sink (HTTP/1.1, keep-alive pool, no env proxies, no redirects)."""
    tls = any(ep.base.startswith("https:") for ep in endpoints)
    # Loading the system CA store costs ~30 ms per start; with only http:// endpoints no
    # certificate is ever checked, so build the context only when it can matter (a bad
    # --ca-file is still reported, and --insecure still warns).
    verify: ssl.SSLContext | bool = ssl_context(ca_file, insecure) if tls or ca_file or insecure else False
    # TCP_NODELAY: h11 writes a request's head and body separately; with Nagle the body
    # waits for the ACK of the head, which the server delays (~40 ms per request).
    transport = httpx.AsyncHTTPTransport(
        verify=verify, http1=True, http2=False, retries=0,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    return httpx.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=False,
        timeout=httpx.Timeout(request_timeout, connect=min(10.0, request_timeout)),
    )
