"""The LogpipeError tree: every error logpipe raises on purpose, translated to one line at the CLI.

    LogpipeError                 base; str(e) is a one-line, user-facing message (never a secret)
    ├── UsageError               bad arguments or configuration (a user mistake) → exit 2
    ├── SourceError              an input cannot be read (missing file, unreadable state dir)
    ├── CheckpointError          a checkpoint cannot be written (read errors are survived, not raised)
    ├── SinkError                a sink cannot accept records
    │   ├── SinkConfigError      permanent: the destination refuses us (bad token, bad index, no
    │   │                        permission); data is kept, sending stops, exit non-zero
    │   ├── DiskFullError        ENOSPC / EDQUOT while writing; what was accepted before is kept
    │   └── SpoolFullError       the disk spool reached --spool-max (raised only where blocking
    │                            is impossible, e.g. at shutdown)
    ├── PipelineAborted          a sink failed fatally; carries the sink's error as __cause__
    └── RotateError              rotation could not be done safely
        └── LockBusy             another rotation (or writer) holds the lock

The CLI catches LogpipeError and prints ``logpipe: <message>`` on stderr with a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LogpipeError(Exception):
    """Base of every error logpipe raises on purpose; ``str()`` is one line for the user."""

    exit_code: int = 1


class UsageError(LogpipeError):
    """A user mistake in arguments or configuration."""

    exit_code = 2


class SourceError(LogpipeError):
    """An input cannot be read."""


class CheckpointError(LogpipeError):
    """A checkpoint cannot be written."""


class SinkError(LogpipeError):
    """A sink cannot accept records."""


class SinkConfigError(SinkError):
    """The destination refuses us for a reason retrying cannot fix (token, index, permission)."""


class DiskFullError(SinkError):
    """The disk is full (ENOSPC/EDQUOT); everything accepted before is still on disk."""


class SpoolFullError(SinkError):
    """The disk spool is at its bound and blocking is not possible."""


class PipelineAborted(LogpipeError):
    """A sink failed fatally, so the pipeline stopped; ``__cause__`` is the sink's error."""


class RotateError(LogpipeError):
    """Rotation could not be done safely."""


class LockBusy(RotateError):
    """Another process holds the rotation lock."""

    exit_code = 3  # like logrotate's exit status when its state file is locked
