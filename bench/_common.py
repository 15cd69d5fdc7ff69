"""Shared pieces of the end-to-end benchmarks: realistic log lines, the counting HEC receiver
process, per-process CPU-seconds from /proc, polling with a deadline."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
LOGPIPE = [sys.executable, "-m", "logpipe"]
TOKEN = "00000000-1111-2222-3333-444444444444"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: ``python -c`` prefix that runs the logpipe CLI with gzip off (no option or env turns the HEC
#: sink's gzip off: the bench lifts its size threshold in the process, for the reference row).
NO_GZIP = [sys.executable, "-c",
           "import sys, logpipe.sinks.splunk._hec as h; h.GZIP_MIN_BYTES = 1 << 62; "
           "from logpipe.cli import main; main(prog_name='logpipe')"]

_MESSAGES = [
    ("request handled", lambda r, i: {"method": r.choice(["GET", "POST", "PUT"]),
                                      "path": f"/v1/orders/{r.randrange(10**6)}",
                                      "status": r.choice([200, 200, 200, 201, 404, 500]),
                                      "duration_ms": round(r.random() * 250, 2),
                                      "request_id": f"req-{i:08x}{r.randrange(1 << 16):04x}"}),
    ("order placed", lambda r, i: {"order_id": i, "amount": round(r.random() * 500, 2),
                                   "currency": "EUR", "user": f"u-{r.randrange(10**5):05d}",
                                   "request_id": f"req-{i:08x}{r.randrange(1 << 16):04x}"}),
    ("cache miss", lambda r, i: {"key": f"product:{r.randrange(10**6)}:price", "ttl_s": 300,
                                 "backend": "redis", "request_id": f"req-{i:08x}{r.randrange(1 << 16):04x}"}),
    ("payment authorised", lambda r, i: {"payment_id": f"pay_{r.randrange(1 << 40):010x}",
                                         "amount": round(r.random() * 500, 2), "provider": "stripe",
                                         "attempt": r.randrange(1, 3),
                                         "user": f"u-{r.randrange(10**5):05d}"}),
]
_LEVELS = ["info"] * 8 + ["warning", "error", "debug"]


def service_line(r: random.Random, i: int, service: str, instance: int, pid: int, t: float) -> bytes:
    """One JSON line as a service's logger writes it (logpipe's key order), ~250 bytes."""
    msg, fields = _MESSAGES[i % len(_MESSAGES)]
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rec: dict[str, Any] = {"time": stamp, "level": r.choice(_LEVELS), "message": msg,
                           "service": service, "instance_id": str(instance), "host": "web-1",
                           "pid": pid, **fields(r, i)}
    return orjson.dumps(rec) + b"\n"


def make_service_files(d: Path, files: int, total_lines: int, seed: int = 11) -> tuple[list[Path], int]:
    """``files`` log files holding ``total_lines`` realistic JSON lines in all; (paths, bytes)."""
    r = random.Random(seed)
    services = ["api", "worker", "billing", "search"]
    per = total_lines // files
    paths, size = [], 0
    t0 = time.time() - 3600
    for f in range(files):
        svc = services[f % len(services)]
        data = b"".join(service_line(r, i, svc, f, 4000 + f, t0 + i * 0.001) for i in range(per))
        p = d / f"{svc}-{f}.log"
        p.write_bytes(data)
        paths.append(p)
        size += len(data)
    return paths, size


# --- processes ----------------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """utime+stime of ``pid`` (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class Receiver:
    """The counting HEC receiver (bench/_hec_receiver.py) in its own process."""

    def __init__(self, latency: bool = False) -> None:
        cmd = [sys.executable, str(HERE / "_hec_receiver.py")]
        if latency:
            cmd.append("--latency")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return orjson.loads(r.read())

    def count(self) -> dict[str, int]:
        return self.get("/count")  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.get("/reset")

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def wait_events(self, n: int, deadline: float, interval: float = 0.01) -> bool:
        """Poll until ``n`` events were counted or ``time.monotonic()`` passes ``deadline``."""
        while self.count()["events"] < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)
        return True

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clean_env() -> dict[str, str]:
    """The environment without any ``LOGPIPE_*`` the caller may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}


def splunk_env(base: str, state: Path) -> dict[str, str]:
    return dict(clean_env(), LOGPIPE_SPLUNK_URL=base, LOGPIPE_SPLUNK_TOKEN=TOKEN,
                LOGPIPE_STATE_DIR=str(state))


def load_note() -> str:
    """The 1-minute load average and CPU count, to print beside every figure (noise)."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
