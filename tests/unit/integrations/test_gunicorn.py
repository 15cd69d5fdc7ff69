"""integrations/gunicorn.py: the logger class's access record, in-process with gunicorn's own
config object and response shapes (real gunicorn: tests/e2e/test_servers.py)."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests._logger_helpers import capture

ENVIRON = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders", "QUERY_STRING": "dry=1",
           "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.9", "HTTP_USER_AGENT": "curl/8"}


def _logger() -> Any:
    from logpipe.integrations.gunicorn import Logger

    return Logger.__new__(Logger)  # access() needs no setup(): no handlers touched here


def test_access_is_one_record_with_request_fields(tmp_path: Path) -> None:
    """``access()`` gives one ``"POST /orders 201"`` record with method, path, query, status
    (from ``status_code`` or the ``"201 Created"`` string), bytes sent, duration in ms, client,
    http_version, user_agent and ``logger`` ``gunicorn.access``; a 5xx is an error."""
    log = _logger()
    took = datetime.timedelta(milliseconds=12.5)
    with capture(tmp_path) as read:
        log.access(SimpleNamespace(status_code=201, sent=42), None, ENVIRON, took)
        log.access(SimpleNamespace(status="503 Service Unavailable", sent=0), None,
                   {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, took)
    ok, failed = read()
    assert ok["message"] == "POST /orders 201" and ok["level"] == "info"
    assert (ok["logger"], ok["method"], ok["path"], ok["query"], ok["status"], ok["bytes"],
            ok["duration_ms"], ok["client"], ok["http_version"], ok["user_agent"]) == (
        "gunicorn.access", "POST", "/orders", "dry=1", 201, 42, 12.5, "10.0.0.9", "HTTP/1.1",
        "curl/8")
    assert (failed["message"], failed["level"], failed["status"]) == ("GET / 503", "error", 503)
    assert "query" not in failed and "user_agent" not in failed


def test_status_of_any_response_shape() -> None:
    """``_status``: an int ``status_code``, else the leading number of ``status``; 0 when there
    is none."""
    from logpipe.integrations.gunicorn import _status

    assert _status(SimpleNamespace(status_code=204)) == 204
    assert _status(SimpleNamespace(status="404 Not Found")) == 404
    assert _status(SimpleNamespace(status="weird")) == 0
    assert _status(SimpleNamespace()) == 0
