"""_fsutil.py: atomic_write (old or new file, never a torn one; mode; no temp left) and fsync_dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from logpipe import _fsutil


def test_atomic_write_replaces_the_file_with_the_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    """The new bytes replace the old at the same path (a new inode: a rename), with the mode
    asked for; no ``.tmp-`` file is left in the directory."""
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    old_ino = path.stat().st_ino
    _fsutil.atomic_write(str(path), b"new contents", mode=0o600)
    assert path.read_bytes() == b"new contents"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != old_ino
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_atomic_write_failure_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    """When the rename fails (the target is a non-empty directory), the error is raised, the
    target is untouched and the temp file is removed."""
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        _fsutil.atomic_write(str(target), b"data")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert (target / "inside").read_bytes() == b"x"


def test_fsync_dir_needs_a_directory(tmp_path: Path) -> None:
    """``fsync_dir`` accepts a directory and refuses a regular file (O_DIRECTORY)."""
    _fsutil.fsync_dir(str(tmp_path))
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        _fsutil.fsync_dir(str(tmp_path / "f"))
