"""errors.py: the LogpipeError tree and its exit statuses (usage 2, lock busy 3, else 1), and
how the CLI reports one: a single ``logpipe:`` line, no traceback."""

from __future__ import annotations

import subprocess

import pytest

from logpipe import errors
from tests.helpers import LOGPIPE


@pytest.mark.parametrize(
    ("cls", "parent", "code"),
    [(errors.UsageError, errors.LogpipeError, 2), (errors.SourceError, errors.LogpipeError, 1),
     (errors.CheckpointError, errors.LogpipeError, 1), (errors.SinkError, errors.LogpipeError, 1),
     (errors.SinkConfigError, errors.SinkError, 1), (errors.DiskFullError, errors.SinkError, 1),
     (errors.SpoolFullError, errors.SinkError, 1), (errors.PipelineAborted, errors.LogpipeError, 1),
     (errors.RotateError, errors.LogpipeError, 1), (errors.LockBusy, errors.RotateError, 3)],
)
def test_tree_and_exit_codes(cls: type[errors.LogpipeError], parent: type[Exception],
                             code: int) -> None:
    """Each error sits where the tree in the docstring draws it (a caller catching the parent
    catches it) and carries its exit status."""
    assert issubclass(cls, parent)
    assert cls("m").exit_code == code


def test_cli_reports_a_usage_error_in_one_line() -> None:
    """A UsageError raised by a command (``collect`` with nothing to collect) reaches the user
    as one ``logpipe:`` line on stderr and exit 2, never a traceback."""
    proc = subprocess.run([*LOGPIPE, "collect"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == errors.UsageError.exit_code
    assert proc.stderr.startswith("logpipe: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
