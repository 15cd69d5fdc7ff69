"""The Splunk HEC sink: spool to disk, then batch, gzip, POST, retry, quarantine, ack, fail over.

Data path::

    write(batch) ─► envelopes ─► group commit ─► Spool.append (fsync) ─► receipt: SPOOLED
                                             │
              senders (--concurrency) ◄──────┘  chunks by bytes (--batch-size) and time
                 │  gzip, POST /services/collector/event, round robin over healthy --url's
                 ├─ 2xx ─────────► spool.done   (with --ack: after /ack says true)
                 ├─ 5xx/408/429/network ─► same request again, capped backoff + jitter,
                 │                         Retry-After, next healthy endpoint first; no attempt limit
                 ├─ 413 ─► halves;  400 bad event i ─► head delivered, i quarantined, tail resent
                 └─ 401/403/bad index/… ─► stop sending, keep the spool, SinkConfigError

Words for the byte shapes (used in every module here, and nowhere else with another meaning):

- **record**: a logpipe record (a dict), as the pipeline hands it over.
- **envelope**: one record as a HEC event object, JSON bytes ``{"source":…,"time":…,…,"event":{…}}``
  (:class:`_envelope.EnvelopeEncoder`); never holds a raw newline.
- **bundle**: the envelopes of one written batch that share a source group, joined by ``\\n``.
- **spool item**: format byte + 4-byte source group + 4-byte envelope count + bundle
  (:mod:`.items`) — one per bundle of at most 256 KiB; what :class:`~logpipe.spool.Spool` stores.
- **chunk**: spool items handed out together by :meth:`Spool.next_chunk` (from memory while
  the taker keeps up).
- **request**: what one POST carries — its *parts*: a lane's bundles from one chunk (at most
  ``--batch-size``), held as views into the spool items, or single envelopes once a 413 or a bad
  event made it split (:class:`.requests.Request`).
- **body**: a request's bytes on the wire: its parts joined by ``\\n`` (``index`` added), gzipped
  part by part from 1500 bytes (``--compression none``: never).

From envelope to body the bytes are copied twice: the join into a spool item, and the
compression (or, uncompressed, the join) into the body; the spool writes each item with its
frame header by ``writev`` and hands it out of memory, and a request's parts are views into it.

A batch is durable (spooled) before its receipt resolves — ``write`` returns the receipt, and the
pipeline commits the source only when it resolves — so the collector's checkpoint never passes
an event that is not on disk; batches handed over within ``commits.COMMIT_DELAY`` share one
append and one fsync. Delivery continues in the background and across restarts (the spool
replays on open).

Order, per source: each chunk is cut into ``--concurrency`` lanes by the source group; a lane
sends one request at a time and retries it in place (a 413 half, a bad event's tail) before
the next, so the events of one source reach HEC in the order they were written — through
outages and restarts too. Different sources go out in parallel. (Vector and Fluent Bit keep
several requests in flight with no per-source order; a single-source stream, e.g. plain stdin,
therefore has one request in flight here.)

Duplicates: at-least-once. A request whose reply was lost (timeout, cut connection) is sent
again, and with ``--ack`` a request not acknowledged within the ack timeout is sent again
(Splunk's IDXAck guidance says to expect duplicates); a chunk whose lanes were only partly
delivered when the sink stopped is sent again whole on the next run; after a crash, chunks done
since the spool's last cursor write are sent again. Envelopes are spooled with their
host/source/sourcetype; ``--index`` is added when a request is built, so fixing a refused index
(HEC code 7) and restarting delivers what was spooled.

Modules: ``config`` (settings, token), ``sink`` (the Sink: write → spool, drain, summary),
``sender`` (chunks → requests → POST, retry, split), ``acks`` (indexer acknowledgement),
``endpoints`` (URLs, TLS, backoff, transport errors), ``health`` (the start-up check),
``quarantine`` (dead letters), ``items`` (spool item format), ``requests`` (chunk → requests →
body), ``commits`` (group commit, receipts), ``spooling`` (a group's items into the spool,
full disk), ``state`` (what they share),
``_hec`` (the protocol, no I/O).

Tuning through the environment (tests use short values):
``LOGPIPE_SPLUNK_TOKEN`` (the token), ``LOGPIPE_SPLUNK_ACK_TIMEOUT`` (300 s),
``LOGPIPE_SPLUNK_ACK_INTERVAL`` (1 s), ``LOGPIPE_SPLUNK_DRAIN_TIMEOUT`` (= ``--drain-timeout``, 5 s),
``LOGPIPE_SPLUNK_RETRY_MAX`` (backoff cap, 30 s), ``LOGPIPE_SPLUNK_TIMEOUT`` (request, 30 s).
"""

from __future__ import annotations

from logpipe.sinks.splunk.config import (
    DEFAULT_ACK_INTERVAL,
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_TIMEOUT,
    DEFAULT_CONCURRENCY,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_SPOOL_MAX,
    Secret,
    SplunkConfig,
    read_token,
)
from logpipe.sinks.splunk.endpoints import Endpoint, parse_endpoint
from logpipe.sinks.splunk.sender import LANE_DEPTH
from logpipe.sinks.splunk.sink import SplunkSink

__all__ = [
    "DEFAULT_ACK_INTERVAL", "DEFAULT_ACK_TIMEOUT", "DEFAULT_BATCH_BYTES", "DEFAULT_BATCH_TIMEOUT",
    "DEFAULT_CONCURRENCY", "DEFAULT_DRAIN_TIMEOUT", "DEFAULT_SPOOL_MAX", "LANE_DEPTH", "Endpoint", "Secret",
    "SplunkConfig", "SplunkSink", "parse_endpoint", "read_token",
]
