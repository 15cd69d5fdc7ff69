"""Rotation, one owner: plan, rename / copytruncate, streaming zstd, retention, locks, dry-run.

The same engine serves two callers (ARCHITECTURE.md "Rotation has one owner"):

- the **file sink** (``sinks/file.py``), the writer itself: it renames its file at a line
  boundary (:func:`rotate_locked_fd`) and compresses off its write path
  (:func:`compress_rotated`, :func:`apply_retention`) — multilog/svlogd semantics: one writer,
  whole lines, nothing lost (research/collector.md §5);
- **``logpipe rotate``** from cron (:func:`main`), a second process. It emulates the writer's
  safety through locks instead of copy+truncate:

  * ``DIR/.logpipe-rotate.lock`` (``flock``): one rotation run per directory at a time. A
    second run waits :data:`LOCK_WAIT_SECONDS` then exits with :class:`LockBusy` (exit 3,
    like logrotate's locked state file). The file sink's background compressor takes the same
    lock for each file it compresses, so the two never race on retention.
  * the log file itself (``flock``): logpipe's file sink holds it **shared** while it appends a
    batch; rotation takes it **exclusive** to rename, so a batch lands wholly in the old file
    or wholly in the new one. The sink compares ``stat(path)`` with its fd's inode before each
    batch (and every second while idle) and reopens — no line lost or split.

Names: ``<log>.<UTC YYYYmmddTHHMMSS>[.<n>][.zst]`` beside the log. The ``.log`` stays in the
name so ``*.log`` globs never match rotated files (logrotate's man page warns that ``*``
re-rotates them); names sort by (timestamp, n) and are unique within a second; a rotated name
is never rotated again. Retention matches the *exact* log name (``api.log`` never touches
``api-gw.log.*``: pm2-logrotate #128/#167), and only ever deletes regular files whose names
are this engine's own output.

Compression: streaming zstd (bounded memory) to ``.<name>.zst.tmp``, decompress-verified as it
is written (size + zstd's content checksum), fsync, rename, fsync the directory, and only then remove the
uncompressed file (pm2-logrotate #51 shipped truncated .gz files because it compressed a live
file). A rotated file is left uncompressed for the next run ("postponed", logrotate's
``delaycompress`` done on evidence instead of always) while

- another process still has it open (seen in ``/proc``, like ``fuser``): a foreign writer
  such as PM2 keeps appending to the renamed file until ``pm2 reloadLogs``; a collector or
  ``tail -f`` may still be draining it; or
- a collector has not finished reading it (``logpipe.checkpoint.unfinished``).

Daily rotation needs no state file (logrotate's status file is its most common failure:
logrotate #45/#78/#135): "when was this file started" is read from the file itself — a
``user.logpipe.created`` xattr set when rotation creates the fresh file, else the newest
rotated name's timestamp, else the first line's ``time`` — so cron jitter and missed days
(``Persistent=true``) need nothing extra. A file with no such evidence counts as never rotated.

Limits (stated, not hidden): a collector can only follow a renamed file it had already found —
it rescans globs every second — so rotating the same file more often than that can hide a
short-lived generation from it; a stale collector checkpoint whose inode number was reused
makes rotation postpone compressing that file (the safe direction) until the checkpoint is
forgotten; other users' processes are invisible in ``/proc`` unless rotate runs as root.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import glob
import os
import re
import stat as stat_mod
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from logpipe import diagnostics, record
from logpipe._fsutil import fsync_dir
from logpipe._openfiles import open_by_others
from logpipe.errors import LockBusy, RotateError, UsageError

#: Lock file (one rotation run per directory at a time); a dot file so no glob matches it.
LOCK_NAME = ".logpipe-rotate.lock"
#: How long a second ``logpipe rotate`` waits for the lock before LockBusy (exit 3).
LOCK_WAIT_SECONDS = 10.0
LOCK_WAIT_ENV = "LOGPIPE_ROTATE_LOCK_WAIT"
#: How long a cron run waits for writers to let go of a just-renamed file (logpipe's file sink
#: notices a rename within a second) before leaving it uncompressed for the next run.
WRITER_WAIT_SECONDS = 2.0
#: xattr recording when rotation created a fresh log file (evidence for --daily).
CREATED_XATTR = "user.logpipe.created"

#: zstd settings, tuned with ``bench/rotate.py --tune`` on 100 MB of varied JSON logs (random
#: request ids, paths, durations): levels 2-4 came out *larger* than ``gzip -6`` there; level 1
#: plus long-distance matching (``zstd --long``) matched gzip's size at ~0.2x its CPU time.
#: The window stays ≤ 2^27 so plain ``zstd -d`` / ``zstdcat`` decompress without ``--long``;
#: memory is bounded by the window (compressing and verifying), whatever the file size.
#: Threads: none — on a busy 2-core box a worker thread measured no faster.
ZSTD_LEVEL = 1
ZSTD_LONG = True
ZSTD_WINDOW_LOG = 25
ZSTD_THREADS = 0
IO_CHUNK = 1 << 20

_STAMP_FMT = "%Y%m%dT%H%M%S"
_ROTATED_SUFFIX = r"\.(\d{8}T\d{6})(?:\.(\d+))?(\.zst)?"
_ROTATED_ANY = re.compile(r".*" + _ROTATED_SUFFIX + r"$")
_GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass
class RotateOptions:
    """What ``logpipe rotate`` was asked to do (filled by cli.py)."""

    paths: list[str] = field(default_factory=list)
    retain: int = 7
    max_size: int | None = None
    daily: bool = False
    max_age_days: int | None = None
    copytruncate: bool = False
    compress: bool = True
    dry_run: bool = False
    state_dir: str = ""


# --- names --------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class RotatedFile:
    """One rotated output of a log: ``<log>.<stamp>[.<seq>][.zst]``."""

    stamp: str
    seq: int
    path: str = field(compare=False)
    compressed: bool = field(compare=False)

    @property
    def epoch(self) -> float:
        """When it was rotated (UTC, from its name)."""
        return float(calendar.timegm(time.strptime(self.stamp, _STAMP_FMT)))


def is_rotated_name(name: str) -> bool:
    """True when ``name`` looks like a rotated output (``x.log.20261123T000000[.1][.zst]``)."""
    return _ROTATED_ANY.match(name) is not None


def stamp(epoch: float) -> str:
    """Epoch seconds → the UTC timestamp used in rotated names."""
    return time.strftime(_STAMP_FMT, time.gmtime(epoch))


def rotated_files(log_path: str) -> list[RotatedFile]:
    """The rotated outputs of exactly this log (regular files only), oldest first."""
    directory, base = os.path.split(os.path.abspath(log_path))
    pattern = re.compile(re.escape(base) + _ROTATED_SUFFIX + r"$")
    found: list[RotatedFile] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        # a symlink or directory wearing our name is not our output: never touch it
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        found.append(RotatedFile(m[1], int(m[2] or 0), entry.path, m[3] is not None))
    found.sort()
    return found


def _next_rotated_path(log_path: str, now: float) -> str:
    """A fresh rotated name, sorting after every existing one (even if the clock went back)."""
    existing = rotated_files(log_path)
    st, seq = stamp(now), 0
    if existing and (existing[-1].stamp, existing[-1].seq) >= (st, 0):
        st, seq = existing[-1].stamp, existing[-1].seq + 1
    while True:
        path = f"{log_path}.{st}" + (f".{seq}" if seq else "")
        directory, base = os.path.split(path)
        taken = (path, path + ".zst", os.path.join(directory, f".{base}.zst.tmp"),
                 os.path.join(directory, f".{base}.tmp"))
        if not any(os.path.lexists(p) for p in taken):
            return path
        seq += 1


def _tmp_zst(rotated_path: str) -> str:
    directory, base = os.path.split(rotated_path)
    return os.path.join(directory, f".{base}.zst.tmp")


# --- "when was this file started" (for --daily) -------------------------------------------------
def file_started(path: str) -> float | None:
    """When the current file at ``path`` was started: the later of its ``user.logpipe.created``
    xattr and the newest rotated name's timestamp, else the first line's time; None when
    nothing says."""
    evidence: list[float] = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        evidence.append(float(os.getxattr(path, CREATED_XATTR, follow_symlinks=False)))
    rotated = rotated_files(path)
    if rotated:
        evidence.append(rotated[-1].epoch)
    if evidence:
        return max(evidence)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return None
    line = head.split(b"\n", 1)[0]
    rec = record.parse_line(line)
    for key in (record.TIME, *record.TIME_ALIASES):
        if key in rec:
            t = record.to_epoch(rec[key])
            if t is not None:
                return t
    return None


def mark_created(fd: int, now: float) -> None:
    """Record on a freshly created log file when it was started (best effort: not every
    filesystem has user xattrs; --daily then falls back to rotated names and first lines)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(fd, CREATED_XATTR, str(int(now)).encode())


def utc_day(epoch: float) -> int:
    """Days since the epoch, UTC."""
    return int(epoch // 86400)


# --- locks --------------------------------------------------------------------------------------
def lock_wait_seconds() -> float:
    """:data:`LOCK_WAIT_SECONDS`, or ``$LOGPIPE_ROTATE_LOCK_WAIT`` when set."""
    env = os.environ.get(LOCK_WAIT_ENV)
    if env:
        try:
            return max(0.0, float(env))
        except ValueError:
            raise UsageError(f"{LOCK_WAIT_ENV}={env!r} is not a number of seconds") from None
    return LOCK_WAIT_SECONDS


def _flock_wait(fd: int, how: int, wait: float | None) -> bool:
    """flock with a deadline (None: wait forever). True when acquired."""
    deadline = None if wait is None else time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@contextlib.contextmanager
def dir_lock(directory: str, wait: float | None) -> Iterator[None]:
    """Hold ``DIR/.logpipe-rotate.lock`` exclusively; LockBusy after ``wait`` seconds."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RotateError(f"cannot create the rotation lock {path}: {exc.strerror}") from None
    try:
        if not _flock_wait(fd, fcntl.LOCK_EX, wait):
            raise LockBusy(f"another logpipe rotate is running in {directory} (it holds {path}); "
                           f"waited {wait:g}s, try again later")
        yield
    finally:
        os.close(fd)


# --- rename rotation ----------------------------------------------------------------------------
def _create_like(path: str, st: os.stat_result, now: float) -> None:
    """Create a fresh empty ``path`` with the mode and owner of ``st`` (logrotate's ``create``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return  # the writer reopened (O_CREAT) first; its file is the fresh one
    try:
        os.fchmod(fd, stat_mod.S_IMODE(st.st_mode))  # exact mode, whatever the umask
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except PermissionError:
                diagnostics.warning(f"cannot give {path} its previous owner {st.st_uid}:{st.st_gid} "
                                    "(run rotate as that user or root)", key=f"chown:{path}")
        mark_created(fd, now)
    finally:
        os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _rename_now(path: str, st: os.stat_result, now: float) -> str:
    """Rename ``path`` (whose inode is ``st``, writer lock held by the caller) to its next rotated
    name and create the fresh file. Returns the rotated path."""
    dst = _next_rotated_path(path, now)
    os.rename(path, dst)
    _create_like(path, st, now)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return dst


def rotate_locked_fd(path: str, fd: int, now: float | None = None) -> str | None:
    """Writer-side rotation (the file sink): ``fd`` is the writer's open file at ``path``.

    Takes the writer lock exclusively, fsyncs, renames and creates the fresh file. Returns the
    rotated path, or None when someone else already rotated ``path`` (then just reopen).
    """
    now = time.time() if now is None else now
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        st = os.fstat(fd)
        try:
            cur = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not _same_file(st, cur):
            return None
        os.fsync(fd)  # the rotated file is durable before it carries its final name
        return _rename_now(path, st, now)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def rename_rotate(path: str, now: float, wait: float) -> tuple[str, os.stat_result] | None:
    """Cron-side rename rotation of ``path`` under the writer lock. None when empty or gone."""
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        try:
            if not _flock_wait(fd, fcntl.LOCK_EX, wait):
                raise LockBusy(f"{path}: a writer holds its lock; waited {wait:g}s")
            st = os.fstat(fd)
            try:
                cur = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if not _same_file(st, cur):
                continue  # the writer rotated it meanwhile: look at the new file
            if st.st_size == 0:
                return None
            return _rename_now(path, st, now), st
        finally:
            os.close(fd)
    raise RotateError(f"{path}: it keeps being replaced while rotating; not rotated")


def _copy_range(src: int, dst: int, offset: int) -> int:
    """Copy ``src`` from ``offset`` to its current end onto ``dst``; returns the new offset."""
    while True:
        try:
            n = os.copy_file_range(src, dst, IO_CHUNK, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(src, IO_CHUNK, offset)
            n = len(data)
            if n:
                _write_all(dst, data)
        if n == 0:
            return offset
        offset += n


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@dataclass
class CopyTruncated:
    """Result of one copytruncate: the copy's path, bytes copied, and the loss window."""

    path: str
    size: int
    window_seconds: float


def copy_truncate(path: str, now: float, wait: float) -> CopyTruncated | None:
    """Copy ``path`` to its rotated name, then truncate it in place (for writers that cannot
    reopen). The copy is renamed into place *before* the truncate, so a crash duplicates lines
    rather than losing them. Lines a foreign writer appends between the final copy pass and the
    truncate are lost — logrotate's unavoidable window (logrotate#34); it is kept to the time
    of one last small read plus ``ftruncate`` and returned. logpipe's own file sink is paused by
    the writer lock, so for it the window is empty."""
    try:
        src = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(src)
        if st.st_size == 0:
            return None
        dst_path = _next_rotated_path(path, now)
        directory, base = os.path.split(dst_path)
        tmp = os.path.join(directory, f".{base}.tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        renamed = False
        try:
            os.fchmod(out, stat_mod.S_IMODE(st.st_mode))
            with contextlib.suppress(PermissionError):
                os.fchown(out, st.st_uid, st.st_gid)
            offset = 0
            while True:  # bulk passes, unlocked, until the writer's lead is small
                new = _copy_range(src, out, offset)
                grew, offset = new - offset, new
                if grew < 256 * 1024:
                    break
            os.fsync(out)
            os.rename(tmp, dst_path)
            renamed = True
            fsync_dir(directory)
            if not _flock_wait(src, fcntl.LOCK_EX, wait):
                raise LockBusy(f"{path}: a writer holds its lock; waited {wait:g}s")
            offset = _copy_range(src, out, offset)
            t0 = time.monotonic()
            # the window: bytes appended after this last read hit end-of-file are lost
            last = _copy_range(src, out, offset)
            os.ftruncate(src, 0)
            window = time.monotonic() - t0
            mark_created(src, now)  # same inode, new content: --daily evidence
            fcntl.flock(src, fcntl.LOCK_UN)
            renamed = False  # truncated: the copy is now the only one, keep it whatever happens
            os.fsync(out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if renamed:  # the original was not truncated: a partial copy would only duplicate
                with contextlib.suppress(OSError):
                    os.unlink(dst_path)
            raise
        finally:
            os.close(out)
        return CopyTruncated(dst_path, last, window)
    finally:
        os.close(src)


# --- compression --------------------------------------------------------------------------------
@dataclass
class Compressed:
    """One rotated file compressed: source and output paths, bytes in and out."""

    src: str
    dst: str
    bytes_in: int
    bytes_out: int


def _compressor(size: int, long_matching: bool) -> Any:
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=size, window_log=ZSTD_WINDOW_LOG, threads=ZSTD_THREADS,
        enable_ldm=long_matching, write_checksum=True, write_content_size=True,
    )
    return zstandard.ZstdCompressor(compression_params=params)


def verify_zst(path: str, expected_size: int) -> None:
    """Decompress ``path`` streaming; zstd checks its content checksum; the size must match."""
    import zstandard

    total = 0
    try:
        with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(
                fh, read_size=IO_CHUNK) as reader:
            while chunk := reader.read(4 * IO_CHUNK):
                total += len(chunk)
    except zstandard.ZstdError as exc:
        raise RotateError(f"{path}: compressed output failed verification ({exc})") from None
    if total != expected_size:
        raise RotateError(f"{path}: compressed output holds {total} bytes, expected {expected_size}")


class _VerifyingWriter:
    """The compressor's output file: writes each compressed chunk to ``fd`` and, on a second
    thread, decompresses it again (zstd releases the GIL, so verification overlaps compression
    instead of adding a second pass). zstd checks the frame's content checksum at its end."""

    def __init__(self, fd: int) -> None:
        import queue
        import threading

        self._fd = fd
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # bounded: ≤ 8 chunks held
        self.total = 0
        self.written = 0
        self._error: Exception | None = None
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="logpipe-zstd-verify", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        _write_all(self._fd, chunk)
        self.written += len(chunk)
        self._q.put(chunk)
        return len(chunk)

    def _run(self) -> None:
        import zstandard

        dobj = zstandard.ZstdDecompressor().decompressobj()
        while (chunk := self._q.get()) is not None:
            if self._error is None:
                try:
                    self.total += len(dobj.decompress(chunk))
                except zstandard.ZstdError as exc:
                    self._error = exc
        self._eof = dobj.eof

    def finish(self, path: str, expected_size: int) -> None:
        """Wait for the verifier; raise RotateError unless it saw one whole, intact frame."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise RotateError(f"{path}: compressed output failed verification ({self._error})")
        if not self._eof or self.total != expected_size:
            raise RotateError(f"{path}: compressed output holds {self.total} bytes, "
                              f"expected {expected_size}")

    def abandon(self) -> None:
        self._q.put(None)
        self._thread.join()


def compress_rotated(src_path: str, long_matching: bool = ZSTD_LONG) -> Compressed | None:
    """Compress one rotated file to ``<src>.zst``: stream to a temp name, fsync, verify, rename,
    fsync the directory, then remove the source. None when the source grew meanwhile (a
    writer still has it: postponed) or is gone. Raises RotateError (source kept) on failure.

    ``long_matching=False`` (the file sink, which compresses beside its hot path) is ~2.5x less
    CPU for ~2% larger files."""
    try:
        src = os.open(src_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    tmp = _tmp_zst(src_path)
    dst = src_path + ".zst"
    try:
        st = os.fstat(src)
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600)
        except OSError as exc:
            raise RotateError(f"cannot create {tmp}: {exc.strerror}") from None
        writer = _VerifyingWriter(out)
        try:
            with open(src, "rb", closefd=False) as ifh:
                n_in, n_out = _compressor(st.st_size, long_matching).copy_stream(
                    ifh, writer, size=st.st_size, read_size=IO_CHUNK, write_size=IO_CHUNK)
            writer.finish(tmp, n_in)
            os.fsync(out)
            if os.fstat(out).st_size != writer.written:
                raise RotateError(f"{tmp}: short write; kept {src_path} uncompressed")
            os.fchmod(out, stat_mod.S_IMODE(st.st_mode))
            with contextlib.suppress(PermissionError):
                os.fchown(out, st.st_uid, st.st_gid)
        except BaseException:
            writer.abandon()
            raise
        finally:
            os.close(out)
        after = os.fstat(src)
        if after.st_size != n_in or after.st_mtime_ns != st.st_mtime_ns:
            os.unlink(tmp)
            return None  # still being written: next run
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.rename(tmp, dst)
        directory = os.path.dirname(os.path.abspath(src_path))
        fsync_dir(directory)
        os.unlink(src_path)
        fsync_dir(directory)
        return Compressed(src_path, dst, n_in, n_out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        raise RotateError(f"cannot compress {src_path}: {what}; kept uncompressed") from None
    except RotateError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(src)


# --- who still needs a rotated file -------------------------------------------------------------
def collector_unfinished(state_dir: str, st: os.stat_result, path: str | None = None) -> bool:
    """True when a collector's checkpoint (in ``state_dir``) has this file (same dev, inode and,
    given ``path``, first-bytes fingerprint) at an offset below its size: it is still being
    read, so it must not be compressed or deleted yet."""
    if not state_dir:
        return False
    try:
        from logpipe.checkpoint import unfinished
    except ImportError:
        return False
    try:
        return bool(unfinished(state_dir, st, path))
    except Exception as exc:  # noqa: BLE001 - when unsure, keep the file (postpone), and say so
        diagnostics.warning(f"cannot read collector checkpoints in {state_dir}: {exc!r}; "
                            "postponing compression", key="rotate-checkpoint")
        return True


def hold_reason(path: str, st: os.stat_result, user: tuple[int, bool] | None,
                state_dir: str) -> str | None:
    """Why a rotated file must stay uncompressed for now (``None``: compress it). ``user`` is
    what :func:`~logpipe._openfiles.open_by_others` says of it. A writer always holds it (its
    next line would be lost); a reader holds it unless the collector's checkpoint says every
    line was delivered — a collector keeps a drained rotated file open for a while, which
    must not postpone the compression run after run; a file the collector has not delivered
    is held either way."""
    progress = collector_progress(state_dir, st, path)
    if user is not None:
        pid, writing = user
        if writing:
            return f"pid {pid} still writes to it (PM2: run `pm2 reloadLogs` after rotating)"
        if progress != "delivered":
            return f"pid {pid} still reads it"
    if progress == "unfinished":
        return "a collector is still reading it"
    return None


def collector_progress(state_dir: str, st: os.stat_result, path: str | None = None) -> str | None:
    """``checkpoint.progress`` for the collector of ``state_dir``: "unfinished", "delivered" or
    None (unknown); "unfinished" when the checkpoints cannot be read (when unsure, keep)."""
    if not state_dir:
        return None
    from logpipe.checkpoint import progress

    try:
        return progress(state_dir, st, path)
    except Exception as exc:  # noqa: BLE001 - when unsure, keep the file (postpone), and say so
        diagnostics.warning(f"cannot read collector checkpoints in {state_dir}: {exc!r}; "
                            "postponing compression", key="rotate-checkpoint")
        return "unfinished"


# --- retention ----------------------------------------------------------------------------------
def retention_victims(log_path: str, retain: int | None, max_age_days: int | None,
                      now: float) -> list[RotatedFile]:
    """Rotated files of ``log_path`` beyond the newest ``retain`` (None: keep all) or older than
    ``max_age_days`` (by the rotation time in their names)."""
    files = rotated_files(log_path)
    victims: dict[str, RotatedFile] = {}
    if retain is not None and len(files) > retain:
        for f in files[: len(files) - retain]:
            victims[f.path] = f
    if max_age_days is not None:
        limit = now - max_age_days * 86400
        for f in files:
            if f.epoch < limit:
                victims[f.path] = f
    return sorted(victims.values())


def apply_retention(log_path: str, retain: int | None, max_age_days: int | None, now: float,
                    state_dir: str = "") -> tuple[list[str], list[str]]:
    """Delete what :func:`retention_victims` names, except files a collector is still reading.
    Returns (deleted paths, postponed paths)."""
    deleted: list[str] = []
    postponed: list[str] = []
    for f in retention_victims(log_path, retain, max_age_days, now):
        try:
            st = os.stat(f.path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not f.compressed and collector_unfinished(state_dir, st, f.path):
            postponed.append(f.path)
            continue
        try:
            os.unlink(f.path)
        except FileNotFoundError:
            continue
        deleted.append(f.path)
    if deleted:
        fsync_dir(os.path.dirname(os.path.abspath(log_path)))
    return deleted, postponed


def clean_stale_temps(log_path: str) -> list[str]:
    """Remove ``.<log>.<stamp>….zst.tmp`` left by a crashed compression (the source is still
    there, uncompressed). Copy temps (``.….tmp`` without ``.zst``) are kept: they may be the
    only copy of a crashed copytruncate's bytes; they are reported instead."""
    directory, base = os.path.split(os.path.abspath(log_path))
    pattern = re.compile(r"\." + re.escape(base) + _ROTATED_SUFFIX + r"\.tmp$")
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            m = pattern.match(entry.name)
            if m is None or not entry.is_file(follow_symlinks=False):
                continue
            if m[3]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
            else:
                diagnostics.warning(f"{entry.path} is an unfinished copytruncate copy; "
                                    "check it and delete it by hand", key=f"stale:{entry.path}")
    return removed


# --- the cron command ---------------------------------------------------------------------------
@dataclass
class _Report:
    rotated: int = 0
    compressed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    deleted: int = 0
    postponed: list[str] = field(default_factory=list)  # "name: why"
    windows: list[float] = field(default_factory=list)  # copytruncate loss windows, seconds
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the dry run's plan

    def postpone(self, path: str, why: str) -> None:
        self.postponed.append(f"{os.path.basename(path)}: {why}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def expand(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Paths and quoted globs → (regular log files to consider, one-line problems).

    Rotated outputs matched by a glob are skipped quietly (``*`` must not re-rotate them);
    symlinks are followed only to a file in the same directory; directories and special files
    are refused."""
    found: dict[str, None] = {}
    problems: list[str] = []
    for pattern in patterns:
        if not pattern.strip():
            problems.append("an empty path was given")
            continue
        # a quoted '~/logs/*.log' reaches us unexpanded (the shell expands ~ only unquoted);
        # logpipe collect expands it, so rotate does too
        pattern = os.path.expanduser(pattern)
        if "**" in pattern.split(os.sep):
            # the collector's '**' walks up to 8 levels; rotate refuses it: each directory gets
            # its own lock, and a walk through symlinked directories could leave the tree given
            problems.append(f"{pattern}: '**' is not supported by logpipe rotate; "
                            "give one glob per directory")
            continue
        magic = _GLOB_MAGIC.search(pattern) is not None
        if magic:
            matches = sorted(glob.glob(pattern))
            if not matches:
                parent = os.path.dirname(pattern) or "."
                if not _GLOB_MAGIC.search(parent) and not os.path.isdir(parent):
                    problems.append(f"{pattern}: directory {parent} does not exist")
                else:
                    problems.append(f"{pattern}: no file matches")
                continue
        else:
            if not os.path.lexists(pattern):
                problems.append(f"{pattern}: no such file")
                continue
            if os.path.isdir(pattern):
                problems.append(f"{pattern} is a directory; give log files or a quoted glob "
                                f"such as '{os.path.join(pattern, '*.log')}'")
                continue
            matches = [pattern]
        for m in matches:
            path = os.path.abspath(m)
            name = os.path.basename(path)
            if is_rotated_name(name):
                if not magic:
                    problems.append(f"{m} is a rotated file; refusing to rotate it again")
                continue
            try:
                lst = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat_mod.S_ISLNK(lst.st_mode):
                real = os.path.realpath(path)
                here = os.path.realpath(os.path.dirname(path))
                if os.path.dirname(real) != here:
                    problems.append(f"refusing {m}: it is a symlink to {real}, outside {here}")
                    continue
                if is_rotated_name(os.path.basename(real)):
                    continue
                path = os.path.join(os.path.dirname(path), os.path.basename(real))
                try:
                    lst = os.lstat(path)
                except FileNotFoundError:
                    continue
            if stat_mod.S_ISDIR(lst.st_mode):
                if not magic:
                    problems.append(f"{m} is a directory")
                continue
            if not stat_mod.S_ISREG(lst.st_mode):
                problems.append(f"refusing {m}: not a regular file")
                continue
            found[path] = None
    return list(found), problems


def _due(path: str, st: os.stat_result, opts: RotateOptions, now: float) -> str | None:
    if st.st_size == 0:
        return None
    if opts.max_size is None and not opts.daily:
        return "forced: no --max-size or --daily"
    if opts.max_size is not None and st.st_size >= opts.max_size:
        return f"{_human(st.st_size)} >= --max-size {_human(opts.max_size)}"
    if opts.daily:
        started = file_started(path)
        if started is None:
            return "--daily, never rotated"
        if utc_day(started) < utc_day(now):
            return f"--daily, started {time.strftime('%Y-%m-%d', time.gmtime(started))} (UTC)"
    return None


def _say(stream: Any, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def main(opts: RotateOptions, out: Any = None) -> int:
    """Run ``logpipe rotate``; returns the exit status (0; 1 when some file had a problem;
    LockBusy → 3 and UsageError → 2 are raised to the CLI).

    Output: exactly one summary line on stdout (rotated, compressed with bytes in → out,
    deleted, and what was postponed and why) — stdout because it is the command's result, so
    cron users can keep it or drop it with ``>/dev/null`` while problems, one ``logpipe: …``
    line each on stderr, still reach them. ``--dry-run`` prints its plan, one line per action,
    before the summary."""
    out = sys.stdout if out is None else out
    if not opts.paths:
        raise UsageError("give at least one log file or quoted glob")
    now = time.time()
    paths, problems = expand(opts.paths)
    if not paths:
        if len(problems) == 1:
            raise UsageError(problems[0])
        for p in problems[:-1]:
            _say(sys.stderr, f"logpipe: {p}")
        raise UsageError(problems[-1])
    report = _Report(problems=problems)
    wait = lock_wait_seconds()
    dirs = sorted({os.path.dirname(p) for p in paths})
    with contextlib.ExitStack() as stack:
        if not opts.dry_run:
            for d in dirs:
                stack.enter_context(dir_lock(d, wait))
        _run(paths, opts, now, wait, report)
    for line in report.lines:
        _say(out, line)
    _say(out, _summary(report, opts))
    for p in report.problems:
        _say(sys.stderr, f"logpipe: {p}")
    return 1 if report.problems else 0


def _run(paths: list[str], opts: RotateOptions, now: float, wait: float, report: _Report) -> None:
    dry = opts.dry_run
    pending: dict[str, list[str]] = {}  # log → uncompressed rotated files to compress
    fresh: set[str] = set()  # renamed in this run (a writer may still hold them)
    for path in paths:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        reason = _due(path, st, opts, now)
        if not dry:
            clean_stale_temps(path)
        if reason is not None:
            if dry:
                mode = "copytruncate" if opts.copytruncate else "rename"
                report.lines.append(f"would rotate {path} ({reason}) by {mode} -> "
                                    f"{os.path.basename(_next_rotated_path(path, now))}")
                report.rotated += 1
            else:
                try:
                    if opts.copytruncate:
                        ct = copy_truncate(path, now, wait)
                        if ct is not None:
                            report.rotated += 1
                            report.windows.append(ct.window_seconds)
                    else:
                        res = rename_rotate(path, now, wait)
                        if res is not None:
                            report.rotated += 1
                            fresh.add(res[0])
                except (RotateError, OSError) as exc:
                    msg = str(exc) if isinstance(exc, RotateError) else f"{path}: {exc.strerror}"
                    report.problems.append(msg)
        if opts.compress:
            pending[path] = [f.path for f in rotated_files(path) if not f.compressed]
    if dry:
        _plan_rest(paths, opts, now, report)
        return
    _compress_pending(pending, fresh, opts, report)
    for path in paths:
        deleted, postponed = apply_retention(path, opts.retain, opts.max_age_days, now, opts.state_dir)
        report.deleted += len(deleted)
        for p in postponed:
            report.postpone(p, "a collector is still reading it")


def _compress_pending(pending: dict[str, list[str]], fresh: set[str], opts: RotateOptions,
                      report: _Report) -> None:
    todo: dict[str, os.stat_result] = {}
    for files in pending.values():
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                todo[f] = os.stat(f, follow_symlinks=False)
    # logpipe's file sink lets go of a renamed file within a second; a foreign writer (PM2
    # before `pm2 reloadLogs`) may hold it much longer: wait a little, then postpone. A reader
    # (a collector draining the renamed file, `tail -f`) also postpones it: it is compressed
    # by a later run, once nobody has it open — never pulled from under someone.
    deadline = time.monotonic() + (WRITER_WAIT_SECONDS if fresh & set(todo) else 0.0)
    keys = {(st.st_dev, st.st_ino) for st in todo.values()}
    while True:
        users = open_by_others(keys)
        if not any(w for _, w in users.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for path, st in todo.items():
        why = hold_reason(path, st, users.get((st.st_dev, st.st_ino)), opts.state_dir)
        if why is not None:
            report.postpone(path, why)
            continue
        if _doomed(path, opts):
            continue  # retention deletes it anyway; compressing first would be wasted work
        try:
            res = compress_rotated(path)
        except RotateError as exc:
            report.problems.append(str(exc))
            continue
        if res is None:
            if os.path.exists(path):
                report.postpone(path, "it is still growing")
            continue
        report.compressed += 1
        report.bytes_in += res.bytes_in
        report.bytes_out += res.bytes_out


def _doomed(path: str, opts: RotateOptions) -> bool:
    m = re.match(r"(.*)" + _ROTATED_SUFFIX + r"$", path)
    if m is None:
        return False
    victims = retention_victims(m[1], opts.retain, opts.max_age_days, time.time())
    return any(v.path == path for v in victims)


def _plan_rest(paths: list[str], opts: RotateOptions, now: float, report: _Report) -> None:
    """Dry run: what compression and retention would do after the rotations planned above."""
    for path in paths:
        files = rotated_files(path)
        names = [(f.stamp, f.seq, f.path, f.compressed) for f in files]
        would_rotate = any(line.startswith(f"would rotate {path} ") for line in report.lines)
        if would_rotate:
            names.append((stamp(now), 1 << 30, "(the file rotated now)", not opts.compress))
        keep = names if opts.retain is None else names[max(0, len(names) - opts.retain):]
        limit = None if opts.max_age_days is None else now - opts.max_age_days * 86400
        for st, _seq, p, compressed in names:
            old = limit is not None and calendar.timegm(time.strptime(st, _STAMP_FMT)) < limit
            if (st, _seq, p, compressed) not in keep or old:
                why = "older than --max-age" if old else f"beyond --retain {opts.retain}"
                report.lines.append(f"would delete {p} ({why})")
                report.deleted += 1
            elif not compressed and opts.compress and p != "(the file rotated now)":
                report.lines.append(_dry_compress(p, opts))


def _dry_compress(path: str, opts: RotateOptions) -> str:
    """The dry run's line for one uncompressed rotated file: compress, or postpone and why."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return f"would compress {path}"
    user = open_by_others({(st.st_dev, st.st_ino)}).get((st.st_dev, st.st_ino))
    why = hold_reason(path, st, user, opts.state_dir)
    if why is not None:
        return f"would postpone {path} ({why})"
    if user is not None:
        return (f"would compress {path} (pid {user[0]} still reads it, but the collector has "
                "delivered every line of it)")
    return f"would compress {path}"


def _summary(report: _Report, opts: RotateOptions) -> str:
    if opts.dry_run:
        return (f"logpipe rotate (dry run, nothing changed): would rotate {report.rotated}, "
                f"would delete {report.deleted}")
    sizes = ""
    if report.bytes_in:
        sizes = (f" ({_human(report.bytes_in)} -> {_human(report.bytes_out)}, "
                 f"{report.bytes_out / report.bytes_in:.1%})")
    text = (f"logpipe rotate: rotated {report.rotated}, compressed {report.compressed}{sizes}, "
            f"deleted {report.deleted}")
    if report.windows:
        text += f", copytruncate window max {max(report.windows) * 1e6:.0f} µs"
    if report.postponed:
        # left uncompressed until a later run; say why, on the same line
        text += f", postponed {len(report.postponed)} ({'; '.join(report.postponed[:5])}"
        text += f"; +{len(report.postponed) - 5} more)" if len(report.postponed) > 5 else ")"
    if report.problems:
        text += f", problems {len(report.problems)}"
    return text
