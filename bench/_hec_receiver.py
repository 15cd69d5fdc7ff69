"""A fast counting HEC receiver on 127.0.0.1 for the end-to-end benchmarks (not a Splunk double).

It answers what a sender needs and nothing more, so that it is never the bottleneck: ``GET
/services/collector/health`` (200), ``POST /services/collector[/event[/1.0]]`` (gunzips when
``Content-Encoding: gzip``, counts envelopes, answers ``{"text":"Success","code":0}``), ``POST
/services/collector/ack`` (no acks), ``Expect: 100-continue`` (libcurl, i.e. syslog-ng, sends it
for larger bodies and would otherwise wait 1 s per request). It does NOT validate envelopes: the
strict double is ``tests/doubles/hec_double.py``; this one measures senders.

Control (GET): ``/count`` → ``{"events", "requests", "wire_bytes", "raw_bytes"}``; ``/reset``;
``/lat`` → the latencies recorded since the last ``/lat`` (``--latency``: every envelope's
``"lat_ts":<unix seconds>`` field, as the writer stamped it, subtracted from the time its
request arrived) and clears them.

Events are counted as occurrences of ``"sourcetype":`` — one per envelope in every sender's
envelope here, never inside the benchmark's events. Run: ``python bench/_hec_receiver.py
[--port P] [--latency]``; prints its port on the first stdout line, serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
import zlib

import orjson

EVENT_PATHS = (b"/services/collector", b"/services/collector/event", b"/services/collector/event/1.0")
ENVELOPE_MARK = b'"sourcetype":'
LAT_RE = re.compile(rb'"lat_ts":([0-9]+(?:\.[0-9]+)?)')


class State:
    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.events = 0
        self.requests = 0
        self.wire_bytes = 0
        self.raw_bytes = 0
        self.lat: list[float] = []
        self.conns = 0  # connections open now
        self.reading = 0  # requests whose head arrived and whose body is still being read


def _response(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


OK = _response(b"200 OK", b'{"text":"Success","code":0}')
HEALTHY = _response(b"200 OK", b'{"text":"HEC is healthy","code":17}')
NO_ACKS = _response(b"200 OK", b'{"acks":{}}')
NOT_FOUND = _response(b"404 Not Found", b'{"text":"The requested URL was not found","code":404}')


def _count(state: State, headers: dict[bytes, bytes], body: bytes) -> None:
    now = time.time()
    state.wire_bytes += len(body)
    if headers.get(b"content-encoding", b"").strip().lower() == b"gzip":
        body = zlib.decompress(body, 47)  # 32+15: gzip or zlib container
    state.raw_bytes += len(body)
    state.requests += 1
    state.events += body.count(ENVELOPE_MARK)
    if state.latency:
        state.lat.extend(now - float(m) for m in LAT_RE.findall(body))


async def _serve_conn(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    state.conns += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            headers = {}
            for ln in lines[1:]:
                if ln:
                    k, _, v = ln.partition(b":")
                    headers[k.strip().lower()] = v.strip()
            path = target.split(b"?", 1)[0]
            body = b""
            state.reading += 1
            n = int(headers.get(b"content-length", b"0"))
            if n:
                if headers.get(b"expect", b"").lower() == b"100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await reader.readexactly(n)
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                parts = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    parts.append(await reader.readexactly(size + 2))
                    if size == 0:
                        break
                body = b"".join(p[:-2] for p in parts)
            state.reading -= 1
            if method == b"POST" and path in EVENT_PATHS:
                _count(state, headers, body)
                writer.write(OK)
            elif path.startswith(b"/services/collector/ack"):
                writer.write(NO_ACKS)
            elif path.startswith(b"/services/collector/health"):
                writer.write(HEALTHY)
            elif path == b"/count":
                writer.write(_response(b"200 OK", orjson.dumps({
                    "events": state.events, "requests": state.requests,
                    "wire_bytes": state.wire_bytes, "raw_bytes": state.raw_bytes,
                    "conns": state.conns, "reading": state.reading})))
            elif path == b"/reset":
                state.events = state.requests = state.wire_bytes = state.raw_bytes = 0
                state.lat = []
                writer.write(_response(b"200 OK", b"{}"))
            elif path == b"/lat":
                lat, state.lat = state.lat, []
                writer.write(_response(b"200 OK", orjson.dumps(lat)))
            else:
                writer.write(NOT_FOUND)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except Exception as e:  # a malformed request: say so, keep serving the others
        print(f"receiver: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        state.conns -= 1
        with contextlib.suppress(Exception):
            writer.close()


async def _main(port: int, latency: bool) -> None:
    state = State(latency)
    server = await asyncio.start_server(lambda r, w: _serve_conn(state, r, w), "127.0.0.1", port,
                                        limit=1 << 20, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", action="store_true", help='record "lat_ts" of every event')
    a = ap.parse_args()
    asyncio.run(_main(a.port, a.latency))


if __name__ == "__main__":
    main()
