"""How many spool bytes the Splunk sink must keep in reserve for what it has read but not spooled.

What a ``… | logpipe sink splunk`` process holds in memory at any moment (the bounds it is made
of, all real constants of the code):

- its lane in the pipeline (``LANE_BATCHES`` batches / ``LANE_BYTES`` NDJSON bytes, the batch
  being appended included; an empty lane admits one batch over the byte bound, itself at most
  ``BATCH_MAX_BYTES`` plus one record of at most ``RECORD_MAX_BYTES``), and
- the stdin source's chunk in hand (``READ_SIZE`` bytes read from the pipe, plus a partial line
  before it and the line finished during a stop, each at most ``RECORD_MAX_BYTES``).

In the spool each record becomes an HEC envelope: its NDJSON line as ``event`` after a head
(time, host, source, sourcetype) that repeats at most the record's own metadata — so at most
twice the line plus this sink's fixed head — and every item adds its frame. The one figure
that is assumed, not bounded by the code, is the shortest *average* line in the chunk in hand
(``MIN_AVG_LINE``): a megabyte of two-byte lines would expand far past any sensible reserve.
"""

from __future__ import annotations

from logpipe import pipeack, record
from logpipe.pipeline import BATCH_MAX_BYTES, BATCH_MAX_RECORDS
from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk.items import ITEM_HEAD_SIZE
from logpipe.sources.stdin import READ_SIZE
from logpipe.spool import HDR_SIZE

#: the Splunk sink's buffer in the pipeline (tighter than the pipeline's 16 batches / 16 MiB,
#: so that the reserve stays a few percent of the default 1 GiB spool)
LANE_BATCHES = 4
LANE_BYTES = 4 << 20
#: assumed shortest average raw line in the stdin chunk in hand (see the module docstring)
MIN_AVG_LINE = 64
#: bytes a stdin record gains over its raw line when normalised (time, level, source, host keys)
_NORMALISED_KEYS = len(b',"time":"2026-01-01T00:00:00.000000Z","level":"critical","source":"stdin","host":""')
#: bytes of an epoch time in an envelope, at most (``1767225600.123456`` plus slack)
_TIME_TEXT = 24
#: spool item header (format byte, source group, count) and frame
_ITEM_OVERHEAD = ITEM_HEAD_SIZE + HDR_SIZE


def reserve_bytes(encoder: _hec.EnvelopeEncoder, host: str) -> int:
    """The reserve for everything the sink can hold in memory (see the module docstring)."""
    lane_ndjson = LANE_BYTES + BATCH_MAX_BYTES + pipeack.RECORD_MAX_BYTES
    held_raw = READ_SIZE + 2 * pipeack.RECORD_MAX_BYTES
    records = (LANE_BATCHES + 1) * BATCH_MAX_RECORDS + held_raw // MIN_AVG_LINE
    # a probe with a real time (same epoch-text length as any time this century): a probe
    # without one would make the encoder warn that a record is sent with the send time
    probe = {record.TIME: "2026-01-01T00:00:00.000000Z"}
    head = len(encoder.encode(probe, b"{}")) - 2 + _TIME_TEXT + 1  # + newline
    per_record = head + _ITEM_OVERHEAD + _NORMALISED_KEYS + len(host.encode())
    return 2 * (lane_ndjson + held_raw) + records * per_record
