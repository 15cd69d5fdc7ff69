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
   of many files cost one ``/proc`` walk per TTL;
4. written by PM2 for an app whose process tree runs logpipe. A PM2 app's stdout and stderr
   are sockets to PM2's daemon, which writes them into ``$PM2_HOME/logs`` — rule 3 cannot see
   them. PM2 spawns each app with ``pm_out_log_path``, ``pm_err_log_path`` and ``pm_log_path``
   in its environment (children inherit it): the same walk reads those keys for the PM2
   daemons' children and for logpipe processes, and a tree (the app and its descendants:
   ``bash -c "logpipe … | logpipe …"``, a wrapper script) that holds a logpipe process makes
   its files own — by inode, by path (PM2 re-creates them on ``reloadLogs``), rotated copies
   by name, and remembered once seen (a restart, a rotation, the app stopped). This
   process's own PM2 files (it runs under PM2) are rule 1's. :func:`pm2_settled` tells the
   collector to hold a new PM2 file back until its app has run :data:`SETTLE` seconds, so
   the decision comes before the first read.

Limits (documented, not hidden): without privileges ``/proc/<pid>/fd`` of another user's
process is unreadable (``EACCES``), so a logpipe run by another user is only caught by rule 2;
a logpipe process started less than ``PROC_TTL`` ago may not be seen yet (``refresh()``
forces a new scan); on systems without ``/proc`` (macOS) only rules 1 and 2 apply; a
logpipe started through a wrapper whose command line does not mention logpipe is not
recognised, unless PM2 runs it (rule 4, through the environment); and an inode remembered
by rule 4 that the filesystem reuses for a new file after deletion excludes that file too
(said on stderr, like every exclusion). The record-level guard (``record.is_own``:
logpipe's diagnostics are marked and dropped if read back) catches what slips through.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat as stat_mod
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from logpipe._proc import ProcTable

#: Marker file a logpipe file sink creates in every directory it writes (file sink imports it).
SINK_DIR_MARKER = ".logpipe-sink"

#: Seconds a /proc scan (and a directory's marker lookup) stays valid.
PROC_TTL = 2.0
#: Before answering "not own output", a scan older than this is redone.
FRESH_TTL = 0.25

_PROC = "/proc"

_lock = threading.Lock()
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


#: PM2 tells each app where its files are through these environment keys (God/ForkMode.js
#: spawns the app with its ``pm2_env`` as the environment; children inherit it).
PM2_LOG_KEYS = ("pm_out_log_path", "pm_err_log_path", "pm_log_path")
#: A PM2 app's files are not read while its process is younger than this: PM2 creates them
#: before it spawns the app, and a ``bash -c "logpipe …"`` or a wrapper needs a moment to exec
#: logpipe — the guard must decide before the first read.
SETTLE = 1.0
#: ...but never hold a file back longer than this (a writer we may not inspect, e.g. another
#: user's PM2, would otherwise keep it unread forever).
MAX_PENDING = 5.0


@dataclass(frozen=True, slots=True)
class _Scan:
    keys: frozenset[tuple[int, int]]  # stdio targets and PM2 files of logpipe process trees
    pm2_keys: frozenset[tuple[int, int]]  # the PM2 files alone (remembered once seen)
    own_paths: frozenset[str]  # PM2 log paths of logpipe process trees (they may not exist yet)
    own_names: frozenset[str]  # their base names
    app_age: dict[str, float]  # every PM2 log path → age (s) of the app process writing it


_EMPTY = _Scan(frozenset(), frozenset(), frozenset(), frozenset(), {})
_proc_scan = _EMPTY
#: PM2 files of logpipe apps stay own once seen (renamed by rotation, the app stopped). An
#: inode reused by a new file after such a file was deleted would be excluded too — and said.
_remembered: set[tuple[int, int]] = set()
_first_seen: dict[tuple[int, int], float] = {}


def pm2_paths(env: Mapping[str, str]) -> list[str]:
    """The log files PM2 writes for the app whose environment is ``env`` (real paths)."""
    out = []
    for k in PM2_LOG_KEYS:
        v = env.get(k)
        if v and v not in ("/dev/null", "NULL"):
            out.append(os.path.realpath(v))
    return out


def _is_pm2_daemon(argv: tuple[bytes, ...]) -> bool:
    return bool(argv) and argv[0].startswith(b"PM2 v") and b"God Daemon" in argv[0]


def _scan_proc() -> _Scan:
    """One /proc walk: other logpipe processes' stdout/stderr targets, and for every PM2 app
    process tree its log paths — the tree's files are logpipe's own when any process in it is
    logpipe (the app itself, ``bash -c "logpipe … | logpipe …"``, a wrapper script)."""
    table = ProcTable.scan()
    # environments are read only where PM2 app trees start: the children of PM2 daemons
    # (titled "PM2 vX: God Daemon (PM2_HOME)"), and logpipe processes themselves (their own
    # inherited environment names their PM2 files). Without a recognisable daemon (another
    # title, pm2-runtime), every process is read.
    gods = {p.pid for p in table.procs.values() if _is_pm2_daemon(p.argv)}
    wanted = [p.pid for p in table.procs.values() if p.ppid in gods
              or is_logpipe_cmdline(list(p.argv))] if gods else list(table.procs)
    table.with_env(wanted, PM2_LOG_KEYS)
    keys: set[tuple[int, int]] = set()
    pm2_keys: set[tuple[int, int]] = set()
    own_paths: set[str] = set()
    app_age: dict[str, float] = {}
    logpipe_pids = set()
    for p in table.procs.values():
        if is_logpipe_cmdline(list(p.argv)):
            logpipe_pids.add(p.pid)
            for fd in (1, 2):
                with contextlib.suppress(OSError):
                    st = os.stat(f"{_PROC}/{p.pid}/fd/{fd}")
                    keys.add((st.st_dev, st.st_ino))
    for p in table.procs.values():
        paths = pm2_paths(p.env)
        if not paths:
            continue
        parent = table.procs.get(p.ppid)
        if parent is not None and pm2_paths(parent.env) == paths:
            continue  # not the app's root process: its root covers the tree
        tree = {p.pid, *(d.pid for d in table.descendants(p.pid))}
        own = bool(tree & logpipe_pids)
        age = table.age(p.pid)
        for path in paths:
            app_age[path] = max(app_age.get(path, 0.0), age)
            if own:
                own_paths.add(path)
    for p in table.procs.values():  # a logpipe whose tree root we could not see
        if p.pid in logpipe_pids:
            own_paths.update(pm2_paths(p.env))
    for path in own_paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            pm2_keys.add((st.st_dev, st.st_ino))
    return _Scan(frozenset(keys | pm2_keys), frozenset(pm2_keys), frozenset(own_paths),
                 frozenset(os.path.basename(p) for p in own_paths), app_age)


def _scan(max_age: float = PROC_TTL) -> _Scan:
    global _proc_scan, _proc_at
    now = time.monotonic()
    with _lock:
        if now - _proc_at < max_age:
            return _proc_scan
    scan = _scan_proc()
    with _lock:
        _proc_scan, _proc_at = scan, time.monotonic()
        if len(_remembered) < 100_000:
            _remembered.update(scan.pm2_keys)
    return scan


def other_logpipe_keys(max_age: float = PROC_TTL) -> frozenset[tuple[int, int]]:
    """The cached result of the /proc scan, refreshed when older than ``max_age`` seconds."""
    return _scan(max_age).keys


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


def _own_pm2_keys() -> set[tuple[int, int]]:
    """(dev, inode) of the PM2 log files of this process, when PM2 runs it (its stdout and
    stderr are sockets to PM2's daemon, which writes them into these files)."""
    keys = set()
    for path in pm2_paths(os.environ):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            keys.add((st.st_dev, st.st_ino))
    return keys


_ROTATED_RE = re.compile(r"(?:__\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)?\.log(?:\.[^/]*)?$")


def _is_own(path: str, st: os.stat_result, scan: _Scan) -> bool:
    key = (st.st_dev, st.st_ino)
    if key in scan.keys or key in _remembered:
        return True
    # by path: a file PM2 created (or re-created, after ``pm2 reloadLogs``) since the scan;
    # the name filter keeps realpath (an lstat per component) off the common path
    if not scan.own_paths:
        return False
    if path in scan.own_paths:
        return True
    # a rotated copy of one, named by pm2-logrotate (NAME__2026-12-01_00-00-00.log) or by
    # logpipe rotate / logrotate (NAME.log.20261201T000000[.N][.zst], NAME.log.1)
    live = _ROTATED_RE.sub(".log", path)
    return (os.path.basename(live) in scan.own_names
            and os.path.realpath(live) in scan.own_paths)


def is_own_output(path: str, st: os.stat_result) -> bool:
    """True when the file at ``path`` (whose ``stat`` is ``st``) is written by logpipe itself:
    this process's stdout/stderr (or, under PM2, the files PM2 writes them to), a logpipe file
    sink's directory, the stdout/stderr of another running logpipe process, or the PM2 files
    of a PM2 app whose process tree runs logpipe. Never raises."""
    try:
        key = (st.st_dev, st.st_ino)
        if key in own_stdio_keys() or key in _own_pm2_keys():
            return True
        if is_sink_dir(os.path.dirname(os.path.abspath(path))):
            return True
        if os.path.islink(path) and is_sink_dir(os.path.dirname(os.path.realpath(path))):
            return True  # a symlink into a sink's directory
        if stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISFIFO(st.st_mode):
            if _is_own(path, st, _scan()):
                return True
            # A "no" lets the caller open the file for good, so it must not rest on a stale
            # scan: a logpipe started since (``collect | logpipe sink >> x.log``) is caught by
            # a fresh one. Excluded files are re-asked on every rescan and hit the cache.
            return _is_own(path, st, _scan(max_age=FRESH_TTL))
        return False
    except Exception:  # noqa: BLE001 - the guard must never take the collector down
        return False


def became_own(path: str, st: os.stat_result) -> bool:
    """For a file already being read: has it turned out to be logpipe's own output since (a
    wrapper that started logpipe late)? Uses the cached scan only (cheap for every open file
    on every rescan). Never raises."""
    try:
        return _is_own(path, st, _scan())
    except Exception:  # noqa: BLE001
        return False


def pm2_settled(path: str, st: os.stat_result) -> bool:
    """False while a PM2 log file must not be read yet: the app process writing it started less
    than SETTLE seconds ago (it may still exec logpipe), or no process claims the file and it
    changed within SETTLE seconds (PM2 creates the files just before it spawns the app). Never
    longer than MAX_PENDING after the file was first asked about. Call after
    :func:`is_own_output` said no."""
    try:
        key = (st.st_dev, st.st_ino)
        now = time.monotonic()
        with _lock:
            first = _first_seen.setdefault(key, now)
            if len(_first_seen) > 10_000:
                _first_seen.clear()
        if now - first >= MAX_PENDING:
            return True
        scan = _scan(max_age=FRESH_TTL)
        age = scan.app_age.get(os.path.realpath(path))
        if age is not None:
            return age >= SETTLE
        return time.time() - max(st.st_mtime, st.st_ctime) >= SETTLE
    except Exception:  # noqa: BLE001
        return True
