"""integrations/asgi.py: AccessLog, driven in-process with a hand-made ASGI scope (the real
uvicorn server: tests/e2e/test_servers.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import logpipe
from logpipe.integrations.asgi import AccessLog
from tests._logger_helpers import capture

SCOPE = {"type": "http", "method": "GET", "path": "/items/7", "query_string": b"q=1",
         "http_version": "1.1", "client": ("10.0.0.5", 51234)}


def _serve(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(AccessLog(app)(scope, receive, send))
    return sent


def test_one_record_per_request_with_fields_and_context(tmp_path: Path) -> None:
    """A request gives one ``"GET /items/7 200"`` record with method, path, query, status,
    body bytes summed over chunks, client, http_version, a duration, ``logger`` ``access``
    and the context the app bound; the response passes through unchanged."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})

    with capture(tmp_path) as read, logpipe.context(request_id="r-1"):
        sent = _serve(app, SCOPE)
    assert [m.get("body") for m in sent] == [None, b"hello ", b"world"]
    (rec,) = read()
    assert rec["message"] == "GET /items/7 200" and rec["level"] == "info"
    assert (rec["logger"], rec["method"], rec["path"], rec["query"], rec["status"], rec["bytes"],
            rec["client"], rec["http_version"], rec["request_id"]) == (
        "access", "GET", "/items/7", "q=1", 200, 11, "10.0.0.5:51234", "1.1", "r-1")
    assert isinstance(rec["duration_ms"], float) and rec["duration_ms"] >= 0


def test_a_request_that_raises_is_a_500_error_with_the_traceback(tmp_path: Path) -> None:
    """The app raising before a response: one error record with status 500 and the traceback in
    ``exception``; the exception still reaches the server."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("db down")

    with capture(tmp_path) as read, pytest.raises(RuntimeError, match="db down"):
        _serve(app, SCOPE)
    (rec,) = read()
    assert (rec["message"], rec["level"], rec["status"]) == ("GET /items/7 500", "error", 500)
    assert rec["exception"].endswith("RuntimeError: db down")


def test_non_http_scopes_pass_through_unlogged(tmp_path: Path) -> None:
    """Lifespan and websocket scopes go to the app untouched, with no record."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    with capture(tmp_path) as read:
        _serve(app, {"type": "lifespan"})
        _serve(app, {"type": "websocket", "path": "/ws"})
    assert seen == ["lifespan", "websocket"] and read() == []
