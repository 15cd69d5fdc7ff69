"""Which processes hold a file open, and whether for writing: ``/proc/*/fd`` (as ``fuser``)."""

from __future__ import annotations

import os


def open_by_others(keys: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, bool]]:
    """(dev, inode) → (pid, writing) for files another process holds open, from ``/proc/*/fd``
    and the ``fdinfo`` flags — what ``fuser`` does. A writer wins over a reader. Empty where
    /proc is absent; other users' processes are only visible to root."""
    found: dict[tuple[int, int], tuple[int, bool]] = {}
    if not keys or not os.path.isdir("/proc"):
        return found
    me = os.getpid()
    for pid_name in os.listdir("/proc"):
        if not pid_name.isdigit() or int(pid_name) == me:
            continue
        fd_dir = f"/proc/{pid_name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd_name in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd_name}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in keys or found.get(key, (0, False))[1]:
                continue
            try:
                with open(f"/proc/{pid_name}/fdinfo/{fd_name}") as fh:
                    flags = next((int(ln.split()[1], 8) for ln in fh if ln.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            found[key] = (int(pid_name), flags & os.O_ACCMODE != os.O_RDONLY)
    return found
