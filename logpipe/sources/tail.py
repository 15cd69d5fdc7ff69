"""Tailing files: rotation-aware, restart-safe, fingerprinted, back-pressured (``TailSource``).

How it behaves, and whose behaviour it follows (research/collector.md §1, "What the best do"):

- **Identity** is (dev, inode) plus a fingerprint: a hash of the first up to 1024 bytes with
  that length recorded (Filebeat's ``fingerprint`` length, Vector's checksum). A short file is
  read at once — its fingerprint covers what it has and is upgraded as the prefix fills (never
  Filebeat's wait-for-1-KiB). A checkpoint whose inode now holds different first bytes (inode
  reuse: ``rm a; touch b``) is not resumed: the file is read from 0.
- **Discovery**: globs are re-scanned every ``rescan_interval`` (1 s, Vector's
  ``glob_minimum_cooldown_ms``). Files found after start are read from offset 0 (Vector RFC 3480:
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
  A copy that a glob matches (``*.log*``) has the old generation's fingerprint and the same
  bytes further on (a sample compared with the live original, or with the last bytes read —
  two live files that merely share a banner stay two files): while the original still holds
  that content the copy is a duplicate and is not read; once the original is truncated, only
  the copy's part the original never delivered is read (Vector's advice: include
  ``app.log.1``). Loss is limited to the rotator's copy→truncate window.
- **Deleted while open**: drained to EOF, the dangling partial line emitted (Vector's rule:
  only once the file is gone and drained), then closed — no disk held (Vector #17349). A file
  renamed to a name no glob matches is closed after it sat at EOF for ``DETACHED_IDLE_CLOSE``
  (60 s) *and* no other process has it open for writing (/proc, as ``fuser``): a writer that
  has not reopened yet keeps it followed however slowly it writes (Filebeat's
  ``close_renamed`` would lose its lines). Another user's writer is visible in /proc only to
  root: a non-root collector falls back to the idle spell alone. To read a rotated file found
  later, let a glob match the rotated names (``app.log*``).
- **Open files** are capped at min(1024, 80 % of RLIMIT_NOFILE) (Vector PR #25252); beyond it the
  least recently active idle file is closed and reopened — after an identity check — when it
  grows. Idle files cost one ``stat`` per rescan; only files with recent data are polled fast.
- **Checkpoints** (``logpipe.checkpoint``) advance only from batch acks (every sink accepted the
  lines), only to line ends — never past a partial line or lines still held by the multiline
  joiner — and are written at most once a second when changed, plus on ``aclose()``. On
  ``stop()`` held partial lines are *not* emitted: they are re-read after the restart, so
  ``abc`` + restart + ``def\\n`` is one record ``abcdef``.
- **Back-pressure**: ``await emit`` blocks the reader only; discovery, rotation tracking (old
  fds kept) and checkpoint writes run in their own task.
- **--once** (``once=True``): read what is there, emit partial last lines too, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import glob
import itertools
import os
import resource
import stat as stat_mod
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from logpipe import diagnostics, identity, record
from logpipe.checkpoint import FORGET_AFTER, CheckpointStore, FileState, fingerprint
from logpipe.errors import CheckpointError, UsageError
from logpipe.pipeline import BATCH_MAX_RECORDS, Batch, Source
from logpipe.sources._lines import TRUNCATION_MARKER, LineSplitter, batch_end

#: Fingerprint length: Filebeat's default ``fingerprint.length``.
FP_MAX = 1024
#: A file with a *different* inode is taken for a copy of a known file only when at least this
#: many first bytes match (Filebeat's minimum fingerprint length) — two unrelated short files
#: that start with the same line must not skip each other's content.
FP_MIN_COPY = 64
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
#: Checkpoint write period when something changed (Vector and Filebeat both use 1 s).
CHECKPOINT_INTERVAL = 1.0
#: Bytes compared beyond the fingerprint before a file is taken for a copy of another.
SAMPLE_BYTES = 256
#: A file held back as a likely copytruncate copy of a live file (rotated name, same content)
#: is read from the start as a file of its own when the original is not truncated within this
#: many seconds after the copy stopped growing (a rotator truncates right after copying).
COPY_WAIT = 30.0
#: Names a glob match skips: compressed rotated files.
ARCHIVE_SUFFIXES = (".gz", ".zst", ".bz2", ".xz", ".lz4", ".zip", ".tgz")
#: ``**`` matches at most this many directory levels (Filebeat's ``recursive_glob`` depth).
RECURSIVE_DEPTH = 8


def expand_pattern(pattern: str) -> list[str]:
    """The plain globs one pattern stands for: a ``**`` path component becomes 0 to
    RECURSIVE_DEPTH ``*`` levels (``a/**/b`` → ``a/b``, ``a/*/b``, …); ``a/**`` is
    ``a/**/*``. A ``**`` inside a component (``x**.log``) is a plain ``*``, as in ``glob``.
    Raises ValueError for more than one ``**`` component (depth**2 globs per rescan)."""
    parts = pattern.split(os.sep)
    where = [i for i, part in enumerate(parts) if part == "**"]
    if not where:
        return [pattern]
    if len(where) > 1:
        raise ValueError(f"{pattern}: at most one '**' per pattern")
    i = where[0]
    head, rest = parts[:i], parts[i + 1:] or ["*"]
    return [os.sep.join(head + ["*"] * k + rest) for k in range(RECURSIVE_DEPTH + 1)]


def is_rotated_name(candidate: str, original: str) -> bool:
    """Is ``candidate``'s name one a rotator gives ``original``? ``app.log`` →
    ``app.log.1``, ``app.log-20261201``, ``app.log.20261201T000000`` (logrotate, logpipe
    rotate), ``app-out.log`` → ``app-out__2026-12-01_00-00-00.log`` (pm2-logrotate). Only
    names: ``api-error-1.log`` (another PM2 instance) is not a rotated ``api-error.log``."""
    cand, orig = os.path.basename(candidate), os.path.basename(original)
    if len(cand) <= len(orig):
        return False
    if cand.startswith(orig) and cand[len(orig)] in ".-_":
        return True
    stem, ext = os.path.splitext(orig)
    return bool(ext) and cand.startswith(stem + "__") and cand.endswith(ext)


def default_origin(path: str) -> tuple[dict[str, Any], str]:
    """Record defaults and plain-line level for a file, from its name (``logpipe.identity``)."""
    fid = identity.from_filename(path)
    defaults: dict[str, Any] = {record.SOURCE: path, record.SERVICE: fid.service,
                                record.HOST: identity.hostname()}
    if fid.pm_id is not None:
        defaults[record.PM_ID] = fid.pm_id
        defaults[record.INSTANCE_ID] = str(fid.pm_id)
    return defaults, ("error" if fid.stream == "err" else "info")


def default_max_open() -> int:
    """min(1024, 80 % of the soft RLIMIT_NOFILE)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 4096
    return max(8, min(1024, int(soft * 0.8)))


class _Gen:
    """One generation of one file: identity, committed and emitted offsets."""

    __slots__ = ("committed", "dev", "emitted", "fp", "fp_len", "head", "ino", "path", "retired",
                 "sample", "sample_end", "sample_fp", "seen")

    def __init__(self, dev: int, ino: int, fp: str, fp_len: int, committed: int, path: str,
                 seen: float, retired: bool = False) -> None:
        self.dev = dev
        self.ino = ino
        self.fp = fp
        self.fp_len = fp_len
        self.committed = committed  # acked by every sink: what the checkpoint stores
        self.emitted = committed  # handed to the pipeline (line end), >= committed
        self.path = path
        self.seen = seen
        self.retired = retired
        #: the first bytes themselves (memory only): lets a copy still being written — shorter
        #: than the fingerprint — be recognised as a copy rather than read as a new file
        self.head: bytes | None = None
        #: the last bytes read up to a line end, and that offset (memory only): checks that a
        #: file with the same first bytes really is a copy before skipping what we delivered
        self.sample: bytes | None = None
        self.sample_end = 0
        #: (hash, length) of a sample loaded from the checkpoint, when ``sample`` is unknown
        self.sample_fp: tuple[str, int] | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def state(self) -> FileState:
        st = FileState(self.dev, self.ino, self.fp, self.fp_len, self.committed, self.path,
                       self.seen, self.retired)
        if self.sample is not None:
            st.sample_fp, st.sample_len = fingerprint(self.sample), len(self.sample)
            st.sample_end = self.sample_end
        elif self.sample_fp is not None:
            st.sample_fp, st.sample_len = self.sample_fp
            st.sample_end = self.sample_end
        return st


class _File:
    """An open (or idle-closed) file being read."""

    __slots__ = ("base", "decoder", "detached_at", "fd", "gen", "held_since", "interval", "joiner",
                 "key", "last_data", "next_poll", "norm", "path", "pos", "shadow_file", "shadow_gen",
                 "size_seen", "split")

    def __init__(self, key: tuple[int, int], path: str, fd: int, gen: _Gen | None, pos: int,
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
        self.shadow_gen: _Gen | None = None
        self.shadow_file: _File | None = None
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


class TailSource(Source):
    """Tails files and globs into batches; see the module docstring for the rules.

    ``origin_for(path) -> (defaults, plain_level)`` names each file's records (default:
    :func:`default_origin`); ``is_excluded(path, st)`` vetoes files before they are opened (the
    feedback guard) and, with ``recheck(path, st)``, stops reading an open file that turned
    out to be excluded; ``decoder_for(path, start)`` gives a file a format decoder (PM2's
    formats; None for plain files); ``joiner_factory()`` gives each file a multiline joiner
    (``push(line, end_offset)``, ``flush()``, ``idle_deadline``).
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
        joiner_factory: Callable[[], Any] | None = None,
        max_open: int | None = None,
        recheck: Callable[[str, os.stat_result], bool] | None = None,
        decoder_for: Callable[[str, int], Any] | None = None,
    ) -> None:
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
        self._scanned = False
        self._started = time.time()
        self._gens: dict[int, _Gen] = {}  # id(gen) -> gen: everything the checkpoint stores
        self._by_key: dict[tuple[int, int], list[_Gen]] = {}
        self._by_fp: dict[str, list[_Gen]] = {}
        self._fp_lens: Counter[int] = Counter()
        for st in self._store.load():
            g = _Gen(st.dev, st.ino, st.fp, st.fp_len, st.offset, st.path,
                     max(st.seen, self._started), st.retired)
            if st.sample_fp:
                g.sample_fp = (st.sample_fp, st.sample_len)
                g.sample_end = st.sample_end
            self._add_gen(g)
        self._files: dict[tuple[int, int], _File] = {}
        self._by_path: dict[str, _File] = {}
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

    # --- generations ----------------------------------------------------------------------------
    def _add_gen(self, g: _Gen) -> None:
        self._gens[id(g)] = g
        self._by_key.setdefault(g.key, []).append(g)
        self._index_fp(g)

    def _index_fp(self, g: _Gen) -> None:
        self._by_fp.setdefault(g.fp, []).append(g)
        if g.fp_len >= FP_MIN_COPY:
            self._fp_lens[g.fp_len] += 1

    def _unindex_fp(self, g: _Gen) -> None:
        lst = self._by_fp.get(g.fp)
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(g)
            if not lst:
                del self._by_fp[g.fp]
        if g.fp_len >= FP_MIN_COPY:
            self._fp_lens[g.fp_len] -= 1
            if self._fp_lens[g.fp_len] <= 0:
                del self._fp_lens[g.fp_len]

    def _drop_gen(self, g: _Gen) -> None:
        self._gens.pop(id(g), None)
        lst = self._by_key.get(g.key)
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(g)
            if not lst:
                del self._by_key[g.key]
        self._unindex_fp(g)

    def _set_fp(self, g: _Gen, prefix: bytes) -> None:
        self._unindex_fp(g)
        g.fp = fingerprint(prefix)
        g.fp_len = len(prefix)
        g.head = prefix
        self._index_fp(g)
        self._dirty = True

    def _new_gen(self, key: tuple[int, int], prefix: bytes, start: int, path: str) -> _Gen:
        g = _Gen(key[0], key[1], fingerprint(prefix), len(prefix), start, path, time.time())
        g.head = prefix
        self._add_gen(g)
        self._dirty = True
        return g

    def _ack(self, g: _Gen, offset: int) -> None:
        # Called by the pipeline once every sink accepted the batch, in emit order.
        if offset > g.committed:
            g.committed = offset
            self._dirty = True

    # --- discovery --------------------------------------------------------------------------------
    def _expand(self) -> list[str]:
        seen: dict[str, None] = {}
        for pat in self._globs:
            if glob.has_magic(pat):
                # (``**`` already expanded to bounded ``*`` levels: expand_pattern.)
                # Compressed archives a glob like ``app.log*`` also matches (logrotate's .gz,
                # logpipe rotate's .zst) are not text: skipped, as Filebeat's docs advise with
                # ``exclude_files: ['\.gz$']``. Named literally, a file is always read.
                for p in sorted(glob.glob(pat)):
                    if not p.endswith(ARCHIVE_SUFFIXES):
                        seen.setdefault(p, None)
            else:
                seen.setdefault(pat, None)
        return list(seen)

    def _scan(self) -> None:
        """One discovery pass: rotation/deletion of known files, new files, reopen idle ones.

        Synchronous (no await inside), so it never interleaves with the reader mid-update."""
        now = time.time()
        mono = time.monotonic()
        stats: dict[str, os.stat_result] = {}
        for p in self._expand():
            try:
                st = os.stat(p)
            except OSError:
                continue
            if stat_mod.S_ISREG(st.st_mode):
                stats[p] = st
        woke = False
        # 1. files attached to a path: still there? grown?
        for path, f in list(self._by_path.items()):
            cur = stats.get(path)
            if cur is None or (cur.st_dev, cur.st_ino) != f.key:
                self._detach(f, mono)
                woke = True
                continue
            if f.gen is not None:
                f.gen.seen = now
                f.gen.path = path
            if self._recheck is not None and self._recheck(path, cur):
                self._forget_file(f)  # the feedback guard recognised it late: stop reading
                continue
            if cur.st_size != f.size_seen:
                f.size_seen = cur.st_size
                f.poke()
                woke = True
                sg = f.shadow_gen
                f.held_since = mono
                if sg is not None and not self._same_content(f.fd, cur.st_size, sg):
                    # it grew apart from the file it looked like a copy of: its own file
                    self._release_shadow(f, independent=True)
            if f.fd is None and cur.st_size != f.pos and self._reopen(f):
                woke = True  # idle-closed and grown (or shrunk): read it again
        # 2. paths not attached yet: a known file under a new name, or a new file
        if self._scanned and any(p not in self._by_path for p in stats):
            self._merge_others()  # another command line may have read it since we started
        for path, st in stats.items():
            if path in self._by_path:
                continue
            key = (st.st_dev, st.st_ino)
            f2 = self._files.get(key)
            if f2 is not None:
                if f2.path is None:  # renamed to a name a glob matches: follow it, don't re-read
                    f2.path = path
                    self._by_path[path] = f2
                    f2.poke()
                    woke = True
                # else: a hard link / second name of a file already read once
                continue
            if self._is_excluded is not None and self._is_excluded(path, st):
                continue
            if self._open_new(path, st):
                woke = True
        if not self._scanned:
            self._scanned = True
            woke = self._recover() or woke
        # 3. detached files: keep their generation alive; shadows whose original moved on
        for f in list(self._files.values()):
            if f.path is None and f.gen is not None:
                f.gen.seen = now
            if f.shadow_gen is not None and self._shadow_released(f):
                self._release_shadow(f)
                woke = True
            elif f.shadow_gen is not None and mono - f.held_since >= COPY_WAIT:
                sg = f.shadow_gen
                diagnostics.info(f"{f.path}: held back as a copy of {sg.path}, which was not "
                                 f"truncated within {COPY_WAIT:.0f} s: it is a file of its own; "
                                 "reading it from the start", key=f"tail-copy-free:{f.path}")
                self._release_shadow(f, independent=True)
                woke = True
        if woke and self._wake is not None:
            self._wake.set()

    def _detach(self, f: _File, mono: float) -> None:
        if f.path is not None:
            self._by_path.pop(f.path, None)
        f.path = None
        f.detached_at = mono
        f.poke()
        if f.fd is None:  # idle-closed and now gone from its path: nothing left to read by fd
            self._forget_file(f)

    def _forget_file(self, f: _File) -> None:
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

    def _make_capacity(self) -> bool:
        if self._open < self.max_open:
            return True
        victim: _File | None = None
        for f in self._files.values():
            if (f.fd is not None and f.path is not None and f.shadow_gen is None
                    and f.next_poll == _COLD and f.size_seen == f.pos
                    and (victim is None or f.last_data < victim.last_data)):
                victim = f
        if victim is None:
            if not self._warned_cap:
                self._warned_cap = True
                diagnostics.warning(
                    f"open-file cap reached ({self.max_open} files busy); new files wait for a "
                    "free slot", key="tail-open-cap")
            return False
        assert victim.fd is not None
        with contextlib.suppress(OSError):
            os.close(victim.fd)
        victim.fd = None
        self._open -= 1
        return True

    def _reopen(self, f: _File) -> bool:
        """Reopen an idle-closed file that grew; the identity is checked again (inode here,
        fingerprint by the reader)."""
        if f.path is None or not self._make_capacity():
            return False
        try:
            fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != f.key:
            os.close(fd)
            self._detach(f, time.monotonic())
            return False
        f.fd = fd
        self._open += 1
        f.poke()
        return True

    def _open_new(self, path: str, st: os.stat_result, recovering: bool = False) -> bool:
        """Open a file found at ``path`` and decide where to read it from (``recovering``: a
        file no glob matches, opened only if it is one this state dir had not finished)."""
        if not self._make_capacity():
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            diagnostics.warning(f"cannot open {path}: {exc.strerror or exc}", key=f"tail-open:{path}")
            return False
        try:
            fst = os.fstat(fd)
            key = (fst.st_dev, fst.st_ino)
            if key in self._files or not stat_mod.S_ISREG(fst.st_mode):
                os.close(fd)
                return False
            prefix = os.pread(fd, FP_MAX, 0)
        except OSError:
            os.close(fd)
            return False
        if not self._store.locks.acquire(key):
            os.close(fd)
            if path not in self._refused:
                self._refused.add(path)
                diagnostics.warning(
                    f"not reading {path}: another logpipe collector with state dir "
                    f"{self._state_dir} is reading it (two would deliver its lines twice); it is "
                    "read here once that one stops", key=f"tail-locked:{path}")
            return False
        if path in self._refused:
            self._refused.discard(path)
            diagnostics.info(f"{path}: the other collector let go of it; reading it here",
                             key=f"tail-unlocked:{path}")
        found = self._identify(key, fst.st_size, prefix, path, fd, known_only=recovering)
        if found is None:
            self._store.locks.release(key)
            os.close(fd)
            return False
        gen, pos, shadow = found
        self._open += 1
        defaults, level = self._origin_for(path)
        f = _File(key, path, fd, gen, pos, record.LineNormaliser(defaults, level),
                  LineSplitter(self.max_line_bytes),
                  self._joiner_factory() if self._joiner_factory is not None else None)
        f.size_seen = fst.st_size
        if self._decoder_for is not None:
            f.decoder = self._decoder_for(path, pos)
        if shadow is not None:
            f.shadow_gen = shadow
            f.shadow_file = next((x for x in self._files.values() if x.gen is shadow), None)
        self._files[key] = f
        if recovering:
            # no glob matches its name: read it as a renamed-away file (to its end, then
            # closed once nobody writes it); its entry keeps the name a glob matched
            f.path = None
            f.detached_at = time.monotonic()
            if gen is not None:
                gen.seen = time.time()
            return True
        self._by_path[path] = f
        if gen is not None:
            gen.seen = time.time()
            gen.path = path
        return True

    def _merge_others(self) -> None:
        """Offsets another command line of this state dir committed since we loaded them."""
        for e in self._store.others():
            key = (e.dev, e.ino)
            if key in self._files:
                continue  # we read it now (we hold its lock): our offset is the newer
            g = next((x for x in self._by_key.get(key, ())
                      if x.fp == e.fp and x.fp_len == e.fp_len), None)
            if g is None:
                g = _Gen(e.dev, e.ino, e.fp, e.fp_len, e.offset, e.path, max(e.seen, time.time()),
                         e.retired)
                self._add_gen(g)
            elif e.offset > g.committed:
                g.committed = g.emitted = e.offset
                g.retired = g.retired or e.retired
            self._dirty = True

    def _recover(self) -> bool:
        """First scan only: files this state dir had not finished whose name no glob matches
        any more — renamed while the collector was down (``logpipe rotate``, logrotate,
        ``--pm2``'s ``*.log`` never matches ``api-out.log.20261201T000000``), or a copytruncate
        copy under a name the globs miss — are found among the files of their directory by
        identity and their unread lines read (Vector's and Filebeat's checkpoints cannot: they
        only look at what their globs match)."""
        lost: dict[str, list[_Gen]] = {}
        for g in self._gens.values():
            if g.key in self._files or not g.path or not any(
                    fnmatch.fnmatchcase(g.path, pat) for pat in self._globs):
                continue
            lost.setdefault(os.path.dirname(g.path), []).append(g)
        woke = False
        for directory, gens in lost.items():
            keys = {g.key for g in gens if not g.retired}
            retired = [g for g in gens if g.retired]
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.path in self._by_path or entry.name.endswith(ARCHIVE_SUFFIXES):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if not stat_mod.S_ISREG(st.st_mode) or key in self._files:
                    continue
                if key in keys:
                    if all(g.retired or g.committed >= st.st_size for g in self._by_key[key]):
                        continue  # finished: nothing to read
                elif key in self._by_key or not any(
                        is_rotated_name(entry.path, g.path) for g in retired):
                    continue
                if self._is_excluded is not None and self._is_excluded(entry.path, st):
                    continue
                if self._open_new(entry.path, st, recovering=True):
                    woke = True
        return woke

    def _copy_candidates(self, key: tuple[int, int], prefix: bytes) -> list[_Gen]:
        """Generations of other inodes whose fingerprint ``prefix`` matches, best first."""
        found: list[_Gen] = []
        for length in sorted(self._fp_lens, reverse=True):
            if length <= len(prefix):
                found += [g for g in self._by_fp.get(fingerprint(prefix[:length]), ())
                          if g.key != key and g.fp_len == length]
        if len(prefix) < FP_MAX:
            # shorter than a full fingerprint: maybe a copy still being written (cp is not
            # atomic); compare with the first bytes of generations held in memory
            found += [g for g in self._gens.values()
                      if g.key != key and g.head is not None and len(g.head) > len(prefix)
                      and g.head.startswith(prefix)]
        found.sort(key=lambda g: (-g.fp_len, -g.seen))
        return found

    def _same_content(self, fd: int | None, size: int, g: _Gen) -> bool:
        """Does the file on ``fd`` hold ``g``'s content beyond the fingerprint? Compared with
        the live original where it is open, else with the sample kept from the last read."""
        if fd is None:
            return False
        try:
            live = self._files.get(g.key)
            if live is not None and live.gen is g and live.fd is not None:
                live_size = os.fstat(live.fd).st_size
                # only while the original still holds g (not yet seen truncated/rewritten)
                if live_size >= live.pos and fingerprint(os.pread(live.fd, g.fp_len, 0)) == g.fp:
                    end = min(size, live_size)
                    begin = max(0, end - SAMPLE_BYTES)
                    return os.pread(fd, end - begin, begin) == os.pread(live.fd, end - begin, begin)
            if g.sample is not None and g.sample_end <= size:
                n = len(g.sample)
                return os.pread(fd, n, g.sample_end - n) == g.sample
            if g.sample is None and g.sample_fp is not None and g.sample_end <= size:
                h, n = g.sample_fp  # from the checkpoint: compare hashes
                return fingerprint(os.pread(fd, n, g.sample_end - n)) == h
        except OSError:
            return False
        # no evidence beyond the fingerprint (an entry from the checkpoint, or a copy that
        # ends before what we read of the original): the fingerprint decides
        return True

    def _identify(self, key: tuple[int, int], size: int, prefix: bytes, path: str,
                  fd: int | None = None, known_only: bool = False,
                  ) -> tuple[_Gen | None, int, _Gen | None] | None:
        """(generation, start offset, shadowed generation) for a file seen for the first time;
        ``None`` when ``known_only`` and the file is not one we have read.

        The rules, simplest first (issue 9: never skip a distinct file):

        1. the same inode with the same first bytes is the same file: resume at its offset;
        2. another inode is a *copy* of a known generation only on positive evidence — the
           same first bytes *and* a later sample of the content, *and* a rotated name of the
           known file (:func:`is_rotated_name`), *and* that file was truncated (copytruncate:
           read the copy from where the original's delivered lines end). While the original
           still holds that content (copied, not yet truncated) the copy is held back — with a
           diagnostic — until the original is truncated, or for COPY_WAIT, after which it is a
           file of its own;
        3. anything else is a new file, read from 0 — whatever its bytes look like (two
           instances printing the same banner, three identical crash logs, a new ``a.log``
           starting like the old one: all distinct files).
        """
        # 1. a checkpoint for this very inode whose fingerprint still matches: resume there
        best: _Gen | None = None
        for g in list(self._by_key.get(key, ())):
            if g.retired:
                continue
            if g.fp_len <= len(prefix) and fingerprint(prefix[: g.fp_len]) == g.fp and g.committed <= size:
                if best is None or (g.committed, g.fp_len) > (best.committed, best.fp_len):
                    best = g
            else:
                # inode reuse (other first bytes) or truncated while we were away: that
                # generation is over; keep it only so a copy of it can still be recognised
                g.retired = True
                self._dirty = True
        if best is not None:
            if best.fp_len < len(prefix):
                self._set_fp(best, prefix)
            best.head = prefix
            best.emitted = best.committed
            if best.committed:
                # a second `collect --once app.log` printing nothing puzzles a new user: say why
                # (Filebeat logs "File ... resuming from offset" likewise); one line per 10 s
                diagnostics.info(f"{path}: resuming at byte {best.committed} from the checkpoint "
                                 f"(lines before it were delivered already)", key="tail-resume")
                if known_only:
                    diagnostics.info(f"{path}: this is {best.path}, renamed while the collector "
                                     f"was down (same inode and first bytes); reading its unread "
                                     f"lines from byte {best.committed}",
                                     key=f"tail-recovered:{path}")
            return best, best.committed, None
        # 2. a copytruncate copy of a known file: only on positive evidence
        if len(prefix) >= FP_MIN_COPY:
            for g in self._copy_candidates(key, prefix):
                if not is_rotated_name(path, g.path) or not self._same_content(fd, size, g):
                    continue
                live = self._files.get(g.key)
                if g.retired:
                    start = min(g.emitted, size)
                    diagnostics.info(
                        f"{path}: a copy of {g.path} made before it was truncated (copytruncate: "
                        "rotated name, same content); reading it from byte "
                        f"{start}, where the lines delivered from {g.path} end",
                        key=f"tail-copy:{path}")
                    gen = self._new_gen(key, prefix, start, g.path if known_only else path)
                    return gen, start, None
                if live is not None and live.gen is g and not self.once:
                    diagnostics.info(
                        f"{path}: holding it back — a rotated name of {g.path} with the same "
                        f"content (a copytruncate copy?); it is read once {g.path} is truncated "
                        f"(from where the lines delivered from there end), or from the start if "
                        f"that does not happen within {COPY_WAIT:.0f} s",
                        key=f"tail-held:{path}")
                    return None, 0, g
        if known_only:
            return None
        # 3. a new file: from the start
        return self._new_gen(key, prefix, 0, path), 0, None

    def _shadow_released(self, f: _File) -> bool:
        sg = f.shadow_gen
        src = f.shadow_file
        if sg is None:
            return False
        return sg.retired or src is None or src.gen is not sg or self._files.get(src.key) is not src

    def _release_shadow(self, f: _File, independent: bool = False) -> None:
        """The original of a copy was truncated or is gone: read the copy from where the
        original's delivered lines end (``independent``: not a copy after all, read from 0)."""
        sg = f.shadow_gen
        if sg is None:
            return
        start = 0 if independent else sg.emitted
        f.shadow_gen = None
        f.shadow_file = None
        prefix = b""
        if f.fd is not None:
            with contextlib.suppress(OSError):
                prefix = os.pread(f.fd, FP_MAX, 0)
                # the original may have delivered more than the copy holds (lines written
                # after the copy): then the copy has nothing new — never "truncated" from 0
                start = min(start, os.fstat(f.fd).st_size)
        f.gen = self._new_gen(f.key, prefix, start, f.path or sg.path)
        f.pos = f.base = start
        f.split = LineSplitter(self.max_line_bytes)
        f.poke()
        if start:
            diagnostics.info(f"{f.path or sg.path}: {sg.path} was truncated, so this is its "
                             f"copy; reading it from byte {start}, where the lines delivered "
                             f"from {sg.path} end", key=f"tail-copy:{f.path}")

    # --- reading ----------------------------------------------------------------------------------
    async def _pump(self, f: _File, emit: Callable[[Batch], Awaitable[None]]) -> bool:
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

    async def _still_written(self, f: _File) -> bool:
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

    async def _retire(self, f: _File, emit: Callable[[Batch], Awaitable[None]], why: str) -> None:
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

    async def _finish(self, f: _File, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """A drained file that is gone: emit its dangling partial line and close it."""
        await self._flush_held(f, emit)
        self._forget_file(f)

    async def _flush_held(self, f: _File, emit: Callable[[Batch], Awaitable[None]]) -> None:
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

    async def _process(self, f: _File, gen: _Gen, data: bytes,
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

    async def _emit_pairs(self, f: _File, gen: _Gen, pairs: list[tuple[bytes, int]],
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

    async def _emit_lines(self, f: _File, gen: _Gen, seg: list[bytes], flagged: list[int],
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

    # --- the Source contract ----------------------------------------------------------------------
    async def run(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        """Tail until ``stop()`` (or, with ``once``, until everything present has been read)."""
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._scan()
        if self.once:
            for f in list(self._files.values()):
                # what is there now: a writer faster than us must not keep --once going forever
                end = f.size_seen
                while not self._stopping and f.pos < end and await self._pump(f, emit):
                    pass
                if not self._stopping:
                    await self._flush_held(f, emit)
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

    async def _reader(self, emit: Callable[[Batch], Awaitable[None]]) -> None:
        wake = self._wake
        assert wake is not None
        while not self._stopping:
            wake.clear()
            mono = time.monotonic()
            progressed = False
            soonest = _COLD
            for f in list(self._files.values()):
                if self._stopping:
                    break
                if f.next_poll <= mono:
                    got = await self._pump(f, emit)
                    progressed = progressed or got
                    f.polled(got, time.monotonic())
                soonest = min(soonest, f.next_poll)
                j = f.joiner
                if j is not None and j.idle_deadline is not None and f.gen is not None:
                    if time.monotonic() >= j.idle_deadline:
                        pairs = j.flush()
                        if pairs:
                            await self._emit_pairs(f, f.gen, pairs, emit)
                    else:
                        soonest = min(soonest, j.idle_deadline)
            if progressed:
                await asyncio.sleep(0)
                continue
            if soonest == _COLD:
                await wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, soonest - time.monotonic()))

    async def _scanner(self) -> None:
        assert self._stop_event is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), self.rescan_interval)
            if self._stopping:
                return
            try:
                self._scan()
            except OSError as exc:  # e.g. EMFILE from elsewhere in the process: retry next time
                diagnostics.warning(f"tail: scan failed: {exc}", key="tail-scan")

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
    def _still_there(g: _Gen) -> bool:
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
            self._open = 0
            self._store.close()
