"""Compressing a rotated file: streaming zstd to a temp name, verified, fsynced, renamed."""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from dataclasses import dataclass
from typing import Any

from logpipe._fsutil import fsync_dir
from logpipe.errors import RotateError
from logpipe.rotate.names import _tmp_zst
from logpipe.rotate.rename import IO_CHUNK, _write_all

#: zstd settings, tuned with ``bench/rotate.py --tune`` on 100 MB of varied JSON logs (random
#: request ids, paths, durations): levels 2-4 came out *larger* than ``gzip -6`` there; level 1
#: plus long-distance matching (``zstd --long``) matched gzip's size at ~0.2x its CPU time.
#: The window stays ≤ 2^27 so plain ``zstd -d`` / ``zstdcat`` decompress without ``--long``;
#: memory is bounded by the window (compressing and verifying), whatever the file size.
#: Threads: none — on a busy 2-core box a worker thread measured no faster.
ZSTD_LEVEL = 1
ZSTD_LONG = True
ZSTD_WINDOW_LOG = 25
ZSTD_THREADS = 0


@dataclass
class Compressed:
    """One rotated file compressed: source and output paths, bytes in and out."""

    src: str
    dst: str
    bytes_in: int
    bytes_out: int


def _compressor(size: int, long_matching: bool) -> Any:
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=size, window_log=ZSTD_WINDOW_LOG, threads=ZSTD_THREADS,
        enable_ldm=long_matching, write_checksum=True, write_content_size=True,
    )
    return zstandard.ZstdCompressor(compression_params=params)


class _VerifyingWriter:
    """The compressor's output file: writes each compressed chunk to ``fd`` and, on a second
    thread, decompresses it again (zstd releases the GIL, so verification overlaps compression
    instead of adding a second pass). zstd checks the frame's content checksum at its end."""

    def __init__(self, fd: int) -> None:
        import queue
        import threading

        self._fd = fd
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # bounded: ≤ 8 chunks held
        self.total = 0
        self.written = 0
        self._error: Exception | None = None
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="logpipe-zstd-verify", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        _write_all(self._fd, chunk)
        self.written += len(chunk)
        self._q.put(chunk)
        return len(chunk)

    def _run(self) -> None:
        import zstandard

        dobj = zstandard.ZstdDecompressor().decompressobj()
        while (chunk := self._q.get()) is not None:
            if self._error is None:
                try:
                    self.total += len(dobj.decompress(chunk))
                except zstandard.ZstdError as exc:
                    self._error = exc
        self._eof = dobj.eof

    def finish(self, path: str, expected_size: int) -> None:
        """Wait for the verifier; raise RotateError unless it saw one whole, intact frame."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise RotateError(f"{path}: compressed output failed verification ({self._error})")
        if not self._eof or self.total != expected_size:
            raise RotateError(f"{path}: compressed output holds {self.total} bytes, "
                              f"expected {expected_size}")

    def abandon(self) -> None:
        self._q.put(None)
        self._thread.join()


def _write_verified(src_path: str, src: int, st: os.stat_result, tmp: str,
                    long_matching: bool) -> tuple[int, int]:
    """Stream the source ``src_path`` (fd ``src``, stat ``st``) compressed into ``tmp``, verified as it is
    written (:class:`_VerifyingWriter`), fsynced, with the source's mode and owner; returns
    (bytes read, bytes written). Raises RotateError/OSError (the caller removes ``tmp``)."""
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
    except OSError as exc:
        raise RotateError(f"cannot create {tmp}: {exc.strerror}") from None
    writer = _VerifyingWriter(out)
    try:
        with open(src, "rb", closefd=False) as ifh:
            n_in, n_out = _compressor(st.st_size, long_matching).copy_stream(
                ifh, writer, size=st.st_size, read_size=IO_CHUNK, write_size=IO_CHUNK)
        writer.finish(tmp, n_in)
        os.fsync(out)
        if os.fstat(out).st_size != writer.written:
            raise RotateError(f"{tmp}: short write; kept {src_path} uncompressed")
        os.fchmod(out, stat_mod.S_IMODE(st.st_mode))
        with contextlib.suppress(PermissionError):
            os.fchown(out, st.st_uid, st.st_gid)
    except BaseException:
        writer.abandon()
        raise
    finally:
        os.close(out)
    return n_in, n_out


def _replace(src_path: str, tmp: str, dst: str) -> None:
    """The complete ``tmp`` becomes ``dst``, durably, and only then the source goes."""
    os.rename(tmp, dst)
    directory = os.path.dirname(os.path.abspath(src_path))
    fsync_dir(directory)
    os.unlink(src_path)
    fsync_dir(directory)


def compress_rotated(src_path: str, long_matching: bool = ZSTD_LONG) -> Compressed | None:
    """Compress one rotated file to ``<src>.zst``: stream to a temp name, fsync, verify, rename,
    fsync the directory, then remove the source. None when the source grew meanwhile (a
    writer still has it: postponed) or is gone. Raises RotateError (source kept) on failure.

    ``long_matching=False`` (the file sink, which compresses beside its hot path) is ~2.5x less
    CPU for ~2% larger files."""
    try:
        src = os.open(src_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    tmp = _tmp_zst(src_path)
    dst = src_path + ".zst"
    try:
        st = os.fstat(src)
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        n_in, n_out = _write_verified(src_path, src, st, tmp, long_matching)
        after = os.fstat(src)
        if after.st_size != n_in or after.st_mtime_ns != st.st_mtime_ns:
            os.unlink(tmp)
            return None  # still being written: next run
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        _replace(src_path, tmp, dst)
        return Compressed(src_path, dst, n_in, n_out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        raise RotateError(f"cannot compress {src_path}: {what}; kept uncompressed") from None
    except RotateError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(src)
