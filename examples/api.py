"""An example API-like service: handles a bounded number of fake requests, logging with logpipe.

    python examples/api.py [--count 20] [--interval 0.05]

Each request runs inside ``logpipe.context(request_id=...)``, so every line it logs — and any
line a library writes through stdlib ``logging`` — carries the request id. ``service`` comes from
``LOGPIPE_SERVICE`` (``logpipe collect --run api=...`` sets it), else ``api``; ``instance_id``
from ``LOGPIPE_INSTANCE_ID`` / PM2. Exits 0 after ``--count`` requests, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time

import logpipe
from logpipe import logger

ROUTES = [
    ("GET", "/products", "catalog"),
    ("POST", "/orders", "store"),
    ("DELETE", "/orders/{id}", "delete"),
    ("GET", "/health", "health"),
]

_stop = False


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def handle(rng: random.Random, number: int) -> None:
    """One fake request: pick a route, log what happens, sometimes slowly, sometimes refused."""
    method, path, feature = rng.choice(ROUTES)
    instance = os.environ.get("LOGPIPE_INSTANCE_ID", "0")
    with logpipe.context(request_id=f"r-{instance}-{number}", feature=feature, method=method,
                         path=path):
        started = time.perf_counter()
        logger.debug("request received")
        if feature == "store":
            order_id = rng.randint(1000, 9999)
            amount = round(rng.uniform(1, 200), 2)
            # a library call, logged through stdlib logging: it comes out with the same bindings
            logging.getLogger("httpx").info(
                'HTTP Request: POST https://payments.invalid/charge "HTTP/1.1 200 OK"')
            logger.info("order placed", order_id=order_id, amount=amount, user=rng.choice(
                ["ann", "bob", "kim"]))
        elif feature == "delete":
            if rng.random() < 0.3:
                # the Authorization header is redacted by default
                logger.warning("delete refused", status=403,
                               headers={"Authorization": "Bearer abc123", "Accept": "*/*"})
            else:
                logger.info("order deleted", order_id=rng.randint(1000, 9999))
        elif feature == "catalog":
            logger.info("products listed", count=rng.randint(0, 50))
        status = 200
        elapsed_ms = round((time.perf_counter() - started) * 1000 + rng.uniform(1, 40), 2)
        if elapsed_ms > 38:
            logger.warning("slow request", duration_ms=elapsed_ms)
        logger.info("request done", status=status, duration_ms=elapsed_ms)


def main(argv: list[str] | None = None) -> int:
    """Serve ``--count`` fake requests, ``--interval`` seconds apart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=int(os.environ.get("EXAMPLE_COUNT", "20")))
    parser.add_argument("--interval", type=float,
                        default=float(os.environ.get("EXAMPLE_INTERVAL", "0.05")))
    args = parser.parse_args(argv)

    logpipe.bind(service=os.environ.get("LOGPIPE_SERVICE", "api"), feature="http")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rng = random.Random(os.environ.get("LOGPIPE_INSTANCE_ID", "0"))
    logger.info("api started", count=args.count, interval=args.interval)
    served = 0
    for number in range(args.count):
        if _stop:
            break
        handle(rng, number)
        served += 1
        time.sleep(args.interval)
    logger.info("api stopped", served=served, signalled=_stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
