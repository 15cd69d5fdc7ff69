"""Scale: 10,000 tailed files, 1,000 of them active at a low rate — RSS, idle CPU and delivery time
of a new line in any file; logpipe next to syslog-ng. One command: ``python bench/scale.py``.

Per subject, a fresh directory of ``--files`` (10,000) files with 2 realistic JSON lines each:

1. start the subject on ``DIR/*.log``; time until the initial ``2 * files`` events arrived;
2. 2 s to settle, then ``--idle`` (10) s with nothing written: CPU (utime+stime from
   /proc/<pid>/stat, all threads) as % of one core, RSS (VmRSS) and open fds;
3. ``--active-seconds`` (20) with ``--active`` (1,000) files each appended one line per
   ``1 / --active-rate`` s (a writer thread here); meanwhile every 1 s a probe line stamped
   with its write time goes into a random one of all the files: delivery time = arrival at the
   receiver - write time (p50/max); CPU % and peak RSS (VmHWM) over the phase; every line is
   waited for at the end.

Subjects: ``logpipe collect 'DIR/*.log' --to splunk`` (default options, spool on) into the
counting receiver (bench/_hec_receiver.py), or with ``--ndjson`` ``logpipe collect 'DIR/*.log'``
with NDJSON on stdout (read here); with ``--baseline SRC`` the same rows again for the logpipe
source tree at SRC (``git archive main | tar -x -C SRC``; run with ``PYTHONPATH=SRC``),
interleaved with this tree's rows in the same run (``--poll``: logpipe without inotify, the
polling fallback); and syslog-ng 3.38 (``wildcard-file(max-files(files))``,
http() as in bench/e2e_hec.py, ``batch-timeout(1000)`` like logpipe's default; skipped if not
installed; ``--no-syslog-ng``).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import LOGPIPE, TOKEN, Receiver, load_note, proc_cpu, proc_rss_kib, service_line, splunk_env
from e2e_hec import SNG_CONF, ensure_syslog_ng


class NdjsonReader(threading.Thread):
    """Reads a collector's stdout: counts lines, records probe latencies (``"lat_ts"``)."""

    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.events = 0
        self.lat: list[float] = []

    def run(self) -> None:
        import re

        pat = re.compile(rb'"lat_ts":([0-9.]+)')
        rest = b""
        while chunk := self.stream.read1(1 << 16):  # type: ignore[attr-defined]
            now = time.time()
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            done, rest = data[:cut], data[cut:]
            self.events += done.count(b"\n")
            self.lat.extend(now - float(m) for m in pat.findall(done))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_pct(pid: int, seconds: float) -> float:
    c0, w0 = proc_cpu(pid), time.perf_counter()
    time.sleep(seconds)
    return (proc_cpu(pid) - c0) / (time.perf_counter() - w0) * 100


def run_subject(name: str, a: argparse.Namespace, rec: Receiver, work: Path,
                sng: str | None) -> dict[str, str]:
    d = work / name.replace(" ", "_")
    shutil.rmtree(d, ignore_errors=True)
    logs = d / "logs"
    logs.mkdir(parents=True)
    r = random.Random(5)
    paths = [logs / f"svc{i:05d}.log" for i in range(a.files)]
    for i, p in enumerate(paths):
        p.write_bytes(service_line(r, 0, "api", i, 4000, time.time())
                      + service_line(r, 1, "api", i, 4000, time.time()))
    initial = 2 * a.files
    rec.reset()
    rec.get("/lat")
    reader: NdjsonReader | None = None
    if name == "syslog-ng":
        assert sng is not None
        conf = d / "syslog-ng.conf"
        conf.write_text(SNG_CONF.format(dir=logs, port=rec.port, token=TOKEN, batch_lines=5000, workers=4,
                                        max_files=a.files + 10, iw_size=(a.files + 10) * 100,
                                        batch_timeout=1000))
        proc = subprocess.Popen([sng, "-F", "-f", str(conf), "-R", str(d / "persist"), "-p", str(d / "pid"),
                                 "-c", str(d / "ctl")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        env = splunk_env(rec.base, d / "state")
        if a.poll:
            env["LOGPIPE_TAIL_NOTIFY"] = "0"
        if name.startswith("main "):
            env["PYTHONPATH"] = a.baseline  # (cwd is the subject's own dir: ``-m`` puts it first)
        if name.endswith("ndjson"):
            proc = subprocess.Popen([*LOGPIPE, "collect", str(logs / "*.log")], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env, cwd=d)
            reader = NdjsonReader(proc.stdout)
            reader.start()
        else:
            proc = subprocess.Popen([*LOGPIPE, "collect", str(logs / "*.log"), "--to", "splunk"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=d)

    def events() -> int:
        return reader.events if reader is not None else rec.count()["events"]

    def wait(n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while events() < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                return False
            time.sleep(0.02)
        return True

    out: dict[str, str] = {"subject": name}
    try:
        t0 = time.perf_counter()
        if not wait(initial, a.timeout):
            raise SystemExit(f"{name}: initial read incomplete: {events()}/{initial} (exit {proc.poll()})")
        out["initial read"] = f"{time.perf_counter() - t0:.2f} s / {proc_cpu(proc.pid):.1f} CPU-s"
        time.sleep(2.0)
        c_idle = proc_cpu(proc.pid)
        idle = _cpu_pct(proc.pid, a.idle)
        c_idle = proc_cpu(proc.pid) - c_idle
        rss, _ = proc_rss_kib(proc.pid)
        out["RSS idle"] = f"{rss / 1024:.1f} MB"
        out["idle CPU"] = f"{idle:.2f} % ({c_idle:.2f} CPU-s)"
        out["fds"] = str(fd_count(proc.pid))

        # active phase
        stop = threading.Event()
        written = [0]
        active = paths[: a.active]

        def writer() -> None:
            wr = random.Random(9)
            fds = [os.open(p, os.O_WRONLY | os.O_APPEND) for p in active]
            period = 1.0 / a.active_rate / len(fds)  # one line into the next file every period
            t = time.monotonic()
            i = 0
            while not stop.is_set():
                os.write(fds[i % len(fds)], service_line(wr, i, "api", i % len(fds), 4000, time.time()))
                written[0] += 1
                i += 1
                t += period
                delay = t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            for fd in fds:
                os.close(fd)

        wt = threading.Thread(target=writer, daemon=True)
        c0, w0 = proc_cpu(proc.pid), time.perf_counter()
        wt.start()
        probes = 0
        pr = random.Random(3)
        lat: list[float] = []
        end = time.monotonic() + a.active_seconds
        while time.monotonic() < end:
            time.sleep(1.0)
            target = paths[pr.randrange(len(paths))]
            line = service_line(pr, probes, "probe", 0, 1, time.time())
            with open(target, "ab") as f:
                f.write(line[:-2] + b',"lat_ts":' + repr(time.time()).encode() + b"}\n")
            probes += 1
        stop.set()
        wt.join()
        act_cs = proc_cpu(proc.pid) - c0
        act_cpu = act_cs / (time.perf_counter() - w0) * 100
        want = initial + written[0] + probes
        if not wait(want, 60):
            raise SystemExit(f"{name}: {events()}/{want} events arrived")
        lat = reader.lat if reader is not None else rec.get("/lat")
        rss2, hwm = proc_rss_kib(proc.pid)
        out["active CPU"] = (f"{act_cpu:.1f} % ({act_cs:.1f} CPU-s, "
                             f"{written[0] / a.active_seconds:,.0f} lines/s)")
        out["RSS after active / peak"] = f"{rss2 / 1024:.1f} / {hwm / 1024:.1f} MB"
        out["delivery p50 / max"] = (f"{statistics.median(lat):.2f} / {max(lat):.2f} s ({len(lat)} probes)"
                                     if lat else "no probes")
        out["events"] = f"{events():,}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--active", type=int, default=1_000)
    ap.add_argument("--active-rate", type=float, default=1.0, help="lines/s per active file")
    ap.add_argument("--active-seconds", type=float, default=20.0)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--ndjson", action="store_true", help="also logpipe with NDJSON on stdout")
    ap.add_argument("--no-syslog-ng", action="store_true")
    ap.add_argument("--poll", action="store_true",
                    help="logpipe without inotify (LOGPIPE_TAIL_NOTIFY=0): the polling fallback")
    ap.add_argument("--baseline", metavar="SRC", help="also the logpipe tree at SRC (rows 'main …')")
    ap.add_argument("--only", choices=["logpipe", "baseline", "syslog-ng"], action="append",
                    help="run only these subjects (repeatable)")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * a.files)), hard))
    sng = None if a.no_syslog_ng else ensure_syslog_ng()
    work = Path(tempfile.mkdtemp(prefix="lp-bench-scale-"))
    print(f"{a.files:,} files, {a.active:,} active at {a.active_rate:g} line/s each; "
          f"Python {sys.version.split()[0]}; {load_note()}")
    mine = ["logpipe --to splunk", *(["logpipe ndjson"] if a.ndjson else [])]
    base = [n.replace("logpipe", "main", 1) for n in mine] if a.baseline else []
    # interleaved: main, this tree, main, this tree … (a noisy machine drifts between rows)
    names = [n for pair in zip(base, mine, strict=False) for n in pair] if base else list(mine)
    names += ["syslog-ng"] if sng else []
    if a.only:
        names = [n for n in names if ("baseline" if n.startswith("main ") else n.split()[0]) in a.only]
    rows = []
    try:
        with Receiver(latency=True) as rec:
            for name in names:
                row = run_subject(name, a, rec, work, sng)
                rows.append(row)
                print("  " + "; ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
        print(f"after: {load_note()}\n")
        keys = list(rows[0])
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            print("| " + " | ".join(row.get(k, "") for k in keys) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
