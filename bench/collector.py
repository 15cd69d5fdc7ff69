"""Collector benchmark: files → NDJSON on stdout, next to ``cat`` of the same files; RSS and
idle CPU with 1,000 tailed files. One command: ``python bench/collector.py``.

Throughput: ``logpipe collect --once FILES > /dev/null`` (fresh state dir each run) against
``cat FILES > /dev/null`` and a minimal Python loop (the "python floor") in the same run,
interleaved, median of ``--reps``: wall time, CPU-seconds (user+sys from ``wait4``) and lines
per CPU-second (the stabler figure on a shared machine; target >= 600,000 for JSON). Three
inputs: ~200-byte JSON lines, the same written by logpipe's own logger in a child process
(the canonical shape: services log with ``from logpipe import logger``), and the same volume
as plain text lines (the normaliser's slow path). Then ``logpipe collect 'DIR/*.log'`` (follow mode) over
1,000 small files: RSS (VmRSS/VmHWM from /proc) once everything is read, and CPU over an idle
window (utime+stime from /proc/<pid>/stat). ``--profile`` adds a cProfile of one in-process
``--once`` run (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from _common import proc_cpu
from _common import proc_rss_kib as proc_mem

LOGPIPE = [sys.executable, "-m", "logpipe"]


def make_json_files(d: Path, files: int, lines: int) -> tuple[int, int]:
    """``files`` files of ``lines`` ~200-byte JSON lines each; returns (lines, bytes)."""
    total = 0
    for f in range(files):
        buf = io.BytesIO()
        for i in range(lines):
            rec = {"time": "2026-11-23T14:01:51.123456Z", "level": "info", "message": "order placed",
                   "service": "api", "feature": "store", "instance_id": str(f), "pid": 4242,
                   "order_id": i, "amount": 9.99, "request_id": f"r-{f}-{i:08d}", "user": "u-1234"}
            buf.write(orjson.dumps(rec) + b"\n")
        data = buf.getvalue()
        (d / f"svc{f}.log").write_bytes(data)
        total += len(data)
    return files * lines, total


def make_plain_files(d: Path, files: int, lines: int) -> tuple[int, int]:
    """The same volume as plain text lines (no JSON): the normaliser's slow path."""
    total = 0
    for f in range(files):
        # each file's lines differ (file index): identical files would be taken for copies
        line = (b"2026-11-23 14:01:51,123 INFO api.store order placed order_id=%d amount=9.99 "
                b"request_id=r-%02d-000000 user=u-1234 path=/v1/orders method=POST status=201 took=12ms")
        data = b"".join(line % (i, f) + b"\n" for i in range(lines))
        (d / f"plain{f}.log").write_bytes(data)
        total += len(data)
    return files * lines, total


def time_cmd(argv: list[str], env: dict[str, str] | None = None,
             cwd: str | None = None) -> tuple[float, float]:
    """(wall s, CPU s = user+sys from ``wait4``) of ``argv`` with stdout to /dev/null; fails
    loudly on a non-zero exit."""
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE, env=env, cwd=cwd)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, ru = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed: {err.decode()[-500:]}")
    return dt, ru.ru_utime + ru.ru_stime


#: Writes ``argv[1]`` lines through logpipe's own logger (the canonical shape: the services
#: log with ``from logpipe import logger``), to stdout.
LOGGER_WRITER = """
import sys
from logpipe import bind, logger
n, inst = int(sys.argv[1]), sys.argv[2]
bind(service="api", instance_id=inst)
for i in range(n):
    logger.info("order placed", order_id=i, amount=9.99, user="u-1234", request_id=f"r-{inst}-{i:08d}",
                feature="store")
"""


def make_logger_files(d: Path, files: int, lines: int) -> tuple[int, int]:
    """``files`` files of ``lines`` lines each, written by logpipe's logger in a child process."""
    total = 0
    for f in range(files):
        p = d / f"logger{f}.log"
        with open(p, "wb") as out:
            subprocess.run([sys.executable, "-c", LOGGER_WRITER, str(lines), str(f)], stdout=out, check=True)
        total += p.stat().st_size
    return files * lines, total


#: The floor of any Python collector: read 1 MiB chunks, split lines, orjson.loads and
#: orjson.dumps each line, write the result — no normalising, no checkpoints, no pipeline.
PY_FLOOR = """
import os, sys, orjson
out = sys.stdout.buffer
for name in sys.argv[1:]:
    with open(name, 'rb') as f:
        rest = b''
        while chunk := f.read(1 << 20):
            lines = (rest + chunk).split(b'\\n')
            rest = lines.pop()
            out.write(b''.join(orjson.dumps(orjson.loads(l)) + b'\\n' if l[:1] == b'{'
                               else orjson.dumps({'message': l.decode()}) + b'\\n' for l in lines))
"""


def throughput(label: str, files: list[Path], n_lines: int, n_bytes: int, reps: int,
               work: Path, baseline: str | None = None) -> dict[str, float]:
    """Interleaved runs of cat, a minimal Python loop and logpipe (and the ``baseline`` tree's
    logpipe); medians of wall and CPU; one row."""
    runs: dict[str, list[tuple[float, float]]] = {"cat": [], "py": [], "lp": [], "start": [],
                                                  "base": []}
    empty = work / "empty.log"
    empty.touch()
    for r in range(reps):
        runs["cat"].append(time_cmd(["cat", *map(str, files)]))
        runs["py"].append(time_cmd([sys.executable, "-c", PY_FLOOR, *map(str, files)]))
        state = work / f"state-{label}-{r}"
        env = dict(os.environ, LOGPIPE_STATE_DIR=str(state))
        runs["lp"].append(time_cmd([*LOGPIPE, "collect", "--once", *map(str, files)], env=env))
        shutil.rmtree(state, ignore_errors=True)
        # start-up and shutdown alone (interpreter, imports, state dir): an empty file
        runs["start"].append(time_cmd([*LOGPIPE, "collect", "--once", str(empty)], env=env))
        shutil.rmtree(state, ignore_errors=True)
        if baseline:
            # the same command from another source tree (its directory first on sys.path)
            runs["base"].append(time_cmd([*LOGPIPE, "collect", "--once", *map(str, files)],
                                         env=env, cwd=baseline))
            shutil.rmtree(state, ignore_errors=True)
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items() if v}
    lp, st = wall["lp"], wall["start"]
    lpc, stc = cpu["lp"], cpu["start"]
    mb = n_bytes / 1e6
    print(f"| {label} | {n_lines:,} | {mb:.0f} | {lp:.2f} | {lpc:.2f} | {n_lines / lp:,.0f} "
          f"| **{n_lines / lpc:,.0f}** | {n_lines / (lpc - stc):,.0f} | {st:.2f} / {stc:.2f} "
          f"| {n_lines / cpu['py']:,.0f} | {lpc / cpu['py']:.2f}x | {cpu['cat']:.3f} |"
          + (f" {n_lines / cpu['base']:,.0f} | {cpu['base'] / lpc:.2f}x |" if "base" in cpu else ""))
    return {"lp": lp, "lp_cpu": lpc, "py_cpu": cpu["py"], "startup_cpu": stc}


TABLE_HEAD = ("| input | lines | MB | logpipe wall s | logpipe CPU-s | logpipe lines/s (wall) | "
              "logpipe lines per CPU-s | lines per CPU-s after start-up | start-up wall / CPU s | "
              "python floor lines per CPU-s | logpipe / floor CPU | cat CPU-s |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


TABLE_HEAD_BASE = (TABLE_HEAD.split("\n")[0] + " baseline lines per CPU-s | baseline / logpipe CPU |\n"
                   + TABLE_HEAD.split("\n")[1] + "---:|---:|")


def many_files(work: Path, n: int, idle_seconds: float) -> None:
    """Follow ``n`` small files: RSS once all are read; CPU while they are idle."""
    d = work / "many"
    d.mkdir()
    for i in range(n):
        (d / f"app{i}.log").write_bytes(b"".join(
            orjson.dumps({"message": f"hello {j}", "file": i}) + b"\n" for j in range(5)))
    env = dict(os.environ, LOGPIPE_STATE_DIR=str(work / "state-many"))
    proc = subprocess.Popen([*LOGPIPE, "collect", str(d / "*.log")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    want = n * 5
    got = 0
    t0 = time.perf_counter()
    while got < want:
        chunk = proc.stdout.read1(1 << 16)
        if not chunk:
            raise SystemExit("collector exited early")
        got += chunk.count(b"\n")
    read_all = time.perf_counter() - t0
    time.sleep(2.0)  # let the first rescans and checkpoint writes settle
    rss, hwm = proc_mem(proc.pid)
    c0, w0 = proc_cpu(proc.pid), time.perf_counter()
    time.sleep(idle_seconds)
    c1, w1 = proc_cpu(proc.pid), time.perf_counter()
    rss2, hwm2 = proc_mem(proc.pid)
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    proc.terminate()
    proc.communicate(timeout=60)
    cpu = (c1 - c0) / (w1 - w0) * 100
    print(f"| {n:,} files tailed | first read of {want:,} lines: {read_all:.2f} s | "
          f"RSS {rss / 1024:.1f} MB after read, {rss2 / 1024:.1f} MB after idle, peak "
          f"{max(hwm, hwm2) / 1024:.1f} MB | idle CPU {cpu:.2f} % of a core over {w1 - w0:.0f} s | "
          f"open fds {fds} |")


def profile(files: list[Path], work: Path) -> None:
    """cProfile one in-process ``collect --once`` run, stdout to /dev/null."""
    from logpipe.collector import CollectOptions
    from logpipe.collector import main as collect_main
    from logpipe.sinks import SinkOptions

    state = work / "state-prof"
    os.environ["LOGPIPE_STATE_DIR"] = str(state)
    opts = CollectOptions(paths=[str(f) for f in files], once=True, state_dir=str(state),
                          sink_options=SinkOptions(state_dir=str(state)))
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    prof = cProfile.Profile()
    try:
        prof.enable()
        collect_main(opts)
        prof.disable()
    finally:
        os.dup2(saved, 1)
        os.close(null)
        os.close(saved)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--lines", type=int, default=100_000, help="lines per file")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--many", type=int, default=1000, help="files for the RSS / idle CPU run")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle CPU window")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--baseline", metavar="TREE",
                    help="also run the logpipe of this source tree (e.g. `git archive main` "
                         "unpacked), interleaved: its lines per CPU-s and its CPU / this tree's")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lp-bench-collector-"))
    try:
        jd, pd, ld = work / "json", work / "plain", work / "logger"
        for d in (jd, pd, ld):
            d.mkdir()
        jl, jb = make_json_files(jd, args.files, args.lines)
        pl, pb = make_plain_files(pd, args.files, args.lines)
        ll, lb = make_logger_files(ld, args.files, args.lines)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; median of {args.reps} interleaved runs; CPU = user+sys "
              f"(wait4)\n")
        if args.baseline:
            print(TABLE_HEAD_BASE)
        else:
            print(TABLE_HEAD)
        base = args.baseline
        res = throughput("JSON ~200 B/line", sorted(jd.iterdir()), jl, jb, args.reps, work, base)
        throughput("JSON from logpipe's logger", sorted(ld.iterdir()), ll, lb, args.reps, work, base)
        throughput("plain text ~170 B/line", sorted(pd.iterdir()), pl, pb, args.reps, work, base)
        print(f"\nJSON lines per CPU-second: {jl / res['lp_cpu']:,.0f} (target >= 600,000); "
              f"load average after: {os.getloadavg()[0]:.2f}\n")
        if args.many:
            many_files(work, args.many, args.idle)
        if args.profile:
            print()
            profile(sorted(jd.iterdir()), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
