"""`logpipe sink file` throughput (200-byte records, with rotation and zstd), next to `cat > file`.

    python bench/sink_file.py [--records 1000000] [--rounds 3] [--max-size 16M]

Each round pipes the same NDJSON input file into `logpipe sink file --dir D --max-size 16M
--retain 1000` (3 services, so 3 logs rotating) and into `cat > file`, interleaved; the
logpipe time runs until the process exits, i.e. every rotated file has been compressed and
verified. Medians, records/s and the ratio are printed, and the output is checked: the
decompressed history of every log adds up to the input's records.

A second measurement shows the sink does not stall the event loop: the longest delay of a
10 ms asyncio timer while `FileSink.write` appends the same batches in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVICES = ["api", "queue-watcher", "billing"]


def generate(path: str, n: int) -> int:
    """``n`` records of ~200 bytes (varied values), as the stdin source passes them through."""
    size = 0
    with open(path, "wb") as fh:
        buf = []
        for i in range(n):
            line = orjson.dumps({
                "time": f"2026-11-23T14:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}123Z",
                "level": "info" if i % 10 else "warning",
                "message": "request handled" if i % 3 else "order placed",
                "service": SERVICES[i % 3], "host": "web-01", "source": "bench",
                "request_id": f"{(i * 2654435761) % 2**64:016x}",
                "status": 200 if i % 17 else 500, "duration_ms": (i * 37) % 1000 / 10, "seq": i,
            }) + b"\n"
            buf.append(line)
            size += len(line)
            if len(buf) == 8192:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return size


def run_cat(src: str, out: str) -> float:
    t0 = time.perf_counter()
    with open(src, "rb") as i, open(out, "wb") as o:
        subprocess.run(["cat"], stdin=i, stdout=o, check=True)
    return time.perf_counter() - t0


def run_sink(src: str, d: str, max_size: str) -> float:
    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    with open(src, "rb") as i:
        subprocess.run([sys.executable, "-m", "logpipe", "sink", "file", "--dir", d, "--max-size",
                        max_size, "--retain", "1000"], stdin=i, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def run_ndjson(src: str) -> float:
    """The same pipeline (stdin source, normaliser, fan-out) into the ndjson sink → /dev/null:
    what logpipe costs before the file sink does anything."""
    t0 = time.perf_counter()
    with open(src, "rb") as i, open(os.devnull, "wb") as o:
        subprocess.run([sys.executable, "-m", "logpipe", "sink", "ndjson"], stdin=i, stdout=o,
                       stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def check(src: str, d: str) -> tuple[int, int]:
    """Every input line is in the history of its service's log, in order; returns
    (rotated files, compressed bytes)."""
    from pathlib import Path

    from logpipe import rotate
    from tests._rotate_helpers import history

    want: dict[str, list[bytes]] = {s: [] for s in SERVICES}
    with open(src, "rb") as fh:
        for line in fh:
            want[SERVICES[orjson.loads(line)["seq"] % 3]].append(line)
    n_rotated = comp = 0
    for s in SERVICES:
        log = Path(d) / f"{s}.log"
        assert history(log) == b"".join(want[s]), f"{s}: output differs from input"
        files = rotate.rotated_files(str(log))
        assert all(f.compressed for f in files)
        n_rotated += len(files)
        comp += sum(os.path.getsize(f.path) for f in files)
    return n_rotated, comp


def loop_stall(src: str, d: str, max_size: int) -> tuple[float, float]:
    """(max, p99) delay in ms of a 10 ms timer while FileSink writes the input in batches."""
    from logpipe.pipeline import Batch
    from logpipe.sinks.file import FileSink

    with open(src, "rb") as fh:
        lines = fh.read().splitlines()
    recs = [{"service": SERVICES[i % 3]} for i in range(len(lines))]
    shutil.rmtree(d, ignore_errors=True)

    async def go() -> list[float]:
        sink = FileSink(d, max_size=max_size, retain=1000)
        await sink.start()
        lags: list[float] = []
        done = False

        async def ticker() -> None:
            while not done:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append((time.perf_counter() - t - 0.01) * 1000)

        task = asyncio.create_task(ticker())
        for i in range(0, len(lines), 2048):
            await sink.write(Batch(recs[i:i + 2048], lines[i:i + 2048]))
        await sink.close()
        done = True
        await task
        return lags

    lags = asyncio.run(go())
    lags.sort()
    return lags[-1], lags[int(len(lags) * 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-size", default="16M")
    args = ap.parse_args()
    from logpipe._cli_options import parse_size

    work = tempfile.mkdtemp(prefix="logpipe-bench-sink-")
    try:
        src = os.path.join(work, "input.ndjson")
        size = generate(src, args.records)
        print(f"input: {args.records} records, {size / 2**20:.1f} MiB ({size / args.records:.0f} B/record); "
              f"logpipe sink file --max-size {args.max_size} (3 logs)")
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)
        cat_t, lp_t, nd_t = [], [], []
        for r in range(args.rounds):
            order = ("cat", "logpipe", "ndjson") if r % 2 == 0 else ("ndjson", "logpipe", "cat")
            for which in order:
                if which == "cat":
                    cat_t.append(run_cat(src, os.path.join(work, "cat.out")))
                elif which == "ndjson":
                    nd_t.append(run_ndjson(src))
                else:
                    lp_t.append(run_sink(src, os.path.join(work, "D"), args.max_size))
            print(f"round {r + 1}: cat > file {cat_t[-1]:.2f}s  logpipe sink file {lp_t[-1]:.2f}s  "
                  f"logpipe sink ndjson >/dev/null {nd_t[-1]:.2f}s")
        n_rotated, comp = check(src, os.path.join(work, "D"))
        lp = statistics.median(lp_t)
        c = statistics.median(cat_t)
        print(f"\n{'':22}{'median s':>9} {'records/s':>11} {'MiB/s':>7}")
        print(f"{'cat > file':22}{c:9.2f} {args.records / c:11,.0f} {size / 2**20 / c:7.1f}")
        print(f"{'logpipe sink file':22}{lp:9.2f} {args.records / lp:11,.0f} {size / 2**20 / lp:7.1f}")
        nd = statistics.median(nd_t)
        print(f"{'logpipe sink ndjson':22}{nd:9.2f} {args.records / nd:11,.0f} {size / 2**20 / nd:7.1f}"
              "   (same pipeline, no file sink: the stdin source's share)")
        print(f"\nlogpipe/cat time ratio = {lp / c:.2f}x; logpipe = {args.records / lp:,.0f} records/s "
              f"(target >= 200,000); {n_rotated} rotated files, all compressed "
              f"({comp / 2**20:.1f} MiB), output verified against the input")
        worst, p99 = loop_stall(src, os.path.join(work, "E"), parse_size(args.max_size))
        print(f"event loop while FileSink writes 2048-record batches: timer delay max {worst:.1f} ms, "
              f"p99 {p99:.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
