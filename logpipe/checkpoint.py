"""Tail checkpoints: file identity → committed offset, one locked JSON file per tailing set.

Layout: ``<state_dir>/tail/<key>.json`` where ``<key>`` hashes the sorted absolute patterns, so
two collectors with different inputs never clobber each other's state (Fluent Bit #8928: a DB
shared by two inputs deletes the other's rows). ``<key>.lock`` is held with ``fcntl.flock`` for
the collector's lifetime: a second collector with the same inputs and state dir refuses with a
:class:`~logpipe.errors.UsageError` instead of fighting over offsets.

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


def _parse(data: bytes) -> list[FileState]:
    """Checkpoint bytes → entries; raises ValueError when the document is not ours."""
    doc = orjson.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("files"), list):
        raise ValueError("not a version-1 logpipe checkpoint")
    out = []
    for item in doc["files"]:
        st = FileState.from_json(item)
        if st is not None:
            out.append(st)
    return out


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
        """The stored entries; a missing file is an empty list, a corrupt one is warned about
        once and treated as empty (start over rather than crash-loop)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            diagnostics.warning(f"cannot read checkpoint {self.path}: {exc.strerror or exc}; "
                                "starting without it", key=f"checkpoint-read:{self.path}")
            return []
        try:
            return _parse(data)
        except (ValueError, orjson.JSONDecodeError) as exc:
            diagnostics.warning(f"checkpoint {self.path} is corrupt ({exc}); starting without it",
                                key=f"checkpoint-corrupt:{self.path}")
            return []

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
        """Release the lock."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


def fingerprint(data: bytes) -> str:
    """The fingerprint of a file's first bytes (64-bit BLAKE2b, hex) — ``FileState.fp``."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


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
        with open(path, "rb") as f:
            entries = _parse(f.read())
    except (OSError, ValueError, orjson.JSONDecodeError):
        entries = []
    offsets: dict[tuple[int, int], list[_Entry]] = {}
    for e in entries:
        if not e.retired:
            offsets.setdefault((e.dev, e.ino), []).append((e.fp, e.fp_len, e.offset))
    _cache[path] = (stamp, offsets)
    return offsets


def _head(path: str, st: os.stat_result, size: int) -> bytes | None:
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


def unfinished(state_dir: str, st: os.stat_result, path: str | None = None) -> bool:
    """True when a tail checkpoint under ``<state_dir>/tail/`` knows the file of ``st`` and has
    committed less than ``st.st_size`` bytes of it — ``logpipe rotate`` then postpones
    compressing or deleting it. Missing or corrupt checkpoints count as not knowing.

    "Knows" is the tailer's own identity rule: same (dev, inode) *and*, when ``path`` is given,
    the entry's fingerprint matches the file's first bytes. Without the fingerprint, a stale
    entry of a deleted file whose inode was handed to a new file (ext4 and tmpfs reuse freed
    inodes at once) would postpone that file's compression forever — the collector itself
    would read the new file from 0, not resume the entry. A file that cannot be read to check
    counts as known (when unsure, postpone)."""
    key = (st.st_dev, st.st_ino)
    head: bytes | None = None
    checked = False
    for ckpt in glob.glob(os.path.join(glob.escape(tail_dir(state_dir)), "*.json")):
        for fp, fp_len, off in _offsets(ckpt).get(key, ()):
            if off >= st.st_size:
                continue
            if path is None:
                return True
            if not checked:
                head = _head(path, st, max(1024, fp_len))
                checked = True
            if head is None or (fp_len <= len(head) and fingerprint(head[:fp_len]) == fp):
                return True
    return False
