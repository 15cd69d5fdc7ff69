"""Rotated names (``<log>.<UTC stamp>[.<n>][.zst]``) and "when was this file started" (--daily)."""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import time
from dataclasses import dataclass, field

from logpipe import record

#: xattr recording when rotation created a fresh log file (evidence for --daily).
CREATED_XATTR = "user.logpipe.created"
_STAMP_FMT = "%Y%m%dT%H%M%S"
_ROTATED_SUFFIX = r"\.(\d{8}T\d{6})(?:\.(\d+))?(\.zst)?"
_ROTATED_ANY = re.compile(r".*" + _ROTATED_SUFFIX + r"$")


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
