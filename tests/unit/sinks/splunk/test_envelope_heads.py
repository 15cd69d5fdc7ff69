"""EnvelopeEncoder on the line path's batches: envelopes built from the heads the normaliser
read are byte for byte those built from the records; the send-time fallback is said."""

from __future__ import annotations

import io
import random

import orjson

from logpipe import record
from logpipe.sinks.splunk._envelope import EnvelopeEncoder

RECEIVED = "2026-12-04T10:00:00.000000Z"
VALUES = [None, "a", "b", "", 7, 7.5, True, ["x"], {"k": 1}, 'with "quote"', "é"]


def _lines(n: int, seed: int) -> list[bytes]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        rec: dict[str, object] = {}
        if r.random() < 0.8:
            rec["time"] = r.choice([f"2026-11-23T14:01:51.{i:06d}Z", f"2026-11-23T14:01:5{i % 10}.123456Z",
                                    "bad", 1700000000])
        if r.random() < 0.8:
            rec["level"] = r.choice(["info", "error", "debug", "WARN", 30])
        for key in ("host", "source", "service", "feature", "instance_id", "pm_id"):
            if r.random() < 0.5:
                rec[key] = r.choice(VALUES)
        rec["message"] = f"m{i}"
        if r.random() < 0.05:
            rec["msg"] = "alias"
        out.append(orjson.dumps(rec))
    return [*out, b"plain text", b"{}", b'{"time":"2026-11-23T14:01:51.000001Z"}']


def test_envelopes_from_heads_equal_envelopes_from_records() -> None:
    """For random lines (canonical or not, every envelope key present or filled in, strings,
    numbers, booleans, lists, objects, empty strings), over several origins and encoder settings,
    encode_grouped of a NormalisedLines gives the same groups and bytes as encode_grouped of its
    record dicts — and builds no dict doing so."""
    lines = _lines(1500, seed=3)
    origins = [{"source": "/x/y.log", "service": "y", "host": "vm"}, {"source": "stdin", "host": "h"},
               {}, {"pm_id": 3, "instance_id": "3", "host": "z"}]
    settings = [{}, {"host": "H"}, {"source": "S", "index": "i"}, {"sourcetype": None}]
    for origin in origins:
        for opts in settings:
            normaliser = record.LineNormaliser(origin)
            for k in range(0, len(lines), 500):
                norm = normaliser.lines(lines[k:k + 500], RECEIVED)
                got = EnvelopeEncoder(**opts).encode_grouped(norm, norm.lines)  # type: ignore[arg-type]
                assert norm._records is None
                want = EnvelopeEncoder(**opts).encode_grouped(norm.records(), norm.lines)  # type: ignore[arg-type]
                assert got == want


def test_send_time_fallback_is_said(diag: io.BytesIO) -> None:
    """A record handed to the encoder with no readable time gets the send time, and a warning
    says so (it is never silent)."""
    env = EnvelopeEncoder().encode({"message": "x"})
    assert orjson.loads(env)["time"] > 1.7e9
    said = [orjson.loads(x) for x in diag.getvalue().splitlines()]
    assert any(d["level"] == "warning" and "time it is sent" in d["message"] for d in said)
