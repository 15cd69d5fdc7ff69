"""Shared fixtures: every test gets an isolated state dir and environment (helpers: tests/helpers.py)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpipe import diagnostics

# The test process is not a service: logpipe's logger, when a test loads it in-process, leaves
# pytest's own logging capture alone. (Children get a cleaned environment: _isolated_env.)
os.environ.setdefault("LOGPIPE_STDLIB", "0")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own state dir and no inherited LOGPIPE_/PM2 settings."""
    for key in list(os.environ):
        if key.startswith("LOGPIPE_") or key in ("pm_id", "NODE_APP_INSTANCE", "PM2_HOME"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOGPIPE_STATE_DIR", str(tmp_path / "_state"))
    diagnostics.reset()
    yield


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted under ``tmp_path`` (a real disk that fills up); skips when mount is
    refused (not root); unmounted afterwards."""
    yield from _tmpfs(tmp_path, "1m")


@pytest.fixture
def spool_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs: room for the Splunk sink's ~29 MiB spool reserve (sinks/splunk/reserve.py)
    and about 11 MiB of records, so it fills up in seconds."""
    yield from _tmpfs(tmp_path, "40m")


def _tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    import subprocess

    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def diag() -> Iterator[io.BytesIO]:
    """logpipe's diagnostics captured in memory (JSON lines) for the test, then restored."""
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    yield buf
    diagnostics.set_stream(None)


# Real PM2, installed once per version from npm (tests/_pm2_helpers.py); shared by every PM2 test.
from tests._pm2_helpers import pm2_bin  # noqa: E402,F401
