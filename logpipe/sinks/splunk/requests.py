"""From spool items to request bodies: a chunk's items cut into per-lane requests, and a request's
body (``index`` added, gzipped) — with as few copies as the bytes allow.

A bundle stays inside its spool item: a request holds ``memoryview`` slices of the items (no
copy), and its body is made once, either by compressing the slices one after another (no joined
copy at all) or, uncompressed, by one join. A bundle is split back into envelopes only when HEC
refuses a request (413, a bad event) — see :meth:`Request.envelopes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from isal import isal_zlib

from logpipe.sinks.splunk import _hec
from logpipe.sinks.splunk.items import bundle_of

#: isal (ISA-L) level 1: on this sink's bodies 2.4x less CPU than zlib level 1 (0.038 against
#: 0.092 CPU-s per 100k events, `bench/splunk.py --gzip-levels`), 12.6x smaller than the JSON
#: (zlib 1: 14.1x)
GZIP_LEVEL = 1
#: Bodies above this are compressed in a worker thread (ISA-L releases the GIL).
GZIP_THREAD_MIN = 32 << 10
#: --compression values (Vector's splunk_hec_logs ``compression``, Fluent Bit's ``compress``)
COMPRESSIONS = ("gzip", "none")


@dataclass(slots=True, eq=False)
class Request:
    """What one POST carries: ``parts`` — bundles (views into spool items) or, once HEC made it
    split, single envelopes — sent by lane ``lane`` as one body."""

    parts: list[bytes | memoryview]
    events: int
    lane: int

    def envelopes(self) -> list[bytes]:
        """The single envelopes, in order (needed only to split or isolate a bad event)."""
        out: list[bytes] = []
        for part in self.parts:
            out.extend(bytes(part).split(b"\n"))
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the parts (the body less its newlines and ``index``)."""
        return sum(map(len, self.parts))

    def again(self, envelopes: list[bytes]) -> Request:
        """A request of some of this one's envelopes, sent by the same lane."""
        return Request(list(envelopes), len(envelopes), self.lane)


def cut_requests(items: list[bytes], n_lanes: int, limit: int) -> tuple[int, list[Request]]:
    """A chunk's spool items → (events, requests): each item's bundle goes to the lane of its
    source group; a lane's bundles are packed into requests of at most ``limit`` bytes, in order
    (a bundle larger than ``limit`` goes as single envelopes)."""
    by_lane: dict[int, list[tuple[bytes | memoryview, int]]] = {}
    events = 0
    for item in items:
        group, n, view = bundle_of(item)
        by_lane.setdefault(group % n_lanes, []).append((view, n))
        events += n
    requests: list[Request] = []
    for lane, bundles in by_lane.items():
        parts: list[bytes | memoryview] = []
        size = count = 0
        for bundle, n in bundles:
            runs: list[tuple[bytes | memoryview, int]] = [(bundle, n)] if len(bundle) <= limit else [
                (env, 1) for env in bytes(bundle).split(b"\n")]
            for run, m in runs:
                if parts and size + len(run) > limit:
                    requests.append(Request(parts, count, lane))
                    parts, size, count = [], 0, 0
                parts.append(run)
                size += len(run) + 1
                count += m
        requests.append(Request(parts, count, lane))
    return events, requests


def with_index(parts: list[bytes | memoryview], index_prefix: bytes) -> list[bytes | memoryview]:
    """Every envelope of ``parts`` with ``{"index":…,`` in front (``index_prefix``; every envelope
    starts with ``{`` and a raw newline only ever separates envelopes)."""
    if not index_prefix:
        return parts
    nl_prefix = b"\n" + index_prefix
    return [index_prefix + bytes(p[1:]).replace(b"\n{", nl_prefix) for p in parts]


def gzip_parts(parts: list[bytes | memoryview]) -> bytes:
    """The gzip (wbits 31: the container HEC expects) of ``parts`` joined by newlines, compressed
    one part after another: the joined body is never built."""
    c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
    out = [c.compress(parts[0])]
    for part in parts[1:]:
        out.append(c.compress(b"\n"))
        out.append(c.compress(part))
    out.append(c.flush())
    return b"".join(out)


def gzip(body: bytes) -> bytes:
    """gzip ``body`` at GZIP_LEVEL."""
    return gzip_parts([body])


def body_size(parts: list[bytes | memoryview]) -> int:
    """Bytes of the uncompressed body of ``parts``."""
    return sum(map(len, parts)) + len(parts) - 1


def should_gzip(parts: list[bytes | memoryview], compression: str) -> bool:
    """Whether this body goes gzipped (``--compression gzip`` and at least GZIP_MIN_BYTES)."""
    return compression == "gzip" and body_size(parts) >= _hec.GZIP_MIN_BYTES


def plain_body(parts: list[bytes | memoryview]) -> bytes:
    """The uncompressed body: the parts joined by newlines, as :func:`_hec.join_body` joins
    envelopes (Splunk's "Format events for HEC": objects one after another)."""
    return b"\n".join(parts)
