"""The canonical-line check: which JSON lines already have SPEC §1's shape, told without building
a dict per line, and the few fields a sink's envelope needs from them (a :class:`Head`).

A line is *canonical* when it is one JSON object (valid JSON and valid UTF-8, ``{`` first and
``}`` last byte), its ``time`` (if any) is a canonical time string, its ``level`` (if any) one
of LEVELS, and it carries none of the keys the alias table renames (``msg``, ``ts``,
``hostname`` …, and logpipe's own diagnostic mark). Such a line keeps its bytes: the
normaliser only splices in the keys it lacks. Everything else takes the normaliser's general
path, whose behaviour this module does not change.

How: ``msgspec`` decodes each line into a small Struct that names only those keys. Unknown
keys are validated and skipped without creating any object; each alias key is typed as
``UnsetType``, so its mere presence fails validation, which sends the line to the general
path. Measured (bench/RESULTS.md, "#11 hot path"): 0.3-0.5 µs per ~230-byte line against
0.9-1.0 µs for ``orjson.loads`` + the key-set check it replaces.

Differences from a full ``orjson.loads`` of the same line, all of them valid JSON passed on
as written: integers beyond 64 bits and numbers beyond the float range in keys the check does
not read are kept as the writer wrote them (the general path wrote them exactly, or as
``null``). Lines with a lone surrogate escape or invalid UTF-8 take the general path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import msgspec
import orjson
from msgspec import UNSET, UnsetType

__all__ = ["ENVELOPE_KEYS", "UNSET", "Head", "NormalisedLines", "head_decoder", "heads_of"]

#: The keys a Head holds values of (what an HEC envelope needs), in the order the logger writes.
ENVELOPE_KEYS = ("host", "source", "service", "feature", "instance_id")

_Level = Literal["debug", "info", "warning", "error", "critical"]


class Head(msgspec.Struct, gc=False):
    """What the canonical check read from a line: its time and level (``UNSET`` when absent)
    and the envelope's keys (``UNSET`` when absent: the normaliser filled them in). Decoders
    for a given set of default keys are subclasses with one field per extra key."""

    time: str | UnsetType = UNSET
    level: _Level | UnsetType = UNSET
    host: Any = UNSET
    source: Any = UNSET
    service: Any = UNSET
    feature: Any = UNSET
    instance_id: Any = UNSET


_DECODERS: dict[tuple[frozenset[str], frozenset[str]], msgspec.json.Decoder[Any] | None] = {}


def head_decoder(markers: Iterable[str], defaults: Iterable[str]) -> msgspec.json.Decoder[Any] | None:
    """A decoder of lines into Heads that fails on any key of ``markers`` (the keys that need
    the general path) and records the presence of each key of ``defaults``. ``None`` when the
    shapes collide (a default named like a marker, ``time`` or ``level``): no fast check."""
    key = (frozenset(markers), frozenset(defaults))
    if key in _DECODERS:
        return _DECODERS[key]
    own = {f for f in Head.__struct_fields__}
    extra = sorted(key[1] - own)
    dec: msgspec.json.Decoder[Any] | None = None
    if not key[1] & (key[0] | {"time", "level"}):
        fields: list[Any] = [(f"_d{i}", Any, msgspec.field(default=UNSET, name=k))
                             for i, k in enumerate(extra)]
        fields += [(f"_m{i}", UnsetType, msgspec.field(default=UNSET, name=k))
                   for i, k in enumerate(sorted(key[0]))]
        struct = msgspec.defstruct("HeadOf", fields, bases=(Head,), gc=False)
        dec = msgspec.json.Decoder(struct)
    _DECODERS[key] = dec
    return dec


#: what a line that is not canonical makes the decoder raise (invalid UTF-8 in a string it reads
#: is a UnicodeDecodeError; all are ValueErrors)
_FAIL = (ValueError, RecursionError)


def heads_of(decode: Any, lines: Sequence[bytes]) -> list[Head | None]:
    """``decode`` (a :func:`head_decoder`'s ``decode``) of every line; ``None`` where it fails.
    One C-level ``map`` over the run of lines up to each failure (the failing line is already
    taken from the shared iterator, so the next run starts just after it)."""
    out: list[Head | None] = []
    rest = iter(lines)
    n = len(lines)
    while len(out) < n:
        try:
            out.extend(map(decode, rest))
        except _FAIL:
            out.append(None)
    return out


def _record_of(line: bytes) -> dict[str, Any]:
    """The record a canonical line holds: ``orjson.loads``, as the general path parses it (a
    number orjson refuses — beyond the float range — goes through the exact parser)."""
    try:
        return orjson.loads(line)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        from logpipe.record import parse_line  # the package imports this module

        return parse_line(line)


class NormalisedLines(Sequence[dict[str, Any]]):
    """A normalised batch kept as bytes: its NDJSON ``lines``, and per line either the
    :class:`Head` the canonical check read (the record dict is built only when asked for, by
    parsing the line) or the record dict the general path built. ``fill`` maps each key a Head
    may lack to the value the normaliser gave it (its defaults, ``time``: the read time,
    ``level``: ``info``).

    As a Sequence it is the records (built once, on first access), so sources and sinks that
    want dicts keep working; byte sinks use ``lines`` and never build one.
    """

    __slots__ = ("_records", "fill", "heads", "lines", "on_parse")

    def __init__(self, lines: list[bytes], heads: list[Head | dict[str, Any]],
                 fill: Mapping[str, Any], on_parse: Callable[[], None] | None = None) -> None:
        self.lines = lines
        self.heads = heads
        self.fill = fill
        #: called when records() has to parse lines (a sink wants dicts: the normaliser then
        #: builds them directly for a while, cheaper than checking and parsing again)
        self.on_parse = on_parse
        self._records: list[dict[str, Any]] | None = None

    def records(self) -> list[dict[str, Any]]:
        """The records as dicts (parsed from the lines once, then cached)."""
        if self._records is None:
            self._records = [h if h.__class__ is dict else _record_of(ln)  # type: ignore[misc,unused-ignore]
                             for h, ln in zip(self.heads, self.lines, strict=True)]
            if self.on_parse is not None and any(h.__class__ is not dict for h in self.heads):
                self.on_parse()
        return self._records

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.records()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NormalisedLines):
            return self.records() == other.records()
        return self.records() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NormalisedLines({len(self.lines)} lines)"
