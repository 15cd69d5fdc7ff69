"""The Splunk HEC sink against the strict HEC double: nothing lost, nothing leaked.

Real processes (``logpipe sink splunk``) where exit codes, signals and stderr matter; the sink
in-process otherwise. Every HEC here is ``tests/doubles/hec_double.py`` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from logpipe.errors import SinkConfigError, UsageError
from logpipe.pipeline import Batch
from logpipe.sinks import SinkOptions
from logpipe.sinks.splunk import Secret, SplunkSink, parse_endpoint, read_token
from tests._splunk_helpers import (
    TOKEN,
    all_files_text,
    count_spooled,
    diag_lines,
    free_port,
    ndjson,
    records,
    run_sink,
    sink_env,
    spawn_sink,
)
from tests.doubles.hec_double import HecDouble
from tests.helpers import LOGPIPE, until, wait_for


# --- helpers ------------------------------------------------------------------------------------
def make_sink(tmp_path: Path, urls: list[str], **kw: Any) -> SplunkSink:
    """An in-process sink with its spool and quarantine under ``tmp_path`` and short backoff."""
    kw.setdefault("retry_max", 0.3)
    kw.setdefault("drain_timeout", 20.0)
    return SplunkSink(urls, Secret(TOKEN), spool_dir=str(tmp_path / "spool"),
                      quarantine_path=str(tmp_path / "quarantine" / "splunk.ndjson"), **kw)


async def feed(sink: SplunkSink, recs: list[dict[str, Any]], batch: int = 1000) -> None:
    """Write ``recs`` to the sink in batches (each copy is the sink's own) and return once all
    are spooled (their receipts resolved, in order), as the pipeline does before it commits."""
    receipts = []
    for i in range(0, len(recs), batch):
        part = [dict(r) for r in recs[i:i + batch]]
        receipts.append(await sink.write(Batch(part)))
    for receipt in receipts:
        await receipt


def seqs(hec: HecDouble) -> list[int]:
    """The ``seq`` of every event the double indexed, in arrival order."""
    return [e["event"]["seq"] for e in hec.events()]


def assert_exactly_once_in_order(hec: HecDouble, n: int) -> None:
    """Events 0..n-1 each arrived once, every source's in the order written."""
    assert sorted(seqs(hec)) == list(range(n))
    assert_per_source_order(hec.events())


def assert_per_source_order(events: list[dict[str, Any]]) -> None:
    """Each source's events arrived in the order they were written (``n`` = 0, 1, 2, …)."""
    per: dict[str, list[int]] = defaultdict(list)
    for e in events:
        per[e["event"]["source"]].append(e["event"]["n"])
    for src, ns in per.items():
        assert ns == list(range(len(ns))), f"source {src} out of order"


# --- the must-exist scenarios -------------------------------------------------------------------
def test_50k_events_with_503s_and_acks_all_arrive_duplicates_reported(tmp_path: Path) -> None:
    """50,000 events through `logpipe sink splunk --ack` while HEC answers 503 to the first requests
    and one acknowledgement is lost after indexing: every event arrives; the only duplicates are
    the events of the request whose ack was lost (resent after the ack timeout), and the count is
    reported."""
    n = 50_000
    with HecDouble(token=TOKEN, ack=True) as hec:
        hec.fail_next(6, status=503, code=9)
        hec.lose_acks(1, indexed=True)
        env = sink_env(tmp_path / "state", hec.url, LOGPIPE_SPLUNK_ACK_TIMEOUT="2",
                       LOGPIPE_SPLUNK_ACK_INTERVAL="0.2")
        res = run_sink(env, ndjson(records(n)), args=["--ack"], timeout=90)
        assert res.returncode == 0, res.stderr.decode()
        got = seqs(hec)
        assert set(got) == set(range(n))
        dups = hec.duplicate_count()
        per_request = [d["events"] for d in hec.details
                       if d["path"].endswith("/event") and d.get("events")]
        # the lost-ack request was indexed, then resent whole: its events, and nothing else, twice
        assert dups == len(got) - n
        assert 0 < dups <= max(per_request)
        assert dups in per_request
        # every event request and every ack query used one channel GUID
        channels = {d["headers"].get("X-Splunk-Request-Channel") for d in hec.details
                    if d["path"].endswith(("/event", "/ack")) and d["status"] == 200}
        assert len(channels) == 1 and None not in channels
    summary = [d["message"] for d in diag_lines(res.stderr) if d["message"].startswith("summary:")]
    assert len(summary) == 1 and f"splunk: {n} delivered" in summary[0], summary
    print(f"duplicates after a lost ack: {dups} of {n} events; summary: {summary[0]}")


def test_hec_refused_for_a_while_then_up_all_arrive_in_order_per_source(tmp_path: Path) -> None:
    """With nothing listening at the HEC URL, the sink spools and retries; once HEC listens, every
    event arrives exactly once and each source's events arrive in the order they were written."""
    n = 30_000
    port = free_port()
    hec = HecDouble(token=TOKEN, port=port)
    state = tmp_path / "state"
    err = tmp_path / "stderr"
    proc = spawn_sink(sink_env(state, f"http://127.0.0.1:{port}"), stderr_path=err)
    try:
        assert proc.stdin is not None
        proc.stdin.write(ndjson(records(n)))
        proc.stdin.flush()
        wait_for(lambda: count_spooled(state / "spool" / "splunk") >= n, timeout=30,
                 message="all events spooled")
        wait_for(lambda: b"retrying" in err.read_bytes(), message="a refused POST")
        time.sleep(0.3)  # refused for a while longer: several retries in the backoff window
        with hec:
            events = hec.wait_for_events(n, timeout=30)
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
            events = hec.events()
        assert sorted(e["event"]["seq"] for e in events) == list(range(n))
        assert hec.duplicate_count() == 0
        assert_per_source_order(events)
        assert b"unreachable" in err.read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_while_down_then_restart_with_empty_stdin_delivers_the_spool(tmp_path: Path) -> None:
    """SIGTERM while HEC is down ends the sink within its drain bound, exit 0, saying how many
    events stay spooled; a later run with empty stdin delivers exactly those, in order."""
    n = 5000
    port = free_port()
    state = tmp_path / "state"
    env = sink_env(state, f"http://127.0.0.1:{port}", LOGPIPE_SPLUNK_DRAIN_TIMEOUT="1")
    proc = spawn_sink(env, stderr_path=tmp_path / "stderr1")
    assert proc.stdin is not None
    proc.stdin.write(ndjson(records(n)))
    proc.stdin.flush()
    wait_for(lambda: count_spooled(state / "spool" / "splunk") >= n, message="all events spooled")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=20)
    took = time.monotonic() - t0
    proc.stdin.close()
    stderr1 = (tmp_path / "stderr1").read_bytes()
    assert rc == 0, stderr1.decode()
    assert took < 10
    assert f"{n} events left in spool".encode() in stderr1
    with HecDouble(token=TOKEN, port=port) as hec:
        res = run_sink(env)
        assert res.returncode == 0, res.stderr.decode()
        assert_exactly_once_in_order(hec, n)
    assert b"of events from an earlier run are in the spool" in res.stderr
    summary = [d["message"] for d in diag_lines(res.stderr) if d["message"].startswith("summary:")]
    assert f"splunk: {n} delivered" in summary[0] and "0 left in spool" in summary[0]


def test_one_bad_event_mid_batch_is_quarantined_rest_delivered_once(tmp_path: Path, diag: Any) -> None:
    """HEC rejects event 500 of a 1000-event request (code 6): the 500 before it are indexed once,
    the bad one lands in the quarantine file with its index and code (one diagnostic line names
    both), and the 499 after it are resent and indexed once."""
    recs = records(1000, sources=["a"])  # one source: one lane, so one 1000-event request
    with HecDouble(token=TOKEN) as hec:
        hec.reject_event = lambda env: env["event"].get("seq") == 500  # code 6 for event 500
        sink = make_sink(tmp_path, [hec.url])

        async def go() -> None:
            await sink.start()
            await feed(sink, recs, batch=1000)
            await sink.close()

        asyncio.run(go())
        got = seqs(hec)
    assert got == [i for i in range(1000) if i != 500]
    assert len(got) == len(set(got)) == 999
    lines = (tmp_path / "quarantine" / "splunk.ndjson").read_bytes().splitlines()
    assert len(lines) == 1
    q = orjson.loads(lines[0])
    assert (q["event_index"], q["hec_code"], q["http_status"]) == (500, 6, 400)
    assert q["envelope"]["event"]["seq"] == 500
    msgs = [d["message"] for d in diag_lines(diag.getvalue()) if "quarantined" in d["message"]]
    assert len(msgs) == 1 and "event 500" in msgs[0] and "HEC code 6" in msgs[0]
    assert sink.summary() == ("splunk: 999 delivered, 0 retried, 1 quarantined, 1000 spooled, "
                              "0 left in spool")


def test_wrong_token_exits_non_zero_with_one_line_and_never_shows_the_token(tmp_path: Path) -> None:
    """A token HEC refuses (403 code 4): exit non-zero, one clear line saying so, no traceback; the
    token appears nowhere — not in stdout, stderr or any file under the state dir."""
    secret = "deadbeef-0000-4000-8000-c0ffee5ec7e7"
    state = tmp_path / "state"
    with HecDouble(token=TOKEN) as hec:
        res = run_sink(sink_env(state, hec.url, token=secret), ndjson(records(10)))
        assert hec.events() == []
    err = res.stderr.decode()
    assert res.returncode != 0
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "token" in ln]
    assert len(errors) == 1 and errors[0].startswith("logpipe: ") and "invalid" in errors[0], err
    assert "HEC code 4" in errors[0]
    for blob in (res.stdout, res.stderr, all_files_text(state) if state.exists() else b""):
        assert secret.encode() not in blob
    # the same through --token-file, with a trailing newline in the file
    tf = tmp_path / "token"
    tf.write_text(secret + "\n")
    env = sink_env(state, hec.url)
    env.pop("LOGPIPE_SPLUNK_TOKEN")
    with HecDouble(token=TOKEN) as hec:
        env["LOGPIPE_SPLUNK_URL"] = hec.url
        res = run_sink(env, ndjson(records(3)), args=["--token-file", str(tf)])
    assert res.returncode != 0 and b"HEC code 4" in res.stderr
    assert secret.encode() not in res.stdout + res.stderr + all_files_text(state)


def test_three_endpoints_one_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    """Batches spread round robin over three HEC endpoints; one is killed mid-run: every event
    still arrives (at the two survivors), none lost."""
    n = 20_000
    recs = records(n)
    with HecDouble(token=TOKEN) as h1, HecDouble(token=TOKEN) as h2, HecDouble(token=TOKEN) as h3:
        doubles = [h1, h2, h3]
        sink = make_sink(tmp_path, [h.url for h in doubles], batch_bytes=64 << 10, batch_timeout=0.05)

        async def go() -> None:
            await sink.start()
            await feed(sink, recs[: n // 2], batch=500)
            await asyncio.to_thread(wait_for, lambda: all(h.events() for h in doubles), 20, 0.02,
                                    "events at every endpoint")
            h2.stop()  # killed: connections cut, then refused
            await feed(sink, recs[n // 2:], batch=500)
            await sink.close()

        asyncio.run(go())
        arrived = [e["event"]["seq"] for h in doubles for e in h.events()]
        after_kill = len(h1.events()) + len(h3.events())
    assert set(arrived) == set(range(n))
    assert after_kill > n // 2
    assert sink.summary().startswith(f"splunk: {n} delivered")


def test_tls_verification_on_by_default_and_ca_file_works(tmp_path: Path) -> None:
    """Against HTTPS with a private CA: by default the certificate is refused — exit non-zero,
    one clear line naming the problem and the fix, no traceback; with --ca-file every event
    arrives."""
    with HecDouble(token=TOKEN, tls=True) as hec:
        assert hec.ca_file is not None
        env = sink_env(tmp_path / "state", hec.url)
        res = run_sink(env, ndjson(records(5)))
        err = res.stderr.decode()
        assert res.returncode != 0 and "Traceback" not in err
        line = [ln for ln in err.splitlines() if ln.startswith("logpipe: ")]
        assert len(line) == 1 and "TLS certificate" in line[0] and "--ca-file" in line[0], err
        assert hec.events() == []
        res = run_sink(env, ndjson(records(5)), args=["--ca-file", hec.ca_file])
        assert res.returncode == 0, res.stderr.decode()
        assert_exactly_once_in_order(hec, 5)


def test_insecure_skips_verification_with_a_warning(tmp_path: Path, diag: Any) -> None:
    """--insecure delivers to an untrusted certificate and warns that nothing is verified."""
    with HecDouble(token=TOKEN, tls=True) as hec:
        sink = make_sink(tmp_path, [hec.url], insecure=True)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(10))
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, 10)
    assert any("NOT verified" in d["message"] and d["level"] == "warning"
               for d in diag_lines(diag.getvalue()))


def test_collect_to_splunk_end_to_end(tmp_path: Path) -> None:
    """`logpipe collect FILE --once --to splunk` delivers every line of a log file to HEC, with the
    file as the event's source and the file's service as an indexed field."""
    log = tmp_path / "api.log"
    log.write_bytes(b"".join(orjson.dumps({"message": f"line {i}", "seq": i}) + b"\n" for i in range(200)))
    with HecDouble(token=TOKEN) as hec:
        env = sink_env(tmp_path / "state", hec.url)
        res = subprocess.run([*LOGPIPE, "collect", str(log), "--once", "--to", "splunk"], env=env,
                             capture_output=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr.decode()
        events = hec.events()
    assert [e["event"]["seq"] for e in events] == list(range(200))
    assert {e["source"] for e in events} == {str(log)}
    assert {e["fields"]["service"] for e in events} == {"api"}


# --- more behaviour -----------------------------------------------------------------------------
def test_413_splits_the_request_until_it_fits(tmp_path: Path) -> None:
    """A HEC whose max_content_length is below the batch size answers 413; the sink halves the
    request until it fits and every event arrives once, in order."""
    with HecDouble(token=TOKEN, max_content_length=40_000) as hec:
        sink = make_sink(tmp_path, [hec.url], concurrency=1)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(2000))
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, 2000)
        assert 413 in hec.statuses()
        assert all(d["decoded_bytes"] <= 40_000 for d in hec.details if d["status"] == 200
                   and "decoded_bytes" in d)


def test_bad_index_mid_run_stops_keeps_the_spool_and_fails(tmp_path: Path, diag: Any) -> None:
    """An index the token may not write (400 code 7) is a config error: sending stops, one error
    line, every event stays in the spool, and the sink raises SinkConfigError from close; after
    the fix a new sink delivers them all."""
    with HecDouble(token=TOKEN, indexes=["main"]) as hec:
        sink = make_sink(tmp_path, [hec.url], index="nope")

        async def go() -> None:
            await sink.start()
            await feed(sink, records(100))
            await sink.close()

        with pytest.raises(SinkConfigError, match="index is not allowed") as info:
            asyncio.run(go())
        assert "100 events kept in spool" in str(info.value)
        assert hec.events() == []
        errors = [d for d in diag_lines(diag.getvalue()) if d["level"] == "error"]
        assert len(errors) == 1 and "HEC code 7" in errors[0]["message"]
        fixed = make_sink(tmp_path, [hec.url], index="main")  # the index is applied at send time

        async def again() -> None:
            await fixed.start()
            await fixed.close()

        asyncio.run(again())
        assert_exactly_once_in_order(hec, 100)
        assert {e["index"] for e in hec.events()} == {"main"}


def test_random_5xx_and_cut_connections_lose_nothing(tmp_path: Path) -> None:
    """With 30 % of requests failing (500, 502 HTML, 503) and connections cut mid-response,
    every event arrives; duplicates only from the cut responses whose data was indexed."""
    n = 6000
    with HecDouble(token=TOKEN) as hec:
        hec.set_random_5xx(0.3, seed=7)
        hec.drop_next(2, indexed=True)
        sink = make_sink(tmp_path, [hec.url], batch_bytes=32 << 10, batch_timeout=0.05)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(n), batch=300)
            await sink.close()

        asyncio.run(go())
        got = seqs(hec)
        assert set(got) == set(range(n))
        assert hec.duplicate_count() == len(got) - n
    assert sink.resent > 0


def test_token_is_a_secret_and_comes_only_from_env_or_file(tmp_path: Path) -> None:
    """The token shows as [REDACTED] in repr/str/format, cannot be pickled, and is read only from
    LOGPIPE_SPLUNK_TOKEN or --token-file (stripped); errors never contain it."""
    s = Secret("abc-123")
    assert repr(s) == str(s) == f"{s}" == "[REDACTED]" and "abc" not in repr([s])
    assert s.scrub("x abc-123 y") == "x [REDACTED] y"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert read_token(None, {"LOGPIPE_SPLUNK_TOKEN": " tok \n"}).reveal() == "tok"
    with pytest.raises(UsageError, match="LOGPIPE_SPLUNK_TOKEN or pass --token-file"):
        read_token(None, {})
    f = tmp_path / "t"
    f.write_text("  file-token\n")
    assert read_token(str(f), {}).reveal() == "file-token"
    f.write_text("bad token\x07")
    with pytest.raises(UsageError) as info:
        read_token(str(f), {})
    assert "bad token" not in str(info.value)
    with pytest.raises(UsageError, match="no HEC URL"):
        SplunkSink.from_options(SinkOptions(state_dir=str(tmp_path)))


def test_urls_are_normalised_and_bad_ones_refused() -> None:
    """A full collector URL is cut to its base; user info is dropped; non-HTTP URLs are a usage
    error that does not echo user info."""
    assert parse_endpoint("https://splunk:8088/services/collector/event").base == "https://splunk:8088"
    assert parse_endpoint("http://u:secret@h:1/").base == "http://h:1"
    with pytest.raises(UsageError) as info:
        parse_endpoint("ftp://u:secret@h/")
    assert "secret" not in str(info.value)


def test_progress_on_a_tty(tmp_path: Path) -> None:
    """With stderr on a terminal, `logpipe sink splunk` shows a progress line (events/s, spooled,
    delivered) while it runs and ends with the one-line summary."""
    with HecDouble(token=TOKEN) as hec:
        env = sink_env(tmp_path / "state", hec.url)
        master, slave = pty.openpty()
        proc = subprocess.Popen([*LOGPIPE, "sink", "splunk"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        out = b""
        try:
            assert proc.stdin is not None
            proc.stdin.write(ndjson(records(2000)))
            proc.stdin.flush()
            deadline = time.monotonic() + 20
            while b"events/s" not in out and time.monotonic() < deadline:
                if select.select([master], [], [], 0.1)[0]:
                    out += os.read(master, 65536)
            proc.stdin.close()
            while proc.poll() is None or select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        assert b"events/s" in out and b"spooled" in out and b"delivered" in out
        assert b"splunk: 2000 delivered" in out
        assert len(hec.events()) == 2000


if sys.platform != "linux":  # pragma: no cover - pty and /proc assumptions
    pytestmark = pytest.mark.skip("linux only")


def test_token_disabled_mid_run_stops_keeps_data_and_never_shows_the_token(tmp_path: Path,
                                                                           diag: Any) -> None:
    """A token disabled while the sink runs (403 code 1): sending stops, the events stay in the
    spool, close raises SinkConfigError naming the problem — without the token anywhere."""
    with HecDouble(token=TOKEN) as hec:
        sink = make_sink(tmp_path, [hec.url])

        async def go() -> None:
            await sink.start()
            hec.disabled_tokens.add(TOKEN)
            await feed(sink, records(50))
            await sink.close()

        with pytest.raises(SinkConfigError, match="token is disabled") as info:
            asyncio.run(go())
        assert hec.events() == []
    assert "50 events kept in spool" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN.encode() not in diag.getvalue()
    assert TOKEN.encode() not in all_files_text(tmp_path)


def test_acks_are_polled_on_the_endpoint_that_issued_them(tmp_path: Path) -> None:
    """With --ack and three endpoints, every ack id is asked for at the endpoint that issued it:
    all events arrive once, and no endpoint is ever asked about an id it did not issue."""
    n = 6000
    with (HecDouble(token=TOKEN, ack=True) as h1, HecDouble(token=TOKEN, ack=True) as h2,
          HecDouble(token=TOKEN, ack=True) as h3):
        doubles = [h1, h2, h3]
        for h in doubles:
            h.set_ack_delay(0.3)
        sink = make_sink(tmp_path, [h.url for h in doubles], ack=True, ack_interval=0.1,
                         batch_bytes=32 << 10, batch_timeout=0.05)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(n), batch=200)
            await sink.close()

        asyncio.run(go())
        arrived = [e["event"]["seq"] for h in doubles for e in h.events()]
        assert sorted(arrived) == list(range(n))
        for h in doubles:
            issued = sum(1 for d in h.details if d["path"].endswith("/event") and d["status"] == 200)
            asked = {int(k) for d in h.details if d["path"].endswith("/ack") for k in d["acks"]}
            assert issued > 0 and asked == set(range(issued))
    assert sink.summary() == (f"splunk: {n} delivered, 0 retried, 0 quarantined, {n} spooled, "
                              "0 left in spool")


def test_full_spool_applies_back_pressure_then_drains(tmp_path: Path, diag: Any) -> None:
    """HEC down and the spool at its bound: write blocks (input would stop) and says so; once
    HEC is up the spool drains, the blocked write completes and every event arrives once."""
    port = free_port()
    hec = HecDouble(token=TOKEN, port=port)
    sink = make_sink(tmp_path, [f"http://127.0.0.1:{port}"], spool_max=64 << 10)
    recs = records(3000)

    async def go() -> None:
        await sink.start()
        writer = asyncio.ensure_future(feed(sink, recs, batch=100))
        await asyncio.to_thread(wait_for, lambda: b"is full" in diag.getvalue(), 20, 0.02,
                                "the spool-full warning")
        assert not writer.done()
        hec.start()
        await writer
        await sink.close()

    try:
        asyncio.run(go())
        assert_exactly_once_in_order(hec, 3000)
    finally:
        hec.close()


def test_kill_9_while_sending_then_restart_delivers_everything_spooled(tmp_path: Path) -> None:
    """kill -9 while requests are in flight to a slow HEC: a restart with empty stdin delivers
    every spooled event (at least once; duplicates only from chunks sent before the kill)."""
    n = 20_000
    state = tmp_path / "state"
    with HecDouble(token=TOKEN) as hec:
        hec.set_delay(0.2)
        env = sink_env(state, hec.url, LOGPIPE_SPLUNK_BATCH_SIZE="64K")
        proc = spawn_sink(env, stderr_path=tmp_path / "stderr1")
        assert proc.stdin is not None
        proc.stdin.write(ndjson(records(n)))
        proc.stdin.flush()
        wait_for(lambda: count_spooled(state / "spool" / "splunk") >= n, message="all events spooled")
        wait_for(lambda: hec.events(), message="some events indexed")
        proc.kill()
        proc.wait(timeout=10)
        proc.stdin.close()
        before = len(hec.events())
        assert before < n  # the kill came mid-delivery
        hec.set_delay(0)
        res = run_sink(env)
        assert res.returncode == 0, res.stderr.decode()
        got = seqs(hec)
    assert set(got) == set(range(n))
    assert len(got) - n == hec.duplicate_count() <= before


def test_token_disabled_while_stdin_is_idle_exits_promptly(tmp_path: Path) -> None:
    """`logpipe sink splunk` with stdin left open and quiet: once HEC says the token is disabled
    (403 code 1), the process exits by itself within seconds — non-zero, one `logpipe:` line
    naming the problem, the undelivered events kept in the spool — and the token appears in
    none of stdout, stderr or the state dir's files."""
    state = tmp_path / "state"
    err = tmp_path / "stderr"
    with HecDouble(token=TOKEN) as hec:
        proc = spawn_sink(sink_env(state, hec.url, LOGPIPE_SPLUNK_BATCH_TIMEOUT="0.05"),
                          stderr_path=err)
        try:
            assert proc.stdin is not None
            proc.stdin.write(ndjson(records(20)))
            proc.stdin.flush()
            hec.wait_for_events(20)
            hec.disable_token()
            proc.stdin.write(ndjson(records(30, start=20)))
            proc.stdin.flush()  # stdin stays open: only the sink's own report can end the run
            rc = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()  # type: ignore[union-attr]
        assert len(hec.events()) == 20
    stderr = err.read_bytes()
    text = stderr.decode()
    assert rc == 1 and "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("logpipe: ")]
    assert len(lines) == 1 and "token is disabled" in lines[0], text
    assert "30 events kept in spool" in lines[0]
    assert count_spooled(state / "spool" / "splunk") >= 30
    assert TOKEN.encode() not in stderr + all_files_text(state)


def test_run_children_never_inherit_the_token(tmp_path: Path) -> None:
    """`logpipe collect --run NAME=CMD --once --to splunk`: the child dumps its whole environment
    as a log line (as crash handlers do); the line reaches HEC, and neither it nor stdout,
    stderr or the state dir holds the token — the sink takes LOGPIPE_SPLUNK_TOKEN out of the
    environment before any child starts."""
    from tests._collect_helpers import python_cmd

    code = "import json, os; print(json.dumps({'message': 'env dump', 'env': dict(os.environ)}))"
    state = tmp_path / "state"
    with HecDouble(token=TOKEN) as hec:
        env = sink_env(state, hec.url)
        res = subprocess.run([*LOGPIPE, "collect", "--once", "--run", f"dumper={python_cmd(code)}",
                              "--to", "splunk"], env=env, capture_output=True, timeout=60,
                             check=False)
        assert res.returncode == 0, res.stderr.decode()
        events = hec.events()
    dumps = [e for e in events if e["event"]["message"] == "env dump"]
    assert len(dumps) == 1
    child_env = dumps[0]["event"]["env"]
    assert child_env["LOGPIPE_SERVICE"] == "dumper" and "LOGPIPE_SPLUNK_TOKEN" not in child_env
    sent = orjson.dumps(events)
    for blob in (sent, res.stdout, res.stderr, all_files_text(state)):
        assert TOKEN.encode() not in blob


class _EchoingProxy:
    """A real HTTP server on 127.0.0.1 that behaves like a careless proxy in front of HEC: its
    error replies echo the request's Authorization header (the token) — first a 502 HTML page,
    then a 400 code 6 naming the event — and then it accepts everything."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.posts = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply(200, b'{"text":"HEC is healthy","code":17}')

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "")
                if not data:
                    self._reply(400, b'{"text":"No data","code":5}')
                    return
                outer.posts += 1
                # the token starts at character 150 of each reply's text: it straddles the cut
                # at 160 characters, so a cut before scrubbing would keep a 10-character prefix
                if outer.posts == 1:
                    page = f"<html><body>502 Bad Gateway {'x' * 114} request had {auth}</body></html>"
                    self._reply(502, page.encode(), "text/html")
                elif outer.posts == 2:
                    text = f"Invalid data format {'x' * 122} {auth}"
                    self._reply(400, orjson.dumps({"text": text, "code": 6,
                                                   "invalid-event-number": 0}))
                else:
                    self._reply(200, b'{"text":"Success","code":0}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_replies_echoing_the_token_never_carry_it_into_messages_or_the_quarantine(
        tmp_path: Path, diag: Any) -> None:
    """Error replies that echo the Authorization header (a 502 page, then a 400 code 6) are
    retried and quarantined as usual, yet no diagnostic line and no quarantine entry holds the
    token — not even the prefix that a cut at 160 characters would leave."""
    proxy = _EchoingProxy()
    try:
        sink = make_sink(tmp_path, [proxy.url], concurrency=1)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(2, sources=["a"]))
            await sink.close()

        asyncio.run(go())
    finally:
        proxy.close()
    assert proxy.posts == 3  # 502, then 400 for event 0, then event 1 alone
    assert (sink.delivered, sink.quarantined) == (1, 1)
    quarantine = (tmp_path / "quarantine" / "splunk.ndjson").read_bytes()
    assert b"Invalid data format" in quarantine
    retry = [d["message"] for d in diag_lines(diag.getvalue()) if "Bad Gateway" in d["message"]]
    assert len(retry) == 1 and "[REDACTED]" in retry[0]
    assert orjson.loads(quarantine)["hec_text"].endswith("Splunk [REDACTED]")
    everything = diag.getvalue() + all_files_text(tmp_path)
    assert TOKEN[:8].encode() not in everything


def test_unwritable_quarantine_stops_the_sink_with_one_clear_error(tmp_path: Path) -> None:
    """When a bad event must be quarantined but the quarantine cannot be written (its directory
    is a file), the sink stops with a SinkError naming the cause and the path — instead of a
    sender dying silently — and the events stay in the spool."""
    (tmp_path / "quarantine").write_text("not a directory")
    recs = records(10, sources=["a"])
    with HecDouble(token=TOKEN) as hec:
        hec.reject_event = lambda env: env["event"].get("seq") == 3  # code 6 for event 3
        sink = make_sink(tmp_path, [hec.url], concurrency=1)

        async def go() -> None:
            await sink.start()
            await feed(sink, recs)
            await sink.close()

        with pytest.raises(SinkConfigError) as info:
            asyncio.run(go())
    msg = str(info.value)
    assert "File exists" in msg and str(tmp_path / "quarantine") in msg and "\n" not in msg
    assert "10 events kept in spool" in msg
    assert count_spooled(tmp_path / "spool") == 10


def test_exit_status_is_0_when_a_bad_event_is_quarantined(tmp_path: Path) -> None:
    """`logpipe sink splunk` with one event HEC refuses (code 6): that event is kept durably in
    the quarantine file, so — by SPEC §4's rule (non-zero only when records could not be
    delivered or spooled) — the exit status is 0; the summary counts it as quarantined and an
    error line names the file."""
    recs = records(20, sources=["a"])
    state = tmp_path / "state"
    with HecDouble(token=TOKEN) as hec:
        hec.reject_event = lambda env: env["event"].get("seq") == 7  # code 6 for event 7
        res = run_sink(sink_env(state, hec.url), ndjson(recs))
        got = seqs(hec)
    assert res.returncode == 0, res.stderr.decode()
    assert got == [i for i in range(20) if i != 7]
    msgs = [d["message"] for d in diag_lines(res.stderr)]
    assert any("quarantined in" in m and "HEC code 6" in m for m in msgs)
    assert any(m.startswith("summary: splunk: 19 delivered, 0 retried, 1 quarantined") for m in msgs)
    q = (state / "quarantine" / "splunk.ndjson").read_bytes().splitlines()
    assert [orjson.loads(x)["envelope"]["event"]["seq"] for x in q] == [7]


def test_requests_are_gzipped_kept_alive_and_several_in_flight(tmp_path: Path) -> None:
    """Against a HEC that takes 0.1 s per request, events from 12 sources go out gzipped
    (Content-Encoding: gzip, the double gunzips them), several requests at once (more than
    one connection busy at a time) over kept-alive connections (far fewer connections than
    requests, never more than the sink's pool), one channel GUID throughout, in order per
    source."""
    n = 1200
    sources = [f"/var/log/app-{i}.log" for i in range(12)]
    with HecDouble(token=TOKEN) as hec:
        hec.set_delay(0.1)
        sink = make_sink(tmp_path, [hec.url], batch_bytes=16 << 10, batch_timeout=0.05,
                         concurrency=4)

        async def go() -> None:
            await sink.start()
            await feed(sink, records(n, sources=sources), batch=n)
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, n)
        posts = [d for d in hec.details if d["path"].endswith("/event") and d.get("events")]
    assert posts and all(d["headers"].get("Content-Encoding") == "gzip" for d in posts)
    ports = {d["client_port"] for d in posts}
    assert 2 <= len(ports) <= 4 + 1 + 1  # concurrency + endpoints + 1: the sink's pool size
    assert len(posts) >= 3 * len(ports), (len(posts), len(ports))
    assert len({d["headers"].get("X-Splunk-Request-Channel") for d in posts}) == 1


def test_compression_none_sends_every_body_uncompressed(tmp_path: Path) -> None:
    """--compression none: no request carries Content-Encoding (the double would gunzip it), the
    bodies are the plain envelopes, and every event arrives once, in order per source."""
    n = 600
    with HecDouble(token=TOKEN) as hec:
        sink = make_sink(tmp_path, [hec.url], batch_bytes=16 << 10, batch_timeout=0.05,
                         compression="none")

        async def go() -> None:
            await sink.start()
            await feed(sink, records(n, sources=["a", "b", "c"]), batch=200)
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, n)
        posts = [d for d in hec.details if d["path"].endswith("/event") and d.get("events")]
    assert len(posts) > 1 and not any("Content-Encoding" in d["headers"] for d in posts)


def test_pending_acks_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --ack and a HEC that acknowledges only after 0.3 s, the sink stops taking new
    requests once MAX_PENDING_ACKS (here 2) await their ack: before the first ack comes back
    at most that many requests, plus the parts already queued on the lane, were sent; then
    every event arrives once, in order. (The bound is checked before taking a chunk, so it can
    be passed by the requests of one chunk.)"""
    from logpipe.sinks import splunk
    from logpipe.sinks.splunk import acks

    monkeypatch.setattr(acks, "MAX_PENDING_ACKS", 2)
    n = 300
    with HecDouble(token=TOKEN, ack=True) as hec:
        hec.set_ack_delay(0.3)
        sink = make_sink(tmp_path, [hec.url], ack=True, ack_interval=0.05, concurrency=1,
                         batch_bytes=8 << 10, batch_timeout=0.01)

        async def go() -> None:
            await sink.start()
            # small writes: one spool item (~7 KB) per request, so the bound is not blurred by
            # one big chunk (a chunk taken is sent whole: the bound is checked per chunk)
            await feed(sink, records(n, sources=["a"]), batch=25)
            await sink.close()

        asyncio.run(go())
        assert_exactly_once_in_order(hec, n)
        details = list(hec.details)
    first_true = next(i for i, d in enumerate(details)
                      if d["path"].endswith("/ack") and any(d["acks"].values()))
    sent_before = [d for d in details[:first_true] if d["path"].endswith("/event") and d.get("events")]
    total = [d for d in details if d["path"].endswith("/event") and d.get("events")]
    assert len(sent_before) <= 2 + splunk.LANE_DEPTH, len(sent_before)
    assert len(total) > 2 * (2 + splunk.LANE_DEPTH)  # the bound, not the input, held them back


def test_help_states_the_batching_defaults_the_sink_uses() -> None:
    """`logpipe sink --help` states the Splunk sink's real defaults: request size, batch timeout
    and requests in flight are the module's constants, and there is no --token option."""
    from logpipe.sinks import splunk

    res = subprocess.run([*LOGPIPE, "sink", "--help"], capture_output=True, timeout=30, check=True)
    text = " ".join(res.stdout.decode().split())
    assert f"(default {splunk.DEFAULT_BATCH_BYTES}," in text
    assert f"(default {splunk.DEFAULT_BATCH_TIMEOUT:g})" in text
    assert f"(default {splunk.DEFAULT_CONCURRENCY})" in text
    assert "--token " not in text and "--token-file" in text


def test_stats_report_counts_spool_depth_and_endpoint_health(tmp_path: Path) -> None:
    """SplunkSink.stats() (for `logpipe status`): while HEC refuses connections the events are
    counted as spooled and in the spool, the endpoint is down with its error; once delivered, the
    counts say so, the spool is empty and the endpoint is up with a last success."""
    port = free_port()
    sink = make_sink(tmp_path, [f"http://127.0.0.1:{port}"], batch_timeout=0.05)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        await sink.start()
        await feed(sink, records(30))
        await until(lambda: not sink.stats()["endpoints"][0]["up"], 20, "the endpoint marked down")
        down = sink.stats()
        with HecDouble(token=TOKEN, port=port):
            await until(lambda: sink.delivered >= 30, 20, "delivery once HEC is up")
            up = sink.stats()
            await sink.close()
        return down, up

    down, up = asyncio.run(go())
    assert (down["spooled"], down["delivered"], down["left_in_spool"]) == (30, 0, 30)
    assert down["spool"]["items"] >= 1 and down["spool"]["bytes"] > 0
    assert down["endpoints"][0]["up"] is False and "refused" in down["endpoints"][0]["last_error"]
    assert (up["delivered"], up["left_in_spool"], up["quarantined"]) == (30, 0, 0)
    assert up["spool"]["items"] == 0
    assert up["endpoints"][0]["up"] is True and up["endpoints"][0]["last_success"] is not None
