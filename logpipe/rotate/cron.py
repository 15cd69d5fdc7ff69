"""``logpipe rotate``, the command: expand the globs, plan, rotate, compress, retain, report (prints)."""

from __future__ import annotations

import calendar
import contextlib
import glob
import os
import re
import stat as stat_mod
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from logpipe._openfiles import open_by_others
from logpipe.errors import RotateError, UsageError
from logpipe.rotate.compress import compress_rotated
from logpipe.rotate.locks import dir_lock, lock_wait_seconds
from logpipe.rotate.names import (
    _ROTATED_SUFFIX,
    _STAMP_FMT,
    _next_rotated_path,
    file_started,
    is_rotated_name,
    rotated_files,
    stamp,
    utc_day,
)
from logpipe.rotate.rename import copy_truncate, rename_rotate
from logpipe.rotate.retention import (
    apply_retention,
    clean_stale_temps,
    collector_progress,
    hold_reason,
    retention_victims,
)

#: How long a cron run waits for writers to let go of a just-renamed file (logpipe's file sink
#: notices a rename within a second) before leaving it uncompressed for the next run.
WRITER_WAIT_SECONDS = 2.0
#: How long a run waits for a collector that holds a rotated file and is still delivering it
#: (checkpoints are written every second) before leaving it for the next run.
READER_WAIT_SECONDS = 10.0
_GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass
class RotateOptions:
    """What ``logpipe rotate`` was asked to do (filled by cli.py)."""

    paths: list[str] = field(default_factory=list)
    retain: int = 7
    max_size: int | None = None
    daily: bool = False
    max_age_days: int | None = None
    copytruncate: bool = False
    compress: bool = True
    dry_run: bool = False
    state_dir: str = ""


@dataclass
class _Report:
    rotated: int = 0
    compressed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    deleted: int = 0
    postponed: list[str] = field(default_factory=list)  # "name: why"
    windows: list[float] = field(default_factory=list)  # copytruncate loss windows, seconds
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the dry run's plan

    def postpone(self, path: str, why: str) -> None:
        self.postponed.append(f"{os.path.basename(path)}: {why}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def expand(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Paths and quoted globs → (regular log files to consider, one-line problems).

    Rotated outputs matched by a glob are skipped quietly (``*`` must not re-rotate them);
    symlinks are followed only to a file in the same directory; directories and special files
    are refused."""
    found: dict[str, None] = {}
    problems: list[str] = []
    for pattern in patterns:
        if not pattern.strip():
            problems.append("an empty path was given")
            continue
        # a quoted '~/logs/*.log' reaches us unexpanded (the shell expands ~ only unquoted);
        # logpipe collect expands it, so rotate does too
        pattern = os.path.expanduser(pattern)
        magic = _GLOB_MAGIC.search(pattern) is not None
        for m in _matches(pattern, magic, problems):
            path = _log_file(m, magic, problems)
            if path is not None:
                found[path] = None
    return list(found), problems


def _matches(pattern: str, magic: bool, problems: list[str]) -> list[str]:
    """What one path or glob names (none, with the reason added to ``problems``)."""
    if "**" in pattern.split(os.sep):
        # the collector's '**' walks up to 8 levels; rotate refuses it: each directory gets
        # its own lock, and a walk through symlinked directories could leave the tree given
        problems.append(f"{pattern}: '**' is not supported by logpipe rotate; "
                        "give one glob per directory")
        return []
    if magic:
        matches = sorted(glob.glob(pattern))
        if not matches:
            parent = os.path.dirname(pattern) or "."
            if not _GLOB_MAGIC.search(parent) and not os.path.isdir(parent):
                problems.append(f"{pattern}: directory {parent} does not exist")
            else:
                problems.append(f"{pattern}: no file matches")
        return matches
    if not os.path.lexists(pattern):
        problems.append(f"{pattern}: no such file")
        return []
    if os.path.isdir(pattern):
        problems.append(f"{pattern} is a directory; give log files or a quoted glob "
                        f"such as '{os.path.join(pattern, '*.log')}'")
        return []
    return [pattern]


def _log_file(m: str, magic: bool, problems: list[str]) -> str | None:
    """The absolute path of the regular log file ``m`` names — a symlink followed only within
    its directory — or None: a rotated output or directory a glob matched (skipped quietly),
    else refused with the reason added to ``problems``."""
    path = os.path.abspath(m)
    if is_rotated_name(os.path.basename(path)):
        if not magic:
            problems.append(f"{m} is a rotated file; refusing to rotate it again")
        return None
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat_mod.S_ISLNK(lst.st_mode):
        real = os.path.realpath(path)
        here = os.path.realpath(os.path.dirname(path))
        if os.path.dirname(real) != here:
            problems.append(f"refusing {m}: it is a symlink to {real}, outside {here}")
            return None
        if is_rotated_name(os.path.basename(real)):
            return None
        path = os.path.join(os.path.dirname(path), os.path.basename(real))
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return None
    if stat_mod.S_ISDIR(lst.st_mode):
        if not magic:
            problems.append(f"{m} is a directory")
        return None
    if not stat_mod.S_ISREG(lst.st_mode):
        problems.append(f"refusing {m}: not a regular file")
        return None
    return path


def _due(path: str, st: os.stat_result, opts: RotateOptions, now: float) -> str | None:
    if st.st_size == 0:
        return None
    if opts.max_size is None and not opts.daily:
        return "forced: no --max-size or --daily"
    if opts.max_size is not None and st.st_size >= opts.max_size:
        return f"{_human(st.st_size)} >= --max-size {_human(opts.max_size)}"
    if opts.daily:
        started = file_started(path)
        if started is None:
            return "--daily, never rotated"
        if utc_day(started) < utc_day(now):
            return f"--daily, started {time.strftime('%Y-%m-%d', time.gmtime(started))} (UTC)"
    return None


def _say(stream: Any, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def main(opts: RotateOptions, out: Any = None) -> int:
    """Run ``logpipe rotate``; returns the exit status (0; 1 when some file had a problem;
    LockBusy → 3 and UsageError → 2 are raised to the CLI).

    Output: exactly one summary line on stdout (rotated, compressed with bytes in → out,
    deleted, and what was postponed and why) — stdout because it is the command's result, so
    cron users can keep it or drop it with ``>/dev/null`` while problems, one ``logpipe: …``
    line each on stderr, still reach them. ``--dry-run`` prints its plan, one line per action,
    before the summary."""
    out = sys.stdout if out is None else out
    if not opts.paths:
        raise UsageError("give at least one log file or quoted glob")
    now = time.time()
    paths, problems = expand(opts.paths)
    if not paths:
        if len(problems) == 1:
            raise UsageError(problems[0])
        for p in problems[:-1]:
            _say(sys.stderr, f"logpipe: {p}")
        raise UsageError(problems[-1])
    report = _Report(problems=problems)
    wait = lock_wait_seconds()
    dirs = sorted({os.path.dirname(p) for p in paths})
    with contextlib.ExitStack() as stack:
        if not opts.dry_run:
            for d in dirs:
                stack.enter_context(dir_lock(d, wait))
        _run(paths, opts, now, wait, report)
    for line in report.lines:
        _say(out, line)
    _say(out, _summary(report, opts))
    for p in report.problems:
        _say(sys.stderr, f"logpipe: {p}")
    return 1 if report.problems else 0


def _run(paths: list[str], opts: RotateOptions, now: float, wait: float, report: _Report) -> None:
    dry = opts.dry_run
    pending: dict[str, list[str]] = {}  # log → uncompressed rotated files to compress
    fresh: set[str] = set()  # renamed in this run (a writer may still hold them)
    for path in paths:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        reason = _due(path, st, opts, now)
        if not dry:
            clean_stale_temps(path)
        if reason is not None:
            if dry:
                mode = "copytruncate" if opts.copytruncate else "rename"
                report.lines.append(f"would rotate {path} ({reason}) by {mode} -> "
                                    f"{os.path.basename(_next_rotated_path(path, now))}")
                report.rotated += 1
            else:
                try:
                    if opts.copytruncate:
                        ct = copy_truncate(path, now, wait)
                        if ct is not None:
                            report.rotated += 1
                            report.windows.append(ct.window_seconds)
                    else:
                        res = rename_rotate(path, now, wait)
                        if res is not None:
                            report.rotated += 1
                            fresh.add(res[0])
                except (RotateError, OSError) as exc:
                    msg = str(exc) if isinstance(exc, RotateError) else f"{path}: {exc.strerror}"
                    report.problems.append(msg)
        if opts.compress:
            pending[path] = [f.path for f in rotated_files(path) if not f.compressed]
    if dry:
        _plan_rest(paths, opts, now, report)
        return
    _compress_pending(pending, fresh, opts, report)
    for path in paths:
        deleted, postponed = apply_retention(path, opts.retain, opts.max_age_days, now, opts.state_dir)
        report.deleted += len(deleted)
        for p in postponed:
            report.postpone(p, "a collector is still reading it")


def _compress_pending(pending: dict[str, list[str]], fresh: set[str], opts: RotateOptions,
                      report: _Report) -> None:
    todo: dict[str, os.stat_result] = {}
    for files in pending.values():
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                todo[f] = os.stat(f, follow_symlinks=False)
    # logpipe's file sink lets go of a renamed file within a second; a foreign writer (PM2
    # before `pm2 reloadLogs`) may hold it much longer: wait a little, then postpone. A
    # collector still draining a file (it holds it, its checkpoint is behind) gets up to
    # READER_WAIT_SECONDS to deliver it — its checkpoint is written every second — so the
    # README's `R && pm2 reloadLogs && R` compresses on the second run; then postponed.
    start = time.monotonic()
    writer_deadline = start + (WRITER_WAIT_SECONDS if fresh & set(todo) else 0.0)
    reader_deadline = start + READER_WAIT_SECONDS
    keys = {(st.st_dev, st.st_ino) for st in todo.values()}
    while True:
        users = open_by_others(keys)
        now = time.monotonic()
        if any(w for _, w in users.values()) and now < writer_deadline:
            time.sleep(0.02)
            continue
        if now < reader_deadline and any(
                (u := users.get((st.st_dev, st.st_ino))) is not None and not u[1]
                and collector_progress(opts.state_dir, st, path) == "unfinished"
                for path, st in todo.items()):
            time.sleep(0.05)
            for path in list(todo):  # it may have grown: compare the checkpoint with now
                with contextlib.suppress(FileNotFoundError):
                    todo[path] = os.stat(path, follow_symlinks=False)
            continue
        break
    for path in list(todo):
        try:
            todo[path] = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            del todo[path]
    for path, st in todo.items():
        why = hold_reason(path, st, users.get((st.st_dev, st.st_ino)), opts.state_dir)
        if why is not None:
            report.postpone(path, why)
            continue
        if _doomed(path, opts):
            continue  # retention deletes it anyway; compressing first would be wasted work
        try:
            res = compress_rotated(path)
        except RotateError as exc:
            report.problems.append(str(exc))
            continue
        if res is None:
            if os.path.exists(path):
                report.postpone(path, "it is still growing")
            continue
        report.compressed += 1
        report.bytes_in += res.bytes_in
        report.bytes_out += res.bytes_out


def _doomed(path: str, opts: RotateOptions) -> bool:
    m = re.match(r"(.*)" + _ROTATED_SUFFIX + r"$", path)
    if m is None:
        return False
    victims = retention_victims(m[1], opts.retain, opts.max_age_days, time.time())
    return any(v.path == path for v in victims)


def _plan_rest(paths: list[str], opts: RotateOptions, now: float, report: _Report) -> None:
    """Dry run: what compression and retention would do after the rotations planned above."""
    for path in paths:
        files = rotated_files(path)
        names = [(f.stamp, f.seq, f.path, f.compressed) for f in files]
        would_rotate = any(line.startswith(f"would rotate {path} ") for line in report.lines)
        if would_rotate:
            names.append((stamp(now), 1 << 30, "(the file rotated now)", not opts.compress))
        keep = names if opts.retain is None else names[max(0, len(names) - opts.retain):]
        limit = None if opts.max_age_days is None else now - opts.max_age_days * 86400
        for st, _seq, p, compressed in names:
            old = limit is not None and calendar.timegm(time.strptime(st, _STAMP_FMT)) < limit
            if (st, _seq, p, compressed) not in keep or old:
                why = "older than --max-age" if old else f"beyond --retain {opts.retain}"
                report.lines.append(f"would delete {p} ({why})")
                report.deleted += 1
            elif not compressed and opts.compress and p != "(the file rotated now)":
                report.lines.append(_dry_compress(p, opts))


def _dry_compress(path: str, opts: RotateOptions) -> str:
    """The dry run's line for one uncompressed rotated file: compress, or postpone and why."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return f"would compress {path}"
    user = open_by_others({(st.st_dev, st.st_ino)}).get((st.st_dev, st.st_ino))
    why = hold_reason(path, st, user, opts.state_dir)
    if why is not None:
        return f"would postpone {path} ({why})"
    if user is not None:
        return (f"would compress {path} (pid {user[0]} still reads it, but the collector has "
                "delivered every line of it)")
    return f"would compress {path}"


def _summary(report: _Report, opts: RotateOptions) -> str:
    if opts.dry_run:
        return (f"logpipe rotate (dry run, nothing changed): would rotate {report.rotated}, "
                f"would delete {report.deleted}")
    sizes = ""
    if report.bytes_in:
        sizes = (f" ({_human(report.bytes_in)} -> {_human(report.bytes_out)}, "
                 f"{report.bytes_out / report.bytes_in:.1%})")
    text = (f"logpipe rotate: rotated {report.rotated}, compressed {report.compressed}{sizes}, "
            f"deleted {report.deleted}")
    if report.windows:
        text += f", copytruncate window max {max(report.windows) * 1e6:.0f} µs"
    if report.postponed:
        # left uncompressed until a later run; say why, on the same line
        text += f", postponed {len(report.postponed)} ({'; '.join(report.postponed[:5])}"
        text += f"; +{len(report.postponed) - 5} more)" if len(report.postponed) > 5 else ")"
    if report.problems:
        text += f", problems {len(report.problems)}"
    return text
