"""Undoing PM2's log formats: the ``--time`` date prefix and ``log_type: "json"`` chunk records.

Both decoders are pure (bytes in, bytes out, no I/O) and keep a map from decoded offsets back
to raw file offsets, so a checkpoint always stores raw bytes of the file. What PM2 writes
(lib/God/ForkMode.js, PM2 5 to 7, fork mode — how PM2 runs Python):

- ``prefixLogWithDate``: ``data.split('\\n')``, the last piece dropped when there was a newline,
  each remaining piece written as ``dayjs().format(log_date_format) + ': ' + piece + '\\n'``.
  So raw lines and app lines correspond one to one (a chunk without a newline becomes a line
  of its own; the text after a chunk's last newline is lost by PM2 itself). The date is the
  host's **local** time unless the pattern has ``Z``/``ZZ``.
- ``transformLogToJson``: ``JSON.stringify({message: chunk, timestamp, type, process_id,
  app_name}) + '\\n'`` per chunk, ``timestamp`` = ``new Date().toISOString()`` (UTC) or the
  ``log_date_format`` pattern (local). A chunk may hold part of a line or several lines: the
  messages are concatenated back into the app's own byte stream before lines are split.

``feed(raw)`` returns ``[(decoded bytes, time or None), …]``: consecutive runs of lines that
PM2 stamped with the same time, the time as RFC 3339 UTC (``record.format_time``). Only whole
raw lines are consumed; a partial last raw line is held until its newline arrives.
"""

from __future__ import annotations

import bisect
import calendar
import re
import time
from datetime import date

import orjson

from logpipe import record

_MONTHS = {m.lower(): i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}

# dayjs format tokens (https://day.js.org/docs/en/display/format), longest first
_TOKENS = {
    "YYYY": ("Y", r"\d{4}"), "YY": ("y", r"\d{2}"), "MMMM": ("mon", r"[A-Za-z]+"),
    "MMM": ("mon", r"[A-Za-z]{3}"), "MM": ("M", r"\d{2}"), "M": ("M", r"\d{1,2}"),
    "DD": ("D", r"\d{2}"), "D": ("D", r"\d{1,2}"), "dddd": ("", r"[A-Za-z]+"),
    "ddd": ("", r"[A-Za-z]{3}"), "dd": ("", r"[A-Za-z]{2}"), "d": ("", r"\d"),
    "HH": ("H", r"\d{2}"), "H": ("H", r"\d{1,2}"), "hh": ("h", r"\d{2}"), "h": ("h", r"\d{1,2}"),
    "mm": ("m", r"\d{2}"), "m": ("m", r"\d{1,2}"), "ss": ("s", r"\d{2}"), "s": ("s", r"\d{1,2}"),
    "SSS": ("S", r"\d{3}"), "ZZ": ("Z", r"[+-]\d{4}"), "Z": ("Z", r"[+-]\d{2}:\d{2}"),
    "A": ("A", r"AM|PM"), "a": ("A", r"am|pm"), "X": ("X", r"\d+(?:\.\d+)?"), "x": ("x", r"\d+"),
}
_TOKEN_RE = re.compile(r"\[([^\]]*)\]|" + "|".join(sorted(_TOKENS, key=len, reverse=True)))


class DateFormat:
    """A dayjs ``log_date_format`` pattern: matches PM2's prefix and reads its time."""

    def __init__(self, pattern: str) -> None:
        parts: list[str] = []
        self._fields: dict[str, str] = {}
        pos = 0
        for n, m in enumerate(_TOKEN_RE.finditer(pattern)):
            parts.append(re.escape(pattern[pos : m.start()]))
            pos = m.end()
            if m.group(1) is not None:
                parts.append(re.escape(m.group(1)))
                continue
            field, rx = _TOKENS[m.group(0)]
            if field and field not in self._fields.values():
                group = f"g{n}"
                self._fields[group] = field
                parts.append(f"(?P<{group}>{rx})")
            else:
                parts.append(f"(?:{rx})")
        parts.append(re.escape(pattern[pos:]))
        #: the whole prefix PM2 writes: the date, then ": "
        self.prefix = re.compile(("".join(parts) + ": ").encode())
        self._cache: tuple[bytes, str | None] = (b"", None)

    def time_of(self, m: re.Match[bytes]) -> str | None:
        """RFC 3339 UTC time of a matched prefix (None when it does not make a date)."""
        text = m.group(0)
        if text == self._cache[0]:
            return self._cache[1]
        got = {self._fields[g]: v.decode() for g, v in m.groupdict().items() if v is not None}
        try:
            epoch = _epoch(got)
        except (ValueError, OverflowError, KeyError):
            epoch = None
        out = record.format_time(epoch) if epoch is not None else None
        self._cache = (text, out)
        return out


def _epoch(got: dict[str, str]) -> float | None:
    if "X" in got:
        return float(got["X"])
    if "x" in got:
        return int(got["x"]) / 1000
    today = date.today()
    year = int(got["Y"]) if "Y" in got else (2000 + int(got["y"]) if "y" in got else today.year)
    month = _MONTHS[got["mon"][:3].lower()] if "mon" in got else int(got.get("M", today.month))
    day = int(got.get("D", today.day if "M" not in got and "mon" not in got else 1))
    if "H" in got:
        hour = int(got["H"])
    elif "h" in got:
        hour = int(got["h"]) % 12 + (12 if got.get("A", "am").lower() == "pm" else 0)
    else:
        hour = 0
    tm = (year, month, day, hour, int(got.get("m", 0)), int(got.get("s", 0)), 0, 0, -1)
    frac = int(got["S"]) / 1000 if "S" in got else 0.0
    if "Z" in got:
        z = got["Z"].replace(":", "")
        offset = (int(z[1:3]) * 3600 + int(z[3:5]) * 60) * (1 if z[0] == "+" else -1)
        return calendar.timegm(tm) - offset + frac
    return time.mktime(tm) + frac  # PM2 wrote the host's local time


class _OffsetMap:
    """Decoded line ends ↔ raw file offsets, pruned as checkpoints pass them."""

    def __init__(self, start: int) -> None:
        self._dec = [start]
        self._raw = [start]
        self.dec_pos = start
        self.raw_pos = start

    def add(self, dec_end: int, raw_end: int) -> None:
        self._dec.append(dec_end)
        self._raw.append(raw_end)
        self.dec_pos, self.raw_pos = dec_end, raw_end

    def raw_offset(self, decoded: int) -> int:
        """The raw offset from which re-reading yields everything after ``decoded`` (exact at
        line ends; for an offset inside a chunk the chunk's start — re-read, never skipped)."""
        i = bisect.bisect_right(self._dec, decoded) - 1
        if i < 0:
            return self._raw[0]
        if i > 64:
            del self._dec[: i - 1], self._raw[: i - 1]
            i = 1
        return self._raw[i]


class _Decoder:
    """What both PM2 decoders share: the partial raw line held between reads, the offset map
    and the PM2 time of the last line fed (for lines a multiline joiner emits later)."""

    def __init__(self, start: int) -> None:
        self._buf = b""
        self._map = _OffsetMap(start)
        self.last_time: str | None = None

    def raw_offset(self, decoded: int) -> int:
        """See :meth:`_OffsetMap.raw_offset`."""
        return self._map.raw_offset(decoded)

    def feed(self, raw: bytes) -> list[tuple[bytes, str | None]]:
        """Raw bytes → [(decoded bytes, PM2 time)] for the complete raw lines seen so far:
        consecutive lines with the same PM2 time in one piece."""
        lines = self._complete(raw)
        if lines is None:
            return []
        out: list[tuple[bytes, str | None]] = []
        parts: list[bytes] = []
        cur: str | None = None
        piece = self._piece
        dec, rawpos = self._map.dec_pos, self._map.raw_pos
        for line in lines.split(b"\n"):
            body, t = piece(line, parts, dec)
            if parts and t != cur:
                out.append((b"".join(parts), cur))
                parts = []
            cur = t
            parts.append(body)
            dec += len(body)
            rawpos += len(line) + 1
            self._map.add(dec, rawpos)
        if parts:
            out.append((b"".join(parts), cur))
            self.last_time = cur
        return out

    def _piece(self, line: bytes, parts: list[bytes], dec: int) -> tuple[bytes, str | None]:
        """One raw line → (its decoded bytes, newline included; its PM2 time). ``parts`` (the
        piece being built) and ``dec`` (the decoded offset so far) are read, never changed."""
        raise NotImplementedError

    def _complete(self, raw: bytes) -> bytes | None:
        """The complete raw lines (without the last newline) that ``raw`` finishes; the rest is
        held for the next read. None when no line is complete yet."""
        data = self._buf + raw if self._buf else raw
        last = data.rfind(b"\n")
        if last < 0:
            self._buf = data
            return None
        self._buf = data[last + 1 :]
        return data[:last]


class PrefixDecoder(_Decoder):
    """``--time`` / ``log_date_format``: strips ``<date>: `` from each line, yields its time."""

    def __init__(self, date_format: str | None, start: int = 0) -> None:
        super().__init__(start)
        self.fmt = DateFormat(date_format or "YYYY-MM-DDTHH:mm:ss")

    def _piece(self, line: bytes, parts: list[bytes], dec: int) -> tuple[bytes, str | None]:
        m = self.fmt.prefix.match(line)
        if m is None:
            return line + b"\n", None
        return line[m.end():] + b"\n", self.fmt.time_of(m)


class JsonChunkDecoder(_Decoder):
    """``log_type: "json"``: unwraps PM2's chunk records and re-joins their messages."""

    def __init__(self, date_format: str | None, start: int = 0) -> None:
        super().__init__(start)
        self.fmt = DateFormat(date_format) if date_format else None

    def _time(self, ts: object) -> str | None:
        if not isinstance(ts, str):
            return None
        if self.fmt is not None:
            m = self.fmt.prefix.match(ts.encode() + b": ")
            if m:
                return self.fmt.time_of(m)
        return record.normalise_time(ts)  # toISOString(): UTC with Z

    def _piece(self, line: bytes, parts: list[bytes], dec: int) -> tuple[bytes, str | None]:
        # a chunk record's message; a raw line that is not one passes through as a line of its
        # own (after a newline, if the chunks before it left their last line open)
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("message"), str):
                return obj["message"].encode("utf-8", "surrogateescape"), self._time(obj.get("timestamp"))
        if dec and parts and not parts[-1].endswith(b"\n"):
            return b"\n" + line + b"\n", None
        return line + b"\n", None
