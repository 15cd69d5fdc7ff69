"""``logpipe logs`` inputs: which files make each log's history, reading them (zstd or plain),
and following the live file across rotation.

A **log** is a live file and its rotated outputs (``NAME.<UTC stamp>[.N][.zst]``, oldest
first — the names the file sink and ``logpipe rotate`` give, :func:`logpipe.rotate.rotated_files`).

Skipping history without decompressing it: a rotated file's name is its rotation time, and
every record in it was written before that — so when ``stamp + SKEW_GRACE < --since`` the
whole file is older than asked and is not opened. For ``--until`` the first record of each file
is read (a few KB decompressed): when it is already past ``--until + SKEW_GRACE``, that file and
every later one of the log are skipped. The grace allows records stamped by a host whose clock
runs somewhat ahead of the writer's. Nothing is written at rotation time for this.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from logpipe import diagnostics, identity, record, rotate
from logpipe._zstdstream import Decompressor

T = TypeVar("T")
#: seconds a record's time may run ahead of the clock of the process that wrote it
SKEW_GRACE = 300.0
#: decompressed bytes handed over per read
CHUNK = 4 << 20
_ROTATED = re.compile(r"^(?P<base>.+)\.\d{8}T\d{6}(?:\.\d+)?(?:\.zst)?$")
#: PM2's own files and the file sink's: what a directory's live logs are called
_LIVE_EXT = ".log"


@dataclass
class Log:
    """One log: its live file (may be absent) and its rotated history, oldest first."""

    service: str
    #: the live file's path (it may not exist, yet or any more); None for a rotated file read alone
    live: str | None
    history: list[rotate.RotatedFile] = field(default_factory=list)
    #: keys filled in where a record lacks them (service from the name, PM2's pm_id)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: level of a plain-text line (``error`` for a PM2 ``-error.log``)
    plain_level: str = "info"


def rotated(live_path: str) -> list[rotate.RotatedFile]:
    """The rotated outputs of a log, oldest first, each once: while the compressor finishes, a
    file is briefly there both as ``X`` and ``X.zst`` (the same text) — the ``.zst`` is kept."""
    by_key: dict[tuple[str, int], rotate.RotatedFile] = {}
    for f in rotate.rotated_files(live_path):
        if (f.stamp, f.seq) not in by_key or f.compressed:
            by_key[(f.stamp, f.seq)] = f
    return list(by_key.values())


def _log_for(live_path: str, with_history: bool = True) -> Log:
    ident = identity.from_filename(live_path)
    defaults: dict[str, Any] = {record.SERVICE: ident.service}
    if ident.pm_id is not None:
        defaults[record.PM_ID] = ident.pm_id
        defaults[record.INSTANCE_ID] = str(ident.pm_id)
    history = rotated(live_path) if with_history else []
    return Log(ident.service, live_path, history, defaults,
               "error" if ident.stream == "err" else "info")


def logs_in_dir(directory: str) -> list[Log]:
    """Every log of ``directory``: ``*.log`` files and rotated outputs whose live file is gone."""
    try:
        names = sorted(e.name for e in os.scandir(directory)
                       if not e.name.startswith(".") and e.is_file(follow_symlinks=False))
    except OSError as exc:
        from logpipe.errors import UsageError

        raise UsageError(f"cannot read {directory}: {exc.strerror}") from None
    bases: set[str] = set()
    for name in names:
        m = _ROTATED.match(name)
        if m:
            bases.add(m["base"])
        elif name.endswith(_LIVE_EXT):
            bases.add(name)
    return [_log_for(os.path.join(directory, b)) for b in sorted(bases)]


def logs_of_files(paths: list[str]) -> list[Log]:
    """Named files: a live file brings its rotated history; a rotated file is read alone."""
    out: list[Log] = []
    for path in paths:
        if not os.path.exists(path):
            from logpipe.errors import UsageError

            raise UsageError(f"{path}: no such file")
        m = _ROTATED.match(os.path.basename(path))
        if m is None:
            out.append(_log_for(path))
            continue
        log = _log_for(os.path.join(os.path.dirname(path), m["base"]), with_history=False)
        log.live = None
        log.history = [f for f in rotate.rotated_files(os.path.join(os.path.dirname(path),
                                                                    m["base"]))
                       if os.path.samefile(f.path, path)]
        out.append(log)
    return out


def _whole(data: bytes) -> bytes:
    """``data`` ending with a newline (the last line of a file that was let go of)."""
    return data + b"\n" if data and not data.endswith(b"\n") else data


# --- reading --------------------------------------------------------------------------------
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


def _read_at_least(fh: IO[bytes], n: int) -> bytes:
    """``n`` bytes of ``fh`` (fewer only at its end): a stream reader may return less."""
    buf = bytearray()
    while len(buf) < n:
        data = fh.read(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


def say_unreadable(path: str, exc: BaseException) -> None:
    """Never a silent skip: one line per history file that could not be read."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    diagnostics.warning(f"logs: cannot read {path}: {reason}; skipped", key=f"logs-read:{path}")


class LiveFile:
    """The live file of a log, read to its end and then followed: a rename (the sink's own
    rotation, ``logpipe rotate``) is read to its end and the new file at the path is read from
    its start; a truncation (copytruncate) restarts at 0."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._id: tuple[int, int] | None = None
        self._carry = b""
        #: files renamed away, still read for a while (a writer may not have reopened yet)
        self._retired: list[tuple[IO[bytes], int]] = []
        self._polls = 0
        #: rotated outputs already accounted for, as (stamp, seq)
        self._known: set[tuple[str, int]] | None = None

    def _open(self) -> bool:
        if self._known is None:
            self._known = {(f.stamp, f.seq) for f in rotated(self.path)}
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except OSError:
            return False
        st = os.fstat(fh.fileno())
        self._fh, self._id = fh, (st.st_dev, st.st_ino)
        return True

    def scan(self) -> Iterator[bytes]:
        """The file as it is now, in line-aligned blocks; a partial last line is held back for
        :meth:`read` (following) or :meth:`rest` (stopping)."""
        if not self._open():
            return
        assert self._fh is not None
        carry = b""
        while True:
            data = self._fh.read(CHUNK)
            if not data:
                break
            data = carry + data if carry else data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield data[:cut]
        self._carry = carry

    def read(self) -> bytes:
        """Everything complete (whole lines) written since the last call."""
        self._polls += 1
        out = bytearray()
        for fh, until in list(self._retired):
            out += _whole(fh.read())
            if self._polls >= until:
                fh.close()
                self._retired.remove((fh, until))
        if self._fh is None:
            opened = self._open()
            out += self._catch_up()  # files rotated while the path had no file we held
            if not opened:
                return bytes(out)
            assert self._fh is not None
            return bytes(out) + self._aligned(self._fh.read())
        data = self._carry + self._fh.read()
        try:
            st = os.stat(self.path)
        except OSError:
            return bytes(out) + self._aligned(data)
        if (st.st_dev, st.st_ino) != self._id:
            # renamed away: read it to its end now, keep reading it for a few polls (a writer
            # that has not reopened yet), then the files rotated since, then the new file at
            # the path from its top
            out += _whole(data + self._fh.read())
            self._carry = b""
            self._retired.append((self._fh, self._polls + 8))
            self._fh = None
            opened = self._open()
            out += self._catch_up()
            if opened:
                assert self._fh is not None
                out += self._aligned(self._fh.read())
            return bytes(out)
        if st.st_size < self._fh.tell():
            self._fh.seek(0)  # truncated in place (copytruncate): start again from the top
            data = self._fh.read()
        return bytes(out) + self._aligned(data)

    def _catch_up(self) -> bytes:
        """Rotated outputs not yet accounted for, read whole, oldest first: files that were
        live and rotated out between two looks, never opened here (several rotations in one
        poll interval). Called after the path is (re)opened, so nothing rotated before the
        open is left for later. Files held open are recognised — by inode, or once compressed
        by their first 4 KB — and not read again: a retired one (read through its descriptor)
        is accounted for; the one just opened, when it has already been rotated too, ends the
        catch-up: it and every later file are newer than it, and wait for its rename."""
        known = self._known
        assert known is not None  # set by _open, called first
        out = bytearray()
        for f in rotated(self.path):
            key = (f.stamp, f.seq)
            if key in known:
                continue
            try:
                text = self._unread_text(f)
            except read_errors() as exc:
                say_unreadable(f.path, exc)
                known.add(key)
                continue
            if text is None:
                break
            known.add(key)
            out += _whole(text)
        return bytes(out)

    def _unread_text(self, f: rotate.RotatedFile) -> bytes | None:
        """``f``'s text; empty when it is a retired file (read already); None when it is the
        file open at the path."""
        held = [(fh, fh is self._fh) for fh in (self._fh, *(r for r, _ in self._retired))
                if fh is not None]
        if not f.compressed:
            with contextlib.suppress(OSError):
                st = os.stat(f.path)
                for fh, current in held:
                    other = os.fstat(fh.fileno())
                    if (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino):
                        return None if current else b""
        with contextlib.closing(open_rotated(f)) as rf:
            start = _read_at_least(rf, 4096)
            for fh, current in held:
                head = os.pread(fh.fileno(), 4096, 0)
                if head and start[:len(head)] == head:
                    return None if current else b""
            return start + rf.read()

    def _aligned(self, data: bytes) -> bytes:
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        return data[:cut]

    def rest(self) -> bytes:
        """A partial last line held back (printed when reading stops)."""
        carry, self._carry = self._carry, b""
        return carry

    def close(self) -> None:
        """Close every descriptor."""
        for fh, _ in self._retired:
            fh.close()
        self._retired.clear()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
