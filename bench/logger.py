"""Logger cost per call: logpipe (and structlog bridged to it), structlog JSON, stdlib + json-logger.

    python bench/logger.py [--rounds 9] [--calls 20000]

Every case logs ``info("order placed", order_id=123, amount=9.99, user="bob")`` with service,
feature and instance bound, as one JSON line to /dev/null, flushed to the OS per call. The
"bridge" cases are application code that logs with ``structlog.get_logger()`` once logpipe is
imported (logpipe._structlog): a module-level logger, and ``get_logger()`` on every call, both
against the bridge's own configuration (the sample lines check it); target: each within 2x of
``logpipe.logger.info`` in the same run. Cases run interleaved (shuffled order in every round)
so machine noise hits all of them alike; the table shows each case's median µs/call and its
ratio to structlog's, plus the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

import structlog
from pythonjsonlogger.json import JsonFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import logpipe
from logpipe import _structlog

BOUND = {"service": "api", "feature": "store", "instance_id": "0"}


def make_structlog(out: object, min_level: int | None = None) -> Callable[..., None]:
    """structlog as its docs' JSON example configures it (merge_contextvars, add_log_level,
    TimeStamper(fmt="iso", utc=True), JSONRenderer(), PrintLoggerFactory, cache on first use)."""
    kwargs: dict[str, object] = {}
    if min_level is not None:
        kwargs["wrapper_class"] = structlog.make_filtering_bound_logger(min_level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
        **kwargs,  # type: ignore[arg-type]
    )
    log = structlog.get_logger().bind(**BOUND)
    log.info("warm-up")  # materialise the cached logger while this configuration is current
    return log  # type: ignore[no-any-return]


def make_stdlib(out: object) -> logging.Logger:
    """stdlib ``logging`` with python-json-logger's formatter, bound fields as static fields."""
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter("%(levelname)s %(message)s", timestamp=True,
                                       static_fields=dict(BOUND)))
    log = logging.getLogger("bench.stdlib")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def build_cases(text_out: object, binary_fd: object) -> dict[str, Callable[[], object]]:
    """The calls to time, each a zero-argument function."""
    logpipe.configure(stream=binary_fd, format="json", level="info", stdlib=False)  # type: ignore[arg-type]
    logpipe.bind(**BOUND)
    lp = logpipe.logger
    # the structlog baselines configure structlog themselves; their bound loggers keep that
    # configuration. Then the bridge takes structlog back, as in an application that imports
    # logpipe and never configures structlog: the bridge cases run against the bridge's own
    # configuration (per-call get_logger() resolves it on every call)
    sl = make_structlog(text_out)
    sl_filtering = make_structlog(text_out, logging.INFO)
    structlog.reset_defaults()
    _structlog.install()
    bridged = structlog.get_logger()  # a module-level logger
    bridged.info("warm-up")
    get_logger = structlog.get_logger
    std = make_stdlib(text_out)

    def logpipe_in_context() -> None:
        # a request handler's pattern: enter a context block, log once, leave it
        with logpipe.context(request_id="r-17"):
            lp.info("order placed", order_id=123, amount=9.99, user="bob")

    extra = {"order_id": 123, "amount": 9.99, "user": "bob"}
    return {
        "logpipe info": lambda: lp.info("order placed", order_id=123, amount=9.99, user="bob"),
        "bridge: structlog logger info": lambda: bridged.info("order placed", order_id=123,
                                                             amount=9.99, user="bob"),
        "bridge: get_logger().info per call": lambda: get_logger().info(
            "order placed", order_id=123, amount=9.99, user="bob"),
        "structlog default JSON info": lambda: sl.info("order placed", order_id=123, amount=9.99,
                                                       user="bob"),
        "stdlib + python-json-logger info": lambda: std.info("order placed", extra=extra),
        "logpipe info, nested field (chain)": lambda: lp.info("order placed", order_id=123,
                                                              cart={"sku": "A-1", "qty": 2}),
        "logpipe context() + info": logpipe_in_context,
        "logpipe debug (disabled)": lambda: lp.debug("order placed", order_id=123, amount=9.99,
                                                     user="bob"),
        "structlog filtering debug (disabled)": lambda: sl_filtering.debug(
            "order placed", order_id=123, amount=9.99, user="bob"),
    }


BRIDGE = ("bridge: structlog logger info", "bridge: get_logger().info per call")


def show_samples(cases: dict[str, Callable[[], object]]) -> None:
    """Print one line each logger writes, so the table compares like with like."""
    with tempfile.TemporaryDirectory() as tmp:
        text = open(Path(tmp) / "t.log", "w")  # noqa: SIM115 - closed below
        binary = open(Path(tmp) / "b.log", "wb")  # noqa: SIM115
        sample = build_cases(text, binary)
        names = ("logpipe info", *BRIDGE, "structlog default JSON info",
                 "stdlib + python-json-logger info")
        for name in names:
            sample[name]()
        text.close()
        binary.close()
        print("sample lines:")
        for path in ("b.log", "t.log"):
            for line in (Path(tmp) / path).read_text().splitlines():
                if "warm-up" not in line:
                    print("  " + line)
        # the bridge cases must be timing logpipe's record, not structlog's own configuration
        ours = [ln for ln in (Path(tmp) / "b.log").read_text().splitlines() if "order placed" in ln]
        if len(ours) != 1 + len(BRIDGE):
            raise SystemExit(f"bench: expected {1 + len(BRIDGE)} logpipe records (logpipe + bridge "
                             f"cases), got {len(ours)}: the bridge is not what is being timed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()

    show_samples({})
    text_out = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    binary_out = open(os.devnull, "wb")  # noqa: SIM115
    cases = build_cases(text_out, binary_out)
    names = list(cases)
    for fn in cases.values():  # warm-up (and the fast path learns the keys)
        timeit.timeit(fn, number=2000)

    results: dict[str, list[float]] = {n: [] for n in names}
    rng = random.Random(1)
    for _ in range(args.rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            results[name].append(timeit.timeit(cases[name], number=args.calls) / args.calls * 1e6)

    base = "structlog default JSON info"
    base_med = statistics.median(results[base])
    print(f"\n{args.rounds} interleaved rounds x {args.calls} calls; Python {sys.version.split()[0]}, "
          f"structlog {structlog.__version__}")
    print(f"{'case':40} {'median us/call':>15} {'vs structlog':>13} {'median of round ratios':>23}")
    for name in names:
        med = statistics.median(results[name])
        per_round = statistics.median(a / b for a, b in zip(results[name], results[base], strict=True))
        print(f"{name:40} {med:15.3f} {med / base_med:12.2f}x {per_round:22.2f}x")
    lp = statistics.median(results["logpipe info"])
    dbg = statistics.median(results["logpipe debug (disabled)"])
    print(f"\ntargets: enabled info <= 0.40x structlog: {lp / base_med:.2f}x "
          f"({'met' if lp / base_med <= 0.40 else 'NOT met'}); "
          f"disabled debug <= 0.25 us: {dbg:.3f} us ({'met' if dbg <= 0.25 else 'NOT met'})")
    for name in BRIDGE:
        ratio = statistics.median(results[name]) / lp
        per_round = statistics.median(
            a / b for a, b in zip(results[name], results["logpipe info"], strict=True))
        print(f"         {name} <= 2x logpipe info: {ratio:.2f}x, per-round median {per_round:.2f}x "
              f"({'met' if max(ratio, per_round) <= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
