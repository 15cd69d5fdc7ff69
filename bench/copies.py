"""CPU cost of each copy a line goes through between the tailed file and the HEC body, each step
alone on the e2e workload's volume. One command: ``python bench/copies.py``.

The collector's real NDJSON output for bench/e2e_hec.py's 300,000 lines is turned into HEC
envelopes by logpipe's own ``EnvelopeEncoder`` once; then each step the issue lists is timed by
itself with ``time.process_time`` (CPU of this process, so the machine's load hardly moves it;
best of ``--reps``), over the whole volume in ~1 MB groups as the sink handles it. A step's
cost is what removing it would save, an upper bound where the replacement is not free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
from _common import LOGPIPE, clean_env, load_note, make_service_files


def best(fn: Callable[[], object], reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", help="time only the steps whose name contains this text")
    a = ap.parse_args()
    from logpipe.record import LineNormaliser
    from logpipe.sinks.splunk._hec import EnvelopeEncoder
    from logpipe.sinks.splunk.requests import gzip_parts
    from logpipe.spool._records import header as spool_header

    work = Path(tempfile.mkdtemp(prefix="lp-bench-copies-"))
    try:
        files, _ = make_service_files(work, 4, a.lines)
        env = dict(clean_env(), LOGPIPE_STATE_DIR=str(work / "state"))
        out = subprocess.run([*LOGPIPE, "collect", "--once", *map(str, files)], env=env, check=True,
                             capture_output=True).stdout
        lines = out.split(b"\n")[:-1]
        n = len(lines)
        raw = [f.read_bytes() for f in files]
        records = [orjson.loads(x) for x in lines]
        enc = EnvelopeEncoder(sourcetype="_json")
        envs = enc.encode_many(records, lines)
        groups: list[list[bytes]] = []
        cur: list[bytes] = []
        size = 0
        for e in envs:
            cur.append(e)
            size += len(e) + 1
            if size >= 1_000_000:
                groups.append(cur)
                cur, size = [], 0
        if cur:
            groups.append(cur)
        blobs = [b"\x01" + struct.pack(">I", 0) + b"\n".join(g) for g in groups]
        frames = [struct.pack("<I", len(b)) + struct.pack("<I", zlib.crc32(b)) + b for b in blobs]
        bodies = [b"\n".join(g) for g in groups]
        spool = work / "spool.bin"
        norm = LineNormaliser({"source": str(files[0]), "service": "api", "host": "web-1"})
        # `logpipe sink splunk`'s stdin normaliser, over the collector's output in 2,048-line batches
        stdin_norm = LineNormaliser({"source": "stdin", "host": "web-1"})
        cuts = [lines[i:i + 2048] for i in range(0, n, 2048)]
        has_lines = hasattr(norm, "lines")  # False in a tree before the line path kept bytes
        normalised = [stdin_norm.lines(c, "2026-12-04T00:00:00.000000Z") for c in cuts] if has_lines else []
        print(f"{n:,} events, {sum(map(len, envs)) / 1e6:.1f} MB of envelopes in {len(groups)} groups; "
              f"best of {a.reps}; {load_note()}\n")

        def write_sync() -> None:
            fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for fr in frames:
                os.write(fd, fr)
                os.fdatasync(fd)
            os.close(fd)

        def read_back() -> None:
            fd = os.open(spool, os.O_RDONLY)
            off = 0
            for fr in frames:
                os.pread(fd, len(fr), off)
                off += len(fr)
            os.close(fd)

        steps: list[tuple[str, Callable[[], object]]] = [
            ("split the read buffer into lines (bytes.split per file)",
             lambda: [r.split(b"\n") for r in raw]),
            ("orjson.loads every line (collector; again in `sink splunk`)",
             lambda: [orjson.loads(x) for x in lines]),
            ("LineNormaliser.batch, all of it (loads + checks + defaults spliced)",
             lambda: [norm.batch(r.split(b"\n")[:-1], "2026-12-04T00:00:00.000000Z") for r in raw]),
            ("EnvelopeEncoder.encode_many (record + line → envelope bytes)",
             lambda: enc.encode_many(records, lines)),
            *([("LineNormaliser.lines (collector: canonical lines keep their bytes, no dict)",
                lambda: [norm.lines(r.split(b"\n")[:-1], "2026-12-04T00:00:00.000000Z") for r in raw]),
               ("`sink splunk`'s normalise of the collector's output (LineNormaliser.lines)",
                lambda: [stdin_norm.lines(c, "2026-12-04T00:00:00.000000Z") for c in cuts]),
               ("EnvelopeEncoder.encode_grouped from the normaliser's heads (no record dict)",
                lambda: [enc.encode_grouped(x, x.lines) for x in normalised])] if has_lines else []),
            ("spool item: envelopes joined per group (_to_blob)", lambda: [b"\n".join(g) for g in groups]),
            ("spool frame: length + CRC32 + concatenation (_frame)",
             lambda: [struct.pack("<I", len(b)) + struct.pack("<I", zlib.crc32(b)) + b for b in blobs]),
            ("spool write + fdatasync per ~1 MB group", write_sync),
            ("spool read back from disk (page cache)", read_back),
            ("CRC32 check on read", lambda: [zlib.crc32(f[8:]) for f in frames]),
            ("item slice blob[5:] (_from_blob)", lambda: [b[5:] for b in blobs]),
            ("split a group into envelopes + join the body (_take_chunks, join_body)",
             lambda: [b"\n".join(b[5:].split(b"\n")) for b in blobs]),
            ("gzip level 1 of the bodies", lambda: [zlib.compressobj(1, zlib.DEFLATED, 31).compress(b)
                                                    for b in bodies]),
            # what the sink does since the #11 spool/send work (the rows above are the old path)
            ("now: spool frame header only (ISA-L CRC-32; header and item go out by writev)",
             lambda: [spool_header(b) for b in blobs]),
            ("now: spool read back — none while the reader keeps up (items from memory)", lambda: None),
            ("now: item → request part as a memoryview (no slice, no split, no join)",
             lambda: [memoryview(b)[9:] for b in blobs]),
            ("now: gzip ISA-L level 1, compressed part by part (no body join)",
             lambda: [gzip_parts([memoryview(b)[9:]]) for b in blobs]),
        ]
        print("| step | CPU-s per 300k events | µs per event |\n|---|---:|---:|")
        total = 0.0
        cost: dict[str, float] = {}
        for name, fn in steps:
            if a.only and a.only not in name:
                continue
            c = cost[name] = best(fn, a.reps) * 300_000 / n
            # the line path's rows and the "now:" rows are alternatives to rows above, not extra steps
            alternative = name.startswith(("LineNormaliser", "`sink", "EnvelopeEncoder.encode_grouped",
                                           "now:"))
            total += 0.0 if alternative else c
            print(f"| {name} | {c:.3f} | {c / 0.3:.2f} |")
        print(f"| sum of the steps (old path; the normaliser rows left out: they include the loads row) | "
              f"{total:.3f} | {total / 0.3:.2f} |")
        old_steps = ("spool ", "CRC32", "item slice", "split a group", "gzip level")
        old = [k for k in cost if k.startswith(old_steps)]
        new = [k for k in cost if k.startswith(("spool item:", "spool write", "now:"))]
        if not a.only:
            print(f"| envelope → gzipped body (item join … gzip): before {sum(cost[k] for k in old):.3f}, "
                  f"now {sum(cost[k] for k in new):.3f} (item join, header, write + fdatasync, views, "
                  "ISA-L gzip) | | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
