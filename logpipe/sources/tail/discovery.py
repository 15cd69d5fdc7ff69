"""Finding the files to tail: new files, renames, the open-file cap, idle reopen, recovery
(what the globs name: ``globs``; when to look: ``watch``)."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import resource
import stat as stat_mod
import time
from collections.abc import Callable, Iterable
from typing import Any

from logpipe import diagnostics, identity, record
from logpipe.sources.tail.generations import COPY_WAIT, FP_MAX, Generation
from logpipe.sources.tail.globs import ARCHIVE_SUFFIXES, expand, glob_dirs, stat_regular
from logpipe.sources.tail.names import is_rotated_name
from logpipe.sources.tail.notify import DirWatcher
from logpipe.sources.tail.reader import Reader, TailFile

#: Scans that look again for unfinished renamed files the exclusion hook held back at first.
RECOVER_SCANS = 60
#: Files waiting this long for a slot under the open-file cap (every open one busy) are said.
CAP_WARN_AFTER = 10.0


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


class Discovery(Reader):
    """Scans the globs: attaches, detaches, opens, reopens and recovers files."""

    _origin_for: Callable[[str], tuple[dict[str, Any], str]]
    _is_excluded: Callable[[str, os.stat_result], bool] | None
    _scanned: bool
    _recover_scans: int
    _wake: Any
    _warned_cap: bool
    _waiting: dict[str, None]
    _cap_since: float | None
    _watcher: DirWatcher | None
    _use_notify: bool
    _all_watched: bool
    rescan_interval: float
    _recheck: Callable[[str, os.stat_result], bool] | None
    max_open: int

    def _scan(self, only: Iterable[str] | None = None) -> None:
        """One discovery pass: rotation/deletion of known files, new files, reopen idle ones —
        over every glob match, or (``only``) over these paths (inotify events, files inotify
        does not cover), which a path missing from them does not detach.

        Synchronous (no await inside), so it never interleaves with the reader mid-update."""
        now = time.time()
        mono = time.monotonic()
        if only is None:
            self._watch_dirs()
            stats = stat_regular(expand(self._globs))
            self._waiting = {p: None for p in self._waiting if p in stats}
            attached = list(self._by_path.items())
        else:
            paths = set(only)
            stats = stat_regular(paths)
            attached = [(p, f) for p in paths if (f := self._by_path.get(p)) is not None]
        woke = self._check_attached(attached, stats, now, mono)
        # paths not attached yet: a known file under a new name, or a new file
        new = [p for p in stats if p not in self._by_path and p not in self._waiting]
        if self._scanned and new:
            self._merge_others()  # another command line may have read it since we started
        for path in new:
            if path in self._by_path:
                continue  # (attached meanwhile: a renamed file followed)
            if not self._has_slot():
                self._waiting[path] = None  # opened by _admit once a slot is free
            elif self._consider(path, stats[path]):
                woke = True
        if self._recover_scans > 0:
            self._scanned = True
            woke = self._recover() or woke
        if only is None or self._recover_scans <= 0:
            woke = self._tend(now, mono) or woke
        if self._resumed:
            self._say_resumed()
        if woke and self._wake is not None:
            self._wake.set()

    def _check_attached(self, attached: list[tuple[str, TailFile]],
                        stats: dict[str, os.stat_result], now: float, mono: float) -> bool:
        """Step 1 of a scan: files attached to a path — still there? grown? True: wake the
        reader."""
        woke = False
        for path, f in attached:
            cur = stats.get(path)
            if cur is None or (cur.st_dev, cur.st_ino) != f.key:
                self._detach(f, mono)
                woke = True
                continue
            if f.gen is not None:
                f.gen.seen = now
                self._set_gen_path(f.gen, path)
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
        return woke

    def _consider(self, path: str, st: os.stat_result) -> bool:
        """A path no file is attached to: a known file under a new name (followed), or a new
        file (opened). True when the reader has something new to do."""
        key = (st.st_dev, st.st_ino)
        f2 = self._files.get(key)
        if f2 is not None:
            if f2.path is None:  # renamed to a name a glob matches: follow it, don't re-read
                f2.path = path
                self._by_path[path] = f2
                f2.covered = self._covered(path)
                f2.poke()
                return True
            return False  # a hard link / second name of a file already read once
        if self._is_excluded is not None and self._is_excluded(path, st):
            return False
        return self._open_new(path, st)

    def _admit(self) -> bool:
        """Open files waiting for a slot, as far as idle files can be closed for them; True
        when one was opened (or dropped: gone meanwhile)."""
        admitted = False
        if self._scanned and self._waiting and self._has_slot():
            self._merge_others()  # another command line may have read them since
        while self._waiting and self._has_slot():
            path = next(iter(self._waiting))
            del self._waiting[path]
            admitted = True
            st = stat_regular((path,)).get(path)
            if st is not None and path not in self._by_path:
                self._consider(path, st)
        if not self._waiting or admitted:
            self._cap_since = None
        elif self._cap_since is None:
            self._cap_since = time.monotonic()
        elif not self._warned_cap and time.monotonic() - self._cap_since >= CAP_WARN_AFTER:
            # (10,000 files at start wait a moment for slots: normal, not worth a warning)
            self._warned_cap = True
            diagnostics.warning(
                f"open-file cap reached ({self.max_open} files, each with unread data); "
                f"{len(self._waiting)} more wait for a free slot", key="tail-open-cap")
        return admitted

    def _watch_dirs(self) -> None:
        """Watch (inotify) every directory a glob can match files in — the first full scan
        sets the watcher up; polling where it cannot be (``notify``)."""
        if self.once or not self._use_notify:
            return
        if self._watcher is None:
            try:
                self._watcher = DirWatcher()
            except OSError as exc:
                self._use_notify = False
                diagnostics.info(f"tail: no inotify ({exc.strerror or exc}); polling every "
                                 f"{self.rescan_interval:g} s", key="tail-no-inotify")
                return
        self._all_watched = all([self._watcher.watch(d) for d in glob_dirs(self._globs)])

    def _covered(self, path: str) -> bool:
        """Does an inotify watch report ``path``'s writes (its directory watched, no symlink)?"""
        w = self._watcher
        return (w is not None and w.watched(os.path.dirname(path))
                and not os.path.islink(path))

    def _tend(self, now: float, mono: float) -> bool:
        """Step 3 of a scan: detached files keep their generation alive; a held-back copy is
        released when its original moved on, or after COPY_WAIT as a file of its own."""
        woke = False
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
        return woke

    def _say_resumed(self) -> None:
        """Every file read from a non-zero offset is named on stderr, with the offset — one
        line per scan (a restart with 1,000 files says so in one line, naming the first 10)."""
        done, self._resumed = self._resumed, []
        if len(done) == 1:
            # a second `collect --once app.log` printing nothing puzzles a new user: say why
            # (Filebeat logs "File ... resuming from offset" likewise)
            path, offset = done[0]
            diagnostics.info(f"{path}: resuming at byte {offset} from the checkpoint "
                             "(lines before it were delivered already)", key=f"tail-resume:{path}")
            return
        named = "; ".join(f"{p}: resuming at byte {o}" for p, o in done[:10])
        more = f"; +{len(done) - 10} more" if len(done) > 10 else ""
        diagnostics.info(f"{len(done)} files from the checkpoint (lines before those offsets "
                         f"were delivered already): {named}{more}", key="tail-resume-many")

    def _detach(self, f: TailFile, mono: float) -> None:
        if f.path is not None:
            self._by_path.pop(f.path, None)
        f.path = None
        f.detached_at = mono
        f.poke()
        if f.fd is None:  # idle-closed and now gone from its path: nothing left to read by fd
            self._forget_file(f)

    def _has_slot(self) -> bool:
        """A free fd slot under the cap, made by closing the least recently read idle file
        (read to its known size: nothing unread) — O(1) per open from the LRU order, not a
        scan of every file. A closed file is reopened, after an identity check, when it grows."""
        while self._open >= self.max_open and self._lru:
            f, _ = self._lru.popitem(last=False)
            if (f.fd is not None and f.path is not None and f.shadow_gen is None
                    and f.pos >= f.size_seen and self._files.get(f.key) is f):
                self._close_idle(f)
            # else: busy (unread data, renamed away, held back): back in the LRU when next read
        return self._open < self.max_open

    def _close_idle(self, f: TailFile) -> None:
        """Close an idle file's fd; its state stays (reopened when it grows)."""
        self._lru.pop(f, None)
        if f.fd is not None:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            f.fd = None
            self._open -= 1

    def _reopen(self, f: TailFile) -> bool:
        """Reopen an idle-closed file that grew; the identity is checked again (inode here,
        fingerprint by the reader)."""
        if f.path is None or not self._has_slot():
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
        if not self._has_slot():
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
        if not self._lock(path, key):
            os.close(fd)
            return False
        found = self._identify(key, fst.st_size, prefix, path, fd, known_only=recovering)
        if found is None:
            self._store.locks.release(key)
            os.close(fd)
            return False
        gen, pos, shadow = found
        self._open += 1
        defaults, level = self._origin_for(path)
        f = TailFile(key, path, fd, gen, pos, self._assembler(record.LineNormaliser(defaults, level)))
        f.size_seen = fst.st_size
        f.hot = self._hot
        f.poke()
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
        f.covered = self._covered(path)
        if gen is not None:
            gen.seen = time.time()
            self._set_gen_path(gen, path)
        return True

    def _lock(self, path: str, key: tuple[int, int]) -> bool:
        """Take the file's lock in the state dir; False (said once) while another collector
        of the state dir reads it."""
        if not self._store.locks.acquire(key):
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
        return True

    def _recover(self) -> bool:
        """First scan only: files this state dir had not finished whose name no glob matches
        any more — renamed while the collector was down (``logpipe rotate``, logrotate,
        ``--pm2``'s ``*.log`` never matches ``api-out.log.20261201T000000``), or a copytruncate
        copy under a name the globs miss — are found among the files of their directory by
        identity and their unread lines read (Vector's and Filebeat's checkpoints cannot: they
        only look at what their globs match)."""
        lost: dict[str, list[Generation]] = {}
        for g in self._gens.values():
            if g.key in self._files or not g.path or not any(
                    fnmatch.fnmatchcase(g.path, pat) for pat in self._globs):
                continue
            lost.setdefault(os.path.dirname(g.path), []).append(g)
        woke = held = False
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
                    held = True  # (the feedback guard's start-up hold-back: asked again)
                    continue
                if self._open_new(entry.path, st, recovering=True):
                    woke = True
        # first scan only — again on the next scans (at most RECOVER_SCANS) while the
        # exclusion hook held a candidate back, so a file it releases later is still found
        self._recover_scans = self._recover_scans - 1 if held else 0
        return woke
