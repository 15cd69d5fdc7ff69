"""File-name and first-bytes rules the identity rules (``generations``) rest on: which names are
a rotated name of which (logrotate, logpipe rotate, pm2-logrotate), and a file's first bytes."""

from __future__ import annotations

import os


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


def first_bytes(path: str, key: tuple[int, int], n: int) -> tuple[int, bytes] | None:
    """(size, first ``n`` bytes) of the file at ``path`` if it is inode ``key`` (else None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != key:
            return None
        return st.st_size, os.pread(fd, n, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def rotated_from(name: str) -> set[str]:
    """Every file name ``name`` is a rotated name of (:func:`is_rotated_name`'s rules turned
    round): ``app.log.1`` → ``app``, ``app.log``; ``a-out__2026-12-01.log`` → ``a-out.log`` …"""
    found = {name[:i] for i in range(1, len(name)) if name[i] in ".-_"}
    i = name.find("__")
    while i > 0:
        found.update(name[:i] + name[j:] for j in range(i + 2, len(name)) if name[j] == ".")
        i = name.find("__", i + 1)
    return found
