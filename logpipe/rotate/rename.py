"""Rotating a file: rename under the writer's lock (+ a fresh file like it), or copytruncate."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat as stat_mod
import time
from dataclasses import dataclass

from logpipe import diagnostics
from logpipe._fsutil import fsync_dir
from logpipe.errors import LockBusy, RotateError
from logpipe.rotate.locks import _flock_wait
from logpipe.rotate.names import _next_rotated_path, mark_created

#: Read/write chunk of copies and compression.
IO_CHUNK = 1 << 20


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


def _still_named(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` (not followed) still names the file ``st`` describes: False when it
    is gone or names another file (rotated meanwhile)."""
    try:
        cur = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino)


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
        if not _still_named(path, st):
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
            if not _still_named(path, st):
                continue  # rotated meanwhile (or gone): look again at what the path names
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
