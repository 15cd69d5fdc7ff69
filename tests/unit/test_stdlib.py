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


def test_handler_turns_a_log_record_into_level_message_and_fields() -> None:
    """``_stdlib.Handler`` (in-process, on a private logger): the SPEC level name, the
    %-formatted message, ``logger``, the record's time, ``extra`` fields (not uvicorn's
    ``color_message``), uvicorn.access's arguments as fields, ``exc_info`` passed on; a bad
    %-format keeps its arguments instead of raising."""
    import logging

    from logpipe import _stdlib

    got: list[tuple[str, object, dict[str, object]]] = []
    handler = _stdlib.Handler(lambda level, msg, kw: got.append((level, msg, kw)))
    lg = logging.Logger("lib")  # not in the manager: nothing else sees these records
    lg.addHandler(handler)
    lg.warning("slow %s", "upstream", extra={"ms": 812, "color_message": "\x1b[1mslow"})
    lg.info("bad %d", "x")
    access = logging.Logger("uvicorn.access")
    access.addHandler(handler)
    access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/x", "1.1", 200)
    try:
        {}["k"]
    except KeyError:
        lg.exception("crash")
    (l1, m1, k1), (l2, m2, _), (_, _, k3), (l4, _, k4) = got
    assert (l1, m1, k1["logger"], k1["ms"]) == ("warning", "slow upstream", "lib", 812)
    assert "color_message" not in k1 and re.match(TIME_RE, str(k1["time"]))
    assert (l2, m2) == ("info", "'bad %d' % ('x',)")
    assert (k3["client"], k3["method"], k3["path"], k3["status"]) == ("1.2.3.4:5", "GET", "/x", 200)
    assert l4 == "error" and isinstance(k4["exc_info"], tuple) and k4["exc_info"][0] is KeyError
