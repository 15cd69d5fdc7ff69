"""Linux ``/proc`` scans: which processes run, their parents, command lines and chosen env keys.

One walk of ``/proc`` gives a :class:`ProcTable` that the feedback guard and PM2 attribution
both read: ``pid → Proc(ppid, start, cmdline, env)``. Only the environment keys a caller names
are kept (PM2 puts its whole app config, secrets included, in each app's environment: nothing
else is held, nothing is logged). Processes that vanish or are another user's (``EACCES``) are
skipped; on systems without ``/proc`` the table is empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

PROC = "/proc"

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as seen in ``/proc``."""

    pid: int
    ppid: int
    start: float  # seconds since boot (``/proc/<pid>/stat`` field 22)
    argv: tuple[bytes, ...]
    env: dict[str, str] = field(default_factory=dict)


def uptime() -> float:
    """Seconds since boot (``/proc/uptime``), comparable with :attr:`Proc.start`."""
    try:
        with open(f"{PROC}/uptime", "rb") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _stat(pid: str) -> tuple[int, float] | None:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(rest[1]), int(rest[19]) / _CLK_TCK
    except (IndexError, ValueError):
        return None


def read_env(pid: int | str, keys: Iterable[str]) -> dict[str, str] | None:
    """The named keys of a process's environment (``None`` when unreadable or gone)."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    want = {k.encode() for k in keys}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k in want:
            env[k.decode()] = v.decode("utf-8", "replace")
    return env


def read_argv(pid: int | str) -> tuple[bytes, ...] | None:
    """A process's command line split at NULs (``None`` when gone or unreadable)."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return None
    return tuple(raw.rstrip(b"\0").split(b"\0")) if raw else ()


class ProcTable:
    """A snapshot of the processes this user may inspect."""

    def __init__(self, procs: dict[int, Proc], taken_at: float) -> None:
        self.procs = procs
        self.taken_at = taken_at  # uptime() at the scan

    def with_env(self, pids: Iterable[int], keys: Iterable[str]) -> None:
        """Read the named environment keys of ``pids`` into their :class:`Proc` entries."""
        names = tuple(keys)
        for pid in pids:
            p = self.procs.get(pid)
            if p is not None:
                env = read_env(pid, names)
                if env:
                    self.procs[pid] = replace(p, env=env)

    @classmethod
    def scan(cls, env_keys: Iterable[str] = (), exclude_self: bool = True) -> ProcTable:
        """Walk ``/proc`` once. ``env_keys``: the environment keys to keep per process (for
        every process; :meth:`with_env` reads them for chosen ones)."""
        keys = tuple(env_keys)
        procs: dict[int, Proc] = {}
        me = os.getpid()
        try:
            names = [p for p in os.listdir(PROC) if p.isdigit()]
        except OSError:
            return cls({}, 0.0)
        now = uptime()
        for name in names:
            pid = int(name)
            if exclude_self and pid == me:
                continue
            st = _stat(name)
            argv = read_argv(name)
            if st is None or argv is None:
                continue
            env = (read_env(name, keys) or {}) if keys else {}
            procs[pid] = Proc(pid, st[0], st[1], argv, env)
        return cls(procs, now)

    def age(self, pid: int) -> float:
        """Seconds since ``pid`` started (at the time of the scan); 0 when unknown."""
        p = self.procs.get(pid)
        return max(0.0, self.taken_at - p.start) if p is not None else 0.0

    def descendants(self, pid: int) -> list[Proc]:
        """The processes below ``pid`` (children, grandchildren, …)."""
        kids: dict[int, list[Proc]] = {}
        for p in self.procs.values():
            kids.setdefault(p.ppid, []).append(p)
        out: list[Proc] = []
        todo = [pid]
        while todo:
            for child in kids.get(todo.pop(), ()):
                out.append(child)
                todo.append(child.pid)
        return out
