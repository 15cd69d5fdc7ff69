"""``logpipe logs``: read collected logs back — history and live files merged in time order,
filtered, printed for people (the console formatter) or as NDJSON, and followed with ``-f``.

Each log (a live file and its rotated history, :mod:`logpipe._logfiles`; read by
:mod:`logpipe._logread` and followed by :mod:`logpipe._logfollow`) is read oldest first
as one stream already in time order; the streams of several logs are merged by time (a heap
merge). A record without a time keeps its place in its own file (it sorts with the record
before it). ``-n N`` keeps the last N matching records (all by default; 15 with ``-f``, as
``pm2 logs``). Stopping: Ctrl-C and a closed pipe (``| head``) end the command quietly with
status 0.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from logpipe import _logfilter, diagnostics, record
from logpipe._console import ConsoleFormatter, use_colour
from logpipe._logfiles import SKEW_GRACE, Log, logs_in_dir, logs_of_files
from logpipe._logfollow import LiveFile
from logpipe._logread import Span, blocks, first_line, read_errors, say_unreadable
from logpipe.errors import UsageError
from logpipe.multiline import Joiner

#: ``-n`` when following and not given (``pm2 logs --lines`` default)
FOLLOW_LINES = 15
#: seconds between reads of the live files when following
POLL_INTERVAL = 0.25
#: seconds between looks for new logs in the directory when following
RESCAN_INTERVAL = 1.0

#: (time key, record, the line as read when the record is that line unchanged, else None)
Item = tuple[str, dict[str, Any], bytes | None]
#: keys normalisation would rename
_ALIASES = frozenset((*record.MESSAGE_ALIASES, *record.TIME_ALIASES, *record.LEVEL_ALIASES))


@dataclass
class LogsOptions:
    """What ``logpipe logs`` was asked (filled by cli.py)."""

    services: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    directory: str | None = None
    pm2_home: str | None = None
    lines: int | None = None
    follow: bool = False
    level: str | None = None
    since: str | None = None
    until: str | None = None
    grep: str | None = None
    fields: list[str] = field(default_factory=list)
    instance: str | None = None
    fmt: str = "text"


def select_logs(opts: LogsOptions, rescan: bool = False) -> list[Log]:
    """The logs to read: named files, else PM2's directory, else the file sink's. A SERVICE
    without a log is an error, or (following, or beside one that has a log) said once."""
    if opts.files:
        logs = logs_of_files(opts.files)
    elif opts.pm2_home is not None:
        logs = logs_in_dir(os.path.join(opts.pm2_home, "logs"))
    elif opts.directory:
        logs = logs_in_dir(opts.directory)
    else:
        raise UsageError("no logs to read: give --dir DIR (or set LOGPIPE_FILE_DIR), --pm2, or "
                         "files")
    if opts.services:
        known = {log.service for log in logs}
        missing = [s for s in opts.services if s not in known]
        if missing and not rescan:
            text = (f"no log for {', '.join(missing)} (there are: "
                    f"{', '.join(sorted(known)) or 'none'})")
            if not opts.follow and not known & set(opts.services):
                raise UsageError(text)
            diagnostics.warning(f"logs: {text}" + ("; waiting for it" if opts.follow else ""),
                                key="logs-missing")
        logs = [log for log in logs if log.service in opts.services]
    return logs


class _Reader:
    """Turns blocks of one log's text into (time key, record) pairs that pass the filter.

    A PM2 log (:attr:`Log.multiline`) goes through the collector's multiline joiner first, so
    a traceback an app printed is one record here too; its last group is held until
    :meth:`flush` (end of reading) or :meth:`due` (following: the joiner's idle deadline)."""

    __slots__ = ("_defaults", "_filter", "_joiner", "_last", "_plain_level")

    def __init__(self, log: Log, flt: _logfilter.Filter) -> None:
        self._filter = flt
        self._defaults = log.defaults
        self._plain_level = log.plain_level
        self._last = ""
        self._joiner = Joiner() if log.multiline else None

    def items(self, block: bytes) -> list[Item]:
        """The matching records of ``block`` (whole lines)."""
        return self.span_items((block, 0, len(block)))

    def span_items(self, span: Span) -> list[Item]:
        """The matching records of the whole lines in ``buf[start:end]``."""
        flt = self._filter
        buf, start, end = span
        if self._joiner is not None:
            lines = self._joined(buf[start:end])
        elif flt.needle:
            lines = _candidates(span, flt.needle, flt.needle_ci)
        else:
            lines = (buf if start == 0 and end == len(buf) else buf[start:end]).split(b"\n")
        return self._records(lines)

    def flush(self) -> list[Item]:
        """The records of the lines the joiner still holds (the log was read to its end)."""
        return self._records([line for line, _ in self._joiner.flush()]) if self._joiner else []

    def due(self) -> list[Item]:
        """While following: the held lines once the joiner's idle deadline has passed."""
        return self._records([line for line, _ in self._joiner.poll()]) if self._joiner else []

    def _joined(self, text: bytes) -> list[bytes]:
        """``text``'s lines with multiline groups joined (the last may be held back)."""
        physical = text.split(b"\n")
        if text.endswith(b"\n"):
            physical.pop()
        push = self._joiner.push  # type: ignore[union-attr]  # only called with a joiner
        return [line for ln in physical for line, _ in push(ln, 0)]

    def _records(self, lines: Iterable[bytes]) -> list[Item]:
        flt = self._filter
        out: list[Item] = []
        loads = orjson.loads
        for line in lines:
            if not line or line.isspace():
                continue
            rec: Any = None
            raw: bytes | None = None
            if line[0] == 123:  # b"{"
                try:
                    rec = loads(line)
                except orjson.JSONDecodeError:
                    rec = None
            if type(rec) is dict:
                lv = rec.get(record.LEVEL)
                if _ALIASES.isdisjoint(rec) and rec.keys() >= self._defaults.keys() \
                        and (lv is None or lv in record.LEVELS):
                    raw = line  # a record as the file sink writes it: nothing to change
                else:
                    record.normalise(rec, self._defaults)
            else:
                rec = record.parse_line(line)
                record.normalise(rec, {**self._defaults, record.LEVEL: self._plain_level})
            key = _logfilter.time_key(rec)
            if key is None:
                key = self._last
            else:
                self._last = key
            if flt(rec):
                out.append((key, rec, raw))
        return out


def _candidates(span: Span, needle: bytes, ignore_case: bool) -> list[bytes]:
    """The lines of the span that contain ``needle`` (searched in the whole span at once)."""
    buf, start, stop = span
    # ASCII lower() keeps every byte where it was: positions in the copy are positions in buf
    hay = buf.lower() if ignore_case else buf
    if ignore_case:
        needle = needle.lower()
    find, rfind = hay.find, hay.rfind
    out: list[bytes] = []
    i = find(needle, start, stop)
    while i >= 0:
        begin = rfind(b"\n", start, i) + 1 or start
        end = find(b"\n", i, stop)
        if end < 0:
            end = stop
        out.append(buf[begin:end])
        i = find(needle, end, stop)
    return out


def _history(log: Log, flt: _logfilter.Filter, reader: _Reader) -> Iterator[Item]:
    """The records of a log's rotated files, oldest first, skipping whole files out of range."""
    since = record.to_epoch(flt.since) if flt.since else None
    until = record.to_epoch(flt.until) if flt.until else None
    for f in log.history:
        if since is not None and f.epoch + 1 + SKEW_GRACE < since:
            continue  # rotated before --since: every record in it is older (module docstring)
        try:
            if until is not None:
                t = record.to_epoch(record.parse_line(first_line(f)).get(record.TIME))
                if t is not None and t > until + SKEW_GRACE:
                    return  # this file and every later one start after --until
            for span in blocks(f):
                yield from reader.span_items(span)
        except read_errors() as exc:
            say_unreadable(f.path, exc)


def _log_items(log: Log, flt: _logfilter.Filter, live: LiveFile | None, reader: _Reader,
               final: bool) -> Iterator[Item]:
    """A log's records, history then live file; ``final`` (not following): with what the
    multiline joiner still holds at the end."""
    yield from _history(log, flt, reader)
    if live is not None:
        for block in live.scan():
            yield from reader.items(block)
    if final:
        yield from reader.flush()


class _Output:
    """Records → text (the console formatter) or NDJSON on stdout, written in large blocks."""

    def __init__(self, fmt: str, out: IO[bytes]) -> None:
        self._out = out
        self._json = fmt == "json"
        self._formatter = None if self._json else ConsoleFormatter(use_colour(out.fileno()))

    def write(self, items: Iterable[Item]) -> None:
        buf: list[bytes] = []
        size = 0
        fmt = self._formatter
        for _, rec, raw in items:
            if fmt is not None:
                data = fmt.format(rec).encode("utf-8", "replace")
            else:
                data = (raw if raw is not None else record.dumps(rec)) + b"\n"
            buf.append(data)
            size += len(data)
            if size >= 1 << 18:
                self._out.write(b"".join(buf))
                buf, size = [], 0
        if buf:
            self._out.write(b"".join(buf))
        self._out.flush()


def run(opts: LogsOptions, out: IO[bytes] | None = None) -> int:
    """Print what was asked; with ``follow``, keep printing until interrupted."""
    flt = _logfilter.build(services=opts.services, level=opts.level, since=opts.since,
                           until=opts.until, grep=opts.grep, fields=opts.fields,
                           instance=opts.instance)
    if opts.fmt not in ("text", "json"):
        raise UsageError(f"--format {opts.fmt!r}: expected text or json")
    logs = select_logs(opts)
    output = _Output(opts.fmt, out or sys.stdout.buffer)
    live = {log.live: LiveFile(log.live, log.history) for log in logs if log.live is not None}
    readers = [_Reader(log, flt) for log in logs]
    try:
        streams = [_log_items(log, flt, live.get(log.live) if log.live else None, reader,
                              final=not opts.follow) for log, reader in zip(logs, readers, strict=True)]
        merged: Iterable[Item] = heapq.merge(*streams, key=_key)
        n = opts.lines if opts.lines is not None else (FOLLOW_LINES if opts.follow else None)
        if n is not None:
            merged = collections.deque(merged, maxlen=n) if n > 0 else ()
        output.write(merged)
        if opts.follow:
            _follow(opts, flt, {log.live: r for log, r in zip(logs, readers, strict=True)
                                if log.live}, live, output)
        else:
            tails = [(log, lf.rest()) for log in logs if log.live and (lf := live[log.live])]
            output.write(item for log, rest in tails if rest
                         for item in _last_line(log, flt, rest))
    finally:
        for lf in live.values():
            lf.close()
    return 0


def _last_line(log: Log, flt: _logfilter.Filter, rest: bytes) -> list[Item]:
    """The records of a live file's partial last line (printed when reading stops)."""
    reader = _Reader(log, flt)
    return reader.items(rest) + reader.flush()


def _key(item: Item) -> str:
    return item[0]


def _follow(opts: LogsOptions, flt: _logfilter.Filter, readers: dict[str, _Reader],
            live: dict[str, LiveFile], output: _Output) -> None:
    """Print what the live files gain, merged by time per round, until interrupted."""
    next_scan = time.monotonic() + RESCAN_INTERVAL
    while True:
        got: list[list[Item]] = []
        for path, lf in live.items():
            data = lf.read()
            items = (readers[path].items(data) if data else []) + readers[path].due()
            if items:
                got.append(items)
        if got:
            output.write(heapq.merge(*got, key=_key) if len(got) > 1 else got[0])
        if time.monotonic() >= next_scan and not opts.files:
            next_scan = time.monotonic() + RESCAN_INTERVAL
            for log in select_logs(opts, rescan=True):
                if log.live and log.live not in live:  # a log that appeared: all of it
                    live[log.live] = LiveFile(log.live)
                    readers[log.live] = _Reader(log, flt)
                    output.write(item for block in live[log.live].scan()
                                 for item in readers[log.live].items(block))
        time.sleep(POLL_INTERVAL)


def main(opts: LogsOptions) -> int:
    """The command: quiet and status 0 on Ctrl-C and on a closed pipe (``| head``)."""
    try:
        return run(opts)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # the reader went away: nothing more to say, and Python's flush of stdout at exit
        # must not complain either (the Python docs' recipe for SIGPIPE)
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
