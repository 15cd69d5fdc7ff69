"""Reading one tailed file: its state (``TailFile``), polling, truncation, lines to batches.

Raw bytes come from ``os.pread`` in :meth:`Reader._pump` and go to :meth:`Reader._process`, which
splits them into lines (offsets in the file's bytes: what checkpoints store), joins multiline
groups and emits batches. A file's format decoder (``TailFile.decoder``, PM2's formats: raw
bytes → the app's bytes, ``raw_offset`` maps offsets back) sits between the two, in ``_pump``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from logpipe import diagnostics, record
from logpipe.checkpoint import fingerprint
from logpipe.pipeline import BATCH_MAX_RECORDS, Batch
from logpipe.sources._lines import TRUNCATION_MARKER, LineSplitter, batch_end
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
#: A file renamed to a name no glob matches is closed after sitting at EOF this long.
DETACHED_IDLE_CLOSE = 60.0


class TailFile:
    """An open (or idle-closed) file being read."""

    __slots__ = ("base", "decoder", "detached_at", "fd", "gen", "held_since", "interval", "joiner",
                 "key", "last_data", "next_poll", "norm", "path", "pos", "shadow_file", "shadow_gen",
                 "size_seen", "split")

    def __init__(self, key: tuple[int, int], path: str, fd: int, gen: Generation | None, pos: int,
                 norm: record.LineNormaliser, split: LineSplitter, joiner: Any) -> None:
        self.key = key
        self.path: str | None = path  # None once renamed away / deleted (detached)
        self.fd: int | None = fd
        self.gen = gen  # None only while shadowing a live original (see _identify)
        self.pos = pos  # next byte to read
        self.base = pos  # file offset where ``split.consumed`` counts from
        self.norm = norm
        self.split = split
        self.joiner = joiner
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

    def poke(self) -> None:
        """Poll this file soon (it changed, or its state did)."""
        self.next_poll = 0.0
        self.interval = HOT_POLL

    def polled(self, progressed: bool, now: float) -> None:
        """Schedule the next poll: at once after data, backing off when empty, then cold
        (woken only by the rescan) — except detached files, which no rescan sees."""
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
        progressed = False
        budget = PASS_BUDGET
        gen = f.gen
        while budget > 0 and not self._stopping and f.gen is gen and f.fd is not None:
            try:
                data = os.pread(f.fd, READ_CHUNK, f.pos)
            except OSError as exc:
                diagnostics.warning(f"cannot read {f.path or gen.path}: {exc.strerror or exc}",
                                    key=f"tail-read:{gen.path}")
                break
            if not data:
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
        if f.joiner is not None:
            pairs = f.joiner.flush()
            if pairs:
                await self._emit_pairs(f, old, pairs, emit)
        old.retired = True
        self._dirty = True
        prefix = b""
        if f.fd is not None:
            with contextlib.suppress(OSError):
                prefix = os.pread(f.fd, FP_MAX, 0)
        f.gen = self._new_gen(f.key, prefix, 0, f.path or old.path)
        shadows = [x for x in self._files.values() if x.shadow_gen is old]
        f.pos = f.base = 0
        f.split = LineSplitter(self.max_line_bytes)
        f.joiner = self._joiner_factory() if self._joiner_factory is not None else None
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
        """Emit what the splitter and the joiner hold (partial last line, pending group)."""
        gen = f.gen
        if gen is None:
            return
        held = f.split.flush_flagged()
        out: list[tuple[bytes, int]] = []
        end = f.base + f.split.consumed
        if f.joiner is not None:
            if held is not None:
                out.extend(f.joiner.push(held[0], end))
            out.extend(f.joiner.flush())
        elif held is not None:
            out.append((held[0], end))
        if out:
            await self._emit_pairs(f, gen, out, emit)
        elif held is not None:
            gen.emitted = max(gen.emitted, end if f.decoder is None else f.decoder.raw_offset(end))

    async def _process(self, f: TailFile, gen: Generation, data: bytes,
                       emit: Callable[[Batch], Awaitable[None]], received: str | None = None) -> None:
        split = f.split
        c0 = split.consumed
        lines, cut = split.split(data)
        if not lines:
            return
        start = f.base + c0
        if f.decoder is None and (not cut or (len(lines) - 1) not in cut):
            last = lines[-1]
            gen.sample = last[-(SAMPLE_BYTES - 1):] + b"\n"
            gen.sample_end = f.base + split.consumed
        j = f.joiner
        if j is not None and not (getattr(j, "pending", None) == 0
                                  and all(map(bytes.startswith, lines, itertools.repeat(b"{")))):
            # (a chunk of JSON lines with nothing held passes a Joiner unchanged — multiline.py's
            # documented hot path — so it takes the batch path below without a call per line)
            if cut:
                raws = [len(x) + 1 for x in lines]
                for k, raw in cut.items():
                    raws[k] = raw
                ends = itertools.accumulate(raws, initial=start)
            else:
                ends = itertools.accumulate((len(x) + 1 for x in lines), initial=start)
            next(ends)
            push = f.joiner.push
            out: list[tuple[bytes, int]] = []
            for line, end in zip(lines, ends, strict=False):
                out += push(line, end)
            if out:
                await self._emit_pairs(f, gen, out, emit, received)
            return
        received = received or record.now()
        n = len(lines)
        i = 0
        pos = start
        while i < n:
            j = batch_end(lines, i)
            seg = lines[i:j]
            pos += sum(map(len, seg)) + (j - i)
            flagged: list[int] = []
            if cut:
                for k, raw in cut.items():
                    if i <= k < j:
                        pos += raw - len(lines[k]) - 1
                        flagged.append(k - i)
            await self._emit_lines(f, gen, seg, flagged, pos, received, emit)
            i = j

    async def _emit_pairs(self, f: TailFile, gen: Generation, pairs: list[tuple[bytes, int]],
                          emit: Callable[[Batch], Awaitable[None]],
                          received: str | None = None) -> None:
        # a group the joiner held past a read (flushed when idle) takes the decoder's last time
        received = received or getattr(f.decoder, "last_time", None) or record.now()
        # a joined line carries the marker if one of its lines was cut; look only when this
        # file has cut a line at all (no per-line work otherwise)
        check_cut = f.split.truncated_lines > 0
        n = len(pairs)
        i = 0
        while i < n:
            seg = [p[0] for p in pairs[i : i + BATCH_MAX_RECORDS]]
            seg = seg[: batch_end(seg, 0)]
            j = i + len(seg)
            flagged = ([k for k, line in enumerate(seg) if line.endswith(TRUNCATION_MARKER)]
                       if check_cut else [])
            await self._emit_lines(f, gen, seg, flagged, pairs[j - 1][1], received, emit)
            i = j

    async def _emit_lines(self, f: TailFile, gen: Generation, seg: list[bytes], flagged: list[int],
                          end: int, received: str, emit: Callable[[Batch], Awaitable[None]]) -> None:
        norm = f.norm
        if flagged:
            res = [norm(line, received) for line in seg]
            for k in flagged:
                r = res[k]
                if r is not None:
                    rec = r[0]
                    rec[record.TRUNCATED] = True
                    res[k] = (rec, record.dumps(rec))
            res2 = [r for r in res if r is not None]
            recs = [r[0] for r in res2]
            outs = [r[1] for r in res2]
        else:
            recs, outs = norm.batch(seg, received)  # the hot path: one call per chunk
        self.lines_read += len(recs)
        if f.decoder is not None:
            end = f.decoder.raw_offset(end)
        if end > gen.emitted:
            gen.emitted = end
        await emit(Batch(recs, outs, ack=functools.partial(self._ack, gen, end),
                         source=gen.path))
