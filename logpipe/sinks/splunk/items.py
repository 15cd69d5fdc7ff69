"""The spool item format: one item per source group of a written batch (see the package words)."""

from __future__ import annotations

import orjson

from logpipe.errors import SinkError

#: envelope bytes per spool item (a source group's share of a batch is cut at this)
ITEM_MAX_BYTES = 256 << 10
#: first byte of a spool item: format 1 = 4-byte source group + bundle (read, no longer written)
ITEM_V1 = b"\x01"
#: format 2 = 4-byte source group + 4-byte count of envelopes + bundle
ITEM_V2 = b"\x02"
#: bytes before the bundle in a format 2 item
ITEM_HEAD_SIZE = 9


def to_item(group: int, envelopes: list[bytes]) -> bytes:
    """Format byte, the group (so the sender need not look into envelopes to pick their lane),
    the number of envelopes (so it need not count them), then the bundle: the envelopes joined
    by newlines (an envelope never holds a raw newline: JSON escapes it inside strings) — one
    join, the head going in with the first envelope. One frame and one CRC per group instead
    of per event keeps the spool's cost per event negligible."""
    head = ITEM_V2 + group.to_bytes(4, "big") + len(envelopes).to_bytes(4, "big")
    item = b"\n".join([head + envelopes[0], *envelopes[1:]])
    if item.count(b"\n") == len(envelopes) - 1:
        return item
    fixed = []
    for env in envelopes:  # a source handed a line with a raw newline (whitespace): re-encode it
        if b"\n" in env:
            try:
                env = orjson.dumps(orjson.loads(env))
            except orjson.JSONDecodeError:
                env = env.replace(b"\n", b" ")  # not JSON: HEC will reject it and we quarantine
        fixed.append(env)
    return head + b"\n".join(fixed)


def bundle_of(item: bytes) -> tuple[int, int, memoryview]:
    """(source group, envelopes, bundle) of a spool item; the bundle is a view into the item, not
    a copy."""
    kind = item[:1]
    if kind == ITEM_V2:
        return (int.from_bytes(item[1:5], "big"), int.from_bytes(item[5:9], "big"),
                memoryview(item)[ITEM_HEAD_SIZE:])
    if kind == ITEM_V1:  # spooled by an earlier logpipe
        return int.from_bytes(item[1:5], "big"), item.count(b"\n", 5) + 1, memoryview(item)[5:]
    raise SinkError(f"splunk: unknown item format {kind!r} in the spool (written by a newer "
                    "logpipe?); move the spool directory aside")


def cut_group(envelopes: list[bytes]) -> list[list[bytes]]:
    """A source group's envelopes in runs of about ITEM_MAX_BYTES (one spool item each), so a
    nearly full disk still takes part of a batch and no item is larger than a request."""
    total = sum(map(len, envelopes))
    if total <= ITEM_MAX_BYTES:
        return [envelopes]
    out: list[list[bytes]] = []
    cur: list[bytes] = []
    size = 0
    for env in envelopes:
        if cur and size + len(env) > ITEM_MAX_BYTES:
            out.append(cur)
            cur, size = [], 0
        cur.append(env)
        size += len(env) + 1
    out.append(cur)
    return out
