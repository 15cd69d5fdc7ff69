"""record._time: the one canonical-time check, the one RFC 3339 formatter, and every time form
other loggers write (epoch by magnitude, RFC 3339 with any offset, asctime, Go's time.Time)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

from logpipe import record
from logpipe._processors import TimeStamper


@pytest.mark.parametrize(("value", "ok"), [
    ("2026-11-23T14:01:51.123456Z", True),
    ("1970-01-01T00:00:00.000000Z", True),
    ("2100-12-31T23:59:59.999999Z", True),
    ("2026-11-23T14:01:51,123456Z", False),  # a comma: what one of the five old copies let by
    ("2026-11-23 14:01:51.123456Z", False),
    ("2026-13-01T00:00:00.000000Z", False),  # month 13
    ("2026-02-30T00:00:00.000000Z", False),  # no such day
    ("1969-12-31T23:59:59.999999Z", False),  # before 1970
    ("2101-01-01T00:00:00.000000Z", False),  # after 2100
    ("2026-11-23T14:01:51.12345xZ", False),
    ("2026-11-23T14:01:51.\uff11\uff12\uff13\uff14\uff15\uff16Z", False),  # fullwidth digits
    ("2026-11-23T14:01:51.123Z", False),
    (1795442511.123456, False),
    (None, False),
])
def test_is_canonical_time(value: object, ok: bool) -> None:
    """Only SPEC §1's exact form, a real date between 1970 and 2100, is canonical."""
    assert record.is_canonical_time(value) is ok
    assert record.is_canonical_time(value) is ok  # the cached second gives the same answer


@pytest.mark.parametrize(("value", "expected"), [
    (1700000000, "2023-11-14T22:13:20.000000Z"),  # seconds
    (1700000000.5, "2023-11-14T22:13:20.500000Z"),
    (1700000000500, "2023-11-14T22:13:20.500000Z"),  # ms (pino)
    (1700000000500000, "2023-11-14T22:13:20.500000Z"),  # µs
    (1700000000500000000, "2023-11-14T22:13:20.500000Z"),  # ns
    ("1700000000.5", "2023-11-14T22:13:20.500000Z"),
    ("2026-01-02T03:04:05+05:30", "2026-01-01T21:34:05.000000Z"),  # RFC 3339, any offset
    ("2026-01-02T03:04:05.123456789-08:00", "2026-01-02T11:04:05.123456Z"),  # ns fraction
    ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000Z"),
    ("2014-03-10 19:57:38.562264131 -0400 EDT", "2014-03-10T23:57:38.562264Z"),  # Go String()
    ("2014-03-10 19:57:38 +0000 UTC m=+0.000123456", "2014-03-10T19:57:38.000000Z"),
    (0, "1970-01-01T00:00:00.000000Z"),
])
def test_time_forms(value: object, expected: str) -> None:
    """Every form becomes the canonical UTC string of the same instant."""
    assert record.normalise_time(value) == expected


@pytest.mark.parametrize("value", [
    1e300, math.nan, math.inf, -1, 5_000_000_000, "yesterday", "99999-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z", "2150-01-01T00:00:00Z", "", True, [1], "2014-03-10 19:57:38 EDT",
])
def test_implausible_or_unreadable_times_are_not_times(value: object) -> None:
    """Outside 1970-2100, not finite or not a time: ``None`` (the caller uses the read time)."""
    assert record.to_epoch(value) is None
    assert record.normalise_time(value) is None


@pytest.fixture
def utc_plus_0530(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC+05:30 for the test (POSIX TZ, no tzdata)."""
    monkeypatch.setenv("TZ", "XST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_are_utc_except_local_time_keys(utc_plus_0530: None) -> None:
    """python-json-logger's asctime is the host's local time; other naive times are UTC."""
    assert record.normalise_time("2026-12-01 13:40:15,173", naive_local=True) == \
        "2026-12-01T08:10:15.173000Z"
    assert record.normalise_time("2026-12-01 13:40:15,173") == "2026-12-01T13:40:15.173000Z"
    rec = record.normalise({"asctime": "2026-12-01 13:40:15,173", "message": "m"})
    assert rec == {"time": "2026-12-01T08:10:15.173000Z", "message": "m"}


def test_one_formatter() -> None:
    """format_time, now() and the logger's TimeStamper are one formatter: same text, rounding
    to the microsecond (carrying into the next second)."""
    stamper = TimeStamper()
    for epoch in (0.0, 1700000000.1234564, 1700000000.9999996, 1795442511.123456):
        assert stamper.format(epoch) == record.format_time(epoch)
        assert record.is_canonical_time(record.format_time(epoch))
    assert record.format_time(1700000000.9999996) == "2023-11-14T22:13:21.000000Z"
    before = time.time()
    now = record.now()
    assert before - 1 <= record.to_epoch(now) <= time.time() + 1  # type: ignore[operator]
