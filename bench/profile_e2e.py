"""Where the CPU goes on the end-to-end workload (bench/e2e_hec.py's input): py-spy profiles of the
collector's read+normalise path and of the HEC sink's path. One command:
``python bench/profile_e2e.py`` (needs ``pip install py-spy``; ``--native`` adds C frames).

Three profiled runs, each a fresh process under ``py-spy record --format raw`` (every thread,
idle threads excluded, ``--rate`` samples/s) on ``--lines`` (300,000) realistic JSON lines in 4
files, into the counting receiver (bench/_hec_receiver.py):

1. ``collect``: ``logpipe collect --once FILES > /dev/null`` — read + normalise + NDJSON out,
   the first half of ``collect | sink splunk``;
2. ``sink``: ``logpipe sink splunk < collected.ndjson`` — the second half, on the collector's
   own output for those files;
3. ``to``: ``logpipe collect --once FILES --to splunk``.

For each: the top functions by own samples ("self": the function's own Python lines and the
C calls made from them, e.g. ``orjson.loads`` is charged to the line that calls it unless
``--native``) and by inclusive samples ("total": logpipe's own functions below its entry
points), as % of the non-idle samples. py-spy counts a thread blocked in a system call
(``fdatasync``, ``write``) or waiting for a CPU on a loaded machine as active, so the samples
add up to more than the process's CPU-seconds; threads waiting in the executor's queue and the
loop in ``select`` are dropped here.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import LOGPIPE, Receiver, load_note, make_service_files, splunk_env

#: Leaf frames of a thread that waits, which py-spy's idle detection let through on this machine:
#: an executor thread blocked in its queue ``get``, the event loop in ``select``.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)", "EpollSelector.select (selectors.py:")
#: logpipe's entry points, on every stack: left out of the inclusive ("total") column.
ENTRY_FRAMES = ("logpipe/__main__", "logpipe/cli.py", "logpipe/runner.py", "logpipe/collector.py:main")
FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``func (path/to/logpipe/x.py:12)`` → ``logpipe/x.py:func``."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m["file"]
    for marker in ("/logpipe/", "/site-packages/", "/lib/python3"):
        if marker in f:
            f = f.split(marker, 1)[1]
            f = ("logpipe/" + f) if marker == "/logpipe/" else f
            break
    return f"{f}:{m['fn']}"


Top = list[tuple[str, float]]


def summarise(raw: Path, top: int, by_line: bool = False) -> tuple[int, Top, Top]:
    """(samples, top self, top inclusive) from py-spy's raw (collapsed stacks) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        frames = [fr for fr in stack.split(";") if not fr.startswith(("process ", "thread "))]
        if not frames or frames[-1].strip().startswith(IDLE_LEAVES):
            continue
        total += k
        leaf = frames[-1]
        own[leaf.strip() if by_line else _short(leaf)] += k
        for name in {_short(fr) for fr in frames}:
            if name.startswith("logpipe/") and not name.startswith(ENTRY_FRAMES):
                incl[name] += k
    pct = lambda c: [(name, 100 * v / total) for name, v in c.most_common(top)]  # noqa: E731
    return total, pct(own), pct(incl)


def print_summary(name: str, raw: Path, top: int, rate: int, note: str) -> None:
    total, own, incl = summarise(raw, top)
    print(f"\n### {name}: {total} non-idle samples (≈ {total / rate:.2f} s at {rate} Hz){note}\n")
    print("| self % | function | | total % | function |\n|---:|---|---|---:|---|")
    for (n1, p1), (n2, p2) in zip(own, incl, strict=False):
        print(f"| {p1:.1f} | `{n1}` | | {p2:.1f} | `{n2}` |")
    _, lines, _ = summarise(raw, 12, by_line=True)
    print("\nhottest lines (self %): " + "; ".join(f"`{n}` {p:.1f}" for n, p in lines))


def profile(name: str, cmd: list[str], env: dict[str, str], out: Path, rate: int, native: bool,
            stdin: Path | None = None) -> Path:
    raw = out / f"{name}.txt"
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", str(rate),
           "-o", str(raw), *(["--native"] if native else []), "--", *cmd]
    with open(stdin, "rb") if stdin else open("/dev/null", "rb") as fin:
        subprocess.run(spy, stdin=fin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=True)
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--keep", default="", help="directory to keep the raw profiles in")
    ap.add_argument("--from", dest="from_dir", default="",
                    help="only summarise the raw profiles kept in this directory (--keep)")
    a = ap.parse_args()
    if a.from_dir:
        for name in ("collect", "sink", "to"):
            print_summary(name, Path(a.from_dir) / f"{name}.txt", a.top, a.rate, "")
        return
    if not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("py-spy is not installed in this environment: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="lp-bench-prof-"))
    out = Path(a.keep) if a.keep else work
    out.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "data"
        data.mkdir()
        files, size = make_service_files(data, 4, a.lines)
        fargs = [str(f) for f in files]
        print(f"input: {a.lines:,} lines, {size / 1e6:.1f} MB; py-spy {a.rate} Hz"
              f"{', native' if a.native else ''}; {load_note()}")
        with Receiver() as rec:
            env = splunk_env(rec.base, work / "state0")
            collected = work / "collected.ndjson"
            with open(collected, "wb") as f:
                subprocess.run([*LOGPIPE, "collect", "--once", *fargs], stdout=f, stderr=subprocess.DEVNULL,
                               env=env, check=True)
            shutil.rmtree(work / "state0", ignore_errors=True)
            runs = {
                "collect": ([*LOGPIPE, "collect", "--once", *fargs], None),
                "sink": ([*LOGPIPE, "sink", "splunk"], collected),
                "to": ([*LOGPIPE, "collect", "--once", *fargs, "--to", "splunk"], None),
            }
            for name, (cmd, stdin) in runs.items():
                env = splunk_env(rec.base, work / f"state-{name}")
                rec.reset()
                raw = profile(name, cmd, env, out, a.rate, a.native, stdin)
                got = rec.count()["events"]
                print_summary(name, raw, a.top, a.rate, f", {got:,} events at the receiver")
        print(f"\nafter: {load_note()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
