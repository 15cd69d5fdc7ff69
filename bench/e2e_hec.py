"""End to end, files → normalise → HEC: logpipe's two command shapes next to syslog-ng, into the
same counting receiver. One command: ``python bench/e2e_hec.py``.

Input: ``--lines`` (300,000) realistic JSON lines (~240 B: time, level, message, service,
instance_id, host, pid and a few fields, logpipe's logger key order) in ``--files`` (4) files.

Subjects, each a fresh run from process start until the receiver has counted every event (and,
for logpipe, every process has exited):

- ``pipe``: ``logpipe collect --once FILES | logpipe sink splunk`` (gzip on, spool on: the
  default; fresh state dir).
- ``to``: ``logpipe collect --once FILES --to splunk`` (the same sink in the collector process).
- ``pipe-nogz`` / ``to-nogz`` (reference, ``--no-nogzip`` drops them): the same with gzip off.
  No option or env turns the sink's gzip off, so these run the CLI through a ``python -c``
  shim that raises ``logpipe.sinks.splunk._hec.GZIP_MIN_BYTES`` (bench only, no logpipe change).
- ``syslog-ng``: 3.38 (Debian ``syslog-ng-core`` + ``syslog-ng-mod-http``, installed by this
  script with apt if missing; the system service is never started) in the foreground with its
  own config/persist/pid/control files in a temp dir: ``wildcard-file()`` → ``json-parser()``
  → ``date-parser()`` (envelope time from the record) → ``http()`` with ``batch-lines(5000)``,
  ``batch-bytes(1000000)``, ``batch-timeout(200)``, ``workers(4)``, flow control, a ``body()``
  template building the HEC envelope (time, host, source, sourcetype, the line as ``event``,
  indexed fields service/instance_id/level) and ``Authorization: Splunk …``. 3.38's ``http()``
  cannot gzip: it always sends uncompressed; and it keeps nothing on disk (no disk-buffer),
  while logpipe fsyncs every event into its spool before sending it.

Receiver: ``bench/_hec_receiver.py`` (asyncio, gunzips and counts envelopes); its own CPU is
reported per run to show it is not the bottleneck. CPU-seconds per process: ``wait4`` rusage
for logpipe's processes, /proc/<pid>/stat (all threads) for syslog-ng just before it is
stopped and for the receiver (delta over the run). Rounds are interleaved, the order rotated
each round; medians, and the median of per-round ratios to syslog-ng.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import LOGPIPE, NO_GZIP, TOKEN, Receiver, load_note, make_service_files, proc_cpu, splunk_env

SNG_CONF = """@version: 3.38
options {{ threaded(yes); stats-freq(0); use-dns(no); use-fqdn(no); dns-cache(no); keep-hostname(yes);
  chain-hostnames(no); log-msg-size(65536); frac-digits(6); }};
source s_files {{ wildcard-file(base-dir("{dir}") filename-pattern("*.log") flags(no-parse)
  max-files({max_files}) log-iw-size({iw_size}) log-fetch-limit(1000) follow-freq(1)); }};
parser p_json {{ json-parser(prefix(".json.")); }};
parser p_time {{ date-parser(format("%Y-%m-%dT%H:%M:%S.%f%z") template("${{.json.time}}")); }};
destination d_hec {{ http(url("http://127.0.0.1:{port}/services/collector/event") method("POST")
  headers("Authorization: Splunk {token}", "Content-Type: application/json")
  batch-lines({batch_lines}) batch-bytes(1000000) batch-timeout({batch_timeout}) workers({workers})
  log-fifo-size(100000)
  body('{{"time":${{S_UNIXTIME}},"host":"${{.json.host}}","source":"${{FILE_NAME}}","sourcetype":"_json",\
"event":${{MSG}},"fields":{{"service":"${{.json.service}}","instance_id":"${{.json.instance_id}}",\
"level":"${{.json.level}}"}}}}')); }};
log {{ source(s_files); parser(p_json); parser(p_time); destination(d_hec); flags(flow-control); }};
"""


def ensure_syslog_ng() -> str | None:
    """Path of ``syslog-ng`` with the http module, installing it with apt if missing (the
    system service is not started: policy-rc.d says no); None, with a printed reason, if not."""
    exe = shutil.which("syslog-ng")
    mod = Path("/usr/lib/syslog-ng/3.38/libhttp.so")
    if exe and mod.exists():
        return exe
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("SKIP syslog-ng: not installed and apt-get unavailable (not root)")
        return None
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():  # keep the package's postinst from starting the system service
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "syslog-ng-core", "syslog-ng-mod-http"],
                           env=env, check=False, capture_output=True)
    finally:
        if made_policy:
            policy.unlink()
    exe = shutil.which("syslog-ng")
    if r.returncode != 0 or not exe:
        print(f"SKIP syslog-ng: apt-get install failed: {r.stderr.decode(errors='replace')[-300:]}")
        return None
    return exe


@dataclass
class Run:
    """One run; ``events < n`` marks an incomplete one (kept out of the medians, reported)."""

    wall: float
    cpu: dict[str, float]  # process name -> CPU-seconds
    events: int
    requests: int
    wire: int
    raw: int


@dataclass
class Subject:
    name: str
    runs: list[Run] = field(default_factory=list)


class Watchdog(threading.Thread):
    """While the senders run: if the receiver's count stops moving for ``STALL_S`` after the
    first events and before all arrived, dump the senders' Python stacks (``py-spy dump``, if
    installed) and the receiver's state once, to ``out``. ``STALL_S`` stays under the sink's
    drain timeout (5 s), or the stalled sink has exited before its stack is taken."""

    STALL_S = 3.0

    def __init__(self, rec: Receiver, pids: list[int], n: int, out: Path) -> None:
        super().__init__(daemon=True)
        self.rec, self.pids, self.n, self.out = rec, pids, n, out
        self.done = threading.Event()
        self.fired = False

    def run(self) -> None:
        last, since = -1, time.monotonic()
        spy = Path(sys.executable).parent / "py-spy"
        while not self.done.wait(0.5):
            c = self.rec.count()
            if c["events"] != last:
                last, since = c["events"], time.monotonic()
                continue
            if 0 < c["events"] < self.n and time.monotonic() - since > self.STALL_S and not self.fired:
                self.fired = True
                with open(self.out, "w") as f:
                    f.write(f"stalled at {c} for {self.STALL_S} s\n")
                    for pid in self.pids:
                        if spy.exists():
                            r = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                                               text=True, check=False)
                            f.write(f"--- py-spy dump {pid}\n{r.stdout}{r.stderr}\n")


def _wait_all(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    cpu = {}
    for name, p in procs.items():
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu[name] = ru.ru_utime + ru.ru_stime
        if p.returncode != 0:
            raise SystemExit(f"{name} exited {p.returncode} (stderr above)")
    return cpu


def run_logpipe(shape: str, gzip: bool, files: list[Path], rec: Receiver, state: Path, n: int,
                timeout: float, stall_dump: Path, tree: str | None = None) -> Run:
    """One ``pipe`` or ``to`` run; state dir fresh; ``tree``: logpipe from that source tree."""
    shutil.rmtree(state, ignore_errors=True)
    env = splunk_env(rec.base, state)
    if tree is not None:  # `-m` puts the working directory first on sys.path: run in the tree
        env["PYTHONPATH"] = tree
    cli = LOGPIPE if gzip else NO_GZIP
    fargs = [str(f) for f in files]
    rec.reset()
    rc0 = rec.cpu()
    err = open(state.parent / "stderr.txt", "wb")  # noqa: SIM115
    t0 = time.perf_counter()
    if shape == "pipe":
        col = subprocess.Popen([*cli, "collect", "--once", *fargs], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=env, cwd=tree)
        sink = subprocess.Popen([*cli, "sink", "splunk"], stdin=col.stdout, stdout=subprocess.DEVNULL,
                                stderr=err, env=env, cwd=tree)
        assert col.stdout is not None
        col.stdout.close()
        procs = {"collect": col, "sink splunk": sink}
    else:
        col = subprocess.Popen([*cli, "collect", "--once", *fargs, "--to", "splunk"],
                               stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tree)
        procs = {"collect --to splunk": col}
    dog = Watchdog(rec, [p.pid for p in procs.values()], n, stall_dump)
    dog.start()
    cpu = _wait_all(procs)
    # every sender exited 0: wait for the rest, unless the count stops moving (the sink gave up
    # draining and left events in its spool: reported, not waited for)
    ok = rec.wait_events(n, time.monotonic() + min(timeout, 10.0))
    wall = time.perf_counter() - t0
    dog.done.set()
    dog.join()
    err.close()
    if not ok:
        print(f"  INCOMPLETE {shape}{'' if gzip else '-nogz'}: {rec.count()['events']:,} of {n:,} events "
              f"arrived ({wall:.1f} s); stack dump: {stall_dump if dog.fired else 'none'}; stderr:\n"
              + (state.parent / "stderr.txt").read_text()[-2000:], flush=True)
    cpu["receiver"] = rec.cpu() - rc0
    c = rec.count()
    shutil.rmtree(state, ignore_errors=True)
    return Run(wall, cpu, c["events"], c["requests"], c["wire_bytes"], c["raw_bytes"])


def run_syslog_ng(exe: str, data_dir: Path, rec: Receiver, work: Path, n: int, timeout: float,
                  batch_lines: int, workers: int) -> Run:
    """One syslog-ng run: fresh persist file, foreground, stopped once every event arrived."""
    d = work / "sng"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    conf = d / "syslog-ng.conf"
    # wildcard-file() splits log-iw-size() among max-files(); with flow control each file's
    # window must hold several full batches, or batches only leave on batch-timeout()
    max_files = 8
    conf.write_text(SNG_CONF.format(dir=data_dir, port=rec.port, token=TOKEN, batch_lines=batch_lines,
                                    workers=workers, max_files=max_files,
                                    iw_size=max_files * 2 * batch_lines * workers, batch_timeout=200))
    rec.reset()
    rc0 = rec.cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen([exe, "-F", "-f", str(conf), "-R", str(d / "persist"), "-p", str(d / "pid"),
                          "-c", str(d / "ctl")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ok = rec.wait_events(n, time.monotonic() + timeout)
        wall = time.perf_counter() - t0
        if p.poll() is not None:
            raise SystemExit(f"syslog-ng exited {p.returncode}: {p.stderr.read().decode()[-1500:]}")  # type: ignore[union-attr]
        cpu = {"syslog-ng": proc_cpu(p.pid)}
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if not ok:
        raise SystemExit(f"syslog-ng: only {rec.count()['events']} of {n} events arrived")
    cpu["receiver"] = rec.cpu() - rc0
    c = rec.count()
    return Run(wall, cpu, c["events"], c["requests"], c["wire_bytes"], c["raw_bytes"])


def _senders_cpu(r: Run) -> float:
    return sum(v for k, v in r.cpu.items() if k != "receiver")


def report(subjects: list[Subject], n: int, baseline: str | None) -> None:
    print("\n| subject | wall s (median) | events/s | CPU-s per process (median) | CPU-s total | "
          "events received | requests | MB sent (raw) | ratio to syslog-ng, wall (per-round median) |"
          " ratio to syslog-ng, CPU-s |")
    print("|---|---:|---:|---|---:|---:|---:|---|---:|---:|")
    base = next((s for s in subjects if s.name == baseline), None)
    for s in subjects:
        bad = [i + 1 for i, r in enumerate(s.runs) if r.events < n]
        if bad:
            print(f"| {s.name}: INCOMPLETE in round(s) {bad} (left out below) | | | | | | | | | |")
        runs = [r for r in s.runs if r.events >= n]
        if not runs:
            continue
        wall = statistics.median(r.wall for r in runs)
        names = list(runs[0].cpu)
        cpu = {k: statistics.median(r.cpu[k] for r in runs) for k in names}
        tot = statistics.median(_senders_cpu(r) for r in runs)
        per = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        ev = min(r.events for r in runs)
        reqs = statistics.median(r.requests for r in runs)
        wire = statistics.median(r.wire for r in runs) / 1e6
        mb = f"{wire:.1f} ({statistics.median(r.raw for r in runs) / 1e6:.1f})"
        ratio = cratio = "—"
        if base is not None and s is not base:
            pairs = [(x, y) for x, y in zip(s.runs, base.runs, strict=True)
                     if x.events >= n and y.events >= n]
            rs = [x.wall / y.wall for x, y in pairs]
            cs = [_senders_cpu(x) / _senders_cpu(y) for x, y in pairs]
            if pairs:
                ratio = f"**{statistics.median(rs):.2f}x** ({', '.join(f'{x:.2f}' for x in rs)})"
                cratio = f"{statistics.median(cs):.2f}x"
        print(f"| {s.name} | {wall:.2f} | {n / wall:,.0f} | {per} | {tot:.2f} | {ev:,} | {reqs:.0f} | "
              f"{mb} | {ratio} | {cratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--no-nogzip", action="store_true", help="skip the gzip-off reference rows")
    ap.add_argument("--no-syslog-ng", action="store_true")
    ap.add_argument("--before", metavar="TREE",
                    help="also run `pipe` and `to` from this source tree (e.g. `git archive main | "
                         "tar -x -C TREE`) as `pipe@before` / `to@before`, in the same rounds")
    ap.add_argument("--only", default="", help="comma-separated subjects to run (default: all)")
    ap.add_argument("--sng-batch-lines", type=int, default=5000)
    ap.add_argument("--sng-workers", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--stall-dir", default=tempfile.gettempdir(),
                    help="where a stalled run's stack dump goes")
    a = ap.parse_args()

    exe = None if a.no_syslog_ng else ensure_syslog_ng()
    work = Path(tempfile.mkdtemp(prefix="lp-bench-e2e-"))
    data = work / "data"
    data.mkdir()
    files, size = make_service_files(data, a.files, a.lines)
    n = len(files) * (a.lines // len(files))
    names = ["syslog-ng"] if exe else []
    names += ["pipe", "to"] + (["pipe@before", "to@before"] if a.before else []) \
        + ([] if a.no_nogzip else ["pipe-nogz", "to-nogz"])
    if a.only:
        names = [x for x in names if x in a.only.split(",")]
    subjects = [Subject(x) for x in names]
    print(f"input: {n:,} lines, {size / 1e6:.1f} MB ({size / n:.0f} B/line) in {len(files)} files; "
          f"Python {sys.version.split()[0]}; {load_note()}")
    try:
        with Receiver() as rec:
            for rnd in range(a.rounds):
                k = rnd % len(subjects)
                for s in subjects[k:] + subjects[:k]:  # rotate the order each round
                    if s.name == "syslog-ng":
                        assert exe is not None
                        r = run_syslog_ng(exe, data, rec, work, n, a.timeout, a.sng_batch_lines,
                                          a.sng_workers)
                    else:
                        name, _, before = s.name.partition("@")
                        shape, _, nogz = name.partition("-")
                        tree = str(Path(a.before).resolve()) if before else None
                        dump = Path(a.stall_dir) / f"stall-{s.name}-{rnd + 1}.txt"
                        r = run_logpipe(shape, not nogz, files, rec, work / "state", n, a.timeout, dump, tree)
                    s.runs.append(r)
                    cpu = ", ".join(f"{k2} {v:.2f}" for k2, v in r.cpu.items())
                    print(f"  round {rnd + 1} {s.name:<10} {r.wall:6.2f} s  events {r.events:,}  "
                          f"requests {r.requests}  CPU-s: {cpu}", flush=True)
            print(f"after: {load_note()}")
        report(subjects, n, "syslog-ng" if exe else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
