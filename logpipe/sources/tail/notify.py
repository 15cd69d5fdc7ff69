"""Change notification for the tail source: Linux inotify on *directories*, through ctypes.

Why: with 10,000 tailed files, polling costs one ``stat`` per file per rescan (5 % of a core
idle, and up to a rescan interval before a line in a quiet file is seen). One inotify watch
on a directory reports ``IN_MODIFY`` for every file in it, so 10,000 files in one directory cost
one watch (not one per file: Fluent Bit's per-file watches exhaust ``max_user_watches``,
fluent-bit#717) and a quiet file's new line is seen at once.

What the others do: Fluent Bit's ``in_tail`` uses inotify by default (``inotify_watcher true``;
``false`` selects its stat watcher) for changes, and re-globs every ``refresh_interval`` (60 s)
for new files; Vector polls (``glob_minimum_cooldown_ms`` 1,000 ms) unless
``file_discovery_mode = notify``, which reconciles with a full scan every
``reconcile_interval_secs`` (300 s). logpipe: inotify where it works, a full rescan every
:data:`RECONCILE_INTERVAL` behind it, and plain polling (every ``rescan_interval``) where it
does not: not Linux, ``inotify_init1`` refused (``max_user_instances``), a directory whose watch
fails (``max_user_watches``), or a directory on a network or FUSE file system, where inotify does
not see writes made on other hosts (inotify(7)).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import sys

#: With inotify working, a full rescan (glob + ``stat`` of every file) still runs this often:
#: a safety net (an event queue overflow is answered at once; this catches what nothing
#: reports, e.g. a write through a hard link in an unwatched directory). Fluent Bit re-globs
#: every 60 s, Vector's notify mode every 300 s.
RECONCILE_INTERVAL = 10.0

IN_MODIFY = 0x002
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_MASK = (IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
         | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)

#: File systems where inotify misses writes made elsewhere (network, FUSE, 9p): polled.
REMOTE_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "ceph", "glusterfs",
                       "lustre", "afs", "gpfs", "beegfs", "virtiofs", "vboxsf", "fuse"})


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) from /proc/self/mountinfo, longest mount point first."""
    found: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and rfields:
                    point = fields[4].replace("\\040", " ")
                    found.append((point, rfields[0].split(".", 1)[0]))
    except OSError:
        return []
    found.sort(key=lambda m: len(m[0]), reverse=True)
    return found


def fs_type(path: str, mounts: list[tuple[str, str]]) -> str:
    """The file system type ``path`` lives on ("" when unknown)."""
    for point, kind in mounts:
        if path == point or path.startswith(point.rstrip("/") + "/"):
            return kind
    return ""


class DirWatcher:
    """inotify watches on directories; :meth:`read` returns what changed since the last call.

    Raises OSError from the constructor where inotify is unavailable (caller polls instead)."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify is Linux-only")
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            self._add = libc.inotify_add_watch
            init = libc.inotify_init1
        except AttributeError:
            raise OSError(errno.ENOSYS, "no inotify in libc") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add.restype = ctypes.c_int
        self._rm = getattr(libc, "inotify_rm_watch", None)
        fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        self.fd: int | None = fd
        self._dirs: dict[int, str] = {}  # wd -> directory
        self._wds: dict[str, int] = {}  # directory -> wd
        self._failed: set[str] = set()  # directories polled instead (watch refused, remote fs)
        self._mounts = _mounts()

    def watched(self, directory: str) -> bool:
        return directory in self._wds

    def watch(self, directory: str) -> bool:
        """Watch ``directory`` (once); False when it cannot be (it is polled instead)."""
        if directory in self._wds:
            return True
        if directory in self._failed or self.fd is None:
            return False
        if fs_type(os.path.realpath(directory), self._mounts) in REMOTE_FS:
            self._failed.add(directory)
            return False
        wd = self._add(self.fd, os.fsencode(directory), _MASK)
        if wd < 0:  # ENOSPC (max_user_watches), ENOENT (gone meanwhile), EACCES …
            if ctypes.get_errno() != errno.ENOENT:
                self._failed.add(directory)
            return False
        self._dirs[wd] = directory
        self._wds[directory] = wd
        return True

    def read(self) -> tuple[list[tuple[str, int]], bool]:
        """([(path, mask)], rescan) for the events queued now; ``rescan`` is True when they do
        not tell the whole story (queue overflow, a watched directory moved or deleted, a
        directory created or moved in): then a full rescan must follow."""
        events: list[tuple[str, int]] = []
        rescan = False
        while self.fd is not None:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                rescan = True
                break
            if not buf:
                break
            pos = 0
            while pos + _EVENT.size <= len(buf):
                wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
                name = buf[pos + _EVENT.size: pos + _EVENT.size + length].rstrip(b"\0")
                pos += _EVENT.size + length
                if mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    rescan = True
                    if mask & (IN_IGNORED | IN_MOVE_SELF):
                        # the watch is gone, or follows a directory now elsewhere: forget it
                        # (a scan watches whatever is at that path now)
                        self._forget(wd, remove=bool(mask & IN_MOVE_SELF))
                    continue
                directory = self._dirs.get(wd)
                if directory is None or not name:
                    continue
                if mask & IN_ISDIR:
                    rescan = rescan or bool(mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM
                                                    | IN_DELETE))
                    continue
                events.append((os.path.join(directory, os.fsdecode(name)), mask))
        return events, rescan

    def _forget(self, wd: int, remove: bool) -> None:
        d = self._dirs.pop(wd, None)
        if d is not None:
            self._wds.pop(d, None)
        if remove and self._rm is not None and self.fd is not None:
            self._rm(self.fd, wd)

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        self._dirs.clear()
        self._wds.clear()
