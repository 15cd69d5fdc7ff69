"""From spool items to request bodies: lanes by source group, requests cut at --batch-size in
order, bodies gzipped part by part (no joined copy) that gunzip to the joined envelopes."""

from __future__ import annotations

import gzip

from logpipe.sinks.splunk.items import to_item
from logpipe.sinks.splunk.requests import (
    Request,
    cut_requests,
    gzip_parts,
    plain_body,
    should_gzip,
    with_index,
)


def envs(source: str, n: int, start: int = 0) -> list[bytes]:
    return [b'{"source":"%s","event":{"n":%d}}' % (source.encode(), i) for i in range(start, start + n)]


def test_items_go_to_the_lane_of_their_group_in_order_cut_at_the_limit() -> None:
    """Each item's envelopes go to lane group % lanes; within a lane the requests keep the item
    order and none exceeds the byte limit; the event count is the sum of the items' counts."""
    a1, b1, a2 = envs("a", 30), envs("b", 10), envs("a", 30, 30)
    items = [to_item(0, a1), to_item(1, b1), to_item(2, a2)]  # groups 0 and 2 share lane 0 of 2
    events, requests = cut_requests(items, 2, limit=len(b"\n".join(a1)) + 10)
    assert events == 70
    lane0 = [r for r in requests if r.lane == 0]
    assert [e for r in lane0 for e in r.envelopes()] == a1 + a2
    assert len(lane0) == 2 and all(r.nbytes <= len(b"\n".join(a1)) + 10 for r in lane0)
    assert [r.envelopes() for r in requests if r.lane == 1] == [b1]
    assert sum(r.events for r in requests) == 70


def test_a_bundle_larger_than_a_request_goes_as_single_envelopes() -> None:
    """A bundle over the limit is split into envelopes, packed into requests under the limit."""
    e = envs("a", 40)
    _, requests = cut_requests([to_item(0, e)], 1, limit=300)
    assert [x for r in requests for x in r.envelopes()] == e
    assert all(r.nbytes <= 300 for r in requests) and len(requests) > 1


def test_gzip_of_the_parts_is_the_gzip_of_the_joined_body() -> None:
    """Compressing the parts one after another gives a gzip stream of the newline-joined body."""
    items = [to_item(0, envs("a", 50)), to_item(0, envs("a", 50, 50))]
    _, (request,) = cut_requests(items, 1, limit=1 << 20)
    assert len(request.parts) == 2
    body = plain_body(request.parts)
    assert body == b"\n".join(envs("a", 100))
    assert gzip.decompress(gzip_parts(request.parts)) == body


def test_index_is_added_to_every_envelope() -> None:
    """--index goes in front of every envelope of every part, nothing else changes."""
    parts: list[bytes | memoryview] = [memoryview(b"\n".join(envs("a", 3)))]
    (with_idx,) = with_index(parts, b'{"index":"main",')
    assert bytes(with_idx).split(b"\n") == [b'{"index":"main",' + e[1:] for e in envs("a", 3)]
    assert with_index(parts, b"") is parts


def test_compression_none_or_a_small_body_is_sent_plain() -> None:
    """--compression none never gzips; gzip starts at 1500 bytes of body."""
    small, big = [b"x" * 100], [b"x" * 2000]
    assert not should_gzip(small, "gzip") and should_gzip(big, "gzip")
    assert not should_gzip(big, "none")


def test_a_split_request_stays_on_its_lane() -> None:
    """Envelopes of a request split after a 413 or a bad event go out on the same lane."""
    r = Request([b"\n".join(envs("a", 4))], 4, lane=3)
    half = r.again(r.envelopes()[2:])
    assert (half.lane, half.events, half.envelopes()) == (3, 2, envs("a", 4)[2:])
