"""An ASGI access log (uvicorn, hypercorn, …): one logpipe record per request, with fields.

``uvicorn.run(AccessLog(app), access_log=False)``: each HTTP request gives one record —
``"GET /items/7 200"`` with ``method``, ``path``, ``query``, ``status``, ``duration_ms``,
``bytes``, ``client``, ``http_version`` as fields and ``logger`` = ``"access"`` — instead of
uvicorn's preformatted access line, which has no duration. The record carries the process-wide
bindings and whatever ``logpipe.context()`` the application bound; a request that raises is
logged with status 500, the traceback in ``exception``, and the exception re-raised.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from logpipe import bindings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["AccessLog"]


class AccessLog:
    """ASGI middleware: log each HTTP request as one record when its response has been sent."""

    def __init__(self, app: ASGIApp, *, logger_name: str = "access") -> None:
        self.app = app
        self.logger_name = logger_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        sent = {"status": 0, "bytes": 0}

        async def counting_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                sent["status"] = int(message.get("status", 0))
            elif message.get("type") == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            self._log(scope, sent["status"] or 500, sent["bytes"], start, exc_info=True)
            raise
        self._log(scope, sent["status"], sent["bytes"], start)

    def _log(self, scope: Scope, status: int, size: int, start: float, exc_info: bool = False) -> None:
        duration_ms = round((time.perf_counter() - start) * 1000, 3)
        method = scope.get("method", "")
        path = scope.get("path", "")
        fields: dict[str, Any] = {
            "logger": self.logger_name,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "bytes": size,
            "http_version": scope.get("http_version", ""),
        }
        query = scope.get("query_string", b"")
        if query:
            fields["query"] = query.decode("latin-1")
        client = scope.get("client")
        if client:
            fields["client"] = f"{client[0]}:{client[1]}"
        log = bindings.logger.error if status >= 500 else bindings.logger.info
        if exc_info:
            fields["exc_info"] = True
        log(f"{method} {path} {status}", **fields)
