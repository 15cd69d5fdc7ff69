"""_stdlib.py: the standard logging module's records as logpipe records (SPEC §2)."""

from __future__ import annotations

import re

from tests._logger_helpers import TIME_RE, lines, run_py


def test_stdlib_records_come_out_the_same_way() -> None:
    """Records from ``logging`` (as httpx/uvicorn write them) come out as JSON lines with the
    same bindings and context, the logger name, ``extra`` fields, the SPEC level name and the
    traceback; below the configured level they are dropped."""
    proc = run_py(
        """
        import logging, logpipe
        logpipe.bind(service="api", feature="store")
        lib = logging.getLogger("httpx")
        with logpipe.context(request_id="r-9"):
            lib.info("HTTP Request: %s %s", "GET", "http://x/", extra={"status": 200})
        lib.debug("hidden")
        try:
            {}["k"]
        except KeyError:
            logging.getLogger("uvicorn.error").exception("crash")
        logging.getLogger("x").log(25, "custom level")
        """
    )
    assert proc.returncode == 0, proc.stderr
    info, crash, custom = lines(proc.stdout)
    assert info["message"] == "HTTP Request: GET http://x/" and info["level"] == "info"
    assert (info["service"], info["feature"], info["request_id"]) == ("api", "store", "r-9")
    assert info["logger"] == "httpx" and info["status"] == 200
    assert re.match(TIME_RE, info["time"])
    assert crash["level"] == "error" and crash["exception"].endswith("KeyError: 'k'")
    assert custom["level"] == "info"
    assert proc.stderr == b""
