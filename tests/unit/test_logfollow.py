"""Following the live file (``_logfollow``): several rotations between two polls, a rotation
racing the reopen — every line once, in order."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from logpipe import _logfollow


class _Sink:
    """A writer of numbered lines that rotates its live file the file sink's way: rename to
    ``api.log.<stamp>[.seq]`` (all in the same second here), then a new file at the path;
    ``compress`` does what the compressor does (``X.zst`` complete, then ``X`` unlinked)."""

    def __init__(self, d: Path) -> None:
        self.live = d / "api.log"
        self.n = 0
        self.seq = 0
        self.live.write_bytes(b"")

    def write(self, count: int) -> None:
        with open(self.live, "ab") as fh:
            fh.write(b"".join(b"%d\n" % i for i in range(self.n, self.n + count)))
        self.n += count

    def rotate(self, compress: bool = False) -> None:
        dst = self.live.with_name("api.log.20261204T171658" + (f".{self.seq}" if self.seq else ""))
        self.seq += 1
        self.live.rename(dst)
        self.live.write_bytes(b"")
        if compress:
            dst.with_name(dst.name + ".zst").write_bytes(
                zstandard.ZstdCompressor().compress(dst.read_bytes()))
            dst.unlink()


def _numbers(data: bytes) -> list[int]:
    return [int(x) for x in data.split()]


def test_follow_reads_several_rotations_between_two_polls_in_order(tmp_path: Path) -> None:
    """Four rotations in one poll interval, same second (seq 0..3), the file being read among
    them and compressed before the follower looks again: every line once, in order."""
    sink = _Sink(tmp_path)
    sink.write(5)
    lf = _logfollow.LiveFile(str(sink.live))
    got = _numbers(b"".join(lf.scan()))
    sink.write(3)
    got += _numbers(lf.read())
    sink.write(4)
    sink.rotate(compress=True)  # the file being read: renamed, then compressed
    for compress in (False, True, False):
        sink.write(6)
        sink.rotate(compress=compress)
    sink.write(2)
    got += _numbers(lf.read())
    sink.write(3)
    got += _numbers(lf.read())
    lf.close()
    assert got == list(range(sink.n))


def test_follow_a_rotation_racing_the_reopen_is_read_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race seen under load: the sink rotates again while the follower, having seen one
    rename, lists the rotated files and reopens the path. The file rotated in that gap must be
    read before the one opened after it — not skipped and printed a rotation later (the e2e
    flake: record 69 printed where 46 was due)."""
    sink = _Sink(tmp_path)
    sink.write(5)
    lf = _logfollow.LiveFile(str(sink.live))
    got = _numbers(b"".join(lf.scan()))
    sink.write(4)
    sink.rotate(compress=True)
    sink.write(6)  # the file the follower will find at the path
    real = _logfollow.rotated
    armed = [True]

    def rotated_then_rotate_again(path: str) -> list:  # type: ignore[type-arg]
        out = real(path)
        if armed[0] and path == str(sink.live):
            armed[0] = False
            sink.rotate()  # right after the listing: the gap before (old) or after (new) open
            sink.write(3)
        return out

    monkeypatch.setattr(_logfollow, "rotated", rotated_then_rotate_again)
    got += _numbers(lf.read())
    sink.write(2)
    got += _numbers(lf.read())
    sink.rotate(compress=True)
    sink.write(1)
    got += _numbers(lf.read())
    lf.close()
    assert got == list(range(sink.n))


def test_a_rotation_between_the_history_listing_and_the_first_open_is_read(tmp_path: Path) -> None:
    """``logs`` lists a log's history, reads it, then opens the live file: a file rotated in
    between is in neither — given the listing, the live file's scan reads it first, in order
    (it was taken for read before, its lines silently missing)."""
    sink = _Sink(tmp_path)
    sink.write(5)
    sink.rotate(compress=True)
    sink.write(4)
    history = _logfollow.rotated(str(sink.live))  # what `logs` lists, and reads itself
    sink.rotate()  # the gap: after the listing, before the first open
    sink.write(3)
    lf = _logfollow.LiveFile(str(sink.live), history)
    got = _numbers(b"".join(lf.scan()))
    sink.write(2)
    got += _numbers(lf.read())
    lf.close()
    assert got == list(range(5, sink.n))  # 0..4 are the listed history, read by the caller
