"""Stopping the Splunk sink is prompt and loses nothing; a wrong URL scheme fails at start;
the exit summary's text and JSON agree (issue 9, parts 5 and 8). Real processes, the HEC double."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests._splunk_helpers import (
    TOKEN,
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
from tests.helpers import LOGPIPE, wait_for

#: the bound issue 9 sets for a stop with HEC unreachable and everything durable
STOP_BOUND = 2.0


def _default_drain_env(state: Path, url: str) -> dict[str, str]:
    """The sink's environment with the default --drain-timeout (the helpers set 20 s)."""
    env = sink_env(state, url)
    env.pop("LOGPIPE_SPLUNK_DRAIN_TIMEOUT")
    return env


def _summary(stderr: bytes) -> dict[str, Any]:
    lines = [d for d in diag_lines(stderr) if d["message"].startswith("summary: ")]
    assert len(lines) == 1, stderr.decode()
    return lines[0]


def _stop_and_time(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    return rc, time.monotonic() - t0


def _seqs(hec: HecDouble) -> list[int]:
    return [e["event"]["seq"] for e in hec.events()]


def test_sigterm_with_hec_down_exits_within_2s_and_the_next_run_delivers(tmp_path: Path) -> None:
    """`logpipe sink splunk` with HEC unreachable and every event spooled: SIGTERM ends it within
    2 s (default --drain-timeout), exit 0, the summary naming what is left in the spool; the next
    run (HEC up, empty stdin) delivers every event exactly once."""
    n = 3000
    port = free_port()
    state = tmp_path / "state"
    env = _default_drain_env(state, f"http://127.0.0.1:{port}")
    proc = spawn_sink(env, stderr_path=tmp_path / "stderr1")
    assert proc.stdin is not None
    proc.stdin.write(ndjson(records(n)))
    proc.stdin.flush()
    wait_for(lambda: count_spooled(state / "spool" / "splunk") >= n, timeout=60, message="all spooled")
    rc, took = _stop_and_time(proc)
    proc.stdin.close()
    stderr = (tmp_path / "stderr1").read_bytes()
    print(f"sink splunk: SIGTERM with HEC down -> exit in {took:.2f}s")
    assert rc == 0, stderr.decode()
    assert took <= STOP_BOUND, f"took {took:.2f}s"
    summary = _summary(stderr)
    assert f"{n} left in spool" in summary["message"]
    assert summary["sinks"]["splunk"]["left_in_spool"] == n
    with HecDouble(token=TOKEN, port=port) as hec:
        res = run_sink(env)
        assert res.returncode == 0, res.stderr.decode()
        assert sorted(_seqs(hec)) == list(range(n))


def test_collect_to_splunk_sigterm_with_hec_down_exits_within_2s(tmp_path: Path) -> None:
    """`logpipe collect FILE --to splunk` with HEC unreachable: once every line is spooled,
    SIGTERM ends it within 2 s, exit 0; a later `--once` run with HEC up delivers every line
    exactly once (the spool's backlog; the checkpoint stops a re-read)."""
    n = 2000
    port = free_port()
    state = tmp_path / "state"
    log = tmp_path / "app.log"
    log.write_bytes(ndjson(records(n, sources=["app"])))
    env = _default_drain_env(state, f"http://127.0.0.1:{port}")
    with open(tmp_path / "stderr1", "wb") as err:
        proc = subprocess.Popen([*LOGPIPE, "collect", str(log), "--to", "splunk"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    wait_for(lambda: count_spooled(state / "spool" / "splunk") >= n, timeout=60, message="all spooled")
    rc, took = _stop_and_time(proc)
    stderr = (tmp_path / "stderr1").read_bytes()
    print(f"collect --to splunk: SIGTERM with HEC down -> exit in {took:.2f}s")
    assert rc == 0, stderr.decode()
    assert took <= STOP_BOUND, f"took {took:.2f}s"
    assert f"{n} left in spool" in _summary(stderr)["message"]
    with HecDouble(token=TOKEN, port=port) as hec:
        res = subprocess.run([*LOGPIPE, "collect", str(log), "--once", "--to", "splunk"], env=env,
                             capture_output=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr.decode()
        assert sorted(_seqs(hec)) == list(range(n))


def test_drain_timeout_bounds_a_stop_while_hec_is_slow(tmp_path: Path) -> None:
    """With HEC answering but slowly (each request 3 s), SIGTERM ends the sink after about
    --drain-timeout (1 s), not when the spool is empty: exit 0, what was not delivered named in
    the summary's text and JSON alike."""
    n = 400
    state = tmp_path / "state"
    with HecDouble(token=TOKEN) as hec:
        env = sink_env(state, hec.url, LOGPIPE_SPLUNK_DRAIN_TIMEOUT="1")
        hec.set_delay(3.0)
        proc = spawn_sink(env, args=["--batch-size", "4K"], stderr_path=tmp_path / "stderr")
        assert proc.stdin is not None
        proc.stdin.write(ndjson(records(n)))
        proc.stdin.flush()
        wait_for(lambda: count_spooled(state / "spool" / "splunk") >= n, timeout=60, message="spooled")
        rc, took = _stop_and_time(proc)
        proc.stdin.close()
    stderr = (tmp_path / "stderr").read_bytes()
    print(f"sink splunk: SIGTERM with a 3 s HEC, --drain-timeout 1 -> exit in {took:.2f}s")
    assert rc == 0, stderr.decode()
    assert took < 1.0 + 2.0, f"took {took:.2f}s"
    summary = _summary(stderr)
    left = summary["sinks"]["splunk"]["left_in_spool"]
    assert left > 0 and f"{left} left in spool" in summary["message"]


@pytest.mark.parametrize("server_tls", [False, True], ids=["https-to-plain", "http-to-tls"])
def test_wrong_scheme_fails_at_start_with_one_line(tmp_path: Path, server_tls: bool) -> None:
    """https:// against a plain-HTTP HEC (and http:// against a TLS one) fails at start with one
    line saying which scheme the server speaks, non-zero, within seconds — not 30 s of retries
    and exit 0."""
    with HecDouble(token=TOKEN, tls=server_tls) as hec:
        wrong = hec.url.replace("https://", "http://") if server_tls else hec.url.replace("http://", "https://")
        env = sink_env(tmp_path / "state", wrong)
        t0 = time.monotonic()
        res = run_sink(env, ndjson(records(3)), timeout=60)
        took = time.monotonic() - t0
    other = [line for line in res.stderr.decode().splitlines() if not line.startswith("{")]
    print(f"wrong scheme ({'http->tls' if server_tls else 'https->plain'}): exit {res.returncode} "
          f"in {took:.2f}s: {other}")
    assert res.returncode != 0
    expected = ("the server speaks TLS (HTTPS); use https://" if server_tls
                else "the server speaks plain HTTP; use http://")
    assert len(other) == 1 and expected in other[0], res.stderr.decode()
    assert took < 10


def test_summary_text_and_json_agree(tmp_path: Path) -> None:
    """The exit summary of `sink splunk` says the same numbers in its text and its JSON (delivered
    means delivered to HEC in both)."""
    n = 1002
    with HecDouble(token=TOKEN) as hec:
        res = run_sink(sink_env(tmp_path / "state", hec.url), ndjson(records(n)))
        assert res.returncode == 0, res.stderr.decode()
        assert len(hec.events()) == n
    summary = _summary(res.stderr)
    counts = summary["sinks"]["splunk"]
    assert counts["delivered"] == counts["spooled"] == n and counts["left_in_spool"] == 0
    assert (f"splunk: {counts['delivered']} delivered, {counts['retried']} retried, "
            f"{counts['quarantined']} quarantined, {counts['spooled']} spooled, "
            f"{counts['left_in_spool']} left in spool") in summary["message"]


def test_two_file_sinks_are_named_apart(tmp_path: Path) -> None:
    """`collect --to file:A --to file:B`: the summary names each file sink by its directory, in
    the text and as separate JSON keys, each with its own count."""
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(orjson.dumps({"message": f"m{i}", "service": "api"}) + b"\n"
                             for i in range(10)))
    a, b = tmp_path / "A", tmp_path / "B"
    res = subprocess.run([*LOGPIPE, "collect", str(log), "--once", "--to", f"file:{a}", "--to",
                          f"file:{b}", "--state-dir", str(tmp_path / "state")],
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode()
    summary = _summary(res.stderr)
    assert set(summary["sinks"]) == {f"file:{a}", f"file:{b}"}
    assert all(c["delivered"] == 10 for c in summary["sinks"].values())
    assert f"file:{a}: 10 records" in summary["message"] and f"file:{b}: 10 records" in summary["message"]
