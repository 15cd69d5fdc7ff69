"""Streaming zstd decompression across frames (``cat a.zst b.zst`` is one valid stream of two).

Used where logpipe reads zstd it did not open itself as a file: ``logpipe logs`` over rotated
``.zst`` history and ``logpipe sink``/``collect -`` given zstd on stdin. zstandard is imported
on first use (``import logpipe`` never imports it).
"""

from __future__ import annotations

from typing import Any

#: the first four bytes of every zstd frame (RFC 8878 §3.1.1)
MAGIC = b"\x28\xb5\x2f\xfd"


class Decompressor:
    """Feed compressed bytes, get text back; a new frame may start right after one ends.
    A decompressobj per frame: ~2x faster than a stream reader (64 MB: 0.10 s vs 0.19 s)."""

    def __init__(self) -> None:
        import zstandard

        self._dctx = zstandard.ZstdDecompressor()
        self._dobj: Any = self._dctx.decompressobj()
        self._in_frame = False
        #: what a damaged stream raises
        self.error: type[Exception] = zstandard.ZstdError

    def decompress(self, data: bytes) -> bytes:
        """The text ``data`` completes (raises :attr:`error` on damaged data)."""
        out: list[bytes] = []
        while data:
            self._in_frame = True
            out.append(self._dobj.decompress(data))
            if not self._dobj.eof:
                break
            data = self._dobj.unused_data
            self._dobj = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(out)

    @property
    def truncated(self) -> bool:
        """True when the input so far ends inside a frame."""
        return self._in_frame
