"""Times Splunk indexes sensibly and integers beyond 64 bits, through a real ``logpipe collect``
and ``logpipe sink splunk`` (the strict HEC double checks each envelope's ``time``).

A time that is not a time between 1970 and 2100 — 1e300, NaN, "yesterday", year 99999, 1969,
2150, epoch seconds of 2128 — becomes the read time, the original kept in ``time_original``,
with one rate-limited diagnostic; never an epoch Splunk would reject or file in another
millennium. A JSON integer beyond 64 bits in a line that is re-encoded comes out exactly."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests._collect_helpers import run_collect
from tests._sink_cmd_helpers import split_stderr
from tests._splunk_helpers import TOKEN, sink_env
from tests.doubles.hec_double import HecDouble
from tests.helpers import LOGPIPE

pytestmark = pytest.mark.timeout(120)

#: (message, the line's time as the writer put it); Python's json writes NaN as a bare NaN
BAD_TIMES: list[tuple[str, Any]] = [
    ("huge", 1e300), ("words", "yesterday"), ("far", "99999-01-01T00:00:00Z"),
    ("nan", float("nan")), ("early", "1969-12-31T23:59:59.000000Z"),
    ("late", "2150-01-01T00:00:00.000000Z"), ("epoch-late", 5_000_000_000),
]
GOOD_TIME = "2026-11-23T14:01:51.123456Z"
GOOD_EPOCH = "1795442511.123456"
BIG = 2**70 + 1
NEG = -(2**65) - 3
HUGE = 2**128 + 1


def _write_input(path: Path) -> None:
    lines = [json.dumps({"message": m, "time": t}) for m, t in BAD_TIMES]
    lines.append(json.dumps({"message": "ok", "time": GOOD_TIME}))
    # re-encoded (msg is renamed): the integers must survive exactly
    lines.append(json.dumps({"msg": "big", "n": BIG, "neg": NEG, "nested": {"k": [HUGE]}}))
    # kept byte for byte (nothing to rename)
    lines.append(json.dumps({"message": "big-fast", "n": BIG, "time": GOOD_TIME}))
    path.write_text("\n".join(lines) + "\n")


def _instant(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def _check_records(recs: list[dict[str, Any]], t0: float, t1: float) -> None:
    by = {r["message"]: r for r in recs}
    assert len(recs) == len(BAD_TIMES) + 3
    for msg, original in BAD_TIMES:
        rec = by[msg]
        assert t0 - 1 <= _instant(rec["time"]) <= t1 + 1, (msg, rec["time"])
        assert rec["time_original"] == (original if msg != "nan" else "NaN"), rec
    assert by["ok"]["time"] == GOOD_TIME and "time_original" not in by["ok"]
    assert (by["big"]["n"], by["big"]["neg"], by["big"]["nested"]) == (BIG, NEG, {"k": [HUGE]})
    assert by["big-fast"]["n"] == BIG


def test_collect_replaces_implausible_times_and_keeps_big_integers(tmp_path: Path) -> None:
    """``collect --once``: each implausible time becomes the read time with the original kept;
    the operator gets one diagnostic (rate-limited, not one per line); big integers exact."""
    _write_input(tmp_path / "app.log")
    t0 = time.time()
    status, _, err = run_collect(["--once", str(tmp_path / "app.log")])
    t1 = time.time()
    assert status == 0, err
    # run_collect parses with orjson, which rounds big integers: parse the raw output again
    proc = subprocess.run([*LOGPIPE, "collect", "--once", str(tmp_path / "app.log")],
                          capture_output=True, timeout=60, check=True,
                          env=dict(os.environ, LOGPIPE_STATE_DIR=str(tmp_path / "s2")))
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    _check_records(recs, t0, time.time())
    assert str(BIG).encode() in proc.stdout and str(HUGE).encode() in proc.stdout
    diags, _ = split_stderr(err)
    time_diags = [d for d in diags if "record time" in d["message"]]
    assert len(time_diags) == 1, diags
    assert "between 1970 and 2100" in time_diags[0]["message"]
    assert t1 >= t0


def _envelope_times(hec: HecDouble) -> dict[str, float]:
    return {e["event"]["message"]: float(e["time"]) for e in hec.events()}


def test_collect_into_sink_splunk_sends_plausible_times(tmp_path: Path) -> None:
    """``collect --once | sink splunk``: every envelope's ``time`` is a plausible epoch (the
    double rejects anything else), the read time for the bad ones, the record's own otherwise;
    the events keep ``time_original`` and the exact big integers."""
    _write_input(tmp_path / "app.log")
    with HecDouble(token=TOKEN) as hec:
        env = sink_env(tmp_path / "state", hec.url)
        t0 = time.time()
        collect = subprocess.Popen([*LOGPIPE, "collect", "--once", str(tmp_path / "app.log")],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert collect.stdout is not None
        sink = subprocess.run([*LOGPIPE, "sink", "splunk"], stdin=collect.stdout, env=env,
                              capture_output=True, timeout=90, check=False)
        collect.stdout.close()
        assert collect.wait(timeout=60) == 0
        t1 = time.time()
        assert sink.returncode == 0, sink.stderr
        events = _events_timed_within(hec, t0, t1)
        ok = next(e for e in events if e["event"]["message"] == "ok")
        assert f"{ok['time']}" == GOOD_EPOCH or f"{float(ok['time']):.6f}" == GOOD_EPOCH
        _check_records([e["event"] for e in events], t0, t1)


def _events_timed_within(hec: HecDouble, t0: float, t1: float) -> list[dict[str, Any]]:
    """The HEC double's events once all arrived; each bad-time line's envelope ``time`` is the
    moment it was read (between ``t0`` and ``t1``, a second of slack)."""
    events = hec.wait_for_events(len(BAD_TIMES) + 3)
    times = _envelope_times(hec)
    for msg, _ in BAD_TIMES:
        assert t0 - 1 <= times[msg] <= t1 + 1, (msg, times[msg])
    return events


def test_sink_splunk_alone_applies_the_same_rule(tmp_path: Path) -> None:
    """Raw lines straight into ``sink splunk`` (no collector): the same times and integers."""
    _write_input(tmp_path / "app.log")
    with HecDouble(token=TOKEN) as hec:
        env = sink_env(tmp_path / "state", hec.url)
        t0 = time.time()
        sink = subprocess.run([*LOGPIPE, "sink", "splunk"], input=(tmp_path / "app.log").read_bytes(),
                              env=env, capture_output=True, timeout=90, check=False)
        t1 = time.time()
        assert sink.returncode == 0, sink.stderr
        events = _events_timed_within(hec, t0, t1)
        _check_records([e["event"] for e in events], t0, t1)
