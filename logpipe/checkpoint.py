"""Tail checkpoints: file identity → committed offset, shared by every command line of a state dir.

Offsets belong to a file's identity (dev, inode, fingerprint of its first bytes), not to the
command line that read it: whichever ``collect`` reads a file from a state dir — another glob
added, one removed, ``--pm2`` instead of paths, a ``--once`` run between live runs — resumes at
the offset any earlier one committed, and never re-reads a delivered line.

Layout: ``<state_dir>/tail/<key>.json`` where ``<key>`` hashes the sorted absolute patterns —
each running collector writes its own file (Fluent Bit #8928: one DB rewritten by two inputs
deletes the other's rows), but :meth:`CheckpointStore.load` reads *all* of them and keeps, per
identity, the highest offset; once this collector's file holds that union, the files of
collectors that no longer run are removed (:meth:`CheckpointStore.prune`). That is also the
migration from the per-command-line layout: the first start after an upgrade (or after a
command line changed) adopts every old file's offsets and re-reads nothing.

Locks: ``<key>.lock`` (``fcntl.flock``) for the collector's lifetime — the same command line
twice with one state dir is refused at start with a :class:`~logpipe.errors.UsageError`; and
one byte-range lock per file identity in ``files.lock`` (:class:`logpipe._filelocks.FileLocks`):
two collectors with different command lines never read the same file at once from one state
dir — the second says so and leaves that file to the first.

The file is ``{"version": 1, "patterns": [...], "files": [{dev, ino, fp, fp_len, offset, path,
seen}, ...]}``, written with :func:`logpipe._fsutil.atomic_write` (tmp + fsync + rename + fsync
dir, like Vector's checkpointer). A corrupt, truncated or foreign file is reported once and
ignored — never a crash loop (Vector #20753, Filebeat #3537).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from logpipe import diagnostics
from logpipe._filelocks import FileLocks
from logpipe._fsutil import atomic_write
from logpipe.errors import CheckpointError, UsageError

VERSION = 1
#: Entries of files not seen for this long are forgotten (Vector drops them after 60 s; a
#: longer grace keeps a rotated-while-down file's offset across a slow restart).
FORGET_AFTER = 600.0
#: Leftover temp files of a crashed write older than this are removed.
_STALE_TMP = 3600.0


@dataclass(slots=True)
class FileState:
    """One file generation's checkpoint: identity (dev, inode, fingerprint) and committed offset."""

    dev: int
    ino: int
    fp: str  # hex hash of the first ``fp_len`` bytes
    fp_len: int
    offset: int  # bytes fully delivered (always at a line boundary)
    path: str = ""
    seen: float = 0.0  # epoch seconds when the file was last observed
    #: an earlier generation of a file that was truncated in place (copytruncate): kept only so
    #: that its copy, if a glob matches it, is recognised by fingerprint and not re-read
    retired: bool = False
    #: a hash of the ``sample_len`` bytes ending at ``sample_end`` (the last line read): lets a
    #: copy found after a restart be checked beyond the fingerprint ("" when unknown)
    sample_fp: str = ""
    sample_len: int = 0
    sample_end: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored for this entry."""
        obj: dict[str, Any] = {"dev": self.dev, "ino": self.ino, "fp": self.fp, "fp_len": self.fp_len,
                               "offset": self.offset, "path": self.path, "seen": round(self.seen, 3),
                               "retired": self.retired}
        if self.sample_fp:
            obj["sample"] = [self.sample_fp, self.sample_len, self.sample_end]
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> FileState | None:
        """Parse one stored entry; ``None`` when it is malformed."""
        if not isinstance(obj, dict):
            return None
        try:
            dev, ino, fp, fp_len, off = obj["dev"], obj["ino"], obj["fp"], obj["fp_len"], obj["offset"]
        except KeyError:
            return None
        if not (isinstance(dev, int) and isinstance(ino, int) and isinstance(fp, str)
                and isinstance(fp_len, int) and isinstance(off, int)) or fp_len < 0 or off < 0:
            return None
        path = obj.get("path", "")
        seen = obj.get("seen", 0.0)
        st = cls(dev, ino, fp, fp_len, off, path if isinstance(path, str) else "",
                 float(seen) if isinstance(seen, int | float) else 0.0, obj.get("retired") is True)
        sample = obj.get("sample")
        if (isinstance(sample, list) and len(sample) == 3 and isinstance(sample[0], str)
                and isinstance(sample[1], int) and isinstance(sample[2], int)
                and 0 < sample[1] <= sample[2]):
            st.sample_fp, st.sample_len, st.sample_end = sample
        return st


def tail_dir(state_dir: str) -> str:
    """Where tail checkpoints live under ``state_dir``."""
    return os.path.join(state_dir, "tail")


def set_key(patterns: Iterable[str]) -> str:
    """The file name stem for a tailing set: a short hash of its sorted absolute patterns."""
    canon = "\0".join(sorted({os.path.abspath(p) for p in patterns}))
    return hashlib.sha256(canon.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def parse(data: bytes) -> list[FileState]:
    """Checkpoint bytes → entries; raises ValueError (orjson's JSONDecodeError is one) when the
    document is not ours."""
    doc = orjson.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("files"), list):
        raise ValueError("not a version-1 logpipe checkpoint")
    return [st for item in doc["files"] if (st := FileState.from_json(item)) is not None]


def read_entries(path: str) -> list[FileState]:
    """The entries of the checkpoint file at ``path``; raises OSError when it cannot be read and
    ValueError when it is not a logpipe checkpoint (readers such as ``logpipe status``)."""
    with open(path, "rb") as f:
        return parse(f.read())


def checkpoint_files(state_dir: str) -> list[str]:
    """Every tail checkpoint file of ``state_dir`` (one per tailing set), sorted; with
    :func:`read_entries` and :func:`read_head`, the reader side for ``status`` and ``rotate``."""
    return sorted(glob.glob(os.path.join(glob.escape(tail_dir(state_dir)), "*.json")))


class CheckpointStore:
    """The locked checkpoint file of one tailing set."""

    def __init__(self, state_dir: str, patterns: Iterable[str]) -> None:
        self.patterns = sorted({os.path.abspath(p) for p in patterns})
        self.dir = tail_dir(state_dir)
        key = set_key(self.patterns)
        self.path = os.path.join(self.dir, f"{key}.json")
        self.lock_path = os.path.join(self.dir, f"{key}.lock")
        try:
            os.makedirs(self.dir, exist_ok=True)
            self._lock_fd: int | None = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CheckpointError(f"cannot use state dir {state_dir}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(self._lock_fd, 32, 0).decode().strip()
            os.close(self._lock_fd)
            self._lock_fd = None
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise UsageError(
                f"another logpipe collector{who} is already tailing these files with state dir "
                f"{state_dir}; stop it or give this one a different --state-dir"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        #: other command lines' checkpoint files merged so far: path -> (inode, mtime, size)
        self._seen_others: dict[str, tuple[int, int, int]] = {}
        self.locks = FileLocks(os.path.join(self.dir, "files.lock"))
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        # atomic_write leaves ``.tmp-*`` only when killed mid-write; other tailing sets share the
        # directory, so only clearly stale ones are removed.
        cutoff = time.time() - _STALE_TMP
        for tmp in glob.glob(os.path.join(glob.escape(self.dir), ".tmp-*")):
            with contextlib.suppress(OSError):
                if os.stat(tmp).st_mtime < cutoff:
                    os.unlink(tmp)

    def load(self) -> list[FileState]:
        """Every checkpoint file of the state dir merged (:func:`merge`): this command line's
        own and those other command lines left — offsets are per file, not per command line.
        A missing file adds nothing; a corrupt one is warned about once and adds nothing
        (start over rather than crash-loop)."""
        entries = self._read(self.path, warn=True)
        return merge(entries + self.others())

    def _read(self, path: str, warn: bool) -> list[FileState]:
        try:
            return read_entries(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            if warn:
                diagnostics.warning(f"cannot read checkpoint {path}: {exc.strerror or exc}; "
                                    "starting without it", key=f"checkpoint-read:{path}")
            return []
        except ValueError as exc:
            if warn:
                diagnostics.warning(f"checkpoint {path} is corrupt ({exc}); starting without it",
                                    key=f"checkpoint-corrupt:{path}")
            return []

    def others(self) -> list[FileState]:
        """Entries of the other command lines' checkpoint files that changed since the last
        call (one ``listdir`` and a ``stat`` per file when nothing changed)."""
        out: list[FileState] = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            path = os.path.join(self.dir, name)
            if not name.endswith(".json") or name.startswith(".") or path == self.path:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._seen_others.get(path) == stamp:
                continue
            self._seen_others[path] = stamp
            out += self._read(path, warn=False)
        return out

    def merged(self) -> dict[str, tuple[int, int, int]]:
        """The other files merged so far and the version merged (for :meth:`prune`)."""
        return dict(self._seen_others)

    def prune(self, merged: dict[str, tuple[int, int, int]]) -> list[str]:
        """Remove the checkpoint files of other command lines whose collector no longer runs
        (its ``.lock`` is free) and whose content, as ``merged`` (:meth:`merged`, taken before
        encoding what was just written) says, this one had merged — call it after a successful
        write of this collector's file, which now holds their offsets."""
        removed: list[str] = []
        for path, stamp in merged.items():
            lock = path[: -len(".json")] + ".lock"
            try:
                st = os.stat(path)
            except OSError:
                self._seen_others.pop(path, None)
                continue
            if (st.st_ino, st.st_mtime_ns, st.st_size) != stamp:
                continue  # changed since merged: merge it first (next others())
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = -1
            except OSError:
                continue
            try:
                if fd >= 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # its collector runs: it keeps its file
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed.append(path)
                self._seen_others.pop(path, None)
            finally:
                if fd >= 0:
                    os.close(fd)
        return removed

    def encode(self, entries: Iterable[FileState]) -> bytes:
        """The checkpoint document for ``entries``."""
        return orjson.dumps({"version": VERSION, "patterns": self.patterns,
                             "files": [e.to_json() for e in entries]})

    def save(self, entries: Iterable[FileState]) -> None:
        """Write the entries atomically (blocking: call it from a thread inside the loop)."""
        self.write_bytes(self.encode(entries))

    def write_bytes(self, data: bytes) -> None:
        """Atomically replace the checkpoint with ``data`` (from :meth:`encode`)."""
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Release the locks."""
        self.locks.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


def merge(entries: Iterable[FileState]) -> list[FileState]:
    """One entry per identity (dev, inode, fingerprint, its length): the highest offset any
    command line committed, the latest ``seen``, retired when any of them saw it end."""
    best: dict[tuple[int, int, str, int], FileState] = {}
    for e in entries:
        k = (e.dev, e.ino, e.fp, e.fp_len)
        cur = best.get(k)
        if cur is None:
            best[k] = e
            continue
        retired = cur.retired or e.retired
        seen = max(cur.seen, e.seen)
        if e.offset > cur.offset:
            cur = best[k] = e
        cur.retired, cur.seen = retired, seen
    return list(best.values())


def fingerprint(data: bytes) -> str:
    """The fingerprint of a file's first bytes (64-bit BLAKE2b, hex) — ``FileState.fp``."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def head_matches(head: bytes, fp: str, fp_len: int) -> bool:
    """Whether a file whose first bytes are ``head`` is the one fingerprinted ``fp``/``fp_len``."""
    return fp_len <= len(head) and fingerprint(head[:fp_len]) == fp


#: (fingerprint, fingerprint length, committed offset) of one live checkpoint entry
_Entry = tuple[str, int, int]
#: unfinished()'s parse cache: checkpoint path → ((inode, mtime_ns, size), {(dev, ino): entries})
_cache: dict[str, tuple[tuple[int, int, int], dict[tuple[int, int], list[_Entry]]]] = {}


def _offsets(path: str) -> dict[tuple[int, int], list[_Entry]]:
    """(dev, inode) → (fp, fp_len, committed offset) of the live entries of one checkpoint
    file, parsed once per change of the file (``logpipe rotate`` asks once per candidate)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # atomic_write makes a new inode
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        entries = read_entries(path)
    except (OSError, ValueError):
        entries = []
    offsets: dict[tuple[int, int], list[_Entry]] = {}
    for e in entries:
        if not e.retired:
            offsets.setdefault((e.dev, e.ino), []).append((e.fp, e.fp_len, e.offset))
    _cache[path] = (stamp, offsets)
    return offsets


def read_head(path: str, st: os.stat_result, size: int) -> bytes | None:
    """The first ``size`` bytes of the file ``st`` describes, read at ``path`` (``None`` when
    it cannot be read, or ``path`` is now another file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            return None
        return os.pread(fd, size, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def progress(state_dir: str, st: os.stat_result, path: str | None = None) -> str | None:
    """What the collectors of ``state_dir`` have done with the file of ``st``: ``"unfinished"``
    (a checkpoint knows it and has committed less than ``st.st_size`` bytes), ``"delivered"``
    (committed up to its end) or ``None`` (no checkpoint knows it). Offsets are per file, so
    the highest offset of all checkpoint files counts. Missing or corrupt checkpoints count as
    not knowing.

    "Knows" is the tailer's own identity rule: same (dev, inode) *and*, when ``path`` is given,
    the entry's fingerprint matches the file's first bytes. Without the fingerprint, a stale
    entry of a deleted file whose inode was handed to a new file (ext4 and tmpfs reuse freed
    inodes at once) would postpone that file's compression forever — the collector itself
    would read the new file from 0, not resume the entry. A file that cannot be read to check
    counts as known (when unsure, postpone)."""
    key = (st.st_dev, st.st_ino)
    head: bytes | None = None
    checked = False
    best = -1
    for ckpt in checkpoint_files(state_dir):
        for fp, fp_len, off in _offsets(ckpt).get(key, ()):
            if off <= best:
                continue
            if path is not None:
                if not checked:
                    head = read_head(path, st, max(1024, fp_len))
                    checked = True
                if head is not None and not head_matches(head, fp, fp_len):
                    continue
            best = off
    if best < 0:
        return None
    return "delivered" if best >= st.st_size else "unfinished"


def unfinished(state_dir: str, st: os.stat_result, path: str | None = None) -> bool:
    """True when a tail checkpoint under ``<state_dir>/tail/`` knows the file of ``st`` and has
    committed less than ``st.st_size`` bytes of it (:func:`progress`) — ``logpipe rotate``
    then postpones compressing or deleting it."""
    return progress(state_dir, st, path) == "unfinished"
