"""``logpipe logs`` inputs (``_logfiles``): a directory's logs (rotated outputs whose live file
is gone included), rotated files in order, a file caught mid-compression listed once."""

from __future__ import annotations

from pathlib import Path

import zstandard

from logpipe import _logfiles


def test_logs_in_dir_groups_live_and_rotated(tmp_path: Path) -> None:
    """``api.log`` with its rotated outputs (oldest first), ``old.log`` known only by rotated
    files, PM2 names with their pm_id; hidden files and foreign names are not logs."""
    for name in ("api.log", "api.log.20261201T000000.zst", "api.log.20261130T000000.zst",
                 "api.log.20261201T000000.1.zst", "old.log.20261101T000000",
                 "web-out-3.log", ".hidden.log", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    logs = {log.service: log for log in _logfiles.logs_in_dir(str(tmp_path))}
    assert sorted(logs) == ["api", "old", "web"]
    assert [f.path.rsplit("/", 1)[1] for f in logs["api"].history] == [
        "api.log.20261130T000000.zst", "api.log.20261201T000000.zst",
        "api.log.20261201T000000.1.zst"]
    assert logs["old"].history[0].epoch == 1_793_491_200.0
    assert logs["web"].defaults == {"service": "web", "pm_id": 3, "instance_id": "3"}


def test_a_file_caught_mid_compression_is_read_once(tmp_path: Path) -> None:
    """While the compressor finishes, ``X`` and ``X.zst`` both exist: the log's history lists
    that rotated file once (the .zst) — else ``logs`` and ``-f`` print its records twice."""
    (tmp_path / "api.log").write_bytes(b"")
    (tmp_path / "api.log.20261201T000000.3").write_bytes(b"x\n")
    (tmp_path / "api.log.20261201T000000.3.zst").write_bytes(zstandard.ZstdCompressor().compress(b"x\n"))
    [log] = _logfiles.logs_in_dir(str(tmp_path))
    assert [f.path.rsplit("/", 1)[1] for f in log.history] == ["api.log.20261201T000000.3.zst"]
