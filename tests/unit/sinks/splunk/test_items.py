"""The spool item format: one item per source group, carrying its group and event count, read back
as a view (no copy); items an earlier logpipe spooled (format 1) still read."""

from __future__ import annotations

import orjson
import pytest

from logpipe.errors import SinkError
from logpipe.sinks.splunk.items import ITEM_HEAD_SIZE, bundle_of, cut_group, to_item

ENVS = [b'{"source":"a","event":{"n":%d}}' % i for i in range(12)]


def test_an_item_gives_back_its_group_count_and_bundle() -> None:
    """to_item → bundle_of: the group, the number of envelopes (read from the head, not counted:
    12 is a newline byte in big-endian, which must not confuse it) and the envelopes joined by
    newlines, as a memoryview into the item."""
    item = to_item(70_000, ENVS)
    group, events, bundle = bundle_of(item)
    assert (group, events) == (70_000, 12)
    assert isinstance(bundle, memoryview) and bundle.obj is item
    assert bytes(bundle) == b"\n".join(ENVS) and len(item) == ITEM_HEAD_SIZE + len(bundle)


def test_an_item_spooled_by_an_earlier_logpipe_still_reads() -> None:
    """Format 1 (format byte, group, bundle; no count) is read, its events counted by newlines."""
    old = b"\x01" + (3).to_bytes(4, "big") + b"\n".join(ENVS[:5])
    group, events, bundle = bundle_of(old)
    assert (group, events, bytes(bundle)) == (3, 5, b"\n".join(ENVS[:5]))


def test_an_unknown_item_format_is_one_clear_error() -> None:
    """A format this logpipe does not know stops with one line naming the fix, never a misread."""
    with pytest.raises(SinkError, match="unknown item format") as err:
        bundle_of(b"\x07rest")
    assert "\n" not in str(err.value)


def test_an_envelope_with_a_raw_newline_is_re_encoded_so_the_bundle_keeps_its_shape() -> None:
    """A raw newline inside an envelope (JSON whitespace) would split it in two: it is re-encoded
    compactly, and the item still holds exactly its envelopes."""
    pretty = b'{"source": "a",\n "event": {"n": 1}}'
    _, events, bundle = bundle_of(to_item(1, [ENVS[0], pretty]))
    parts = bytes(bundle).split(b"\n")
    assert events == 2 and len(parts) == 2
    assert orjson.loads(parts[1]) == orjson.loads(pretty)


def test_a_group_is_cut_into_items_of_bounded_size_in_order() -> None:
    """cut_group keeps order and makes runs of about ITEM_MAX_BYTES."""
    from logpipe.sinks.splunk.items import ITEM_MAX_BYTES

    big = [b"x" * 1000 for _ in range(600)]
    runs = cut_group(big)
    assert [e for run in runs for e in run] == big
    assert len(runs) > 1 and all(sum(map(len, r)) <= ITEM_MAX_BYTES for r in runs)
