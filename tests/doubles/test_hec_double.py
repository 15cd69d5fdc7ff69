"""The HEC double is strict: every Splunk rule it claims (research/hec.md §9) is checked here with httpx."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.doubles.hec_double import DEFAULT_TOKEN, HecDouble
from tests.helpers import wait_for

EVENT = "/services/collector/event"
CHANNEL = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
AUTH = {"Authorization": f"Splunk {DEFAULT_TOKEN}"}


def body(*objs: Any) -> bytes:
    """Concatenate JSON values the way a HEC batch does (no separator)."""
    return b"".join(json.dumps(o).encode() for o in objs)


@pytest.fixture
def hec() -> Iterator[HecDouble]:
    with HecDouble(indexes=["main", "logs"]) as h:
        yield h


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def post(client: httpx.Client, hec: HecDouble, content: bytes, path: str = EVENT,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(hec.url + path, content=content, headers={**AUTH, **(headers or {})})


# ----------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, 2),
    ({"Authorization": f"Bearer {DEFAULT_TOKEN}"}, 401, 3),
    ({"Authorization": "Splunk"}, 401, 3),
    ({"Authorization": f"splunk {DEFAULT_TOKEN}"}, 401, 3),
    ({"Authorization": "Splunk 99999999-2222-3333-4444-555555555555"}, 403, 4),
])
def test_auth_failures_use_splunks_codes(hec: HecDouble, client: httpx.Client, headers: dict[str, str],
                                         status: int, code: int) -> None:
    """Missing header → 401/2, malformed → 401/3, unknown token → 403/4; nothing is indexed."""
    r = client.post(hec.url + EVENT, content=body({"event": "x"}), headers=headers)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert hec.events() == []


def test_disabled_token_is_403_code_1(hec: HecDouble, client: httpx.Client) -> None:
    """A disabled token is refused with 403 code 1 "Token disabled"."""
    assert post(client, hec, body({"event": "x"})).status_code == 200
    hec.disable_token()
    r = post(client, hec, body({"event": "y"}))
    assert (r.status_code, r.json()) == (403, {"text": "Token disabled", "code": 1})
    assert hec.payloads() == ["x"]


def test_basic_auth_with_token_as_password_is_accepted(hec: HecDouble, client: httpx.Client) -> None:
    """Splunk also accepts HTTP Basic with the token as the password."""
    cred = base64.b64encode(f"x:{DEFAULT_TOKEN}".encode()).decode()
    r = client.post(hec.url + EVENT, content=body({"event": "x"}), headers={"Authorization": f"Basic {cred}"})
    assert r.status_code == 200
    assert hec.payloads() == ["x"]


def test_query_string_token_is_refused_code_16(hec: HecDouble, client: httpx.Client) -> None:
    """?token= without allowQueryStringAuth on the token → 400 code 16."""
    r = client.post(hec.url + EVENT + f"?token={DEFAULT_TOKEN}", content=body({"event": "x"}))
    assert (r.status_code, r.json()["code"]) == (400, 16)


# ----------------------------------------------------------------------------- paths and methods


@pytest.mark.parametrize("path", ["/services/collector", "/services/collector/event",
                                  "/services/collector/event/1.0"])
def test_event_endpoints_accept_post(hec: HecDouble, client: httpx.Client, path: str) -> None:
    """All three /event aliases index a POSTed envelope and answer 200 {"text":"Success","code":0}."""
    r = post(client, hec, body({"event": "x"}), path=path)
    assert (r.status_code, r.json()) == (200, {"text": "Success", "code": 0})
    assert hec.payloads() == ["x"]
    assert hec.requests[-1] == (path, 200, 0)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", EVENT, 405),
    ("PUT", EVENT, 405),
    ("POST", "/services/collector/raw", 404),
    ("POST", "/services/collector/events", 404),
    ("GET", "/", 404),
    ("POST", "/services/collector/health", 405),
])
def test_wrong_path_or_method(hec: HecDouble, client: httpx.Client, method: str, path: str,
                              status: int) -> None:
    """Unknown paths are 404 and wrong methods 405, with a JSON body naming that code."""
    r = client.request(method, hec.url + path, headers=AUTH, content=body({"event": "x"}))
    assert r.status_code == status
    assert r.json()["code"] == status
    assert hec.events() == []


def test_health_healthy_then_busy(hec: HecDouble, client: httpx.Client) -> None:
    """GET /health is 200 code 17 (no token needed), and 503 code 18 while busy is injected."""
    for path in ("/services/collector/health", "/services/collector/health/1.0"):
        r = client.get(hec.url + path)
        assert (r.status_code, r.json()) == (200, {"text": "HEC is healthy", "code": 17})
    hec.fail_for(30)
    r = client.get(hec.url + "/services/collector/health")
    assert (r.status_code, r.json()["code"]) == (503, 18)


def test_keep_alive_reuses_one_connection(hec: HecDouble, client: httpx.Client) -> None:
    """The server speaks HTTP/1.1 keep-alive: consecutive requests of one client share a connection."""
    for i in range(3):
        assert post(client, hec, body({"event": i})).status_code == 200
    ports = {d["client_port"] for d in hec.details}
    assert len(ports) == 1


# ----------------------------------------------------------------------------- encoding and size


def test_gzip_body_is_accepted(hec: HecDouble, client: httpx.Client) -> None:
    """Content-Encoding: gzip bodies are decompressed and indexed."""
    gz = gzip.compress(body({"event": "a"}, {"event": "b"}))
    r = post(client, hec, gz, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert hec.payloads() == ["a", "b"]


def test_deflate_is_415(hec: HecDouble, client: httpx.Client) -> None:
    """Splunk does not support deflate: 415, nothing indexed."""
    r = post(client, hec, zlib.compress(body({"event": "a"})), headers={"Content-Encoding": "deflate"})
    assert r.status_code == 415
    assert hec.events() == []


@pytest.mark.parametrize("content", [body({"event": "a"}), gzip.compress(body({"event": "a"}))[:-6]])
def test_gzip_header_on_plain_or_truncated_body_is_400(hec: HecDouble, client: httpx.Client,
                                                       content: bytes) -> None:
    """A gzip header on a non-gzip (or truncated gzip) body is a 400 (Vector#23559), nothing indexed."""
    r = post(client, hec, content, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    assert hec.events() == []


@pytest.mark.parametrize("content", [b"", b"  \n\t "])
def test_empty_body_is_no_data(hec: HecDouble, client: httpx.Client, content: bytes) -> None:
    """An empty (or blank) body is 400 code 5 "No data"."""
    r = post(client, hec, content)
    assert (r.status_code, r.json()) == (400, {"text": "No data", "code": 5})


def test_max_content_length_applies_to_decompressed_body(client: httpx.Client) -> None:
    """Over max_content_length → 413, measured after gunzip; a body at the limit passes."""
    with HecDouble(max_content_length=1000) as hec:
        big = body({"event": "x" * 2000})
        small_gz = gzip.compress(big)
        assert len(small_gz) < 1000
        r = post(client, hec, small_gz, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413
        r = post(client, hec, big)
        assert r.status_code == 413
        exact = body({"event": "y" * (1000 - len(body({"event": ""})))})
        assert len(exact) == 1000
        assert post(client, hec, exact).status_code == 200
        assert [len(p) for p in hec.payloads()] == [1000 - 13]


# ----------------------------------------------------------------------------- batches and envelopes


def test_concatenated_objects_with_whitespace_are_indexed_in_order(hec: HecDouble,
                                                                   client: httpx.Client) -> None:
    """A batch is JSON objects back to back, whitespace/newlines allowed; indexed in body order."""
    content = b'{"event":"a"}{"event":{"k":1}} \n\n{"event":"c","time":1700000000.123456}\r\n\t{"event":[]}\n'
    r = post(client, hec, content)
    assert r.status_code == 200
    assert hec.payloads() == ["a", {"k": 1}, "c", []]
    assert hec.events()[2]["time"] == 1700000000.123456


@pytest.mark.parametrize("envelope", [
    {"event": {}}, {"event": []}, {"event": 0}, {"event": "x", "time": "1700000000.5"},
    {"event": "x", "time": 1700000000}, {"event": "x", "fields": {"a": "1", "b": ["x", "y"]}},
    {"event": "x", "index": "logs", "host": "h", "source": "s", "sourcetype": "_json"},
])
def test_valid_envelopes_are_accepted(hec: HecDouble, client: httpx.Client, envelope: dict[str, Any]) -> None:
    """What Splunk indexes is indexed, unchanged."""
    r = post(client, hec, body(envelope))
    assert r.status_code == 200, r.text
    assert hec.events() == [envelope]


BAD_OBJECTS: list[tuple[str, bytes, int]] = [
    ("not an object (array)", b'["event"]', 6),
    ("not an object (string)", b'"event"', 6),
    ("unknown top-level key", body({"event": "x", "extra": 1}), 6),
    ("missing event", body({"time": 1700000000}), 12),
    ("blank string event", body({"event": "  "}), 13),
    ("empty string event", body({"event": ""}), 13),
    ("null event", body({"event": None}), 6),
    ("false event", body({"event": False}), 6),
    ("nested fields", body({"event": "x", "fields": {"a": {"b": "c"}}}), 15),
    ("number in fields", body({"event": "x", "fields": {"a": 1}}), 15),
    ("list of non-strings in fields", body({"event": "x", "fields": {"a": ["x", 2]}}), 15),
    ("fields not an object", body({"event": "x", "fields": ["a"]}), 15),
    ("index not allowed", body({"event": "x", "index": "secret"}), 7),
    ("invalid JSON", b'{"event": "x"', 6),
    ("invalid JSON token", b'{"event": NaN}', 6),
    ("time not numeric", body({"event": "x", "time": "2026-11-23T14:01:51Z"}), 6),
    ("time boolean", body({"event": "x", "time": True}), 6),
    ("time in milliseconds", body({"event": "x", "time": 1700000000123}), 6),
    ("host not a string", body({"event": "x", "host": 5}), 6),
    ("invalid UTF-8", b'{"event": "\xff\xfe"}', 6),
]


@pytest.mark.parametrize(("bad", "code"), [(b, c) for _, b, c in BAD_OBJECTS],
                         ids=[name for name, _, _ in BAD_OBJECTS])
def test_bad_object_gets_invalid_event_number_and_partial_indexing(
        hec: HecDouble, client: httpx.Client, bad: bytes, code: int) -> None:
    """Bad object i → 400, its code, invalid-event-number i; objects before i ARE indexed, i and after not."""
    content = body({"event": "e0"}) + b"\n" + body({"event": "e1"}) + b" " + bad + body({"event": "e3"})
    r = post(client, hec, content)
    assert r.status_code == 400
    assert r.json()["code"] == code
    assert r.json()["invalid-event-number"] == 2
    assert hec.payloads() == ["e0", "e1"]


def test_bad_first_object_indexes_nothing(hec: HecDouble, client: httpx.Client) -> None:
    """A bad object 0 → invalid-event-number 0 and nothing from the batch is indexed."""
    r = post(client, hec, body({"event": None}, {"event": "ok"}))
    assert (r.status_code, r.json()["invalid-event-number"]) == (400, 0)
    assert hec.events() == []


def test_duplicates_are_counted(hec: HecDouble, client: httpx.Client) -> None:
    """Envelopes with the same payload accepted twice count as duplicates (key order does not matter)."""
    post(client, hec, body({"event": "a", "time": 1}, {"event": "b"}))
    post(client, hec, b'{"time":1,"event":"a"}{"event":"c"}')
    assert hec.duplicate_count() == 1
    assert hec.duplicates() == [{"event": "a", "time": 1}]
    assert len(hec.events()) == 4


# ----------------------------------------------------------------------------- indexer acknowledgement


@pytest.fixture
def ack_hec() -> Iterator[HecDouble]:
    with HecDouble(ack=True) as h:
        yield h


def ack_query(client: httpx.Client, hec: HecDouble, ids: list[int],
              channel: str = CHANNEL) -> dict[str, bool]:
    r = client.post(hec.url + f"/services/collector/ack?channel={channel}", headers=AUTH, json={"acks": ids})
    assert r.status_code == 200, r.text
    acks: dict[str, bool] = r.json()["acks"]
    return acks


def test_ack_requires_a_channel(ack_hec: HecDouble, client: httpx.Client) -> None:
    """With useACK, a request without channel → 400 code 10; a non-GUID channel → 400 code 11."""
    r = post(client, ack_hec, body({"event": "x"}))
    assert (r.status_code, r.json()["code"]) == (400, 10)
    r = post(client, ack_hec, body({"event": "x"}), headers={"X-Splunk-Request-Channel": "not-a-guid"})
    assert (r.status_code, r.json()["code"]) == (400, 11)
    r = post(client, ack_hec, body({"event": "x"}), path=EVENT + "?channel=1234")
    assert (r.status_code, r.json()["code"]) == (400, 11)
    assert ack_hec.events() == []


def test_ack_ids_per_channel_true_once_then_forgotten(ack_hec: HecDouble, client: httpx.Client) -> None:
    """ackId counts from 0 per channel; /ack answers true once, then false (Splunk forgets it)."""
    other = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    ids = []
    for chan in (CHANNEL, CHANNEL, other):
        r = post(client, ack_hec, body({"event": chan}), headers={"X-Splunk-Request-Channel": chan})
        assert r.status_code == 200
        ids.append(r.json()["ackId"])
    r = post(client, ack_hec, body({"event": "q"}), path=EVENT + f"?channel={CHANNEL}")
    ids.append(r.json()["ackId"])
    assert ids == [0, 1, 0, 2]
    assert ack_query(client, ack_hec, [0, 1, 7]) == {"0": True, "1": True, "7": False}
    assert ack_query(client, ack_hec, [0, 1, 2]) == {"0": False, "1": False, "2": True}
    assert ack_query(client, ack_hec, [0], channel=other) == {"0": True}


def test_ack_delay(ack_hec: HecDouble, client: httpx.Client) -> None:
    """With set_ack_delay(d) an ack id is false before d seconds have passed and true after."""
    ack_hec.set_ack_delay(0.4)
    r = post(client, ack_hec, body({"event": "x"}), headers={"X-Splunk-Request-Channel": CHANNEL})
    t0 = time.monotonic()
    assert ack_query(client, ack_hec, [0]) == {"0": False}
    wait_for(lambda: ack_query(client, ack_hec, [0]) == {"0": True}, timeout=5, message="ack true")
    assert time.monotonic() - t0 >= 0.3
    assert r.json()["ackId"] == 0


def test_lost_acks_never_become_true_and_events_are_not_indexed(ack_hec: HecDouble,
                                                                client: httpx.Client) -> None:
    """lose_acks(1): that request's ack stays false for ever, its events are not indexed; the next is fine."""
    ack_hec.lose_acks(1)
    h = {"X-Splunk-Request-Channel": CHANNEL}
    assert post(client, ack_hec, body({"event": "lost"}), headers=h).json()["ackId"] == 0
    assert post(client, ack_hec, body({"event": "kept"}), headers=h).json()["ackId"] == 1
    assert ack_query(client, ack_hec, [0, 1]) == {"0": False, "1": True}
    assert ack_query(client, ack_hec, [0]) == {"0": False}
    assert ack_hec.payloads() == ["kept"]


def test_ack_endpoint_validates(ack_hec: HecDouble, client: httpx.Client) -> None:
    """/ack needs a GUID channel and a {"acks":[ints]} body; a gzip header on a plain body is 400."""
    r = client.post(ack_hec.url + "/services/collector/ack", headers=AUTH, json={"acks": [0]})
    assert (r.status_code, r.json()["code"]) == (400, 10)
    url = ack_hec.url + f"/services/collector/ack?channel={CHANNEL}"
    assert client.post(url, headers=AUTH, json={"ids": [0]}).status_code == 400
    assert client.post(url, headers=AUTH, json={"acks": ["0"]}).status_code == 400
    r = client.post(url, headers={**AUTH, "Content-Encoding": "gzip"}, content=b'{"acks":[0]}')
    assert r.status_code == 400
    r = client.post(url, json={"acks": [0]})
    assert (r.status_code, r.json()["code"]) == (401, 2)


def test_ack_disabled_is_code_14(hec: HecDouble, client: httpx.Client) -> None:
    """Polling /ack on a token without useACK → 400 code 14; and no ackId on /event answers."""
    r = post(client, hec, body({"event": "x"}), headers={"X-Splunk-Request-Channel": CHANNEL})
    assert r.json() == {"text": "Success", "code": 0}
    r = client.post(hec.url + f"/services/collector/ack?channel={CHANNEL}", headers=AUTH, json={"acks": [0]})
    assert (r.status_code, r.json()["code"]) == (400, 14)


# ----------------------------------------------------------------------------- fault injection


def test_fail_next_then_recover(hec: HecDouble, client: httpx.Client) -> None:
    """fail_next(2) answers 503 code 9 (with Retry-After when asked) twice, indexes nothing, then serves."""
    hec.fail_next(2, retry_after=1)
    for _ in range(2):
        r = post(client, hec, body({"event": "x"}))
        assert (r.status_code, r.json()["code"], r.headers["Retry-After"]) == (503, 9, "1")
    assert hec.events() == []
    assert post(client, hec, body({"event": "x"})).status_code == 200
    assert hec.statuses() == [503, 503, 200]


def test_fail_next_with_html_body_like_a_load_balancer(hec: HecDouble, client: httpx.Client) -> None:
    """fail_next(1, 429, code=None) answers an HTML page (no HEC JSON), as a proxy in front would."""
    hec.fail_next(1, status=429, code=None, retry_after=2)
    r = post(client, hec, body({"event": "x"}))
    assert (r.status_code, r.headers["Content-Type"], r.headers["Retry-After"]) == (429, "text/html", "2")
    assert b"429 Too Many Requests" in r.content
    assert hec.requests[-1] == (EVENT, 429, None)


def test_fail_for_window(hec: HecDouble, client: httpx.Client) -> None:
    """fail_for(s, 500, 8) fails every event request inside the window and none after it."""
    hec.fail_for(0.3, status=500, code=8)
    r = post(client, hec, body({"event": "x"}))
    assert (r.status_code, r.json()) == (500, {"text": "Internal server error", "code": 8})
    wait_for(lambda: post(client, hec, body({"event": "y"})).status_code == 200, timeout=5,
             message="recovery")
    assert hec.payloads() == ["y"]


def test_random_5xx_is_seeded_and_mixed(client: httpx.Client) -> None:
    """set_random_5xx(p, seed) fails a reproducible share of requests with 500/502(HTML)/503."""
    runs = []
    for _ in range(2):
        with HecDouble() as hec:
            hec.set_random_5xx(0.5, seed=7)
            statuses = [post(client, hec, body({"event": i})).status_code for i in range(40)]
            runs.append(statuses)
            html = [d for d in hec.details if d["status"] == 502]
            assert all(d["code"] is None for d in html)
            assert len(hec.events()) == statuses.count(200)
    assert runs[0] == runs[1]
    assert {500, 502, 503, 200} <= set(runs[0])


def test_delay_indexes_then_answers_late(hec: HecDouble, client: httpx.Client) -> None:
    """set_delay(d): events are indexed at once, the answer comes after d (a client timeout → duplicate)."""
    hec.set_delay(1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post(hec.url + EVENT, content=body({"event": "x"}), headers=AUTH, timeout=0.3)
    assert hec.payloads() == ["x"]
    hec.set_delay(0.2)
    t0 = time.monotonic()
    assert post(client, hec, body({"event": "x"})).status_code == 200
    assert time.monotonic() - t0 >= 0.2
    assert hec.duplicate_count() == 1


@pytest.mark.parametrize("indexed", [True, False])
def test_drop_next_cuts_the_connection(hec: HecDouble, client: httpx.Client, indexed: bool) -> None:
    """drop_next(1) kills the connection mid-response (client error); events indexed only if asked."""
    hec.drop_next(1, indexed=indexed)
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, hec, body({"event": "x"}))
    assert hec.payloads() == (["x"] if indexed else [])
    assert post(client, hec, body({"event": "y"})).status_code == 200


def test_stop_refuses_connections_and_start_returns_on_same_port(hec: HecDouble,
                                                                  client: httpx.Client) -> None:
    """stop(): nothing listens (connect error, even on a kept-alive client); start(): same URL works again."""
    url = hec.url
    assert post(client, hec, body({"event": "a"})).status_code == 200
    hec.stop()
    with pytest.raises(httpx.TransportError):
        post(client, hec, body({"event": "b"}))
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + EVENT, content=body({"event": "b"}), headers=AUTH)
    hec.start()
    assert hec.url == url
    assert post(client, hec, body({"event": "c"})).status_code == 200
    assert hec.payloads() == ["a", "c"]


# ----------------------------------------------------------------------------- TLS and subprocess mode


def test_tls_with_trustme_ca() -> None:
    """tls=True serves HTTPS with a certificate that verifies against hec.ca_file, and only against it."""
    with HecDouble(tls=True) as hec:
        assert hec.url.startswith("https://127.0.0.1:")
        assert hec.ca_file is not None and os.path.exists(hec.ca_file)
        with httpx.Client(verify=ssl.create_default_context(cafile=hec.ca_file)) as c:
            assert post(c, hec, body({"event": "tls"})).status_code == 200
        with httpx.Client() as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            post(c, hec, body({"event": "nope"}))
        assert hec.payloads() == ["tls"]
        ca = hec.ca_file
    assert not os.path.exists(ca)


def test_subprocess_mode(tmp_path: Path) -> None:
    """`python -m tests.doubles.hec_double --port 0 --events-file F` prints its port, logs events,
    stops on TERM."""
    events = tmp_path / "events.ndjson"
    with subprocess.Popen([sys.executable, "-m", "tests.doubles.hec_double", "--port", "0", "--ack",
                           "--events-file", str(events)], stdout=subprocess.PIPE,
                          cwd=Path(__file__).resolve().parents[2]) as proc:
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            r = httpx.post(f"http://127.0.0.1:{port}{EVENT}", content=body({"event": "a"}, {"event": "b"}),
                           headers={**AUTH, "X-Splunk-Request-Channel": CHANNEL})
            assert r.json() == {"text": "Success", "code": 0, "ackId": 0}
            lines = events.read_bytes().splitlines()
            assert [json.loads(x)["event"] for x in lines] == ["a", "b"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
