"""Who still needs a rotated file (writers, the collector's checkpoints) and retention."""

from __future__ import annotations

import contextlib
import os
import re

from logpipe import diagnostics
from logpipe._fsutil import fsync_dir
from logpipe.rotate.names import _ROTATED_SUFFIX, RotatedFile, rotated_files


def collector_unfinished(state_dir: str, st: os.stat_result, path: str | None = None) -> bool:
    """True when a collector's checkpoint (in ``state_dir``) has this file (same dev, inode and,
    given ``path``, first-bytes fingerprint) at an offset below its size: it is still being
    read, so it must not be compressed or deleted yet."""
    if not state_dir:
        return False
    try:
        from logpipe.checkpoint import unfinished
    except ImportError:
        return False
    try:
        return bool(unfinished(state_dir, st, path))
    except Exception as exc:  # noqa: BLE001 - when unsure, keep the file (postpone), and say so
        diagnostics.warning(f"cannot read collector checkpoints in {state_dir}: {exc!r}; "
                            "postponing compression", key="rotate-checkpoint")
        return True


def hold_reason(path: str, st: os.stat_result, user: tuple[int, bool] | None,
                state_dir: str) -> str | None:
    """Why a rotated file must stay uncompressed for now (``None``: compress it). ``user`` is
    what :func:`~logpipe._openfiles.open_by_others` says of it. A writer always holds it (its
    next line would be lost); a reader holds it unless the collector's checkpoint says every
    line was delivered — a collector keeps a drained rotated file open for a while, which
    must not postpone the compression run after run; a file the collector has not delivered
    is held either way."""
    progress = collector_progress(state_dir, st, path)
    if user is not None:
        pid, writing = user
        if writing:
            return f"pid {pid} still writes to it (PM2: run `pm2 reloadLogs` after rotating)"
        if progress != "delivered":
            return f"pid {pid} still reads it"
    if progress == "unfinished":
        return "a collector is still reading it"
    return None


def collector_progress(state_dir: str, st: os.stat_result, path: str | None = None) -> str | None:
    """``checkpoint.progress`` for the collector of ``state_dir``: "unfinished", "delivered" or
    None (unknown); "unfinished" when the checkpoints cannot be read (when unsure, keep)."""
    if not state_dir:
        return None
    from logpipe.checkpoint import progress

    try:
        return progress(state_dir, st, path)
    except Exception as exc:  # noqa: BLE001 - when unsure, keep the file (postpone), and say so
        diagnostics.warning(f"cannot read collector checkpoints in {state_dir}: {exc!r}; "
                            "postponing compression", key="rotate-checkpoint")
        return "unfinished"


# --- retention ----------------------------------------------------------------------------------
def retention_victims(log_path: str, retain: int | None, max_age_days: int | None,
                      now: float) -> list[RotatedFile]:
    """Rotated files of ``log_path`` beyond the newest ``retain`` (None: keep all) or older than
    ``max_age_days`` (by the rotation time in their names)."""
    files = rotated_files(log_path)
    victims: dict[str, RotatedFile] = {}
    if retain is not None and len(files) > retain:
        for f in files[: len(files) - retain]:
            victims[f.path] = f
    if max_age_days is not None:
        limit = now - max_age_days * 86400
        for f in files:
            if f.epoch < limit:
                victims[f.path] = f
    return sorted(victims.values())


def apply_retention(log_path: str, retain: int | None, max_age_days: int | None, now: float,
                    state_dir: str = "") -> tuple[list[str], list[str]]:
    """Delete what :func:`retention_victims` names, except files a collector is still reading.
    Returns (deleted paths, postponed paths)."""
    deleted: list[str] = []
    postponed: list[str] = []
    for f in retention_victims(log_path, retain, max_age_days, now):
        try:
            st = os.stat(f.path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not f.compressed and collector_unfinished(state_dir, st, f.path):
            postponed.append(f.path)
            continue
        try:
            os.unlink(f.path)
        except FileNotFoundError:
            continue
        deleted.append(f.path)
    if deleted:
        fsync_dir(os.path.dirname(os.path.abspath(log_path)))
    return deleted, postponed


def clean_stale_temps(log_path: str) -> list[str]:
    """Remove ``.<log>.<stamp>….zst.tmp`` left by a crashed compression (the source is still
    there, uncompressed). Copy temps (``.….tmp`` without ``.zst``) are kept: they may be the
    only copy of a crashed copytruncate's bytes; they are reported instead."""
    directory, base = os.path.split(os.path.abspath(log_path))
    pattern = re.compile(r"\." + re.escape(base) + _ROTATED_SUFFIX + r"\.tmp$")
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            m = pattern.match(entry.name)
            if m is None or not entry.is_file(follow_symlinks=False):
                continue
            if m[3]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
            else:
                diagnostics.warning(f"{entry.path} is an unfinished copytruncate copy; "
                                    "check it and delete it by hand", key=f"stale:{entry.path}")
    return removed
