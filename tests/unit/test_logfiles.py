"""``logpipe logs`` inputs: a directory's logs (rotated outputs whose live file is gone
included), rotated files in order, zstd across frames, damaged zstd raised (to be reported)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from logpipe import _logfiles, _zstdstream


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


def test_zstd_frames_and_damage(tmp_path: Path) -> None:
    """Two concatenated frames read as one text; a file cut inside a frame, or garbage after
    the magic number, raises the error that gets reported."""
    one = zstandard.ZstdCompressor().compress(b"a\n" * 1000)
    two = zstandard.ZstdCompressor().compress(b"b\n")
    dec = _zstdstream.Decompressor()
    assert dec.decompress(one + two) == b"a\n" * 1000 + b"b\n" and not dec.truncated
    (tmp_path / "x.log.20261201T000000.zst").write_bytes(one + two)
    (tmp_path / "x.log.20261202T000000.zst").write_bytes(one[:-5])
    (tmp_path / "x.log.20261203T000000.zst").write_bytes(_zstdstream.MAGIC + b"garbage" * 9)
    good, cut, bad = _logfiles.logs_in_dir(str(tmp_path))[0].history
    assert b"".join(b[i:j] for b, i, j in _logfiles.blocks(good)) == b"a\n" * 1000 + b"b\n"
    for f in (cut, bad):
        with pytest.raises(_logfiles.read_errors()):
            list(_logfiles.blocks(f))


def test_spans_are_whole_lines_in_place() -> None:
    """Pieces cut anywhere give spans of whole lines covering the text exactly once; a piece
    is not copied (the span points into it)."""
    text = b"".join(b"line %d\n" % i for i in range(100)) + b"partial"
    for size in (1, 7, 64, 1000, len(text)):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        spans = list(_logfiles._spans(iter(pieces)))
        assert b"".join(b[i:j] for b, i, j in spans) == text
        assert all(b[i:j].endswith(b"\n") for b, i, j in spans[:-1])
    big = text[:700]
    [(buf, _, _), *_] = _logfiles._spans(iter([big, b"x\n"]))
    assert buf is big


def test_a_file_caught_mid_compression_is_read_once(tmp_path: Path) -> None:
    """While the compressor finishes, ``X`` and ``X.zst`` both exist: the log's history lists
    that rotated file once (the .zst) — else ``logs`` and ``-f`` print its records twice."""
    (tmp_path / "api.log").write_bytes(b"")
    (tmp_path / "api.log.20261201T000000.3").write_bytes(b"x\n")
    (tmp_path / "api.log.20261201T000000.3.zst").write_bytes(zstandard.ZstdCompressor().compress(b"x\n"))
    [log] = _logfiles.logs_in_dir(str(tmp_path))
    assert [f.path.rsplit("/", 1)[1] for f in log.history] == ["api.log.20261201T000000.3.zst"]
