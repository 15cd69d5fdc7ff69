"""The line path's normaliser: raw lines from one origin → NDJSON lines (and, on demand,
record dicts), fast. A canonical line (:mod:`._canonical`) keeps its bytes and builds no dict;
every other line takes the general path (one ``orjson.loads``, the alias table, the
defaults)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import orjson

from logpipe.record import (
    _LEVEL_SET,
    _NEEDS_WORK,
    _PLAIN_SHAPES,
    LEVEL,
    MESSAGE,
    TIME,
    decode_text,
    dumps,
    is_canonical_time,
    is_own,
    normalise,
    parse_line,
)
from logpipe.record._canonical import UNSET, NormalisedLines, head_decoder, heads_of
from logpipe.record._rules import parse_plain
from logpipe.record._time import _SECONDS


class LineNormaliser:
    """Turns raw lines from one origin into (record, NDJSON bytes) pairs, fast.

    ``defaults`` are the keys the origin knows (``source``, ``service``, ``instance_id``,
    ``host``, …); ``plain_level`` is the level of plain-text lines (``error`` for stderr). The
    receipt time is passed per call (one clock read per chunk, not per line).

    Fast path: a line that is a JSON object needing no renames keeps its own bytes; the missing
    keys are spliced in before the closing brace from fragments encoded once, so the line is
    parsed once and never re-serialised. ``batch()`` does a whole chunk in one call.
    """

    __slots__ = (
        "_backoff",
        "_cooldown",
        "_decode",
        "_defaults",
        "_dicts",
        "_fill_keys",
        "_fragments",
        "_missing",
        "_plain_level",
        "_present",
    )

    def __init__(self, defaults: Mapping[str, Any], plain_level: str = "info") -> None:
        self._defaults = dict(defaults)
        self._plain_level = plain_level
        # (key, value, b'"key":value') for each default, encoded once
        self._fragments = tuple(
            (k, v, orjson.dumps({k: v}, default=repr)[1:-1]) for k, v in self._defaults.items()
        )
        dec = head_decoder(_NEEDS_WORK, self._defaults)
        self._decode = None if dec is None else dec.decode
        # the canonical check reads (level, then each default's field) in one attrgetter call;
        # the bits of the keys missing are cached per distinct tuple of what it read
        names = ["level"] + [_field_name(dec, k) for k in self._defaults] if dec else ["level"]
        self._present = operator.attrgetter(*names) if len(names) > 1 else None
        self._missing: dict[tuple[Any, ...], int] = {}
        self._fill_keys = tuple(self._defaults)
        #: batches left to normalise without the canonical check (most lines failed it lately),
        #: and how many the next such pause lasts (doubling while the check keeps failing)
        self._cooldown = 0
        self._backoff = 8
        #: batches left to normalise into dicts (a sink read the records of a recent batch)
        self._dicts = 0

    @property
    def defaults(self) -> dict[str, Any]:
        """The keys this normaliser fills in (a copy)."""
        return dict(self._defaults)

    def __call__(self, line: bytes, received: str) -> tuple[dict[str, Any], bytes] | None:
        """Normalise one line (without its newline). ``None`` for a line to drop (empty, or one
        of logpipe's own diagnostics)."""
        recs, outs = self._general([line], received)
        if not recs:
            return None
        return recs[0], outs[0]

    def batch(self, lines: list[bytes], received: str) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Normalise many lines (without newlines); dropped lines (blank, logpipe's own
        diagnostics) are left out of both lists. The records are dicts, built while parsing
        (see :meth:`lines` for the batch kept as bytes)."""
        return self._general(lines, received)

    def lines(self, lines: list[bytes], received: str) -> NormalisedLines:
        """Normalise many lines (without newlines) into NDJSON lines, building no dict for a
        canonical line (see :mod:`._canonical`): its bytes are kept, the missing defaults
        spliced in. Dropped lines (blank, logpipe's own diagnostics) are left out.

        When a sink reads the records of such a batch (a console or file sink wants dicts), the
        next DICTS_FOR batches of this origin are parsed into dicts directly: one parse per
        line, as before the check existed, rather than a check and then a parse.

        When most lines of a batch fail the canonical check (another logger's shape, plain
        text), the next batches of this origin skip it for a while (16 batches, doubling up to
        1,024 while it keeps failing), so such input costs what it cost before the check
        existed.

        (Longer than 60 lines on purpose: the per-line loop is the collector's hot path, and a
        helper call per line costs ≈ 80 ns, ≈ 6 % of it.)"""
        decode = self._decode
        if decode is None or self._cooldown or self._dicts:
            self._cooldown = max(0, self._cooldown - 1)
            self._dicts = max(0, self._dicts - 1)
            recs, general = self._general(lines, received)
            return NormalisedLines(general, recs, self._fill(received))  # type: ignore[arg-type]
        # the first lines first: when most of them fail, the batch goes to the general path
        # without paying a failed decode for each of its other lines
        heads: list[Any] = heads_of(decode, lines[:_PROBE])
        if heads.count(None) * 4 > len(heads):
            self._pause()
            recs, general = self._general(lines, received)
            return NormalisedLines(general, recs, self._fill(received))  # type: ignore[arg-type]
        if len(lines) > _PROBE:
            heads += heads_of(decode, lines[_PROBE:])
        outs: list[bytes] = []
        add = outs.append
        rest: list[int] = []  # positions of the lines for the general path
        present = self._present
        missing_of = self._missing
        canonical = is_canonical_time
        seconds = _SECONDS
        time_bit = 1 << len(self._fragments)
        tails: dict[int, bytes] = {}
        for line, h in zip(lines, heads, strict=True):
            if h is not None and line[-1] == 125 and line[0] == 123:
                ascii_ = line.isascii()
                t = h.time
                if t is UNSET:
                    missing = time_bit
                # is_canonical_time(t), its common case spelled inline for an ASCII line (t is a
                # str: the decoder checked); every other case asks the function itself
                elif (ascii_ and t[:20] in seconds and len(t) == 27 and t[26] == "Z"
                      and t[20:26].isdigit()) or canonical(t):
                    missing = 0
                else:
                    missing = -1
                if missing >= 0 and (ascii_ or _is_utf8(line)):
                    seen = present(h) if present is not None else (h.level,)
                    try:
                        m = missing_of.get(seen)
                    except TypeError:  # an unhashable value (a list, an object)
                        m = None
                    if m is None:
                        m = self._missing_bits(seen)
                    missing |= m
                    if not missing:
                        add(line)
                        continue
                    tail = tails.get(missing)
                    if tail is None:
                        tail = tails[missing] = self._tail(missing, received)
                    # an empty object (no key, so no quote) takes the keys alone
                    add(line[:-1] + tail if line[1] == 34 or line.find(b'"') > 0 else b"{" + tail[1:])
                    continue
            rest.append(len(outs))  # its position: every line before it added one line
            add(line)
        if rest:
            if len(rest) * 4 > len(lines):
                self._pause()
            else:
                self._backoff = 8
            self._general_at(rest, outs, heads, received)
        else:
            self._backoff = 8
        return NormalisedLines(outs, heads, self._fill(received), self._wants_dicts)

    def _wants_dicts(self) -> None:
        """A sink read the records of a batch kept as bytes (console, file): build the next
        batches' dicts directly (the general path parses each line once, as such a sink needs),
        and try keeping bytes again after DICTS_FOR batches."""
        self._dicts = DICTS_FOR

    def _pause(self) -> None:
        """Most lines failed the check: skip it for the next batches, longer each time in a
        row (16, 32 … 1,024 batches)."""
        self._backoff = min(1024, self._backoff * 2)
        self._cooldown = self._backoff

    def _missing_bits(self, seen: tuple[Any, ...]) -> int:
        """The missing-key bits for what the canonical check read (level, each default's
        value or UNSET), cached when hashable."""
        bits = 0
        for i, v in enumerate(seen[1:]):
            if v is UNSET:
                bits |= 1 << i
        if seen[0] is UNSET:
            bits |= 1 << (len(self._fragments) + 1)
        try:
            if len(self._missing) > 4096:
                self._missing.clear()
            self._missing[seen] = bits
        except TypeError:
            pass
        return bits

    def _general_at(self, rest: list[int], outs: list[bytes], kept: list[Any],
                    received: str) -> None:
        """Replace the entries at positions ``rest`` (raw lines) by what the general path makes
        of them, dropping the lines it drops (in place, order kept)."""
        recs, lines = self._general([outs[i] for i in rest], received, keep_drops=True)
        drop = False
        for i, rec, line in zip(rest, recs, lines, strict=True):
            if rec is None:
                drop = True
            outs[i] = line
            kept[i] = rec
        if drop:
            keep = [i for i, rec in enumerate(kept) if rec is not None]
            outs[:] = [outs[i] for i in keep]
            kept[:] = [kept[i] for i in keep]

    def _fill(self, received: str) -> dict[str, Any]:
        fill = dict(self._defaults)
        fill[TIME] = received
        fill[LEVEL] = "info"
        return fill

    def _general(self, lines: list[bytes], received: str, keep_drops: bool = False,
                 ) -> tuple[list[dict[str, Any]], list[bytes]]:
        """The general path (every line parsed into a dict); with ``keep_drops`` a dropped line
        leaves ``None`` in both lists instead of nothing. (main's ``batch`` loop, unchanged:
        one loop per batch on purpose, the per-line calls it avoids cost more than its length.)"""
        recs: list[dict[str, Any]] = []
        outs: list[bytes] = []
        add_rec = recs.append
        add_out = outs.append
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        needs_work = _NEEDS_WORK
        levels = _LEVEL_SET
        canonical = is_canonical_time
        fragments = self._fragments
        n_frag = len(fragments)
        bits = [(k, v, 1 << i) for i, (k, v, _) in enumerate(fragments)]
        time_bit = 1 << n_frag
        level_bit = time_bit << 1
        # the bytes spliced before the closing brace, per set of missing keys (bit i: default
        # i; then time, level), built once per batch (the read time is the batch's)
        tails: dict[int, bytes] = {}
        for line in lines:
            if line and line[0] == 123 and line[-1] == 125:  # b"{" ... b"}"
                try:
                    obj = loads(line)
                except decode_error:
                    obj = None
                # (logpipe's own mark is in needs_work: such lines take the slow path)
                if type(obj) is dict and needs_work.isdisjoint(obj):
                    t = obj.get(TIME)
                    lv = obj.get(LEVEL)
                    if (t is None or canonical(t)) and (
                            lv is None or (type(lv) is str and lv in levels)):
                        missing = 0
                        for k, v, bit in bits:
                            if k not in obj:
                                obj[k] = v
                                missing |= bit
                        if t is None:
                            obj[TIME] = received
                            missing |= time_bit
                        if lv is None:
                            obj[LEVEL] = "info"
                            missing |= level_bit
                        add_rec(obj)
                        if not missing:
                            add_out(line)
                            continue
                        tail = tails.get(missing)
                        if tail is None:
                            tail = tails[missing] = self._tail(missing, received)
                        if len(obj) == missing.bit_count():  # the line was an empty object
                            add_out(b"{" + tail[1:])
                        else:
                            add_out(line[:-1] + tail)
                        continue
            res = self._slow(line, received)
            if res is not None:
                add_rec(res[0])
                add_out(res[1])
            elif keep_drops:
                add_rec(None)  # type: ignore[arg-type]
                add_out(None)  # type: ignore[arg-type]
        return recs, outs

    def _tail(self, missing: int, received: str) -> bytes:
        """``,"key":value,…}`` for the keys whose bits are set in ``missing``."""
        parts = [frag for i, (_, _, frag) in enumerate(self._fragments) if missing >> i & 1]
        n = len(self._fragments)
        if missing >> n & 1:
            parts.append(b'"time":"' + received.encode() + b'"')
        if missing >> (n + 1) & 1:
            parts.append(b'"level":"info"')
        return b"," + b",".join(parts) + b"}"

    def _slow(self, line: bytes, received: str) -> tuple[dict[str, Any], bytes] | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return None
        rec = parse_line(line)
        if is_own(rec):
            return None
        defaults = dict(self._defaults)
        defaults.setdefault(TIME, received)
        # a plain-text line takes the stream's level (error for stderr); a JSON object without
        # a level is info
        text = rec.get(MESSAGE)
        if len(rec) == 1 and text.__class__ is str and (line[0] != 123 or text == decode_text(line)):
            if text.startswith(_PLAIN_SHAPES) or "\n" in text:
                parse_plain(rec, text)  # stdlib's LEVEL:logger:message, a joined traceback, Node
            defaults.setdefault(LEVEL, self._plain_level)
        else:
            defaults.setdefault(LEVEL, "info")
        normalise(rec, defaults)
        return rec, dumps(rec)


#: batches normalised into dicts after a sink read the records of a batch kept as bytes
DICTS_FOR = 256

#: lines of a batch checked before the rest (most failing: the batch takes the general path)
_PROBE = 16


def _field_name(decoder: Any, key: str) -> str:
    """The attribute of ``decoder``'s Struct that holds the JSON key ``key``."""
    struct = decoder.type
    name: str = struct.__struct_fields__[struct.__struct_encode_fields__.index(key)]
    return name


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode()
    except UnicodeDecodeError:
        return False
    return True
