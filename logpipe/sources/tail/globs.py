"""What the tail source's globs name: ``**`` expansion (bounded), the files a pass finds, whether
a path an inotify event names is one of them, and the directories to watch."""

from __future__ import annotations

import fnmatch
import glob
import os
import stat as stat_mod
from collections.abc import Iterable

#: Names a glob match skips: compressed rotated files.
ARCHIVE_SUFFIXES = (".gz", ".zst", ".bz2", ".xz", ".lz4", ".zip", ".tgz")
#: ``**`` matches at most this many directory levels (Filebeat's ``recursive_glob`` depth).
RECURSIVE_DEPTH = 8


def expand_pattern(pattern: str) -> list[str]:
    """The plain globs one pattern stands for: a ``**`` path component becomes 0 to
    RECURSIVE_DEPTH ``*`` levels (``a/**/b`` → ``a/b``, ``a/*/b``, …); ``a/**`` is
    ``a/**/*``. A ``**`` inside a component (``x**.log``) is a plain ``*``, as in ``glob``.
    Raises ValueError for more than one ``**`` component (depth**2 globs per rescan)."""
    parts = pattern.split(os.sep)
    where = [i for i, part in enumerate(parts) if part == "**"]
    if not where:
        return [pattern]
    if len(where) > 1:
        raise ValueError(f"{pattern}: at most one '**' per pattern")
    i = where[0]
    head, rest = parts[:i], parts[i + 1:] or ["*"]
    return [os.sep.join(head + ["*"] * k + rest) for k in range(RECURSIVE_DEPTH + 1)]


def expand(globs: Iterable[str]) -> list[str]:
    """The paths the globs name now, in order, each once."""
    seen: dict[str, None] = {}
    for pat in globs:
        if glob.has_magic(pat):
            # (``**`` already expanded to bounded ``*`` levels: expand_pattern.)
            # Compressed archives a glob like ``app.log*`` also matches (logrotate's .gz,
            # logpipe rotate's .zst) are not text: skipped, as Filebeat's docs advise with
            # ``exclude_files: ['\.gz$']``. Named literally, a file is always read.
            for p in sorted(glob.glob(pat)):
                if not p.endswith(ARCHIVE_SUFFIXES):
                    seen.setdefault(p, None)
        else:
            seen.setdefault(pat, None)
    return list(seen)


def matches(globs: Iterable[str], path: str) -> bool:
    """Would :func:`expand` name ``path`` (if it exists)? For an inotify event's file name:
    same directory depth, ``glob``'s hidden-file rule, archives skipped."""
    d, base = os.path.split(path)
    for pat in globs:
        if pat == path:
            return True
        pd, pb = os.path.split(pat)
        if (glob.has_magic(pat) and d.count(os.sep) == pd.count(os.sep)
                and fnmatch.fnmatchcase(base, pb) and fnmatch.fnmatchcase(d, pd)
                and (not base.startswith(".") or pb.startswith("."))
                and not base.endswith(ARCHIVE_SUFFIXES)):
            return True
    return False


def glob_dirs(globs: Iterable[str]) -> list[str]:
    """The directories the globs can name files in (those that exist now)."""
    dirs: dict[str, None] = {}
    for pat in globs:
        d = os.path.dirname(pat)
        for x in (sorted(glob.glob(d)) if glob.has_magic(d) else [d]):
            dirs.setdefault(x, None)
    return list(dirs)


def stat_regular(paths: Iterable[str]) -> dict[str, os.stat_result]:
    """path → stat of those ``paths`` that are regular files (following symlinks)."""
    stats: dict[str, os.stat_result] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat_mod.S_ISREG(st.st_mode):
            stats[p] = st
    return stats
