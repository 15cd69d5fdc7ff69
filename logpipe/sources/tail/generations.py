"""The identity rules of the tail source: file generations, resume, copies (testable without a loop).

A *generation* is one life of one file: (dev, inode) plus a fingerprint of its first bytes, and
the offsets committed (acked by every sink) and emitted. :meth:`Generations._identify` decides,
for a file seen for the first time, whether it is a known generation (resume), a copytruncate
copy of one (positive evidence only: :func:`is_rotated_name`, same content, original
truncated — or held back while the original still holds that content), or a new file (read
from 0). The rules are in ``_identify``'s docstring; ``logpipe.sources.tail`` has the overview.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logpipe import diagnostics
from logpipe.checkpoint import CheckpointStore, FileState, fingerprint
from logpipe.sources._lines import LineAssembler
from logpipe.sources.tail.names import first_bytes, is_rotated_name, rotated_from

if TYPE_CHECKING:
    from logpipe import record
    from logpipe.multiline import Joiner
    from logpipe.sources.tail.reader import TailFile

#: Fingerprint length: Filebeat's default ``fingerprint.length``.
FP_MAX = 1024
#: A file with a *different* inode is taken for a copy of a known file only when at least this
#: many first bytes match (Filebeat's minimum fingerprint length) — two unrelated short files
#: that start with the same line must not skip each other's content.
FP_MIN_COPY = 64
#: Bytes compared beyond the fingerprint before a file is taken for a copy of another.
SAMPLE_BYTES = 256
#: A file held back as a likely copytruncate copy of a live file (rotated name, same content)
#: is read from the start as a file of its own when the original is not truncated within this
#: many seconds after the copy stopped growing (a rotator truncates right after copying).
COPY_WAIT = 30.0


class Generation:
    """One generation of one file: identity, committed and emitted offsets."""

    __slots__ = ("committed", "dev", "emitted", "fp", "fp_len", "ino", "path", "retired",
                 "sample", "sample_end", "sample_fp", "sample_hashed", "seen")

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
        #: the last bytes read up to a line end, and that offset (memory only): checks that a
        #: file with the same first bytes really is a copy before skipping what we delivered
        self.sample: bytes | None = None
        self.sample_end = 0
        #: (hash, length) of a sample loaded from the checkpoint, when ``sample`` is unknown
        self.sample_fp: tuple[str, int] | None = None
        #: (sample, its hash): hashed once per sample, not once per checkpoint write — with
        #: 10,000 files the checkpoint is encoded every second while any of them is active
        self.sample_hashed: tuple[bytes, str] | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def state(self) -> FileState:
        st = FileState(self.dev, self.ino, self.fp, self.fp_len, self.committed, self.path,
                       self.seen, self.retired)
        if self.sample is not None:
            hashed = self.sample_hashed
            if hashed is None or hashed[0] is not self.sample:
                hashed = self.sample_hashed = (self.sample, fingerprint(self.sample))
            st.sample_fp, st.sample_len = hashed[1], len(self.sample)
            st.sample_end = self.sample_end
        elif self.sample_fp is not None:
            st.sample_fp, st.sample_len = self.sample_fp
            st.sample_end = self.sample_end
        return st


class Generations:
    """The generations the checkpoint stores, their indexes, and the identity rules."""

    # The state every part of the tail source shares (set in ``TailSource.__init__``).
    once: bool
    max_line_bytes: int
    _state_dir: str
    _globs: list[str]
    _store: CheckpointStore
    _gens: dict[int, Generation]
    _by_key: dict[tuple[int, int], list[Generation]]
    _by_name: dict[str, list[Generation]]  # base name of ``path`` -> generations
    _files: dict[tuple[int, int], TailFile]
    _by_path: dict[str, TailFile]
    _refused: set[str]
    _dirty: bool
    _stopping: bool
    _open: int
    _joiner_factory: Callable[[], Joiner] | None
    _decoder_for: Callable[[str, int], Any] | None
    lines_read: int
    truncations: int
    _resumed: list[tuple[str, int]]  # files resumed at an offset this scan (said at its end)

    def _assembler(self, norm: record.LineNormaliser) -> LineAssembler:
        """A file's line path for a new stream (open, copytruncate, shadow released)."""
        joiner = self._joiner_factory() if self._joiner_factory is not None else None
        return LineAssembler(norm, self.max_line_bytes, joiner)

    def _add_gen(self, g: Generation) -> None:
        self._gens[id(g)] = g
        self._by_key.setdefault(g.key, []).append(g)
        self._by_name.setdefault(os.path.basename(g.path), []).append(g)

    def _unindex_name(self, g: Generation) -> None:
        name = os.path.basename(g.path)
        lst = self._by_name.get(name)
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(g)
            if not lst:
                del self._by_name[name]

    def _set_gen_path(self, g: Generation, path: str) -> None:
        """``g`` is now at ``path`` (the name index follows: copies are looked for by name)."""
        if g.path != path:
            if self._gens.get(id(g)) is g:
                self._unindex_name(g)
                self._by_name.setdefault(os.path.basename(path), []).append(g)
            g.path = path

    def _drop_gen(self, g: Generation) -> None:
        self._gens.pop(id(g), None)
        lst = self._by_key.get(g.key)
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(g)
            if not lst:
                del self._by_key[g.key]
        self._unindex_name(g)

    def _set_fp(self, g: Generation, prefix: bytes) -> None:
        g.fp = fingerprint(prefix)
        g.fp_len = len(prefix)
        self._dirty = True

    def _new_gen(self, key: tuple[int, int], prefix: bytes, start: int, path: str) -> Generation:
        g = Generation(key[0], key[1], fingerprint(prefix), len(prefix), start, path, time.time())
        self._add_gen(g)
        self._dirty = True
        return g

    def _ack(self, g: Generation, offset: int) -> None:
        # Called by the pipeline once every sink accepted the batch, in emit order.
        if offset > g.committed:
            g.committed = offset
            self._dirty = True

    def _merge_others(self) -> None:
        """Offsets another command line of this state dir committed since we loaded them."""
        for e in self._store.others():
            key = (e.dev, e.ino)
            if key in self._files:
                continue  # we read it now (we hold its lock): our offset is the newer
            g = next((x for x in self._by_key.get(key, ())
                      if x.fp == e.fp and x.fp_len == e.fp_len), None)
            if g is None:
                g = Generation(e.dev, e.ino, e.fp, e.fp_len, e.offset, e.path, max(e.seen, time.time()),
                         e.retired)
                self._add_gen(g)
            elif e.offset > g.committed:
                g.committed = g.emitted = e.offset
                g.retired = g.retired or e.retired
            self._dirty = True

    def _copy_candidates(self, key: tuple[int, int], prefix: bytes, path: str) -> list[Generation]:
        """Generations of other inodes whose fingerprint ``prefix`` matches, best first — among
        those whose name ``path``'s is a rotated name of (:func:`rotated_from`: an index
        lookup, not a pass over every generation — 10,000 files found at once cost O(n))."""
        found: list[Generation] = []
        fps: dict[int, str] = {}
        for name in rotated_from(os.path.basename(path)):
            for g in self._by_name.get(name, ()):
                if g.key == key:
                    continue
                n = g.fp_len
                if FP_MIN_COPY <= n <= len(prefix):
                    if n not in fps:
                        fps[n] = fingerprint(prefix[:n])
                    if fps[n] == g.fp:
                        found.append(g)
                elif len(prefix) < FP_MAX and n > len(prefix) and self._live_head_starts(g, prefix):
                    # shorter than a full fingerprint: maybe a copy still being written (cp is
                    # not atomic); compare with the first bytes of a file we read
                    found.append(g)
        found.sort(key=lambda g: (-g.fp_len, -g.seen))
        return found

    def _live_head_starts(self, g: Generation, prefix: bytes) -> bool:
        """Does ``g``'s file — one this process reads, still holding ``g``'s first bytes —
        start with ``prefix``? Read from the file, not kept in memory (10,000 files: 5 MB)."""
        live = self._files.get(g.key)
        if live is None or live.gen is not g:
            return False
        try:
            head = (os.pread(live.fd, g.fp_len, 0) if live.fd is not None
                    else (first_bytes(g.path, g.key, g.fp_len) or (0, b""))[1])
        except OSError:
            return False
        return len(head) == g.fp_len and fingerprint(head) == g.fp and head.startswith(prefix)

    def _same_content(self, fd: int | None, size: int, g: Generation) -> bool:
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
                  ) -> tuple[Generation | None, int, Generation | None] | None:
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
        best: Generation | None = None
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
            best.emitted = best.committed
            if best.committed:
                # a second `collect --once app.log` printing nothing puzzles a new user: say why
                # (Filebeat logs "File ... resuming from offset" likewise); one line per 10 s
                self._resumed.append((path, best.committed))
                if known_only:
                    diagnostics.info(f"{path}: this is {best.path}, renamed while the collector "
                                     f"was down (same inode and first bytes); reading its unread "
                                     f"lines from byte {best.committed}",
                                     key=f"tail-recovered:{path}")
            return best, best.committed, None
        # 2. a copytruncate copy of a known file: only on positive evidence
        copy = self._as_copy(key, size, prefix, path, fd, known_only)
        if copy is not None:
            return copy
        if known_only:
            return None
        # 3. a new file: from the start
        return self._new_gen(key, prefix, 0, path), 0, None

    def _as_copy(self, key: tuple[int, int], size: int, prefix: bytes, path: str, fd: int | None,
                 known_only: bool) -> tuple[Generation | None, int, Generation | None] | None:
        """Rule 2 of :meth:`_identify`: (copy's generation, start, None) when the original was
        truncated; (None, 0, original) to hold it back while the original is live; ``None``
        when the file is not a copy of any known generation."""
        if len(prefix) < FP_MIN_COPY:
            return None
        for g in self._copy_candidates(key, prefix, path):
            if not is_rotated_name(path, g.path) or not self._same_content(fd, size, g):
                continue
            live = self._files.get(g.key)
            if not g.retired and live is None and self._truncated_at_path(g):
                # the original is not open here yet (found later in this scan, or held back
                # by the exclusion hook): look at it — truncated is the evidence we need
                g.retired = True
                self._dirty = True
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
        return None

    @staticmethod
    def _truncated_at_path(g: Generation) -> bool:
        """Does ``g``'s path still hold ``g``'s inode, now shorter than what was committed
        or with other first bytes (truncated in place: copytruncate)?"""
        found = first_bytes(g.path, g.key, g.fp_len)
        if found is None:
            return False
        size, head = found
        return size < g.committed or len(head) < g.fp_len or fingerprint(head) != g.fp

    def _shadow_released(self, f: TailFile) -> bool:
        sg = f.shadow_gen
        src = f.shadow_file
        if sg is None:
            return False
        return sg.retired or src is None or src.gen is not sg or self._files.get(src.key) is not src

    def _release_shadow(self, f: TailFile, independent: bool = False) -> None:
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
        f.lines = self._assembler(f.lines.normalise)
        f.poke()
        if start:
            diagnostics.info(f"{f.path or sg.path}: {sg.path} was truncated, so this is its "
                             f"copy; reading it from byte {start}, where the lines delivered "
                             f"from {sg.path} end", key=f"tail-copy:{f.path}")
