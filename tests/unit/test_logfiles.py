"""``logpipe logs`` inputs: a directory's logs (rotated outputs whose live file is gone
included), rotated files in order, zstd across frames, damaged zstd raised (to be reported)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from logpipe import _logfiles, _zstdstream


def test_logs_in_dir_groups_live_and_rotated(tmp_path: Path) -> None:
    """``api.log`` with its rotated outputs (oldest first), ``old.log`` known only by rotated
    files, PM2 names with their pm_id; hidden files and foreign names are not logs."""
    for name in ("api.log", "api.log.20261201T000000.zst", "api.log.20261130T000000.zst",
                 "api.log.20261201T000000.1.zst", "old.log.20261101T000000",
                 "web-out-3.log", ".hidden.log", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    logs = {log.service: log for log in _logfiles.logs_in_dir(str(tmp_path))}
    assert sorted(logs) == ["api", "old", "web"]
    assert [f.path.rsplit("/", 1)[1] for f in logs["api"].history] == [
        "api.log.20261130T000000.zst", "api.log.20261201T000000.zst",
        "api.log.20261201T000000.1.zst"]
    assert logs["old"].history[0].epoch == 1_793_491_200.0
    assert logs["web"].defaults == {"service": "web", "pm_id": 3, "instance_id": "3"}


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
    assert b"".join(b[i:j] for b, i, j in _logfiles.blocks(good)) == b"a\n" * 1000 + b"b\n"
    for f in (cut, bad):
        with pytest.raises(_logfiles.read_errors()):
            list(_logfiles.blocks(f))


def test_spans_are_whole_lines_in_place() -> None:
    """Pieces cut anywhere give spans of whole lines covering the text exactly once; a piece
    is not copied (the span points into it)."""
    text = b"".join(b"line %d\n" % i for i in range(100)) + b"partial"
    for size in (1, 7, 64, 1000, len(text)):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        spans = list(_logfiles._spans(iter(pieces)))
        assert b"".join(b[i:j] for b, i, j in spans) == text
        assert all(b[i:j].endswith(b"\n") for b, i, j in spans[:-1])
    big = text[:700]
    [(buf, _, _), *_] = _logfiles._spans(iter([big, b"x\n"]))
    assert buf is big


def test_a_file_caught_mid_compression_is_read_once(tmp_path: Path) -> None:
    """While the compressor finishes, ``X`` and ``X.zst`` both exist: the log's history lists
    that rotated file once (the .zst) — else ``logs`` and ``-f`` print its records twice."""
    (tmp_path / "api.log").write_bytes(b"")
    (tmp_path / "api.log.20261201T000000.3").write_bytes(b"x\n")
    (tmp_path / "api.log.20261201T000000.3.zst").write_bytes(zstandard.ZstdCompressor().compress(b"x\n"))
    [log] = _logfiles.logs_in_dir(str(tmp_path))
    assert [f.path.rsplit("/", 1)[1] for f in log.history] == ["api.log.20261201T000000.3.zst"]


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
    lf = _logfiles.LiveFile(str(sink.live))
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
    lf = _logfiles.LiveFile(str(sink.live))
    got = _numbers(b"".join(lf.scan()))
    sink.write(4)
    sink.rotate(compress=True)
    sink.write(6)  # the file the follower will find at the path
    real = _logfiles.rotated
    armed = [True]

    def rotated_then_rotate_again(path: str) -> list:  # type: ignore[type-arg]
        out = real(path)
        if armed[0] and path == str(sink.live):
            armed[0] = False
            sink.rotate()  # right after the listing: the gap before (old) or after (new) open
            sink.write(3)
        return out

    monkeypatch.setattr(_logfiles, "rotated", rotated_then_rotate_again)
    got += _numbers(lf.read())
    sink.write(2)
    got += _numbers(lf.read())
    sink.rotate(compress=True)
    sink.write(1)
    got += _numbers(lf.read())
    lf.close()
    assert got == list(range(sink.n))
