"""The canonical-line check, candidate by candidate: what it costs to learn, per JSON line, that
it is valid JSON with a canonical time/level and none of the alias keys — the figure behind
the msgspec dependency. One command: ``python bench/canonical_check.py``.

Each candidate runs over 2,048-line batches (the collector's batch size) of two inputs — the
collector benchmark's ~200-byte JSON lines and lines written by logpipe's own logger — CPU
time of this process (``time.process_time``), best of ``--reps``:

- ``orjson.loads`` per line + the alias-key set check on the dict (what the normaliser did);
- one ``orjson.loads`` of the batch joined as a JSON array (one call instead of 2,048);
- ``msgspec`` decoding each line into the normaliser's head Struct (time, level, envelope keys,
  every alias key typed ``UnsetType`` so its presence fails the decode);
- the same Struct for the whole batch in one call (``Decoder(list[Head])`` on the array);
- the same Struct without the alias keys (a floor: not a valid check on its own);
- and ``LineNormaliser.lines`` / ``.batch`` whole (check + time check + defaults spliced).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

RECEIVED = "2026-12-04T00:00:00.000000Z"


def inputs(n: int) -> dict[str, list[bytes]]:
    json_lines = [orjson.dumps({
        "time": "2026-11-23T14:01:51.123456Z", "level": "info", "message": "order placed",
        "service": "api", "feature": "store", "instance_id": "1", "pid": 4242, "order_id": i,
        "amount": 9.99, "request_id": f"r-1-{i:08d}", "user": "u-1234"}) for i in range(n)]
    logger_lines = [orjson.dumps({
        "time": "2026-12-04T18:06:40.998383Z", "level": "info", "message": "order placed",
        "service": "api", "instance_id": "0", "host": "vm", "pid": 32429, "order_id": i,
        "amount": 9.99, "user": "u-1234", "request_id": f"r-0-{i:08d}", "feature": "store"})
        for i in range(n)]
    return {"JSON ~200 B": json_lines, "logpipe's logger": logger_lines}


def best(fn: Callable[[], object], reps: int, rounds: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.process_time()
        for _ in range(rounds):
            fn()
        out.append(time.process_time() - t0)
    return min(out) / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    from logpipe import record
    from logpipe.record import _NEEDS_WORK

    defaults = {"source": "/var/log/svc0.log", "service": "svc0", "host": "vm"}
    needs = _NEEDS_WORK
    try:
        from logpipe.record._canonical import Head, head_decoder
    except ImportError:  # a tree before the check (PYTHONPATH=main's tree): its rows only
        dec: Any = None
    else:
        dec = head_decoder(_NEEDS_WORK, defaults)
        bare = msgspec.json.Decoder(Head)
        batch_dec: Any = msgspec.json.Decoder(list[dec.type])  # type: ignore[name-defined]

    def orjson_each(lines: list[bytes]) -> None:
        for line in lines:
            obj = orjson.loads(line)
            needs.isdisjoint(obj)

    def orjson_array(lines: list[bytes]) -> None:
        for obj in orjson.loads(b"[" + b",".join(lines) + b"]"):
            needs.isdisjoint(obj)

    norm = record.LineNormaliser(defaults)
    candidates: list[tuple[str, Callable[[list[bytes]], object]]] = [
        ("orjson.loads per line + alias-key set check (before)", orjson_each),
        ("orjson.loads of the batch as one array + alias-key set check", orjson_array),
        ("LineNormaliser.batch (records and lines)", lambda lines: norm.batch(lines, RECEIVED)),
    ]
    if dec is not None:
        candidates += [
            ("msgspec head Struct per line (alias keys fail the decode)",
             lambda lines: list(map(dec.decode, lines))),
            ("msgspec head Struct, the batch as one array",
             lambda lines: batch_dec.decode(b"[" + b",".join(lines) + b"]")),
            ("floor: msgspec Struct without the alias keys (not a check)",
             lambda lines: list(map(bare.decode, lines))),
            ("LineNormaliser.lines, all of it (check + time + defaults spliced, no dict)",
             lambda lines: norm.lines(lines, RECEIVED)),
        ]
    data = inputs(2048)
    print(f"msgspec {msgspec.__version__}, orjson {orjson.__version__}; 2,048-line batches; best of "
          f"{a.reps} x {a.rounds} rounds; load average {os.getloadavg()[0]:.2f}\n")
    print("| candidate | " + " | ".join(f"{k} µs/line" for k in data) + " |")
    print("|---|" + "---:|" * len(data))
    for name, fn in candidates:
        cells = [best(lambda fn=fn, lines=lines: fn(lines), a.reps, a.rounds) / len(lines) * 1e6
                 for lines in data.values()]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
