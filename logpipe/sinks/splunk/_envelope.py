"""HEC ``/event`` envelopes without I/O: a record (+ its NDJSON line) → the envelope bytes, its
source key/group (one in-order request stream per source), and request bodies.

Reference: "Format events for HEC", https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/format-events-for-http-event-collector
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import time as _time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from logpipe import diagnostics, record

#: Indexed fields sent with every event (SPEC §4). HEC ``fields`` must be a flat object whose
#: values are strings (or arrays of strings); a nested value is rejected with code 15.
INDEXED_FIELDS = (record.SERVICE, record.FEATURE, record.INSTANCE_ID, record.LEVEL)


class EnvelopeEncoder:
    """Record (+ its NDJSON line) → one HEC ``/event`` envelope, as bytes.

    Envelope keys are exactly ``time``, ``host``, ``source``, ``sourcetype``, ``index``,
    ``fields``, ``event``: inside a batch, an object with an unknown top-level key is silently
    skipped by Splunk (research/hec.md §3), so nothing else is ever added. Metadata never
    carries over from one object to the next, so every envelope states its own.
    """

    __slots__ = ("_default_host", "_heads", "_host", "_index", "_source", "_sourcetype", "_tcache")

    def __init__(self, *, host: str | None = None, source: str | None = None,
                 sourcetype: str | None = "_json", index: str | None = None,
                 default_host: str = "localhost") -> None:
        self._host = host or None
        self._source = source or None
        self._sourcetype = sourcetype or None
        self._index = index or None
        self._default_host = default_host
        #: "2026-11-23T14:01:51" → b"1795442511." (one datetime parse per second of log time)
        self._tcache: dict[str, bytes] = {}
        #: (host, source, service, feature, instance_id, level) → the envelope bytes between
        #: ``time`` and ``event`` (a handful of distinct values per run)
        self._heads: dict[tuple[Any, ...], tuple[bytes, bytes, int]] = {}

    def epoch_text(self, value: Any) -> bytes:
        """A record's ``time`` → epoch seconds with microseconds, as JSON number text.

        HEC wants ``<sec>.<fraction>`` seconds (Splunk "Format events"); Splunk keeps
        microseconds, so we send exactly six decimals. The canonical RFC 3339 form is converted
        exactly (no float rounding); other forms go through :func:`record.to_epoch`; a record
        without a usable time gets the current time, and a warning says so (at most one per
        10 s, diagnostics' rate limit).
        """
        if record.is_canonical_time(value):
            frac = value[20:26]
            if frac.isdigit():
                prefix = value[:19]
                secs = self._tcache.get(prefix)
                if secs is None:
                    try:
                        n = int(datetime.fromisoformat(prefix).replace(tzinfo=UTC).timestamp())
                    except ValueError:
                        n = -1
                    if n >= 0:
                        if len(self._tcache) > 4096:
                            self._tcache.clear()
                        secs = self._tcache[prefix] = f"{n}.".encode()
                if secs is not None:
                    return secs + frac.encode()
        epoch = record.to_epoch(value) if value is not None else None
        if epoch is None:
            # only a record handed to the sink directly can get here (the line path gives every
            # record a readable time): say so rather than silently re-dating it
            what = "no time" if value is None else f"time {str(value)[:40]!r}"
            diagnostics.warning(f"splunk: a record with {what} is sent with the time it is sent",
                                key="splunk-send-time")
            epoch = _time.time()
        return f"{epoch:.6f}".encode()

    def metadata(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """``source``, ``host``, ``sourcetype``, ``index``, ``fields`` for ``rec`` (what is set).

        ``source`` comes first (the envelope opens with it) so the sender can find an event's
        source without parsing (see :func:`source_key`).
        """
        meta: dict[str, Any] = {}
        source = self._source
        if source is None:
            s = rec.get(record.SOURCE)
            if isinstance(s, str) and s:
                source = s
            else:
                svc = rec.get(record.SERVICE)
                if isinstance(svc, str) and svc:
                    source = svc
        if source is not None:
            meta["source"] = source
        host = self._host
        if host is None:
            h = rec.get(record.HOST)
            host = h if isinstance(h, str) and h else self._default_host
        meta["host"] = host
        if self._sourcetype is not None:
            meta["sourcetype"] = self._sourcetype
        if self._index is not None:
            meta["index"] = self._index
        fields: dict[str, str] = {}
        for key in INDEXED_FIELDS:
            v = rec.get(key)
            if isinstance(v, str):
                if v:
                    fields[key] = v
            elif isinstance(v, int | float) and not isinstance(v, bool):
                fields[key] = str(v)  # HEC indexed fields are strings (code 15 otherwise)
        if fields:
            meta["fields"] = fields
        return meta

    def _head(self, rec: Mapping[str, Any]) -> tuple[bytes, bytes, int]:
        """(``{"source":…,"time":``, ``,"host":…,"event":``, source group) around the time."""
        meta = self.metadata(rec)
        source = meta.pop("source", None)
        if source is None:
            pre, group = b'{"time":', source_group(b"")
        else:
            text = orjson.dumps(source)
            pre, group = b'{"source":' + text + b',"time":', source_group(text[1:-1])
        return pre, b"," + orjson.dumps(meta)[1:-1] + b',"event":', group

    def encode(self, rec: Mapping[str, Any], line: bytes | None = None) -> bytes:
        """One envelope as compact JSON bytes (the record's own NDJSON bytes reused as ``event``)."""
        return self.encode_many([rec], None if line is None else [line])[0]

    def encode_many(self, records: Sequence[Mapping[str, Any]],
                    lines: Sequence[bytes] | None = None) -> list[bytes]:
        """Envelopes for a batch, in order."""
        return self._encode(records, lines, grouped=False)[0]

    def encode_grouped(self, records: Sequence[Mapping[str, Any]],
                       lines: Sequence[bytes] | None = None) -> dict[int, list[bytes]]:
        """Envelopes for a batch grouped by :func:`source_group` of their ``source``, each group
        in record order (what the sink spools: one item per group)."""
        return self._encode(records, lines, grouped=True)

    def _encode(self, records: Sequence[Mapping[str, Any]], lines: Sequence[bytes] | None,
                grouped: bool) -> dict[int, list[bytes]]:
        """Cached metadata around the time, then ``"event":`` and the record's own NDJSON
        line — no per-record dict or JSON encoding (the hot path). Records given as a
        :class:`~logpipe.record.NormalisedLines` (the line path's batches) are read from the
        heads the normaliser found, without building their dicts."""
        if isinstance(records, record.NormalisedLines):
            return self._encode_heads(records, grouped)
        if lines is None:
            lines = [record.dumps(r) for r in records]
        out = _buckets(grouped)
        one = self._one
        for rec, line in zip(records, lines, strict=True):
            env, group = one(rec, line)
            out[group if grouped else 0].append(env)
        return out

    def _one(self, rec: Mapping[str, Any], line: bytes) -> tuple[bytes, int]:
        """One record's envelope and source group."""
        get = rec.get
        t = get("time")
        tb = None
        if record.is_canonical_time(t):
            secs = self._tcache.get(t[:19])
            frac = t[20:26]
            if secs is not None and frac.isdigit():
                tb = secs + frac.encode()
        if tb is None:
            tb = self.epoch_text(t)
        head = self._cached_head((get("host"), get("source"), get("service"), get("feature"),
                                  get("instance_id"), get("level")), rec)
        return b"".join((head[0], tb, head[1], line, b"}")), head[2]

    def _cached_head(self, key: tuple[Any, ...], rec: Mapping[str, Any]) -> tuple[bytes, bytes, int]:
        """The envelope head of ``rec`` whose (host, source, service, feature, instance_id,
        level) is ``key``, from the cache when it is there."""
        heads = self._heads
        try:
            head = heads.get(key)
        except TypeError:  # an unhashable value (a list, a dict)
            head = None
        if head is None:
            head = self._head(rec)
            # Only keys of strings (or None) are cached: 1 == 1.0 == True would otherwise
            # share a slot. A lookup can then only hit with equal strings, never with
            # numbers or booleans (no str equals them), so hits need no type check.
            if all(v is None or isinstance(v, str) for v in key):
                if len(heads) > 4096:
                    heads.clear()
                heads[key] = head
        return head

    def _encode_heads(self, norm: record.NormalisedLines, grouped: bool) -> dict[int, list[bytes]]:
        """Envelopes of a line-path batch: per canonical line, its time and envelope keys as
        the normaliser read them (a key it lacked has the value the normaliser spliced in,
        ``norm.fill``); a line of the general path goes through :meth:`_one` with its dict.
        The time of a canonical line is canonical (checked), so it converts from the cache."""
        fill = norm.fill
        received: str = fill.get(record.TIME) or record.now()
        tcache = self._tcache
        epoch_text = self.epoch_text
        read = _HEAD_FIELDS
        unset = record.UNSET
        # what each distinct tuple of read values (UNSET where the line lacked the key) sends
        local: dict[tuple[Any, ...], tuple[bytes, bytes, int]] = {}
        out = _buckets(grouped)
        for h, line in zip(norm.heads, norm.lines, strict=True):
            if h.__class__ is dict:
                env, group = self._one(h, line)
            else:
                t = h.time  # type: ignore[union-attr]
                if not isinstance(t, str):  # UNSET: the normaliser spliced in the read time
                    t = received
                secs = tcache.get(t[:19])
                tb = secs + t[20:26].encode() if secs is not None else epoch_text(t)
                seen = read(h)
                try:
                    head = local.get(seen)
                except TypeError:  # an unhashable value (a list, an object)
                    head = None
                if head is None:
                    filled = {k: fill.get(k) if v is unset else v
                              for k, v in zip(_HEAD_KEYS, seen, strict=True)}
                    head = self._cached_head(tuple(filled.values()), filled)
                    with contextlib.suppress(TypeError):
                        local[seen] = head
                env = b"".join((head[0], tb, head[1], line, b"}"))
                group = head[2]
            out[group if grouped else 0].append(env)
        return out


def _buckets(grouped: bool) -> defaultdict[int, list[bytes]]:
    """Envelopes by source group (``grouped``), or all under 0 (present even when empty)."""
    out: defaultdict[int, list[bytes]] = defaultdict(list)
    if not grouped:
        out[0] = []
    return out


#: The keys of an envelope head, in the order of the cache key, and a getter of a Head's.
_HEAD_KEYS = (record.HOST, record.SOURCE, record.SERVICE, record.FEATURE, record.INSTANCE_ID,
              record.LEVEL)
_HEAD_FIELDS = operator.attrgetter(*_HEAD_KEYS)


def source_key(envelope: bytes) -> bytes:
    """The raw JSON text of an envelope's ``source`` (b"" when it has none), found without
    parsing: the envelope opens with ``{"source":"…",`` and, since every ``"`` inside a JSON
    string is escaped, the first raw ``","time":`` is where that string ends."""
    if not envelope.startswith(b'{"source":"'):
        return b""
    end = envelope.find(b'","time":', 11)
    return envelope[11:end] if end > 0 else b""


def source_group(source_text: bytes) -> int:
    """A stable 32-bit hash of a source's JSON text (as :func:`source_key` returns it): the
    sink sends one group's events through one lane, in order. Stable across processes
    (blake2b, not ``hash``) because it is stored with spooled events."""
    return int.from_bytes(hashlib.blake2b(source_text, digest_size=4).digest(), "big")


def join_body(items: Iterable[bytes]) -> bytes:
    """Envelopes (or bundles: newline-joined runs of them) → one request body: the JSON objects one
    after another, no array, newlines between them (Splunk "Format events for HEC": a batch is
    objects concatenated; whitespace between them is allowed)."""
    return b"\n".join(items)
