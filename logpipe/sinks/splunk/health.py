"""The start-up check of each HEC endpoint: health, token, and a wrong URL scheme."""

from __future__ import annotations

import asyncio

import httpx

from logpipe import diagnostics
from logpipe.errors import SinkConfigError
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk._hec import Action
from logpipe.sinks.splunk.endpoints import Endpoint, Endpoints, error_verdict, scheme_mismatch
from logpipe.sinks.splunk.state import Shared

#: the start-up health check waits this long per endpoint; a HEC that does not answer in time
#: is "unreachable for now", not fatal (records are spooled)
HEALTH_TIMEOUT = 5.0


async def check_endpoints(endpoints: Endpoints, client: httpx.AsyncClient, shared: Shared) -> None:
    """Check every endpoint at start; raise SinkConfigError for the first fatal answer, say how
    the others are (unreachable is not fatal: records are spooled and sent when it answers)."""
    results = await asyncio.gather(*(_check_one(ep, client, shared) for ep in endpoints))
    fatal = [msg for ok, msg in results if ok is None]
    if fatal:
        raise SinkConfigError(fatal[0])
    for ok, msg in results:
        if ok:
            diagnostics.info(msg, key=f"splunk-health:{msg}")
        else:
            diagnostics.warning(msg, key=f"splunk-health:{msg}")


async def _check_one(ep: Endpoint, client: httpx.AsyncClient, shared: Shared) -> tuple[bool | None, str]:
    """(True, msg) healthy; (False, msg) unreachable/busy — carry on; (None, msg) fatal.

    ``GET /services/collector/health`` says whether HEC takes data (it does not check the
    token: research/hec.md §1); an authenticated empty POST to /event answers 400 code 5
    "No data" when the token is good and 401/403 when it is not.
    """
    scrub = shared.token.scrub
    try:
        r = await client.get(ep.health_url, timeout=HEALTH_TIMEOUT)
        health = _hec.classify(r.status_code, r.content, scrub=scrub)
        busy = r.status_code >= 500
        r = await client.post(ep.event_url, content=b"", headers=shared.headers(False),
                                    timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError as exc:
        v = error_verdict(exc, ep, scrub)
        if v.action is Action.CONFIG:
            return None, v.text
        if not isinstance(exc, httpx.TimeoutException):
            wrong_scheme = await scheme_mismatch(ep)
            if wrong_scheme is not None:
                return None, wrong_scheme
        ep.unreachable, ep.last_error = True, v.text
        return False, (f"splunk: {ep.display} unreachable ({v.text}); records are spooled and "
                       "sent when it answers")
    v = _hec.classify(r.status_code, r.content, scrub=scrub)
    if v.action is Action.CONFIG:
        return None, f"splunk: {ep.display}: {scrub(_hec.config_message(v))}"
    if v.code == 5 or v.action is Action.SUCCESS:
        state = f"busy ({health.describe()}), token accepted" if busy else "healthy, token accepted"
        return (not busy), f"splunk: {ep.display} {state}"
    return False, f"splunk: {ep.display} answered {v.describe()}; will retry"
