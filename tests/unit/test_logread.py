"""Reading rotated files (``_logread``): zstd across frames, damaged zstd raised (to be
reported), spans of whole lines in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from logpipe import _logfiles, _logread, _zstdstream


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
    assert b"".join(b[i:j] for b, i, j in _logread.blocks(good)) == b"a\n" * 1000 + b"b\n"
    for f in (cut, bad):
        with pytest.raises(_logread.read_errors()):
            list(_logread.blocks(f))


def test_spans_are_whole_lines_in_place() -> None:
    """Pieces cut anywhere give spans of whole lines covering the text exactly once; a piece
    is not copied (the span points into it)."""
    text = b"".join(b"line %d\n" % i for i in range(100)) + b"partial"
    for size in (1, 7, 64, 1000, len(text)):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        spans = list(_logread._spans(iter(pieces)))
        assert b"".join(b[i:j] for b, i, j in spans) == text
        assert all(b[i:j].endswith(b"\n") for b, i, j in spans[:-1])
    big = text[:700]
    [(buf, _, _), *_] = _logread._spans(iter([big, b"x\n"]))
    assert buf is big
