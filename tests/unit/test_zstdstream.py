"""_zstdstream.py: zstd decompression across frames fed in any pieces, and stdin that may be
zstd (decoded), gzip (refused in one line) or plain (passed through)."""

from __future__ import annotations

import gzip
import io
import json

import pytest
import zstandard

from logpipe import _zstdstream, diagnostics
from logpipe.errors import SourceError


def test_frames_fed_byte_by_byte_and_truncation() -> None:
    """Two concatenated frames fed one byte at a time give the whole text; ``truncated`` is
    True while the input ends inside a frame and False once a frame is complete."""
    a = zstandard.ZstdCompressor().compress(b"first\n" * 50)
    b = zstandard.ZstdCompressor().compress(b"second\n")
    dec = _zstdstream.Decompressor()
    out = bytearray()
    for i in range(len(a) - 1):
        out += dec.decompress(a[i:i + 1])
    assert dec.truncated
    out += dec.decompress(a[-1:])
    assert not dec.truncated
    out += dec.decompress(b)
    assert bytes(out) == b"first\n" * 50 + b"second\n" and not dec.truncated
    with pytest.raises(dec.error):
        _zstdstream.Decompressor().decompress(_zstdstream.MAGIC + b"\xff" * 32)


def test_compressed_input_decides_on_the_first_bytes() -> None:
    """Plain input passes through unchanged (even when a later chunk starts like zstd); zstd
    is decoded across chunks; gzip and damaged zstd raise one-line SourceErrors."""
    plain = _zstdstream.CompressedInput()
    assert plain.decode(b"a\n") == b"a\n"
    assert plain.decode(_zstdstream.MAGIC + b"x") == _zstdstream.MAGIC + b"x"
    data = zstandard.ZstdCompressor().compress(b"z\n" * 100)
    zst = _zstdstream.CompressedInput()
    assert zst.decode(data[:6]) + zst.decode(data[6:]) == b"z\n" * 100
    with pytest.raises(SourceError, match="gzip-compressed: decompress it first"):
        _zstdstream.CompressedInput().decode(gzip.compress(b"x\n"))
    with pytest.raises(SourceError, match="damaged zstd data"):
        _zstdstream.CompressedInput().decode(_zstdstream.MAGIC + b"\xff" * 32)


def test_finish_warns_only_when_zstd_stops_inside_a_frame() -> None:
    """At EOF, a zstd input cut inside a frame gets one warning; a complete one or plain
    input gets none."""
    data = zstandard.ZstdCompressor().compress(b"z\n" * 100)
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        for chunk, warned in ((data, False), (b"plain\n", False), (data[:-3], True)):
            before = buf.tell()
            inp = _zstdstream.CompressedInput()
            inp.decode(chunk)
            inp.finish()
            lines = buf.getvalue()[before:].splitlines()
            assert len(lines) == int(warned), (chunk[:8], lines)
            if warned:
                assert "ends inside a frame" in json.loads(lines[0])["message"]
    finally:
        diagnostics.set_stream(None)
