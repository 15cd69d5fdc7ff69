"""rotate/compress.py: streaming zstd — standard output, verification, --no-compress."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import zstandard

from logpipe import rotate
from tests._rotate_helpers import (
    json_lines,
    rotated_of,
    run_rotate,
    write_lines,
)


def test_zst_output_is_standard_zstd(tmp_path: Path) -> None:
    """The .zst is a plain zstd frame with a checksum that the `zstd` CLI can test and decompress."""
    log = tmp_path / "w.log"
    write_lines(log, json_lines(2000))
    original = log.read_bytes()
    assert run_rotate(str(log)).returncode == 0
    zst = rotated_of(log)[0].path
    if not any(os.access(os.path.join(d, "zstd"), os.X_OK) for d in os.environ["PATH"].split(":")):
        pytest.skip("zstd CLI not installed")
    out = subprocess.run(["zstd", "-dc", zst], capture_output=True, check=True)
    assert out.stdout == original


def test_no_compress_keeps_plain_rotated_files(tmp_path: Path) -> None:
    """--no-compress leaves the rotated file uncompressed under its rotated name."""
    log = tmp_path / "a.log"
    write_lines(log, json_lines(10))
    original = log.read_bytes()
    assert run_rotate(str(log), "--no-compress").returncode == 0
    [r] = rotated_of(log)
    assert not r.compressed and Path(r.path).read_bytes() == original


def test_verification_rejects_a_corrupt_frame(tmp_path: Path) -> None:
    """The verifying writer compress_rotated streams through raises RotateError for a frame
    whose checksum does not match, and for a frame holding another size than the source's (the
    check that runs before an original is removed)."""
    from logpipe.rotate.compress import _VerifyingWriter

    good = zstandard.ZstdCompressor(write_checksum=True).compress(b"hello world\n" * 1000)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    p = tmp_path / "x.zst"

    def verify(data: bytes, expected_size: int) -> None:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            writer = _VerifyingWriter(fd)
            writer.write(data)
            writer.finish(str(p), expected_size)
        finally:
            os.close(fd)

    with pytest.raises(rotate.RotateError, match="failed verification"):
        verify(bytes(bad), 12000)
    with pytest.raises(rotate.RotateError, match="expected 11999"):
        verify(good, 11999)
    verify(good, 12000)
    assert p.read_bytes() == good

