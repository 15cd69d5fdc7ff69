"""The README's first command: the example services under ``logpipe collect``, fanned out to
the console and to rotated files, then a report of the files and how many records each holds.

    python examples/demo.py [--out DIR] [--count N] [--interval SECONDS]

What it runs (the same command works on its own)::

    logpipe collect --run api="python examples/api.py ..." --run api="..." \\
                    --run worker="python examples/worker.py ..." \\
                    --to console --to file:./demo-logs --max-size 64K --retain 3 --once

Two instances of the API (``api[0]``, ``api[1]``) and one worker log JSON lines with
``from logpipe import logger``; the collector runs them to their exit (``--once``), prints
every record for people and writes ``demo-logs/<service>.log``, rotated at 64 KiB and
compressed with zstd. Ctrl-C stops early: the collector drains what it read, then the report
still comes.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def service_command(script: str, count: int, interval: float) -> str:
    """The shell-quoted command line that runs one example service (this interpreter)."""
    return " ".join(shlex.quote(part) for part in (
        sys.executable, str(HERE / script), "--count", str(count), "--interval", str(interval)))


def collect_command(out: Path, count: int, interval: float) -> list[str]:
    """``logpipe collect`` with the example services and the console + file sinks."""
    api = service_command("api.py", count, interval)
    worker = service_command("worker.py", count, interval)
    cmd = [sys.executable, "-m", "logpipe", "collect",
           "--run", f"api={api}", "--run", f"api={api}", "--run", f"worker={worker}",
           "--to", "console", "--to", f"file:{out}", "--max-size", "64K", "--retain", "3", "--once"]
    return cmd


def count_records(path: Path) -> int:
    """Records (lines) in a log file; ``.zst`` files are decompressed as a stream."""
    if path.name.endswith(".zst"):
        import zstandard

        lines = 0
        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            while chunk := reader.read(1 << 20):
                lines += chunk.count(b"\n")
        return lines
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _oldest_first(path: Path) -> tuple[str, int, str, int]:
    """Sort key: per log, its rotated files oldest first (``NAME.<stamp>[.N].zst``: N counts
    rotations within one second), then the live file, which holds the newest records."""
    m = re.match(r"^(.*?)\.(\d{8}T\d{6})(?:\.(\d+))?(?:\.zst)?$", path.name)
    if m is None:
        return (path.name, 1, "", 0)
    return (m[1], 0, m[2], int(m[3] or 0))


def report(out: Path, earlier: bool = False) -> int:
    """Print each log file under ``out`` with its record count; return the total."""
    files = sorted((p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=_oldest_first) if out.is_dir() else []
    if not files:
        print(f"\ndemo: no log files under {out}", file=sys.stderr)
        return 0
    shown = os.path.relpath(out)
    width = max(len(p.name) for p in files)
    print(f"\ndemo: the records are also in {shown}/ (rotated at 64 KiB, zstd-compressed):")
    total = 0
    for path in files:
        n = count_records(path)
        total += n
        print(f"  {path.name:<{width}}  {n:>6} records")
    print(f"  {'total':<{width}}  {total:>6} records")
    if earlier:
        print(f"  (including earlier runs' records: the file sink appends; delete {shown}/ to "
              "start afresh)")
    print(f"\nRead them back (live and rotated, merged in time order):  "
          f"{shlex.quote(sys.executable)} -m logpipe logs --dir {shlex.quote(shown)}")
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit status is the collector's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="demo-logs", help="directory for the log files "
                        "(default: ./demo-logs)")
    parser.add_argument("--count", type=int, default=150,
                        help="iterations of each example service (default: 150)")
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between iterations (default: 0.01)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    earlier = out.is_dir() and any(p.name.endswith((".log", ".zst")) for p in out.iterdir())
    cmd = collect_command(out, args.count, args.interval)
    print("demo: logpipe collect --run api=… --run api=… --run worker=… --to console --to file:"
          f"{os.path.relpath(out)} --max-size 64K --retain 3 --once   (Ctrl-C stops)\n",
          file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the whole process group, the collector included: it stops
        # its children and drains what it read. Wait for that, and pass on a second Ctrl-C.
        try:
            status = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            status = proc.wait()
    report(out, earlier)
    return status


if __name__ == "__main__":
    sys.exit(main())
