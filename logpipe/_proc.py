"""Linux ``/proc`` scans: which processes run, their parents, command lines, chosen env keys, and
who holds a pipe.

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


# --- who holds a pipe (the pipe-ack protocol's reader/writer discovery) ------------------------
def holds_pipe(pid: int, ino: int) -> bool:
    """True while ``pid`` lives with the pipe ``ino`` as its stdin (a zombie holds nothing)."""
    try:
        return os.readlink(f"/proc/{pid}/fd/0") == f"pipe:[{ino}]"
    except PermissionError:
        return pid_alive(pid)  # another user's process: its pid is all we can check
    except OSError:
        return False


def pid_alive(pid: int, group: bool = False) -> bool:
    """True while process ``pid`` (with ``group``: process group ``pid``) exists — another
    user's counts as alive (signal 0: nothing is sent)."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pipe_readers(ino: int, everywhere: bool = True) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every other process holding the pipe ``ino`` open for reading."""
    return pipe_holders(ino, write=False, everywhere=everywhere)


def pipe_holders(ino: int, write: bool, everywhere: bool = True) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every other process holding the pipe ``ino`` open for writing (``write``)
    or for reading. The other end of a pipe is nearly always a sibling (``a | b``, or two
    children of one parent) or in our process group: those are scanned first, and every
    process only when none of them holds it (one readlink per descriptor: thousands on a busy
    host; ``everywhere=False`` stops there)."""
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return []
    near = [p for p in pids if _near(p, os.getppid(), os.getpgrp())]
    found = _holders(near, ino, write)
    if not found and everywhere:
        near_set = set(near)
        found = _holders([p for p in pids if p not in near_set], ino, write)
    return found


def _near(pid: int, ppid: int, pgrp: int) -> bool:
    """A sibling of ours, or a member of our process group (from ``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]) == ppid or int(fields[2]) == pgrp
    except (OSError, ValueError, IndexError):
        return False


def _holders(pids: list[int], ino: int, write: bool) -> list[tuple[int, list[str]]]:
    want = os.O_WRONLY if write else os.O_RDONLY
    target = f"pipe:[{ino}]"
    found: list[tuple[int, list[str]]] = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                    flags = next((int(x.split()[1], 8) for x in f if x.startswith(b"flags:")), -1)
                if flags & os.O_ACCMODE != want:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
            except (OSError, ValueError, IndexError):
                continue
            found.append((pid, argv))
            break
    return found


def program_name(argv: list[str]) -> str:
    """A process's name for messages: ``cat``, ``jq``, ``logpipe collect``."""
    for i, a in enumerate(argv[:3]):
        if os.path.basename(a) == "logpipe":
            return " ".join(["logpipe", *argv[i + 1 : i + 2]])
    return os.path.basename(argv[0]) if argv else "?"


_SHELLS = frozenset(("sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"))


def is_shell(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]).lstrip("-") in _SHELLS


def is_logpipe(argv: list[str]) -> bool:
    """True for ``logpipe sink …``: the console script (maybe behind its interpreter) or
    ``python -m logpipe``, followed by the ``sink`` command (``logpipe collect -`` reads a
    pipe too, but does not acknowledge)."""
    return any(os.path.basename(a) == "logpipe" and argv[i + 1 : i + 2] == ["sink"]
               for i, a in enumerate(argv[:3]))


# --- record size --------------------------------------------------------------------------------
