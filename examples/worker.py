"""An example queue worker: processes a bounded number of fake jobs, logging with logpipe.

    python examples/worker.py [--count 20] [--interval 0.05]

Every job logs with ``job_id`` bound locally (``logger.bind``); about one job in seven fails,
and the failure is logged with ``logger.exception`` — one JSON line whose ``exception`` field
holds the traceback — then retried once. ``service`` comes from ``LOGPIPE_SERVICE`` (set by
``logpipe collect --run worker=...``), else ``worker``. Exits 0 after ``--count`` jobs, or on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import time

import logpipe
from logpipe import logger

_stop = False


class PaymentDeclined(Exception):
    """The fake payment provider said no."""


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def charge(job: dict[str, object], rng: random.Random) -> None:
    """The job's work; fails now and then."""
    if rng.random() < 1 / 7:
        raise PaymentDeclined(f"card declined for order {job['order_id']}")


def main(argv: list[str] | None = None) -> int:
    """Work through ``--count`` fake jobs, ``--interval`` seconds apart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=int(os.environ.get("EXAMPLE_COUNT", "20")))
    parser.add_argument("--interval", type=float,
                        default=float(os.environ.get("EXAMPLE_INTERVAL", "0.05")))
    args = parser.parse_args(argv)

    logpipe.bind(service=os.environ.get("LOGPIPE_SERVICE", "worker"), feature="billing")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rng = random.Random(7)
    queue: collections.deque[dict[str, object]] = collections.deque(
        {"job_id": f"j-{n}", "order_id": 1000 + n, "attempt": 1} for n in range(args.count))
    logger.info("worker started", queued=len(queue))
    done = failed = 0
    while queue and not _stop:
        job = queue.popleft()
        log = logger.bind(job_id=job["job_id"], attempt=job["attempt"])
        started = time.perf_counter()
        try:
            charge(job, rng)
        except PaymentDeclined:
            log.exception("job failed", order_id=job["order_id"])
            failed += 1
            if job["attempt"] == 1:
                queue.append(dict(job, attempt=2))  # one retry, at the back of the queue
        else:
            done += 1
            log.info("job done", order_id=job["order_id"],
                     duration_ms=round((time.perf_counter() - started) * 1000, 3))
        time.sleep(args.interval)
    logger.info("worker stopped", done=done, failed=failed, left=len(queue), signalled=_stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
