"""A gunicorn ``--logger-class``: its error log and access log as logpipe records.

``gunicorn --logger-class logpipe.integrations.gunicorn.Logger app:app``. gunicorn's own
messages (``gunicorn.error``: "Booting worker", …) come out as logpipe records with
``logger`` = ``"gunicorn.error"``; each request gives one record — ``"GET /items 200"`` with
``method``, ``path``, ``query``, ``status``, ``duration_ms``, ``bytes``, ``client``,
``http_version``, ``user_agent`` — always (no ``--access-logfile`` needed; it is ignored, as
are ``--error-logfile`` and ``--log-syslog``: lines go where logpipe writes, stdout). Workers
log with their own pid (logpipe re-binds it after fork). Choosing this class turns logpipe's
``logging`` bridge on even under ``LOGPIPE_STDLIB=0``: gunicorn's messages travel through it.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn import glogging

from logpipe import _stdlib, bindings

__all__ = ["Logger"]


class Logger(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's Logger with logpipe's output: error log through the stdlib bridge, access log
    as one structured record per request."""

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup (levels, reload), then its console handlers handed to logpipe."""
        super().setup(cfg)
        if not _stdlib.installed():
            bindings.configure(stdlib=True)
        _stdlib.adopt()
        self._access_log_enabled = True

    def _compute_access_log_enabled(self) -> bool:
        return True

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """One record per request (gunicorn calls this after the response was sent)."""
        try:
            status = _status(resp)
            method = environ.get("REQUEST_METHOD", "")
            path = environ.get("PATH_INFO", "")
            fields: dict[str, Any] = {
                "logger": "gunicorn.access",
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "bytes": getattr(resp, "sent", None),
                "http_version": environ.get("SERVER_PROTOCOL", ""),
                "client": environ.get("REMOTE_ADDR", ""),
            }
            if environ.get("QUERY_STRING"):
                fields["query"] = environ["QUERY_STRING"]
            if environ.get("HTTP_USER_AGENT"):
                fields["user_agent"] = environ["HTTP_USER_AGENT"]
            level = logging.ERROR if status >= 500 else logging.INFO
            bindings.logger.log(level, f"{method} {path} {status}", **fields)
        except Exception:  # noqa: BLE001 - gunicorn's own access() reports and goes on, too
            self.error_log.exception("logpipe: could not log the request")


def _status(resp: Any) -> int:
    code = getattr(resp, "status_code", None)
    if isinstance(code, int):
        return code
    try:
        return int(str(getattr(resp, "status", "0")).split(None, 1)[0])
    except ValueError:
        return 0
