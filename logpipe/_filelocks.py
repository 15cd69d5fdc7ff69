"""Per-identity byte-range locks in one file (Linux OFD locks): who may read a tailed file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import struct


class FileLocks:
    """One byte-range lock per file identity (dev, inode) in one lock file: Linux
    open-file-description locks (``F_OFD_SETLK``), so they conflict between collectors and
    between two sources of one process alike, and vanish with the process (``kill -9``).
    Where OFD locks are unavailable, every file counts as free (the per-command-line lock
    still refuses the same command line twice)."""

    def __init__(self, path: str) -> None:
        self._fd: int | None = None
        self._held: set[tuple[int, int]] = set()
        cmd = getattr(fcntl, "F_OFD_SETLK", None)
        if cmd is None:
            return
        self._cmd: int = cmd
        with contextlib.suppress(OSError):
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _lock(self, key: tuple[int, int], kind: int) -> None:
        assert self._fd is not None
        digest = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=8).digest()
        start = int.from_bytes(digest, "big") >> 2  # below 2**62: a valid off_t range
        # struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
        fcntl.fcntl(self._fd, self._cmd, struct.pack("hhqqi4x", kind, os.SEEK_SET, start, 1, 0))

    def acquire(self, key: tuple[int, int]) -> bool:
        """True when this collector may read the file (it now holds its lock); False when
        another collector of this state dir holds it."""
        if self._fd is None or key in self._held:
            return True
        try:
            self._lock(key, fcntl.F_WRLCK)
        except OSError as exc:
            # EAGAIN/EACCES: held by another; anything else (EINVAL: no OFD locks here) must
            # not refuse files
            return exc.errno not in (errno.EAGAIN, errno.EACCES)
        self._held.add(key)
        return True

    def release(self, key: tuple[int, int]) -> None:
        """Let another collector read the file."""
        if self._fd is None or key not in self._held:
            return
        self._held.discard(key)
        with contextlib.suppress(OSError):
            self._lock(key, fcntl.F_UNLCK)

    def close(self) -> None:
        """Release every lock."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._held.clear()
