"""``logpipe logs`` filters: WHEN parsing, level and above, fields by their JSON text, smart-case
grep, and the raw-bytes pre-filter only where JSON cannot have escaped the text."""

from __future__ import annotations

import pytest

from logpipe import _logfilter as lf
from logpipe.errors import UsageError

NOW = 1_796_400_000.0  # 2026-12-04T16:00:00Z


@pytest.mark.parametrize(("text", "epoch"), [
    ("1h", NOW - 3600), ("30m", NOW - 1800), ("2 days ago", NOW - 2 * 86400), ("now", NOW),
    ("today", NOW - NOW % 86400), ("yesterday", NOW - NOW % 86400 - 86400),
    ("2026-12-01", 1_796_083_200.0), ("2026-12-01T10:00:00Z", 1_796_119_200.0),
    ("2026-12-01 10:00:00", 1_796_119_200.0), ("2026-12-01T11:00:00+01:00", 1_796_119_200.0),
])
def test_parse_when(text: str, epoch: float) -> None:
    """Relative, named, date-only and RFC 3339 times (naive = UTC) → epoch seconds."""
    assert lf.parse_when(text, NOW) == epoch


@pytest.mark.parametrize("text", ["last tuesday", "1x", "", "12345"])
def test_parse_when_refuses_with_one_line(text: str) -> None:
    """Anything else is a UsageError that shows examples."""
    with pytest.raises(UsageError, match="not a time"):
        lf.parse_when(text, NOW)


def test_level_fields_instance_and_grep() -> None:
    """--level is that level and above (a record without a level counts as info); KEY=VALUE
    compares the field's JSON text (500 matches 500 and "500"), dotted keys reach nested
    fields; grep is case-insensitive only for an all-lowercase pattern."""
    f = lf.build(level="warn")
    assert [f({"level": v}) for v in ("debug", "info", "warning", "error")] == [False, False, True, True]
    assert not f({}) and lf.build(level="info")({})
    f = lf.build(fields=["status=500", "error.type=KeyError"], instance="1")
    assert f({"status": 500, "error": {"type": "KeyError"}, "instance_id": "1"})
    assert f({"status": "500", "error": {"type": "KeyError"}, "instance_id": 1})
    assert not f({"status": 500, "instance_id": "1"})
    assert lf.build(grep="timeout")({"message": "Upstream TIMEOUT"})
    assert not lf.build(grep="Timeout")({"message": "upstream timeout"})
    with pytest.raises(UsageError):
        lf.build(fields=["novalue"])
    with pytest.raises(UsageError):
        lf.build(grep="(")


def test_prefilter_only_for_text_json_never_escapes() -> None:
    """Plain words get a byte needle (case-folded for smart case); a regex, or text with a
    quote, backslash, slash or <>& (which JSON writers may escape), does not."""
    f = lf.build(grep="disk full")
    assert f.needle == b"disk full" and f.needle_ci
    f = lf.build(grep="Disk full")
    assert f.needle == b"Disk full" and not f.needle_ci
    for pattern in (r"disk\s+full", "a/b", "<html>", 'say "hi"', "a.b"):
        assert lf.build(grep=pattern).needle is None, pattern
    assert lf.build(fields=["request_id=abc123", "n=7"]).needle == b"abc123"
