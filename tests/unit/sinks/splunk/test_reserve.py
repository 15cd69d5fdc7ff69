"""The Splunk sink's spool reserve covers, in real spool bytes, everything the sink can hold in
memory at its bounds (sinks/splunk/reserve.py): the lane full, plus stdin's chunk in hand."""

from __future__ import annotations

import io

from logpipe import identity, pipeack, record
from logpipe.pipeline import BATCH_MAX_RECORDS
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk.items import cut_group, to_item
from logpipe.sinks.splunk.reserve import LANE_BATCHES, LANE_BYTES, MIN_AVG_LINE, reserve_bytes
from logpipe.sources._lines import normalised_batches
from logpipe.sources.stdin import READ_SIZE
from logpipe.spool import HDR_SIZE


def _spool_bytes(encoder: _hec.EnvelopeEncoder, lines: list[bytes]) -> tuple[int, int]:
    """(spool bytes, NDJSON bytes) of ``lines`` read from stdin and written by the sink."""
    normalise = record.LineNormaliser({record.SOURCE: "stdin", record.HOST: identity.hostname()})
    spool = ndjson = 0
    for _end, recs, outs in normalised_batches(normalise, lines):
        ndjson += sum(map(len, outs)) + len(outs)
        for g, envs in encoder.encode_grouped(recs, outs).items():
            spool += sum(len(to_item(g, b)) + HDR_SIZE for b in cut_group(envs))
    return spool, ndjson


def _encoder() -> _hec.EnvelopeEncoder:
    return _hec.EnvelopeEncoder(host=None, source=None, sourcetype="_json",
                                default_host=identity.hostname())


def test_reserve_covers_short_lines_at_the_record_bound() -> None:
    """Lines of MIN_AVG_LINE bytes (plain text: normalisation adds the most keys): a lane of
    LANE_BATCHES + 1 full batches plus the chunk in hand fits in the reserve."""
    enc = _encoder()
    line = b"x" * (MIN_AVG_LINE - 1)
    lane, _ = _spool_bytes(enc, [line] * ((LANE_BATCHES + 1) * BATCH_MAX_RECORDS))
    held, _ = _spool_bytes(enc, [line] * ((READ_SIZE + 2 * pipeack.RECORD_MAX_BYTES) // MIN_AVG_LINE))
    assert lane + held <= reserve_bytes(enc, identity.hostname()), (lane, held)


def test_reserve_covers_large_records_whose_metadata_repeats_in_the_envelope() -> None:
    """JSON lines of ~64 KiB whose `source` is most of the line (the envelope repeats it): a
    lane at its byte bound plus an oversize batch and the chunk in hand fits in the reserve."""
    enc = _encoder()
    big = b'{"source":"' + b"s" * (60 << 10) + b'","message":"' + b"m" * (4 << 10) + b'"}'
    count = (LANE_BYTES + (2 << 20) + READ_SIZE + 3 * pipeack.RECORD_MAX_BYTES) // len(big) + 1
    total, ndjson = _spool_bytes(enc, [big] * count)
    assert ndjson >= LANE_BYTES + READ_SIZE
    assert total <= reserve_bytes(enc, identity.hostname()), total


def test_sizing_the_reserve_says_nothing(diag: io.BytesIO) -> None:
    """Sizing the reserve at start-up encodes a probe envelope; it must not make the encoder warn
    that a record without a time is sent with the send time (every `sink splunk` start said so)."""
    enc = _hec.EnvelopeEncoder(host="h")
    assert reserve_bytes(enc, "h") > 0
    assert b"sent with the time it is sent" not in diag.getvalue()
