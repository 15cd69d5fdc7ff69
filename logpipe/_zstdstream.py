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


#: gzip's first two bytes (RFC 1952 §2.3.1)
GZIP_MAGIC = b"\x1f\x8b"


class CompressedInput:
    """A stream that may turn out to be zstd (``logpipe sink console < api.log.….zst``): decoded
    when its first bytes say zstd; gzip is refused with one clear line; anything else passes
    through unchanged. Never prints compressed bytes as records."""

    __slots__ = ("_dec", "_first")

    def __init__(self) -> None:
        self._first = True
        self._dec: Decompressor | None = None

    def decode(self, chunk: bytes) -> bytes:
        """``chunk`` as text (raises SourceError for gzip or damaged zstd)."""
        from logpipe.errors import SourceError

        if self._first:
            self._first = False
            if chunk.startswith(MAGIC):
                self._dec = Decompressor()
            elif chunk.startswith(GZIP_MAGIC):
                raise SourceError("standard input is gzip-compressed: decompress it first "
                                  "(zcat FILE | logpipe …)")
        if self._dec is None:
            return chunk
        try:
            return self._dec.decompress(chunk)
        except self._dec.error as exc:
            raise SourceError(f"standard input: damaged zstd data ({exc})") from None

    def finish(self) -> None:
        """At EOF: say so when the zstd input stopped inside a frame (its end is missing)."""
        if self._dec is not None and self._dec.truncated:
            from logpipe import diagnostics

            diagnostics.warning("standard input: zstd data ends inside a frame (truncated "
                                "file?); what could be decompressed was read", key="stdin-zstd")
