"""`logpipe logs --grep` over rotated .zst history, side by side with `zstdcat | grep` on the same files.

    python bench/logs.py [--mb 1024] [--files 16] [--rounds 3]

Writes ``--mb`` MB of varied NDJSON records (bench/rotate.py's generator) as ``--files`` rotated
files ``api.log.<stamp>.zst`` (zstd -1 --long=25, as logpipe compresses), then times, per round
and interleaved:

- a needle found nowhere (pure scan speed): ``logpipe logs --grep 'disk full'`` vs
  ``zstdcat * | grep -c 'disk full'``;
- one request id (1 match): ``logpipe logs request_id=ID`` vs ``zstdcat * | grep -c ID``;
- a common message (~10 % of records, output counted by ``wc -l``): ``--grep 'slow query'``
  vs ``zstdcat * | grep 'slow query' | wc -l``.

Every command runs as a real shell pipeline (interpreter start-up included); the page cache is
warm for both. Medians and the ratio baseline/logpipe (1.0 = as fast as zstdcat | grep).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from rotate import generate

LOGPIPE = f"{sys.executable} -m logpipe"


def build(directory: str, megabytes: int, files: int) -> tuple[int, str]:
    """The rotated history; returns (records, a request_id that occurs once)."""
    src = os.path.join(directory, "all.ndjson")
    n = generate(src, megabytes)
    with open(src, "rb") as fh:
        data = fh.read()
    rid = data[len(data) // 2:].split(b'"request_id":"', 1)[1][:16].decode()
    lines = data.splitlines(keepends=True)
    per = len(lines) // files + 1
    for k in range(files):
        part = os.path.join(directory, f"api.log.2026110{k // 10}T{k % 10:02d}0000")
        with open(part, "wb") as fh:
            fh.write(b"".join(lines[k * per:(k + 1) * per]))
        subprocess.run(["zstd", "-q", "-1", "--long=25", "--rm", part], check=True)
    os.remove(src)
    return n, rid


def timed(cmd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-logs-")
    try:
        t0 = time.perf_counter()
        n, rid = build(d, args.mb, args.files)
        zst = sum(os.path.getsize(p) for p in glob.glob(f"{d}/*.zst"))
        print(f"history: {n} records, {args.mb} MB NDJSON in {args.files} .zst files "
              f"({zst / 2**20:.0f} MB compressed), built in {time.perf_counter() - t0:.0f}s")
        files = f"{d}/*.zst"
        cases = [
            ("grep, no match", f"{LOGPIPE} logs --dir {d} --grep 'disk full' | wc -l",
             f"zstdcat {files} | grep -c 'disk full'"),
            ("request_id=ID, 1 match", f"{LOGPIPE} logs --dir {d} request_id={rid} | wc -l",
             f"zstdcat {files} | grep -c {rid}"),
            ("grep, ~10% match", f"{LOGPIPE} logs --dir {d} --grep 'slow query' | wc -l",
             f"zstdcat {files} | grep 'slow query' | wc -l"),
        ]
        for name, ours, base in cases:
            mine: list[float] = []
            theirs: list[float] = []
            for r in range(args.rounds):
                order = [(ours, mine), (base, theirs)]
                for cmd, acc in (order if r % 2 == 0 else order[::-1]):
                    secs, out = timed(cmd)
                    acc.append(secs)
                    print(f"  {name:<24} {secs:6.2f}s  -> {out:>8}  {cmd}")
            m, b = statistics.median(mine), statistics.median(theirs)
            print(f"{name:<24} logpipe logs {m:6.2f}s ({args.mb / m:5.0f} MB/s)   "
                  f"zstdcat|grep {b:6.2f}s ({args.mb / b:5.0f} MB/s)   ratio {b / m:.2f}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
