"""``logpipe logs``: reading a log's rotated files — plain or zstd (every frame, decompressed
in a second thread), as spans of whole lines searched in place — and saying which could not be
read (never a silent skip)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TypeVar

from logpipe import diagnostics, rotate
from logpipe._zstdstream import Decompressor

T = TypeVar("T")
#: decompressed bytes handed over per read
CHUNK = 4 << 20


def open_rotated(f: rotate.RotatedFile) -> IO[bytes]:
    """A binary reader of a rotated file's text (decompressing ``.zst``). A file compressed
    meanwhile (``X`` became ``X.zst``) is found under its new name."""
    raw, compressed = _open_raw(f)
    if not compressed:
        return raw
    import zstandard

    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(
        raw, read_size=1 << 17, read_across_frames=True, closefd=True)
    return reader


def _open_raw(f: rotate.RotatedFile) -> tuple[IO[bytes], bool]:
    try:
        return open(f.path, "rb"), f.compressed
    except FileNotFoundError:
        if f.compressed:
            raise
        return open(f.path + ".zst", "rb"), True


def _zstd_pieces(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompressed pieces of a zstd file, every frame of it."""
    dec = Decompressor()
    while True:
        data = raw.read(1 << 20)
        if not data:
            if dec.truncated:
                raise dec.error("truncated zstd data (the file ends inside a frame)")
            return
        out = dec.decompress(data)
        if out:
            yield out


#: whole lines in ``buf[start:end]`` — a decompressed piece is searched in place, not copied
Span = tuple[bytes, int, int]


def blocks(f: rotate.RotatedFile) -> Iterator[Span]:
    """A rotated file's text as spans of whole lines; a ``.zst`` is decompressed in a second
    thread while the caller searches the previous span (zstd releases the GIL: two cores at
    work, as in ``zstdcat | grep``)."""
    raw, compressed = _open_raw(f)
    with raw:
        if compressed:
            yield from _prefetched(_spans(_zstd_pieces(raw)))
        else:
            yield from _spans(iter(lambda: raw.read(CHUNK), b""))


def _spans(pieces: Iterator[bytes]) -> Iterator[Span]:
    """Pieces → spans of whole lines: each piece in place, and the line cut between two pieces
    joined on its own (a last partial line at the end)."""
    carry = b""
    for piece in pieces:
        first = piece.find(b"\n")
        if first < 0:
            carry += piece
            continue
        if carry:
            joined = carry + piece[:first + 1]
            yield joined, 0, len(joined)
        last = piece.rfind(b"\n") + 1
        start = first + 1 if carry else 0
        if last > start:
            yield piece, start, last
        carry = piece[last:]
    if carry:
        yield carry, 0, len(carry)


def _prefetched(gen: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``gen`` run in a worker thread, ``depth`` blocks ahead; its errors are raised here."""
    import queue
    import threading

    q: queue.Queue[tuple[T | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[T | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for block in gen:
                if not put((block, None)):
                    return
            put((None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            put((None, exc))

    t = threading.Thread(target=work, name="logs-zstd", daemon=True)
    t.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is None:
                return
            yield item
    finally:
        stop.set()
        t.join()


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged or vanished history file raises (reported, then skipped)."""
    import zstandard

    return (OSError, zstandard.ZstdError)


def first_line(f: rotate.RotatedFile) -> bytes:
    """The first line of a rotated file (a few KB decompressed at most)."""
    with contextlib.closing(open_rotated(f)) as fh:
        return fh.read(64 * 1024).split(b"\n", 1)[0]


def say_unreadable(path: str, exc: BaseException) -> None:
    """Never a silent skip: one line per history file that could not be read."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    diagnostics.warning(f"logs: cannot read {path}: {reason}; skipped", key=f"logs-read:{path}")
