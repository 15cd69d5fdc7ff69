"""Rotation, one owner: plan, rename / copytruncate, streaming zstd, retention, locks, dry-run.

The same engine serves two callers (ARCHITECTURE.md "Rotation has one owner"):

- the **file sink** (``sinks/file.py``), the writer itself: it renames its file at a line
  boundary (:func:`rotate_locked_fd`) and compresses off its write path
  (:func:`compress_rotated`, :func:`apply_retention`) — multilog/svlogd semantics: one writer,
  whole lines, nothing lost (research/collector.md §5);
- **``logpipe rotate``** from cron (:func:`main`), a second process. It emulates the writer's
  safety through locks instead of copy+truncate:

  * ``DIR/.logpipe-rotate.lock`` (``flock``): one rotation run per directory at a time. A
    second run waits :data:`LOCK_WAIT_SECONDS` then exits with :class:`LockBusy` (exit 3,
    like logrotate's locked state file). The file sink's background compressor takes the same
    lock for each file it compresses, so the two never race on retention.
  * the log file itself (``flock``): logpipe's file sink holds it **shared** while it appends a
    batch; rotation takes it **exclusive** to rename, so a batch lands wholly in the old file
    or wholly in the new one. The sink compares ``stat(path)`` with its fd's inode before each
    batch (and every second while idle) and reopens — no line lost or split.

Names: ``<log>.<UTC YYYYmmddTHHMMSS>[.<n>][.zst]`` beside the log. The ``.log`` stays in the
name so ``*.log`` globs never match rotated files (logrotate's man page warns that ``*``
re-rotates them); names sort by (timestamp, n) and are unique within a second; a rotated name
is never rotated again. Retention matches the *exact* log name (``api.log`` never touches
``api-gw.log.*``: pm2-logrotate #128/#167), and only ever deletes regular files whose names
are this engine's own output.

Compression: streaming zstd (bounded memory) to ``.<name>.zst.tmp``, decompress-verified as it
is written (size + zstd's content checksum), fsync, rename, fsync the directory, and only then remove the
uncompressed file (pm2-logrotate #51 shipped truncated .gz files because it compressed a live
file). A rotated file is left uncompressed for the next run ("postponed", logrotate's
``delaycompress`` done on evidence instead of always) while

- another process still has it open for writing (seen in ``/proc``, like ``fuser``): a
  foreign writer such as PM2 keeps appending to the renamed file until ``pm2 reloadLogs``;
- a reader (a collector draining it, ``tail -f``) has it open and the collector's checkpoint
  does not say every line of it was delivered; or
- a collector has not finished reading it (``logpipe.checkpoint.progress``).

A file the collector has delivered is compressed even while it still holds it open (it keeps
a drained renamed file open for a while): :func:`retention.hold_reason` is the rule.

Daily rotation needs no state file (logrotate's status file is its most common failure:
logrotate #45/#78/#135): "when was this file started" is read from the file itself — a
``user.logpipe.created`` xattr set when rotation creates the fresh file, else the newest
rotated name's timestamp, else the first line's ``time`` — so cron jitter and missed days
(``Persistent=true``) need nothing extra. A file with no such evidence counts as never rotated.

Limits (stated, not hidden): a running collector can only follow a renamed file it had
already found — it rescans globs every second — so rotating the same file more often than
that can hide a short-lived generation from it (after a restart it finds the files it had not
finished by identity); a stale collector checkpoint whose inode number was reused
makes rotation postpone compressing that file (the safe direction) until the checkpoint is
forgotten; other users' processes are invisible in ``/proc`` unless rotate runs as root.

Modules: ``names`` (rotated names, --daily evidence), ``locks`` (directory lock), ``rename``
(rename / copytruncate), ``compress`` (verified zstd), ``retention`` (who still needs a file,
--retain/--max-age), ``cron`` (the ``logpipe rotate`` command: the only part that prints).
"""

from __future__ import annotations

from logpipe.errors import LockBusy, RotateError
from logpipe.rotate.compress import (
    ZSTD_LEVEL,
    ZSTD_LONG,
    ZSTD_THREADS,
    ZSTD_WINDOW_LOG,
    Compressed,
    compress_rotated,
)
from logpipe.rotate.cron import WRITER_WAIT_SECONDS, RotateOptions, expand, main
from logpipe.rotate.locks import LOCK_NAME, LOCK_WAIT_ENV, LOCK_WAIT_SECONDS, dir_lock, lock_wait_seconds
from logpipe.rotate.names import (
    CREATED_XATTR,
    RotatedFile,
    file_started,
    is_rotated_name,
    mark_created,
    rotated_files,
    stamp,
    utc_day,
)
from logpipe.rotate.rename import IO_CHUNK, CopyTruncated, copy_truncate, rename_rotate, rotate_locked_fd
from logpipe.rotate.retention import (
    apply_retention,
    clean_stale_temps,
    collector_progress,
    collector_unfinished,
    hold_reason,
    retention_victims,
)

__all__ = [
    "CREATED_XATTR", "IO_CHUNK", "LOCK_NAME", "LOCK_WAIT_ENV", "LOCK_WAIT_SECONDS",
    "WRITER_WAIT_SECONDS", "ZSTD_LEVEL", "ZSTD_LONG", "ZSTD_THREADS", "ZSTD_WINDOW_LOG",
    "Compressed", "CopyTruncated", "LockBusy", "RotateError", "RotateOptions", "RotatedFile",
    "apply_retention", "clean_stale_temps", "collector_progress", "collector_unfinished",
    "compress_rotated", "copy_truncate", "dir_lock", "expand", "file_started", "hold_reason",
    "is_rotated_name", "lock_wait_seconds", "main", "mark_created", "rename_rotate",
    "retention_victims", "rotate_locked_fd", "rotated_files", "stamp", "utc_day",
]
