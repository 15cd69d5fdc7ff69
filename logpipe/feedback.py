"""The feedback guard: is a file something logpipe itself writes? Then it is never ingested.

Shippers that read their own output amplify forever (research/collector.md §6: fluent-bit#3829,
beats#39566, beats#11179). Like the research asks, the guard compares **device + inode**, not
glob text, so symlinks, ``..`` and hard links cannot sneak a file past it. A file is logpipe's
own output when it is:

1. what this process's stdout or stderr points at (``fstat`` of fd 1 and 2) — e.g.
   ``logpipe collect 'logs/*.log' > logs/all.log``;
2. inside a directory that a logpipe file sink writes: the file sink drops a marker file named
   :data:`SINK_DIR_MARKER` there (whatever process runs it, even one that has exited);
3. what the stdout or stderr of any *other* running logpipe process points at — e.g.
   ``logpipe collect 'logs/*.log' | logpipe sink console >> logs/x.log``. These are found
   without shared state: ``/proc/*/cmdline`` tells which processes are logpipe (the
   ``logpipe`` console script, or ``python -m logpipe``) and ``stat(/proc/<pid>/fd/1|2)`` gives
   the target's device + inode. The scan is cached for :data:`PROC_TTL` seconds, so rescans
   of many files cost one ``/proc`` walk per TTL.

Limits (documented, not hidden): without privileges ``/proc/<pid>/fd`` of another user's
process is unreadable (``EACCES``), so a logpipe run by another user is only caught by rule 2;
a logpipe process started less than ``PROC_TTL`` ago may not be seen yet (``refresh()``
forces a new scan); on systems without ``/proc`` (macOS) only rules 1 and 2 apply; and a
logpipe started through a wrapper whose command line does not mention logpipe is not
recognised. The record-level guard (``record.is_own``: logpipe's diagnostics are marked and
dropped if read back) catches what slips through.
"""

from __future__ import annotations

import contextlib
import os
import stat as stat_mod
import threading
import time

#: Marker file a logpipe file sink creates in every directory it writes (file sink imports it).
SINK_DIR_MARKER = ".logpipe-sink"

#: Seconds a /proc scan (and a directory's marker lookup) stays valid.
PROC_TTL = 2.0
#: Before answering "not own output", a scan older than this is redone.
FRESH_TTL = 0.25

_PROC = "/proc"

_lock = threading.Lock()
_proc_keys: frozenset[tuple[int, int]] = frozenset()
_proc_at = -1e9
_dir_cache: dict[str, tuple[float, bool]] = {}


def _fd_key(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def own_stdio_keys() -> set[tuple[int, int]]:
    """(dev, inode) of what this process's stdout and stderr point at (re-read on each call:
    tests and daemons may redirect them)."""
    keys = set()
    for fd in (1, 2):
        key = _fd_key(fd)
        if key is not None:
            keys.add(key)
    return keys


def is_logpipe_cmdline(argv: list[bytes]) -> bool:
    """True when a command line runs logpipe: the ``logpipe`` console script (directly or via
    its interpreter) or ``python -m logpipe``."""
    for i, arg in enumerate(argv[:3]):
        if os.path.basename(arg) == b"logpipe":
            return True
        if arg == b"-m" and i + 1 < len(argv) and argv[i + 1] == b"logpipe":
            return True
        if arg == b"-mlogpipe":
            return True
    return False


def _scan_proc() -> frozenset[tuple[int, int]]:
    """(dev, inode) of stdout/stderr targets of every other logpipe process we may inspect."""
    keys: set[tuple[int, int]] = set()
    me = os.getpid()
    try:
        pids = [p for p in os.listdir(_PROC) if p.isdigit()]
    except OSError:
        return frozenset()
    for pid in pids:
        if int(pid) == me:
            continue
        try:
            with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
                raw = f.read(4096)
        except OSError:
            continue  # gone, or not ours to read
        if b"logpipe" not in raw:
            continue
        if not is_logpipe_cmdline(raw.rstrip(b"\0").split(b"\0")):
            continue
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                st = os.stat(f"{_PROC}/{pid}/fd/{fd}")
                keys.add((st.st_dev, st.st_ino))
    return frozenset(keys)


def other_logpipe_keys(max_age: float = PROC_TTL) -> frozenset[tuple[int, int]]:
    """The cached result of the /proc scan, refreshed when older than ``max_age`` seconds."""
    global _proc_keys, _proc_at
    now = time.monotonic()
    with _lock:
        if now - _proc_at < max_age:
            return _proc_keys
    keys = _scan_proc()
    with _lock:
        _proc_keys, _proc_at = keys, time.monotonic()
    return keys


def refresh() -> None:
    """Forget cached scans (a new logpipe process or file sink is known to have started)."""
    global _proc_at
    with _lock:
        _proc_at = -1e9
        _dir_cache.clear()


def is_sink_dir(directory: str) -> bool:
    """True when ``directory`` holds a logpipe file sink's marker (cached for PROC_TTL)."""
    now = time.monotonic()
    with _lock:
        hit = _dir_cache.get(directory)
        if hit is not None and now - hit[0] < PROC_TTL:
            return hit[1]
    found = os.path.lexists(os.path.join(directory, SINK_DIR_MARKER))
    with _lock:
        if len(_dir_cache) > 4096:
            _dir_cache.clear()
        _dir_cache[directory] = (now, found)
    return found


def is_own_output(path: str, st: os.stat_result) -> bool:
    """True when the file at ``path`` (whose ``stat`` is ``st``) is written by logpipe itself:
    this process's stdout/stderr, a logpipe file sink's directory, or the stdout/stderr of
    another running logpipe process. Never raises."""
    try:
        key = (st.st_dev, st.st_ino)
        if key in own_stdio_keys():
            return True
        if is_sink_dir(os.path.dirname(os.path.abspath(path))):
            return True
        if os.path.islink(path) and is_sink_dir(os.path.dirname(os.path.realpath(path))):
            return True  # a symlink into a sink's directory
        if stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISFIFO(st.st_mode):
            if key in other_logpipe_keys():
                return True
            # A "no" lets the caller open the file for good, so it must not rest on a stale
            # scan: a logpipe started since (``collect | logpipe sink >> x.log``) is caught by
            # a fresh one. Excluded files are re-asked on every rescan and hit the cache.
            return key in other_logpipe_keys(max_age=FRESH_TTL)
        return False
    except Exception:  # noqa: BLE001 - the guard must never take the collector down
        return False
