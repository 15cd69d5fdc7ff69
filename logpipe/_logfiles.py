"""``logpipe logs`` inputs: which files make each log's history.

A **log** is a live file and its rotated outputs (``NAME.<UTC stamp>[.N][.zst]``, oldest
first — the names the file sink and ``logpipe rotate`` give, :func:`logpipe.rotate.rotated_files`).
Reading them is :mod:`logpipe._logread` (rotated files, zstd or plain) and
:mod:`logpipe._logfollow` (the live file, followed across rotation).

Skipping history without decompressing it: a rotated file's name is its rotation time, and
every record in it was written before that — so when ``stamp + SKEW_GRACE < --since`` the
whole file is older than asked and is not opened. For ``--until`` the first record of each file
is read (a few KB decompressed): when it is already past ``--until + SKEW_GRACE``, that file and
every later one of the log are skipped. The grace allows records stamped by a host whose clock
runs somewhat ahead of the writer's. Nothing is written at rotation time for this.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from logpipe import identity, record, rotate

#: seconds a record's time may run ahead of the clock of the process that wrote it
SKEW_GRACE = 300.0
_ROTATED = re.compile(r"^(?P<base>.+)\.\d{8}T\d{6}(?:\.\d+)?(?:\.zst)?$")
#: PM2's own files and the file sink's: what a directory's live logs are called
_LIVE_EXT = ".log"


@dataclass
class Log:
    """One log: its live file (may be absent) and its rotated history, oldest first."""

    service: str
    #: the live file's path (it may not exist, yet or any more); None for a rotated file read alone
    live: str | None
    history: list[rotate.RotatedFile] = field(default_factory=list)
    #: keys filled in where a record lacks them (service from the name, PM2's pm_id)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: level of a plain-text line (``error`` for a PM2 ``-error.log``)
    plain_level: str = "info"
    #: a PM2 file (``NAME-out.log``/``NAME-error[-N].log``): plain text an app printed, read
    #: through the collector's multiline joiner (a traceback is one record)
    multiline: bool = False


def rotated(live_path: str) -> list[rotate.RotatedFile]:
    """The rotated outputs of a log, oldest first, each once: while the compressor finishes, a
    file is briefly there both as ``X`` and ``X.zst`` (the same text) — the ``.zst`` is kept."""
    by_key: dict[tuple[str, int], rotate.RotatedFile] = {}
    for f in rotate.rotated_files(live_path):
        if (f.stamp, f.seq) not in by_key or f.compressed:
            by_key[(f.stamp, f.seq)] = f
    return list(by_key.values())


def _log_for(live_path: str, with_history: bool = True) -> Log:
    ident = identity.from_filename(live_path)
    defaults: dict[str, Any] = {record.SERVICE: ident.service}
    if ident.pm_id is not None:
        defaults[record.PM_ID] = ident.pm_id
        defaults[record.INSTANCE_ID] = str(ident.pm_id)
    history = rotated(live_path) if with_history else []
    return Log(ident.service, live_path, history, defaults,
               "error" if ident.stream == "err" else "info", multiline=ident.stream is not None)


def logs_in_dir(directory: str) -> list[Log]:
    """Every log of ``directory``: ``*.log`` files and rotated outputs whose live file is gone."""
    try:
        names = sorted(e.name for e in os.scandir(directory)
                       if not e.name.startswith(".") and e.is_file(follow_symlinks=False))
    except OSError as exc:
        from logpipe.errors import UsageError

        raise UsageError(f"cannot read {directory}: {exc.strerror}") from None
    bases: set[str] = set()
    for name in names:
        m = _ROTATED.match(name)
        if m:
            bases.add(m["base"])
        elif name.endswith(_LIVE_EXT):
            bases.add(name)
    return [_log_for(os.path.join(directory, b)) for b in sorted(bases)]


def logs_of_files(paths: list[str]) -> list[Log]:
    """Named files: a live file brings its rotated history; a rotated file is read alone."""
    out: list[Log] = []
    for path in paths:
        if not os.path.exists(path):
            from logpipe.errors import UsageError

            raise UsageError(f"{path}: no such file")
        m = _ROTATED.match(os.path.basename(path))
        if m is None:
            out.append(_log_for(path))
            continue
        log = _log_for(os.path.join(os.path.dirname(path), m["base"]), with_history=False)
        log.live = None
        log.history = [f for f in rotate.rotated_files(os.path.join(os.path.dirname(path),
                                                                    m["base"]))
                       if os.path.samefile(f.path, path)]
        out.append(log)
    return out
