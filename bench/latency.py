"""Latency at a steady rate: line written → event received at the HEC, p50/p99, for logpipe's two
command shapes next to syslog-ng. One command: ``python bench/latency.py``.

A writer process appends ``--rate`` (1,000) realistic JSON lines per second to one file, each
stamped with its write time (``"lat_ts"``, unix seconds, taken just before its ``write``); the
counting receiver (``bench/_hec_receiver.py --latency``) subtracts that stamp from the arrival
time of the request carrying it. Per subject: start it on the empty file, 1 s of warm-up lines
(waited for, then discarded), then ``--seconds`` (20) of measured lines, wait until every one
arrived; p50/p99/max, and the CPU-seconds of every process over the whole run.

Subjects (followed file, not ``--once``; default batch timeout, i.e. 1 s, for all):
``logpipe collect FILE | logpipe sink splunk``; ``logpipe collect FILE --to splunk``; syslog-ng
3.38 as in bench/e2e_hec.py but with ``batch-timeout(1000)`` (skipped if not installed).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import LOGPIPE, TOKEN, Receiver, load_note, proc_cpu, service_line, splunk_env
from e2e_hec import SNG_CONF, ensure_syslog_ng

HERE = Path(__file__).resolve()


def writer_main(path: str, rate: float, seconds: float) -> None:
    """Append ``rate`` lines/s to ``path`` for ``seconds``, each stamped at its write."""
    r = random.Random(7)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        line = service_line(r, i, "api", 0, os.getpid(), time.time())
        os.write(fd, line[:-2] + b',"lat_ts":' + repr(time.time()).encode() + b"}\n")
    os.close(fd)


def _write(path: Path, rate: float, seconds: float) -> int:
    subprocess.run([sys.executable, str(HERE), "--writer", str(path), str(rate), str(seconds)], check=True)
    return int(rate * seconds)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    procs[0].send_signal(signal.SIGTERM)  # the first one; a pipe's sink ends at EOF
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_subject(name: str, rec: Receiver, work: Path, rate: float, seconds: float,
                sng: str | None, tree: str | None = None) -> dict[str, object]:
    """One subject; ``tree``: run logpipe from that source tree instead (the "before" rows)."""
    d = work / (name + ("-before" if tree else ""))
    shutil.rmtree(d, ignore_errors=True)
    (d / "logs").mkdir(parents=True)
    log = d / "logs" / "app.log"
    log.touch()
    env = splunk_env(rec.base, d / "state")
    if tree is not None:  # `-m` puts the working directory first on sys.path: run in the tree
        env["PYTHONPATH"] = tree
    rec.reset()
    rec.get("/lat")
    rc0 = rec.cpu()
    names: list[str]
    if name == "pipe":
        col = subprocess.Popen([*LOGPIPE, "collect", str(log)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=env, cwd=tree)
        sink = subprocess.Popen([*LOGPIPE, "sink", "splunk"], stdin=col.stdout,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tree)
        assert col.stdout is not None
        col.stdout.close()
        procs, names = [col, sink], ["collect", "sink splunk"]
    elif name == "to":
        procs = [subprocess.Popen([*LOGPIPE, "collect", str(log), "--to", "splunk"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tree)]
        names = ["collect --to splunk"]
    else:
        assert sng is not None
        conf = d / "syslog-ng.conf"
        conf.write_text(SNG_CONF.format(dir=d / "logs", port=rec.port, token=TOKEN, batch_lines=5000,
                                        workers=4, max_files=8, iw_size=8 * 40000, batch_timeout=1000))
        procs = [subprocess.Popen([sng, "-F", "-f", str(conf), "-R", str(d / "persist"),
                                   "-p", str(d / "pid"), "-c", str(d / "ctl")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        names = ["syslog-ng"]
    try:
        time.sleep(1.0)  # start-up; the warm-up lines below are waited for anyway
        warm = _write(log, rate, 1.0)
        if not rec.wait_events(warm, time.monotonic() + 60):
            raise SystemExit(f"{name}: warm-up lines did not arrive ({rec.count()['events']}/{warm})")
        rec.get("/lat")  # discard the warm-up latencies
        n = _write(log, rate, seconds)
        if not rec.wait_events(warm + n, time.monotonic() + 60):
            raise SystemExit(f"{name}: only {rec.count()['events'] - warm} of {n} lines arrived")
        lat = sorted(rec.get("/lat"))
        cpu = {nm: proc_cpu(p.pid) for nm, p in zip(names, procs, strict=True)}
    finally:
        _stop(procs)
    cpu["receiver"] = rec.cpu() - rc0
    q = statistics.quantiles(lat, n=100)
    return {"name": name + (" (before)" if tree else ""), "n": len(lat), "p50": q[49], "p99": q[98],
            "max": lat[-1], "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--no-syslog-ng", action="store_true")
    ap.add_argument("--before", metavar="TREE",
                    help="also run logpipe's two shapes from this source tree (e.g. `git archive main "
                         "| tar -x -C TREE`), each right after the same shape of this tree")
    ap.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.writer:
        writer_main(a.writer[0], float(a.writer[1]), float(a.writer[2]))
        return
    sng = None if a.no_syslog_ng else ensure_syslog_ng()
    work = Path(tempfile.mkdtemp(prefix="lp-bench-latency-"))
    print(f"{a.rate:.0f} lines/s for {a.seconds:.0f} s per subject; Python {sys.version.split()[0]}; "
          f"{load_note()}")
    rows = []
    try:
        with Receiver(latency=True) as rec:
            before = str(Path(a.before).resolve()) if a.before else None
            runs = [(n, t) for n in ("pipe", "to") for t in (None, before)] \
                if before else [("pipe", None), ("to", None)]
            for name, tree in runs + ([("syslog-ng", None)] if sng else []):
                r = run_subject(name, rec, work, a.rate, a.seconds, sng, tree)
                rows.append(r)
                print(f"  {r['name']:<14} n={r['n']:,} p50 {r['p50']:.3f} s  p99 {r['p99']:.3f} s  "
                      f"max {r['max']:.3f} s  CPU-s {r['cpu']}", flush=True)
        print(f"after: {load_note()}\n")
        print("| subject | events | p50 s | p99 s | max s | CPU-s per process over the run |")
        print("|---|---:|---:|---:|---:|---|")
        for r in rows:
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu"].items())  # type: ignore[attr-defined]
            print(f"| {r['name']} | {r['n']:,} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | {cpu} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
