"""Splunk HEC sink benchmark: ``logpipe sink splunk < FILE`` next to ``splunk-handler`` on the same
file, into the same local HEC receiver. One command: ``python bench/splunk.py``.

- Input: a pre-made NDJSON file of ``--events`` ~250-byte records (the logger's shape, several
  sources, as ``logpipe collect`` writes them).
- Receiver: a minimal HEC on 127.0.0.1 in its own process (``--receiver``): answers
  ``/health``, ``/event`` (gunzips, counts envelopes, answers ``{"text":"Success","code":0}``)
  — it does not validate, so it measures the senders, not itself.
- logpipe: ``python -m logpipe sink splunk --url … < FILE`` with a fresh state dir (spool
  included: every event is fsynced to disk before it is sent, the durable path), default
  options (1 MB batches, gzip, 4 lanes).
- Baseline: ``splunk-handler`` 3.x (PyPI; the usual "hand-written Splunk transport" for Python
  logging) in a process that reads the same file and logs each line; tuned for its best
  batching: ``flush_interval=0.0001`` (its worker sends one ≤ 512 KiB payload per
  ``flush_interval/2`` tick, so shorter is faster; ``--sweep`` shows the curve),
  ``queue_size=0`` (unbounded: never drops, never sleeps in ``emit``), ``retry_count=0``; it
  sends uncompressed and keeps nothing on disk.
- Each measured run is a fresh process from start until the receiver has counted every event
  and the process has exited: wall time, and CPU (user+sys) of the sender process from
  ``wait4``. Runs are interleaved (logpipe, baseline, logpipe, …) and medians reported.
- Ceiling: ``logpipe sink ndjson < FILE > /dev/null`` in the same rounds — the stdin source and
  line normalisation alone, i.e. the fastest any logpipe sink could be on this input.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

LOGPIPE = [sys.executable, "-m", "logpipe"]
TOKEN = "00000000-1111-2222-3333-444444444444"
HERE = Path(__file__).resolve()


# --- the receiver -------------------------------------------------------------------------------
class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events = 0
        self.requests = 0
        self.bytes = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are separate writes: no 40 ms ACK stalls
    counter: _Counter

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, obj: dict[str, Any]) -> None:
        body = orjson.dumps(obj)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/count"):
            c = self.counter
            with c.lock:
                self._reply(200, {"events": c.events, "requests": c.requests, "bytes": c.bytes})
        elif self.path.startswith("/reset"):
            c = self.counter
            with c.lock:
                c.events = c.requests = c.bytes = 0
            self._reply(200, {})
        else:  # /services/collector/health
            self._reply(200, {"text": "HEC is healthy", "code": 17})

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path.startswith("/services/collector/ack"):
            self._reply(200, {"acks": {}})
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if not body.strip():
            self._reply(400, {"text": "No data", "code": 5})
            return
        # one "sourcetype" key per envelope in both senders' envelopes (not in the events)
        events = body.count(b'"sourcetype":')
        c = self.counter
        with c.lock:
            c.events += events
            c.requests += 1
            c.bytes += n
        self._reply(200, {"text": "Success", "code": 0})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionResetError):  # a sender exiting mid keep-alive
            super().handle_error(request, client_address)


def receiver_main(port: int) -> None:
    """Serve until killed; print the port first."""
    _Handler.counter = _Counter()
    server = _Server(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return orjson.loads(r.read())  # type: ignore[no-any-return]


# --- the baseline sender ------------------------------------------------------------------------
def baseline_main(path: str, port: int, flush_interval: float) -> None:
    """Read ``path`` and log every line through splunk-handler, then flush and exit."""
    import splunk_handler
    from splunk_handler import SplunkHandler

    handler = SplunkHandler(host="127.0.0.1", port=port, token=TOKEN, index="main",
                            protocol="http", verify=False, flush_interval=flush_interval,
                            queue_size=0, retry_count=0, sourcetype="_json", source="bench")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("bench")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    with open(path, encoding="utf-8") as f:
        for line in f:
            log.info(line.rstrip("\n"))
    splunk_handler.force_flush()
    handler.close()


def _run_local(cmd: list[str], stdin_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd < stdin_path > /dev/null`` to its exit: (wall s, CPU s)."""
    with open(stdin_path, "rb") as stdin:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[2:5]} exited {os.waitstatus_to_exitcode(status)}")
    return wall, ru.ru_utime + ru.ru_stime


# --- the driver ---------------------------------------------------------------------------------
def make_input(path: Path, n: int) -> int:
    """``n`` NDJSON records like the logger/collector writes; returns the byte size."""
    buf = io.BytesIO()
    for i in range(n):
        svc = ("api", "worker", "cron")[i % 3]
        rec = {"time": f"2026-11-23T14:01:51.{i % 1_000_000:06d}Z", "level": "info",
               "message": "order placed", "service": svc, "feature": "store",
               "instance_id": str(i % 4), "host": "web-1", "pid": 4242 + i % 4,
               "source": f"/var/log/app/{svc}-out-{i % 4}.log", "order_id": i, "amount": 9.99,
               "request_id": f"r-{i:010d}", "user": "u-1234"}
        buf.write(orjson.dumps(rec) + b"\n")
    data = buf.getvalue()
    path.write_bytes(data)
    return len(data)


def _run(cmd: list[str], stdin_path: Path | None, env: dict[str, str], base: str, n: int,
         timeout: float, cwd: str | None = None) -> tuple[float, float]:
    """Run ``cmd`` until it exits and the receiver counted ``n`` events: (wall s, CPU s)."""
    _get(f"{base}/reset")
    stdin = open(stdin_path, "rb") if stdin_path is not None else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, cwd=cwd)
        assert proc.stderr is not None
        err_box: list[bytes] = []
        reader = threading.Thread(target=lambda: err_box.append(proc.stderr.read()))  # type: ignore[union-attr]
        reader.start()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
        deadline = time.monotonic() + timeout
        while _get(f"{base}/count")["events"] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"{cmd[2:5]}: only {_get(base + '/count')['events']} of {n} events "
                                 f"arrived; stderr: {err_box[0][-2000:].decode(errors='replace')}")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
    finally:
        if stdin_path is not None:
            stdin.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[2:5]} exited {proc.returncode}: {err_box[0][-2000:].decode()}")
    return wall, ru.ru_utime + ru.ru_stime


def gzip_levels(n: int) -> None:
    """CPU per 100k events and size ratio of zlib and ISA-L at several levels, on request bodies
    of this benchmark's input as the sink builds them (its own EnvelopeEncoder, ~1 MB bodies)."""
    from isal import isal_zlib

    from logpipe.sinks.splunk._envelope import EnvelopeEncoder

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.ndjson"
        make_input(path, n)
        lines = path.read_bytes().split(b"\n")[:-1]
    envs = EnvelopeEncoder(sourcetype="_json").encode_many([orjson.loads(x) for x in lines], lines)
    bodies, cur, size = [], [], 0
    for e in envs:
        cur.append(e)
        size += len(e) + 1
        if size >= 1_000_000:
            bodies.append(b"\n".join(cur))
            cur, size = [], 0
    bodies.append(b"\n".join(cur))
    raw = sum(map(len, bodies))
    print(f"{n:,} events in {len(bodies)} bodies, {raw / 1e6:.1f} MB; CPU best of 5\n")
    print("| compressor | CPU-s per 100k events | size ratio |\n|---|---:|---:|")
    for name, mod, levels in (("zlib", zlib, (1, 6)), ("ISA-L", isal_zlib, (0, 1, 2, 3))):
        for level in levels:
            best, out = 1e9, 0
            for _ in range(5):
                t0 = time.process_time()
                out = sum(len(c.compress(b) + c.flush())
                          for b in bodies for c in [mod.compressobj(level, mod.DEFLATED, 31)])
                best = min(best, time.process_time() - t0)
            print(f"| {name} level {level} | {best / n * 1e5:.3f} | {raw / out:.1f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--flush-interval", type=float, default=0.0001,
                   help="splunk-handler flush_interval (its best here: see --sweep)")
    p.add_argument("--sweep", action="store_true", help="try several splunk-handler flush intervals")
    p.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--baseline", nargs=3, metavar=("FILE", "PORT", "FLUSH"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--before", metavar="TREE",
                   help="also run `sink splunk` from this source tree (e.g. `git archive main | tar -x "
                        "-C TREE`), interleaved: a before/after in the same run")
    p.add_argument("--no-baseline", action="store_true", help="skip splunk-handler (faster A/B runs)")
    p.add_argument("--gzip-levels", action="store_true",
                   help="only compare zlib and ISA-L gzip levels on this input's request bodies")
    a = p.parse_args()
    if a.gzip_levels:
        gzip_levels(min(a.events, 100_000))
        return
    if a.receiver:
        receiver_main(a.port)
        return
    if a.baseline:
        baseline_main(a.baseline[0], int(a.baseline[1]), float(a.baseline[2]))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-splunk-"))
    rec = subprocess.Popen([sys.executable, str(HERE), "--receiver"], stdout=subprocess.PIPE)
    try:
        assert rec.stdout is not None
        port = int(rec.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        data = tmp / "input.ndjson"
        size = make_input(data, a.events)
        n = a.events
        print(f"input: {n:,} events, {size / 1e6:.1f} MB NDJSON; receiver {base}; "
              f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}

        def logpipe_run(i: int, tree: str | None = None) -> tuple[float, float]:
            e = dict(env, LOGPIPE_SPLUNK_TOKEN=TOKEN,
                     LOGPIPE_STATE_DIR=str(tmp / f"state{i}{'-before' if tree else ''}"))
            if tree is not None:  # `-m` puts the working directory first on sys.path: run in the tree
                e["PYTHONPATH"] = tree
            return _run([*LOGPIPE, "sink", "splunk", "--url", base], data, e, base, n, 120, cwd=tree)

        def baseline_run(flush: float) -> tuple[float, float]:
            cmd = [sys.executable, str(HERE), "--baseline", str(data), str(port), str(flush)]
            return _run(cmd, None, env, base, n, 600)

        if a.sweep:
            for fl in (1.0, 0.2, 0.05, 0.01, 0.002, 0.0005, 0.0001):
                w, c = baseline_run(fl)
                print(f"splunk-handler flush_interval={fl:<6g} {n / w:>10,.0f} events/s  "
                      f"CPU {c / n * 1e5:6.2f} s/100k")
            return

        def ceiling_run() -> tuple[float, float]:
            # the same stdin read + line normalisation into /dev/null: what logpipe costs with
            # no Splunk sink at all, i.e. the most any sink behind this source could reach
            return _run_local([*LOGPIPE, "sink", "ndjson"], data, env)

        rows: dict[str, list[tuple[float, float]]] = {"logpipe": []}
        if a.before:
            rows["logpipe before"] = []
        if not a.no_baseline:
            rows["splunk-handler"] = []
        rows["ceiling (ndjson)"] = []
        for i in range(a.reps):
            rows["logpipe"].append(logpipe_run(i))
            lw, lc = rows["logpipe"][-1]
            line = f"  rep {i + 1}: logpipe {n / lw:>9,.0f} ev/s ({lc:.2f} CPU s)"
            if a.before:
                rows["logpipe before"].append(logpipe_run(i, str(Path(a.before).resolve())))
                bw, bc = rows["logpipe before"][-1]
                line += f"   before {n / bw:>9,.0f} ev/s ({bc:.2f} CPU s)"
            if not a.no_baseline:
                rows["splunk-handler"].append(baseline_run(a.flush_interval))
                bw, bc = rows["splunk-handler"][-1]
                line += f"   splunk-handler {n / bw:>9,.0f} ev/s ({bc:.2f} CPU s)"
            rows["ceiling (ndjson)"].append(ceiling_run())
            print(line)
        print()
        print(f"{'sender':<16}{'events/s (median)':>20}{'CPU s / 100k events':>22}{'wall s':>9}")
        med: dict[str, tuple[float, float]] = {}
        for name, runs in rows.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            med[name] = (wall, cpu)
            print(f"{name:<16}{n / wall:>20,.0f}{cpu / n * 1e5:>22.2f}{wall:>9.2f}")
        if a.before:
            cpu_ab = [b[1] / o[1] for o, b in zip(rows["logpipe"], rows["logpipe before"], strict=True)]
            print(f"\nCPU per event, before / after: median {statistics.median(cpu_ab):.2f}x "
                  f"(per rep: {', '.join(f'{r:.2f}' for r in cpu_ab)})")
        if a.no_baseline:
            return
        pairs = list(zip(rows["logpipe"], rows["splunk-handler"], strict=True))
        ratios = [base[0] / ours[0] for ours, base in pairs]
        cpu_ratios = [base[1] / ours[1] for ours, base in pairs]
        print(f"\nthroughput ratio logpipe / splunk-handler: median {statistics.median(ratios):.1f}x "
              f"(per rep: {', '.join(f'{r:.1f}' for r in ratios)})")
        print(f"CPU per event ratio splunk-handler / logpipe: median {statistics.median(cpu_ratios):.1f}x")
        ceil = [base[0] / c[0] for (_, base), c in zip(pairs, rows["ceiling (ndjson)"], strict=True)]
        print(f"ceiling: `logpipe sink ndjson > /dev/null` / splunk-handler: median "
              f"{statistics.median(ceil):.1f}x (no sink behind logpipe's stdin source can beat this)")
    finally:
        rec.terminate()
        rec.wait()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    main()
