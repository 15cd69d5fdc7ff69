"""Tailing files: rotation-aware, restart-safe, back-pressured (``TailSource``: loops and acks).

How it behaves, and whose behaviour it follows (research/collector.md §1, "What the best do"):

- **Identity** is (dev, inode) plus a fingerprint: a hash of the first up to 1024 bytes with
  that length recorded (Filebeat's ``fingerprint`` length, Vector's checksum). A short file is
  read at once — its fingerprint covers what it has and is upgraded as the prefix fills (never
  Filebeat's wait-for-1-KiB). A checkpoint whose inode now holds different first bytes (inode
  reuse: ``rm a; touch b``) is not resumed: the file is read from 0. Two files are one file
  only when they are the same inode with the same first bytes: look-alike files (three
  identical crash logs, prefixes of each other, a new ``a.log`` with the old one's banner) are
  distinct files, each read whole — unlike Vector's checksum, which skips them.
- **Discovery**: on Linux, inotify watches each directory the globs can match files in (one
  watch per directory, not per file): a write wakes the reader at once, a new, renamed or
  deleted name is looked at on its own, and a full rescan runs every RECONCILE_INTERVAL (10 s;
  Fluent Bit re-globs every 60 s, Vector's notify mode every 300 s) and after an event queue
  overflow. Elsewhere — not Linux, watch refused, a network or FUSE file system, or
  ``LOGPIPE_TAIL_NOTIFY=0`` — globs are re-scanned every ``rescan_interval`` (1 s, Vector's
  ``glob_minimum_cooldown_ms``) (``watch``, ``notify``). Files found after start are read
  from offset 0 (Vector RFC 3480:
  a ``mv`` cannot be told from create+write). Files present at the first start with no
  checkpoint are read from 0 as well — logpipe ships what is there rather than tail from EOF
  (Fluent Bit's ``read_from_head=false`` loses the first lines). Compressed archives a glob
  matches (``.gz``, ``.zst`` …) are skipped. ``**`` as a whole path component is recursive to
  at most RECURSIVE_DEPTH (8) directory levels, Filebeat's ``recursive_glob`` cap (no unbounded
  tree walk per rescan, Vector #13129); ``dir/**`` means ``dir/**/*``; one ``**`` per pattern.
- **Rename rotation** (logrotate ``create``, supervisord, multilog): the old fd stays open and is
  drained to EOF with no give-up timer (Fluent Bit's 5 s ``Rotate_Wait`` loses bursts, #10414);
  the new file at the path is picked up from 0. A rotated name that a glob also matches is the
  same inode, so it is followed, not re-read.
- **copytruncate**: ``size < offset`` *or* a changed fingerprint at the same inode (truncate and
  regrow past the old offset between polls — rsyslog#511) starts a new generation read from 0.
  Another inode is taken for the copy (``app.log.1``) only on positive evidence: a rotated
  name of the original (``generations.is_rotated_name``), the old generation's fingerprint and
  the same bytes further on (a sample), and the original truncated — then only the copy's
  part the original never delivered is read (Vector's advice: include ``app.log.1``). Seen
  before the truncate, the copy is held back (said on stderr) until it happens, at most
  ``COPY_WAIT`` (30 s) after the copy last grew; then it is a file of its own, read from 0 (a
  duplicate at worst, never a loss). Loss is limited to the rotator's copy→truncate window.
- **Deleted while open**: drained to EOF, the dangling partial line emitted (Vector's rule:
  only once the file is gone and drained), then closed — no disk held (Vector #17349). A file
  renamed to a name no glob matches is closed after it sat at EOF for ``DETACHED_IDLE_CLOSE``
  (60 s) *and* no other process has it open for writing (/proc, as ``fuser``): a writer that
  has not reopened yet keeps it followed however slowly it writes (Filebeat's
  ``close_renamed`` would lose its lines). Another user's writer is visible in /proc only to
  root: a non-root collector falls back to the idle spell alone.
- **Rotation while down**: on the first scan, files the checkpoint had not finished whose
  name no glob matches any more (``--pm2``'s ``*.log`` never matches
  ``api-out.log.20261201T000000``) are looked for among the files of their directory — by
  inode and first bytes, or as a rotated-name copy of a truncated one — and exactly their
  unread lines are read, as renamed-away files (``discovery.Discovery._recover``).
- **Open files** are capped at min(1024, 80 % of RLIMIT_NOFILE) (Vector PR #25252); beyond it
  the least recently read file with nothing unread is closed (an LRU: O(1) per open) for a
  file waiting for a slot, and reopened — after an identity check — when it grows. 10,000
  files are read at start a cap's worth at a time, each slot freed as soon as its file is read
  to its end. Only files with news are polled; a quiet file costs nothing with inotify and one
  ``stat`` per rescan without.
- **Batches**: the lines one reader pass finds in many files go out as few batches (up to
  OUTBOX_RECORDS, 256), one ack committing each file's offset (``reader.Outbox``).
- **Checkpoints** (``logpipe.checkpoint``) advance only from batch acks (every sink accepted the
  lines), only to line ends — never past a partial line or lines still held by the multiline
  joiner — and are written at most once a second when changed, plus on ``aclose()``. On
  ``stop()`` held partial lines are *not* emitted: they are re-read after the restart, so
  ``abc`` + restart + ``def\\n`` is one record ``abcdef``. Offsets are per file identity and
  shared by every command line of a state dir (``logpipe.checkpoint``): a glob added or
  removed, ``--pm2`` instead of paths, ``--once`` between live runs re-read nothing; a file
  another collector of the state dir reads is refused, with a warning, until it lets go.
- **Back-pressure**: ``await emit`` blocks the reader only; discovery, rotation tracking (old
  fds kept) and checkpoint writes run in their own task.
- **--once** (``once=True``): read what is there, emit partial last lines too, return.

Modules: ``generations`` (identity rules, copies, resume — no event loop; ``names``: the
rotated-name rules they use), ``reader`` (one
file: poll, read, truncation, lines → batches), ``globs`` (what the patterns name),
``discovery`` (new files, renames, the open-file cap, reopen, recovery after a rotation while
down), ``notify`` (inotify through ctypes), ``watch`` (when discovery looks: events, partial
and full scans); this one runs the reader loop and writes the checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from logpipe import diagnostics
from logpipe.checkpoint import FORGET_AFTER, CheckpointStore
from logpipe.errors import CheckpointError, UsageError
from logpipe.multiline import Joiner
from logpipe.pipeline import Batch, Source
from logpipe.sources.tail.discovery import RECOVER_SCANS, default_max_open, default_origin
from logpipe.sources.tail.generations import (
    COPY_WAIT,
    FP_MAX,
    FP_MIN_COPY,
    SAMPLE_BYTES,
    Generation,
)
from logpipe.sources.tail.globs import ARCHIVE_SUFFIXES, RECURSIVE_DEPTH, expand_pattern
from logpipe.sources.tail.names import is_rotated_name
from logpipe.sources.tail.notify import DirWatcher
from logpipe.sources.tail.reader import (
    _COLD,
    COLD_AFTER,
    DETACHED_IDLE_CLOSE,
    HOT_POLL,
    PASS_BUDGET,
    READ_CHUNK,
    Outbox,
    TailFile,
)
from logpipe.sources.tail.watch import Watching

__all__ = [
    "ARCHIVE_SUFFIXES", "CHECKPOINT_INTERVAL", "COLD_AFTER", "COPY_WAIT", "DETACHED_IDLE_CLOSE",
    "FORGET_AFTER", "FP_MAX", "FP_MIN_COPY", "HOT_POLL", "PASS_BUDGET", "READ_CHUNK",
    "RECURSIVE_DEPTH", "SAMPLE_BYTES", "_COLD", "Generation", "TailFile", "TailSource",
    "default_max_open", "default_origin", "expand_pattern", "is_rotated_name",
]

#: Checkpoint write period when something changed (Vector and Filebeat both use 1 s).
CHECKPOINT_INTERVAL = 1.0


class TailSource(Watching, Source):
    """Tails files and globs into batches; see the module docstring for the rules.

    ``origin_for(path) -> (defaults, plain_level)`` names each file's records (default:
    :func:`default_origin`); ``is_excluded(path, st)`` vetoes files before they are opened (the
    feedback guard) and, with ``recheck(path, st)``, stops reading an open file that turned
    out to be excluded; ``decoder_for(path, start)`` gives a file a format decoder (PM2's
    formats; None for plain files); ``joiner_factory()`` gives each file a multiline
    :class:`~logpipe.multiline.Joiner` (its :class:`~logpipe.sources._lines.LineAssembler` uses it).
    """

    name = "tail"

    def __init__(
        self,
        patterns: list[str],
        state_dir: str,
        *,
        once: bool = False,
        max_line_bytes: int = 1 << 20,
        rescan_interval: float = 1.0,
        origin_for: Callable[[str], tuple[dict[str, Any], str]] | None = None,
        is_excluded: Callable[[str, os.stat_result], bool] | None = None,
        joiner_factory: Callable[[], Joiner] | None = None,
        max_open: int | None = None,
        recheck: Callable[[str, os.stat_result], bool] | None = None,
        decoder_for: Callable[[str, int], Any] | None = None,
        notify: bool | None = None,
    ) -> None:
        # (over 60 lines: every piece of state the mixins share is declared here, in one place)
        self.patterns = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
        try:
            self._globs = [g for p in self.patterns for g in expand_pattern(p)]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.once = once
        self.max_line_bytes = max_line_bytes
        self.rescan_interval = rescan_interval
        self._origin_for = origin_for or default_origin
        self._is_excluded = is_excluded
        self._joiner_factory = joiner_factory
        self._recheck = recheck
        self._decoder_for = decoder_for
        self.max_open = max_open if max_open is not None else default_max_open()
        self._store = CheckpointStore(state_dir, self.patterns)
        self._state_dir = state_dir
        self._refused: set[str] = set()  # paths another collector of this state dir reads
        self._resumed: list[tuple[str, int]] = []
        self._scanned = False
        self._recover_scans = RECOVER_SCANS  # see Discovery._recover
        self._started = time.time()
        self._gens: dict[int, Generation] = {}  # id(gen) -> gen: everything the checkpoint stores
        self._by_key: dict[tuple[int, int], list[Generation]] = {}
        self._by_name: dict[str, list[Generation]] = {}
        self._load_gens()
        self._files: dict[tuple[int, int], TailFile] = {}
        self._by_path: dict[str, TailFile] = {}
        self._hot: dict[TailFile, None] = {}
        self._lru: OrderedDict[TailFile, None] = OrderedDict()
        self._waiting: dict[str, None] = {}  # paths found while every slot held unread data
        self._cap_since: float | None = None
        self._outbox = Outbox(self._ack)
        self._watcher: DirWatcher | None = None
        # inotify unless told not to (``notify=False``, or LOGPIPE_TAIL_NOTIFY=0 in the
        # environment: a file system where inotify misbehaves and is not detected as remote)
        if notify is None:
            notify = os.environ.get("LOGPIPE_TAIL_NOTIFY", "1").lower() not in ("0", "false", "no")
        self._use_notify = notify
        self._all_watched = False
        self._scan_event: asyncio.Event | None = None
        self._open = 0
        self._dirty = False
        self._stopping = False
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._warned_cap = False
        # counters (tests, summaries)
        self.lines_read = 0
        self.truncations = 0

    def _load_gens(self) -> None:
        """The generations of the checkpoint (every command line's of this state dir)."""
        for st in self._store.load():
            g = Generation(st.dev, st.ino, st.fp, st.fp_len, st.offset, st.path,
                           max(st.seen, self._started), st.retired)
            if st.sample_fp:
                g.sample_fp = (st.sample_fp, st.sample_len)
                g.sample_end = st.sample_end
            self._add_gen(g)

    # --- the Source contract ----------------------------------------------------------------------
    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Tail until ``stop()`` (or, with ``once``, until everything present has been read)."""
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._scan()
        if self.once:
            await self._read_once(emit)
            return
        scanner = asyncio.create_task(self._scanner(), name="tail-scan")
        checkpointer = asyncio.create_task(self._checkpointer(), name="tail-checkpoint")
        try:
            await self._reader(emit)
        finally:
            self.stop()
            scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanner
            await checkpointer

    async def _read_once(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """--once: read what is there now (a writer faster than us must not keep --once going
        forever), every file — beyond the open-file cap too, a cap's worth at a time."""
        done: set[TailFile] = set()
        while not self._stopping:
            for f in [x for x in self._files.values() if x not in done]:
                end = f.size_seen
                while not self._stopping and f.pos < end and await self._pump(f, emit):
                    pass
                if self._stopping:
                    break
                await self._flush_held(f, emit)
                done.add(f)
                if self._waiting:
                    self._close_idle(f)  # finished: its slot goes to a file still waiting
            if not self._waiting or not self._admit():
                break
        await self._outbox.flush(emit)

    async def _reader(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Poll the files that are due (``_hot``), emit what they had as few batches as fit,
        hand free slots to files waiting for one; sleep until the next poll or a wake-up."""
        wake = self._wake
        assert wake is not None
        while not self._stopping:
            wake.clear()
            mono = time.monotonic()
            progressed = False
            soonest = _COLD
            for f in list(self._hot):
                if self._stopping:
                    break
                if self._files.get(f.key) is not f:
                    self._hot.pop(f, None)
                    continue
                if f.next_poll <= mono:
                    got = await self._pump(f, emit)
                    progressed = progressed or got
                    f.polled(got, time.monotonic())
                    if f.fd is not None:
                        self._lru[f] = None
                        self._lru.move_to_end(f)
                deadline = f.lines.idle_deadline
                if deadline is not None and f.gen is not None:
                    if time.monotonic() >= deadline:
                        await self._flush_groups(f, emit)
                    else:
                        soonest = min(soonest, deadline)
                if f.next_poll == _COLD and f.lines.idle_deadline is None:
                    self._hot.pop(f, None)
                else:
                    soonest = min(soonest, f.next_poll)
            await self._outbox.flush(emit)
            if self._waiting and not self._stopping and self._admit():
                progressed = True
            if progressed:
                await asyncio.sleep(0)
                continue
            if soonest == _COLD:
                await wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, soonest - time.monotonic()))

    async def _checkpointer(self) -> None:
        """Write the checkpoint every CHECKPOINT_INTERVAL when acks moved it. Never cancelled
        mid-write (a late stale write could land after the final one): it ends at stop."""
        assert self._stop_event is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), CHECKPOINT_INTERVAL)
            if self._stopping:
                return
            if self._dirty:
                try:
                    await self._save_async()
                except CheckpointError as exc:
                    diagnostics.error(str(exc), key="tail-checkpoint-write")

    def _snapshot(self) -> bytes:
        """Encode the checkpoint (and forget generations not seen for FORGET_AFTER)."""
        now = time.time()
        cutoff = now - FORGET_AFTER
        live = {id(f.gen) for f in self._files.values() if f.gen is not None}
        for g in list(self._gens.values()):
            if g.seen < cutoff and id(g) not in live:
                if not g.retired and self._still_there(g):
                    # a file no glob of this command line matches (one removed, another
                    # command line's): kept while it exists, so no command line re-reads it
                    g.seen = now
                    continue
                self._drop_gen(g)
        self._dirty = False
        return self._store.encode(g.state() for g in self._gens.values())

    @staticmethod
    def _still_there(g: Generation) -> bool:
        try:
            st = os.stat(g.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == g.key

    def _write(self, data: bytes, merged: dict[str, tuple[int, int, int]]) -> None:
        self._store.write_bytes(data)
        # this file now holds every offset merged from other command lines' files: those
        # whose collector no longer runs go (the upgrade from per-command-line checkpoints)
        self._store.prune(merged)

    async def _save_async(self) -> None:
        merged = self._store.merged()
        data = self._snapshot()
        try:
            await asyncio.to_thread(self._write, data, merged)
        except CheckpointError:
            self._dirty = True
            raise

    def save(self) -> None:
        """Write the checkpoint now (blocking)."""
        merged = self._store.merged()
        self._write(self._snapshot(), merged)

    def stop(self) -> None:
        """Finish after the batch in hand; held partial lines stay unread (and uncommitted)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._scan_event is not None:
            self._scan_event.set()
        if self._stop_event is not None:
            self._stop_event.set()

    async def aclose(self) -> None:
        """Commit the final checkpoint, close every file, release the state lock."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        try:
            self.save()
        finally:
            for f in list(self._files.values()):
                if f.fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(f.fd)
                    f.fd = None
            self._files.clear()
            self._by_path.clear()
            self._hot.clear()
            self._lru.clear()
            self._open = 0
            if self._watcher is not None:
                self._watcher.close()
            self._store.close()
