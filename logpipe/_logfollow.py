"""``logpipe logs -f``: the live file of a log, read to its end and followed across rotation
(renames, several rotations between two polls, copytruncate), every line once and in order."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import IO

from logpipe import rotate
from logpipe._logfiles import rotated
from logpipe._logread import CHUNK, open_rotated, read_errors, say_unreadable


class LiveFile:
    """The live file of a log, read to its end and then followed: a rename (the sink's own
    rotation, ``logpipe rotate``) is read to its end and the new file at the path is read from
    its start; a truncation (copytruncate) restarts at 0.

    ``history``: the rotated files the caller lists and reads itself before this one (a
    log's :attr:`~logpipe._logfiles.Log.history`). A file rotated after that listing and
    before the live file is first opened is then read here, in order, instead of being taken
    for read already; without it, what is rotated when the live file is first opened counts as
    read."""

    def __init__(self, path: str, history: Iterable[rotate.RotatedFile] | None = None) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._id: tuple[int, int] | None = None
        self._carry = b""
        #: files renamed away, still read for a while (a writer may not have reopened yet)
        self._retired: list[tuple[IO[bytes], int]] = []
        self._polls = 0
        #: rotated outputs already accounted for, as (stamp, seq)
        self._known: set[tuple[str, int]] | None = (
            None if history is None else {(f.stamp, f.seq) for f in history})

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
        :meth:`read` (following) or :meth:`rest` (stopping). Files rotated since the caller's
        history listing come first."""
        opened = self._open()
        caught = self._catch_up()
        if caught:
            yield caught
        if not opened:
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


def _whole(data: bytes) -> bytes:
    """``data`` ending with a newline (the last line of a file that was let go of)."""
    return data + b"\n" if data and not data.endswith(b"\n") else data


def _read_at_least(fh: IO[bytes], n: int) -> bytes:
    """``n`` bytes of ``fh`` (fewer only at its end): a stream reader may return less."""
    buf = bytearray()
    while len(buf) < n:
        data = fh.read(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)
