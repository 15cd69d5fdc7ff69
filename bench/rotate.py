"""Rotate + compress ~100 MB of varied JSON logs with `logpipe rotate`, next to `gzip -6` on the same file.

    python bench/rotate.py [--mb 100] [--rounds 3] [--tune]

Each round runs both, interleaved (gzip first on odd rounds, logpipe first on even ones), on
the same input file (page-cached for both); medians and ratios are printed. `logpipe rotate` is
timed as a real command (`python -m logpipe rotate FILE`): rename, streaming zstd to a temp
name, fsync, decompress-verify, rename, delete — the whole job, interpreter start included.
`--tune` also times zstd levels/windows/threads in-process (compress only) to pick defaults.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

SERVICES = ["api", "queue-watcher", "billing", "auth", "search", "mailer", "cron-cleanup"]
FEATURES = ["store", "delete", "login", "refresh", "export", "index", None]
PATHS = ["/v1/orders", "/v1/orders/{id}", "/v1/users/{id}", "/v1/search", "/healthz", "/v2/cart"]
MESSAGES = [
    "request handled", "order placed", "cache miss", "retrying upstream call", "user logged in",
    "payment declined", "job finished", "slow query", "token refreshed", "queue drained",
]
LEVELS = ["info"] * 80 + ["debug"] * 10 + ["warning"] * 7 + ["error"] * 3
RSS: list[float] = []  # peak RSS (MiB) of each `logpipe rotate` run
TRACE = ('Traceback (most recent call last):\n  File "/srv/app/handlers.py", line {n}, in handle\n'
         '    return await self.backend.fetch(key)\nTimeoutError: upstream timed out after {ms} ms')


def generate(path: str, megabytes: int, seed: int = 7) -> int:
    """Write ``megabytes`` of varied NDJSON log records to ``path``; returns the line count."""
    rnd = random.Random(seed)
    target = megabytes << 20
    t = 1_795_000_000.0
    n = 0
    size = 0
    with open(path, "wb") as fh:
        buf: list[bytes] = []
        while size < target:
            t += rnd.expovariate(2000.0)
            level = rnd.choice(LEVELS)
            rec: dict[str, object] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z",
                "level": level,
                "message": rnd.choice(MESSAGES),
                "service": rnd.choice(SERVICES),
                "instance_id": str(rnd.randrange(4)),
                "host": f"web-{rnd.randrange(12):02d}",
                "pid": 1000 + rnd.randrange(9000),
                "request_id": f"{rnd.getrandbits(64):016x}",
                "method": rnd.choice(["GET", "GET", "GET", "POST", "DELETE"]),
                "path": rnd.choice(PATHS).replace("{id}", str(rnd.randrange(10**6))),
                "status": rnd.choice([200] * 20 + [201, 204, 301, 400, 404, 500]),
                "duration_ms": round(rnd.lognormvariate(3, 1), 3),
                "user_id": rnd.randrange(50_000) if rnd.random() < 0.7 else None,
            }
            feature = rnd.choice(FEATURES)
            if feature:
                rec["feature"] = feature
            if rnd.random() < 0.3:
                rec["amount"] = round(rnd.uniform(1, 500), 2)
                rec["currency"] = rnd.choice(["EUR", "USD", "GBP"])
            if level == "error" and rnd.random() < 0.5:
                rec["exception"] = TRACE.format(n=rnd.randrange(20, 900), ms=rnd.randrange(1000, 30000))
            line = orjson.dumps(rec) + b"\n"
            buf.append(line)
            size += len(line)
            n += 1
            if len(buf) >= 4096:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return n


def time_gzip(src: str, out: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(src, "rb") as i, open(out, "wb") as o:
        subprocess.run(["gzip", "-6", "-c"], stdin=i, stdout=o, check=True)
    return time.perf_counter() - t0, os.path.getsize(out)


def time_logpipe(src: str, workdir: str) -> tuple[float, int]:
    d = os.path.join(workdir, "lp")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    log = os.path.join(d, "app.log")
    os.link(src, log)  # same bytes, same page cache, no copy; rotate renames this name away
    t0 = time.perf_counter()
    # a private state dir: stale collector checkpoints elsewhere could match a reused inode
    env = {**os.environ, "LOGPIPE_STATE_DIR": os.path.join(workdir, "state")}
    proc = subprocess.Popen([sys.executable, "-m", "logpipe", "rotate", log], stdout=subprocess.PIPE,
                            env=env)
    assert proc.stdout is not None
    report = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.returncode
    RSS.append(usage.ru_maxrss / 1024)
    zst = [f for f in os.listdir(d) if f.endswith(".zst")]
    assert len(zst) == 1, report
    return elapsed, os.path.getsize(os.path.join(d, zst[0]))


def tune(src: str) -> None:
    import zstandard

    size = os.path.getsize(src)
    print("\nin-process zstd (compress only, median of 3):")
    print(f"{'level':>5} {'wlog':>4} {'thr':>3} {'seconds':>8} {'ratio':>7}")
    for level in (1, 2, 3, 4, 5, 6):
        for wlog in (None, 25, 27):
            for threads in (0, 2):
                if wlog is not None and level not in (2, 3, 4):
                    continue
                times = []
                out_size = 0
                for _ in range(3):
                    params = zstandard.ZstdCompressionParameters.from_level(
                        level, source_size=size, threads=threads, write_checksum=True,
                        **({"window_log": wlog} if wlog else {}))
                    cctx = zstandard.ZstdCompressor(compression_params=params)
                    t0 = time.perf_counter()
                    with open(src, "rb") as i, open(os.devnull, "wb") as o:
                        _, out_size = cctx.copy_stream(i, o, size=size, read_size=1 << 20,
                                                       write_size=1 << 20)
                    times.append(time.perf_counter() - t0)
                print(f"{level:>5} {wlog or '-':>4} {threads:>3} {statistics.median(times):8.3f} "
                      f"{out_size / size:7.2%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tune", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="logpipe-bench-rotate-")
    try:
        src = os.path.join(work, "input.ndjson")
        t0 = time.perf_counter()
        lines = generate(src, args.mb)
        size = os.path.getsize(src)
        print(f"input: {size / 2**20:.1f} MiB, {lines} varied JSON lines "
              f"(generated in {time.perf_counter() - t0:.1f}s)")
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        gz_t, lp_t = [], []
        gz_size = lp_size = 0
        for r in range(args.rounds):
            order = ("gzip", "logpipe") if r % 2 == 0 else ("logpipe", "gzip")
            for which in order:
                if which == "gzip":
                    t, gz_size = time_gzip(src, os.path.join(work, "out.gz"))
                    gz_t.append(t)
                else:
                    t, lp_size = time_logpipe(src, work)
                    lp_t.append(t)
            print(f"round {r + 1}: gzip -6 {gz_t[-1]:.2f}s  logpipe rotate {lp_t[-1]:.2f}s")
        g, lp = statistics.median(gz_t), statistics.median(lp_t)
        print(f"\n{'':24}{'median s':>9} {'MB/s':>7} {'output':>10} {'ratio':>7}")
        print(f"{'gzip -6':24}{g:9.2f} {size / 2**20 / g:7.1f} {gz_size / 2**20:9.2f}M {gz_size / size:7.2%}")
        print(f"{'logpipe rotate (zstd)':24}{lp:9.2f} {size / 2**20 / lp:7.1f} {lp_size / 2**20:9.2f}M "
              f"{lp_size / size:7.2%}")
        print(f"logpipe rotate peak RSS: {max(RSS):.0f} MiB (streaming; bounded by the zstd window)")
        print(f"\ntime ratio logpipe/gzip = {lp / g:.3f}x (target <= 0.33x); "
              f"size ratio = {lp_size / gz_size:.3f}x (target <= 1.0x)")
        if args.tune:
            tune(src)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
