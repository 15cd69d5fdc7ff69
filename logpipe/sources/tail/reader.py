"""Reading one tailed file: its state (``TailFile``), polling, truncation, lines to batches.

Raw bytes come from ``os.pread`` in :meth:`Reader._pump` and go to :meth:`Reader._process`, which
feeds them to the file's :class:`~logpipe.sources._lines.LineAssembler` (split, multiline join,
normalise, batch; offsets in the file's bytes: what checkpoints store) and emits its batches.
A file's format decoder (``TailFile.decoder``, PM2's formats: raw bytes → the app's bytes,
``raw_offset`` maps offsets back) sits between the two, in ``_pump``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from logpipe import diagnostics
from logpipe.checkpoint import fingerprint
from logpipe.pipeline import BATCH_MAX_BYTES, BATCH_MAX_RECORDS, Batch
from logpipe.sources._lines import LineAssembler, LineBatch
from logpipe.sources.tail.generations import FP_MAX, SAMPLE_BYTES, Generation, Generations

#: One read; lines are split in memory (research: large chunks, not per-line I/O).
READ_CHUNK = 1 << 20
#: Bytes read from one file before the others get a turn (Vector's ``max_read_bytes`` fairness).
PASS_BUDGET = 8 << 20
#: A file with data is polled every HOT_POLL seconds; each empty poll doubles the interval up to
#: COLD_AFTER, then only the rescan's ``stat`` (once per ``rescan_interval``) wakes it — idle CPU
#: with 1,000 quiet files stays at one ``stat`` per file per second.
HOT_POLL = 0.05
COLD_AFTER = 1.6
_COLD = float("inf")
#: Records per batch the outbox gathers from many files (at most BATCH_MAX_RECORDS): the
#: pipeline bounds each sink's buffer in batches, so bigger batches mean more records in
#: flight while 10,000 files are read at start — bench/scale.py, RSS idle with ``--to splunk``:
#: 2,048 → 116 MB, 1,024 → 98 MB, 512 → 100 MB, 256 → 93 MB (first read 3.1 s vs 5.2 s).
OUTBOX_RECORDS = min(256, BATCH_MAX_RECORDS)
#: Only batches of fewer records than this are merged (a trickle: a line or a few per file per
#: pass). Merging builds their record dicts (one batch holds one per-file ``fill``: the
#: normaliser's lazy ``NormalisedLines`` cannot span files), ~1 µs a line at a trickle's rate;
#: bulk reads keep the line path's bytes-only batches.
OUTBOX_BELOW = 64
#: A file renamed to a name no glob matches is closed after sitting at EOF this long.
DETACHED_IDLE_CLOSE = 60.0


class TailFile:
    """An open (or idle-closed) file being read."""

    __slots__ = ("base", "covered", "decoder", "detached_at", "drained", "fd", "gen", "held_since",
                 "hot", "interval", "key", "last_data", "lines", "next_poll", "path", "pos",
                 "shadow_file", "shadow_gen", "size_seen")

    def __init__(self, key: tuple[int, int], path: str, fd: int, gen: Generation | None, pos: int,
                 lines: LineAssembler) -> None:
        self.key = key
        self.path: str | None = path  # None once renamed away / deleted (detached)
        self.fd: int | None = fd
        self.gen = gen  # None only while shadowing a live original (see _identify)
        self.pos = pos  # next byte to read
        self.base = pos  # file offset where ``lines.consumed`` counts from
        self.lines = lines  # split → multiline join → normalise → batch (new one per stream)
        self.shadow_gen: Generation | None = None
        self.shadow_file: TailFile | None = None
        self.size_seen = -1
        self.last_data = time.monotonic()
        self.next_poll = self.last_data  # poll now
        self.interval = HOT_POLL
        self.detached_at = 0.0
        #: a format decoder (PM2's ``--time`` / ``log_type: json``): ``feed(raw) -> [(bytes,
        #: time)]`` and ``raw_offset(decoded)``; lines and marks then count decoded bytes from
        #: ``base`` and are mapped back to raw offsets where a mark is made
        self.decoder: Any = None
        self.held_since = self.last_data  # held back as a copy: since when (or last growth)
        #: the files the reader looks at (its source's, shared): a poked file is put there, so
        #: a reader pass costs what is due, not one look at each of 10,000 quiet files
        self.hot: dict[TailFile, None] | None = None
        #: an inotify watch reports its writes (its directory is watched, the path is no
        #: symlink): no poll ladder — an empty poll makes it cold at once
        self.covered = False
        self.drained = False  # the last poll read to EOF (not stopped by PASS_BUDGET)

    def poke(self) -> None:
        """Poll this file soon (it changed, or its state did)."""
        self.next_poll = 0.0
        self.interval = HOT_POLL
        if self.hot is not None:
            self.hot[self] = None

    def polled(self, progressed: bool, now: float) -> None:
        """Schedule the next poll: at once after data, backing off when empty, then cold
        (woken only by the rescan, or an inotify event) — except detached files, which no
        rescan sees. A file inotify covers goes cold as soon as it was read to EOF."""
        if self.covered and self.path is not None and (self.drained or not progressed):
            self.next_poll = _COLD
            self.interval = COLD_AFTER
            return
        if progressed:
            self.next_poll = now
            self.interval = HOT_POLL
            return
        if self.interval >= COLD_AFTER and self.path is not None:
            self.next_poll = _COLD
            return
        self.next_poll = now + self.interval
        self.interval = min(self.interval * 2, COLD_AFTER)


class Reader(Generations):
    """Reads the open files: pump, truncation (copytruncate), held lines, emit."""

    _outbox: Outbox
    _hot: dict[TailFile, None]  # files with a poll due or a multiline deadline (see TailFile.hot)
    _lru: OrderedDict[TailFile, None]  # open files by last read, oldest first: victims to close

    async def _pump(self, f: TailFile, emit: Callable[[Batch], Awaitable[None]]) -> bool:
        """Read what ``f`` has (up to PASS_BUDGET); True when something was read."""
        if f.shadow_gen is not None:
            if not self._shadow_released(f):
                return False
            self._release_shadow(f)
        fd = f.fd
        if fd is None or f.gen is None:
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        gen = f.gen
        size = st.st_size
        if size < f.pos:
            await self._retire(f, emit, "truncated")
        elif size > f.pos:
            # fingerprint check before reading new bytes: catches truncate-and-regrow past our
            # offset between two polls, which size alone cannot see (rsyslog#511)
            try:
                prefix = os.pread(fd, min(size, FP_MAX), 0)
            except OSError:
                return False
            if len(prefix) < gen.fp_len or fingerprint(prefix[: gen.fp_len]) != gen.fp:
                await self._retire(f, emit, "rewritten")
            elif len(prefix) > gen.fp_len:
                self._set_fp(gen, prefix)
        progressed = f.drained = False
        f.size_seen = max(f.size_seen, size)
        budget = PASS_BUDGET
        gen = f.gen
        while budget > 0 and not self._stopping and f.gen is gen and f.fd is not None:
            data = self._read_chunk(f, gen)
            if not data:
                f.drained = data is not None
                break
            f.pos += len(data)
            budget -= len(data)
            progressed = True
            if f.decoder is None:
                await self._process(f, gen, data, emit)
            else:
                for seg, t in f.decoder.feed(data):
                    await self._process(f, gen, seg, emit, t)
        if progressed:
            f.last_data = time.monotonic()
        elif f.path is None and f.gen is gen and not self._stopping and (
                st.st_nlink == 0
                or (time.monotonic() - max(f.last_data, f.detached_at) >= DETACHED_IDLE_CLOSE
                    and not await self._still_written(f))):
            # detached and at EOF: deleted → finish now; renamed away → after an idle spell,
            # unless a writer still has it open (it has not reopened yet: PM2 before
            # `pm2 reloadLogs`, a slow app with WatchedFileHandler) — its next line would be lost
            await self._finish(f, emit)
        return progressed

    @staticmethod
    def _read_chunk(f: TailFile, gen: Generation) -> bytes | None:
        """Up to READ_CHUNK bytes at ``f.pos`` (b"": EOF; None: a read error, said)."""
        assert f.fd is not None
        try:
            return os.pread(f.fd, READ_CHUNK, f.pos)
        except OSError as exc:
            diagnostics.warning(f"cannot read {f.path or gen.path}: {exc.strerror or exc}",
                                key=f"tail-read:{gen.path}")
            return None

    async def _still_written(self, f: TailFile) -> bool:
        """True (and the close postponed by another DETACHED_IDLE_CLOSE) when another process
        holds the renamed-away file open for writing — /proc, as ``fuser`` does; one scan per
        idle spell of such a file, in a thread."""
        from logpipe._openfiles import open_by_others

        try:
            users = await asyncio.to_thread(open_by_others, {f.key})
        except OSError:
            return False
        if f.path is not None or self._stopping:
            return True  # renamed to a name a glob matches meanwhile (followed), or stopping
        user = users.get(f.key)
        if user is None or not user[1]:
            return False
        f.detached_at = time.monotonic()
        diagnostics.info(f"{f.gen.path if f.gen else f.key} was renamed away but pid {user[0]} "
                         "still writes to it; still reading it", key=f"tail-renamed-written:{f.key}")
        return True

    async def _retire(self, f: TailFile, emit: Callable[[Batch], Awaitable[None]], why: str) -> None:
        """The file at this inode no longer holds the generation we read (copytruncate)."""
        old = f.gen
        assert old is not None
        self.truncations += 1
        # Complete lines the joiner holds go out; a partial last line is dropped: its end was
        # cut off by the truncate (it is in the copy, if a glob matches one — which then
        # resumes at the last line boundary we delivered, ``old.emitted``).
        await self._emit_batches(f, old, f.lines.flush_groups(self._held_time(f)), emit)
        old.retired = True
        self._dirty = True
        prefix = b""
        if f.fd is not None:
            with contextlib.suppress(OSError):
                prefix = os.pread(f.fd, FP_MAX, 0)
        f.gen = self._new_gen(f.key, prefix, 0, f.path or old.path)
        shadows = [x for x in self._files.values() if x.shadow_gen is old]
        f.pos = f.base = 0
        f.lines = self._assembler(f.lines.normalise)
        if self._decoder_for is not None:
            f.decoder = self._decoder_for(f.path or old.path, 0)
        for x in shadows:
            self._release_shadow(x)
        diagnostics.info(f"{f.path or old.path} was {why} (copytruncate?); reading it from the start",
                         key=f"tail-truncated:{old.path}")

    async def _finish(self, f: TailFile, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """A drained file that is gone: emit its dangling partial line and close it."""
        await self._flush_held(f, emit)
        self._forget_file(f)

    def _forget_file(self, f: TailFile) -> None:
        self._hot.pop(f, None)
        self._lru.pop(f, None)
        if f.path is not None:
            self._by_path.pop(f.path, None)
            f.path = None
        if self._files.get(f.key) is f:
            del self._files[f.key]
            self._store.locks.release(f.key)
        if f.fd is not None:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            f.fd = None
            self._open -= 1
        for other in self._files.values():
            if other.shadow_file is f:
                self._release_shadow(other)

    async def _flush_held(self, f: TailFile, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Emit what the assembler holds (partial last line, pending group)."""
        if f.gen is not None:
            await self._emit_batches(f, f.gen, f.lines.finish(self._held_time(f)), emit)

    async def _flush_groups(self, f: TailFile, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Emit the multiline groups the assembler holds (the joiner's idle deadline passed)."""
        if f.gen is not None:
            await self._emit_batches(f, f.gen, f.lines.flush_groups(self._held_time(f)), emit)

    @staticmethod
    def _held_time(f: TailFile) -> str | None:
        # a group held past a read (flushed when idle) takes the decoder's last time
        return getattr(f.decoder, "last_time", None)

    async def _process(self, f: TailFile, gen: Generation, data: bytes,
                       emit: Callable[[Batch], Awaitable[None]], received: str | None = None) -> None:
        lines = f.lines
        batches = lines.feed(data, received)
        last, lines.last_line = lines.last_line, None  # (10,000 files: not kept twice per file)
        if f.decoder is None and last is not None:
            gen.sample = last[-(SAMPLE_BYTES - 1):] + b"\n"
            gen.sample_end = f.base + lines.consumed
        await self._emit_batches(f, gen, batches, emit)

    async def _emit_batches(self, f: TailFile, gen: Generation, batches: Iterable[LineBatch],
                            emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Queue small ``batches`` in the outgoing batch (:class:`Outbox`; it goes out when
        full and at the end of each reader pass); a big one goes out as it is, after what the
        outbox holds (order per file, acks in emit order)."""
        # every batch goes out, a batch with no record too: its ack moves the checkpoint
        out = self._outbox
        for b in batches:
            self.lines_read += len(b.records)
            end = f.base + b.end
            if f.decoder is not None:
                end = f.decoder.raw_offset(end)
            if end > gen.emitted:
                gen.emitted = end
            if len(b.records) >= OUTBOX_BELOW:
                # a bulk read: its records stay as the line path made them (dicts built only
                # if a sink asks: ``record.NormalisedLines``), no merging needed
                await out.flush(emit)
                await emit(Batch(b.records, b.lines, ack=functools.partial(self._ack, gen, end),
                                 source=gen.path))
                continue
            if out.full_with(b):
                await out.flush(emit)
            out.add(gen, end, b)


class Outbox:
    """Lines read from many files in one reader pass, sent as few big batches, not one small
    batch per file: with 1,000 files each writing a line a second, a pass finds ~20 files with
    one line each, and each batch costs the sinks a spool frame, an HEC request slot, an ack.
    Records become plain dicts here (see OUTBOX_BELOW).

    A batch is from one source with one ack (pipeline/_contracts.py): the tail source is one
    source, and the ack commits each file's own offset (in emit order, so per file in order).
    Lines of one file keep their order: everything the source emits goes through here, in
    order. Capped at OUTBOX_RECORDS records / BATCH_MAX_BYTES."""

    __slots__ = ("_ack", "_acks", "_bytes", "_lines", "_records", "_sources")

    def __init__(self, ack: Callable[[Generation, int], None]) -> None:
        self._ack = ack
        self._records: list[dict[str, Any]] = []
        self._lines: list[bytes] = []
        self._acks: dict[Generation, int] = {}  # gen -> end offset (ends only grow per gen)
        self._bytes = 0
        self._sources: set[str] = set()

    def full_with(self, b: LineBatch) -> bool:
        """Would ``b`` overflow the batch in hand (which is not empty)?"""
        if not self._acks:
            return False
        return (len(self._records) + len(b.records) > OUTBOX_RECORDS
                or self._bytes + sum(map(len, b.lines)) + len(b.lines) > BATCH_MAX_BYTES)

    def add(self, gen: Generation, end: int, b: LineBatch) -> None:
        self._records += b.records  # (a NormalisedLines builds its dicts: few, see OUTBOX_BELOW)
        self._lines += b.lines
        self._bytes += sum(map(len, b.lines)) + len(b.lines)
        self._acks.pop(gen, None)  # re-inserted last: acks follow emit order
        self._acks[gen] = end
        self._sources.add(gen.path)

    async def flush(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Emit the batch in hand (if any)."""
        if not self._acks:
            return
        acks, ack = self._acks, self._ack

        def ack_all() -> None:
            for g, end in acks.items():
                ack(g, end)

        source = next(iter(self._sources)) if len(self._sources) == 1 else "tail"
        batch = Batch(self._records, self._lines, ack=ack_all, source=source)
        self._records, self._lines, self._acks, self._bytes = [], [], {}, 0
        self._sources = set()
        await emit(batch)
