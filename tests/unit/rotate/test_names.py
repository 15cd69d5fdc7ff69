"""rotate/names.py: rotated names (unique and ordered within one second), the history they make."""

from __future__ import annotations

import os
from pathlib import Path

from logpipe.rotate import RotateOptions
from tests._rotate_helpers import (
    capture_main,
    history,
    json_lines,
    rotated_of,
    write_lines,
)


def test_names_are_unique_and_ordered_within_one_second(tmp_path: Path) -> None:
    """Many rotations in the same second get .1, .2 … suffixes that sort in rotation order, and
    the history (rotated files oldest→newest, then the live file) is the input in order."""
    log = tmp_path / "fast.log"
    expected = b""
    for i in range(12):
        chunk = json_lines(20, start=i * 20)
        write_lines(log, chunk)
        expected += b"".join(line + b"\n" for line in chunk)
        capture_main(RotateOptions(paths=[str(log)], retain=100))
    rotated = rotated_of(log)
    assert len(rotated) == 12
    assert len({(r.stamp, r.seq) for r in rotated}) == 12
    assert history(log) == expected



def test_rotated_name_rules() -> None:
    """``<log>.<UTC stamp>[.<seq>][.zst]`` is a rotated name; a stamp is ``YYYYMMDDTHHMMSS`` in
    UTC and parses back to the same second; other suffixes are not rotated names."""
    from logpipe.rotate import names

    assert names.stamp(1_796_132_415.9) == "20261201T134015"
    assert names.RotatedFile("20261201T134015", 0, "p", False).epoch == 1_796_132_415.0
    for name in ("api.log.20261201T134015", "api.log.20261201T134015.2",
                 "api.log.20261201T134015.zst", "api.log.20261201T134015.3.zst"):
        assert names.is_rotated_name(name), name
    for name in ("api.log", "api.log.1", "api.log.2026-12-01", "api.log.20261201T134015.gz"):
        assert not names.is_rotated_name(name), name
    assert names.utc_day(86_399.9) == 0 and names.utc_day(86_400) == 1


def test_rotated_files_are_exactly_this_logs_regular_files_in_order(tmp_path: Path) -> None:
    """``rotated_files`` lists only this log's rotated regular files (not another log's whose
    name it begins, not a directory wearing the name), ordered by stamp then sequence."""
    from logpipe.rotate import names

    log = tmp_path / "api.log"
    for name in ("api.log.20261201T134015.1.zst", "api.log.20261201T134015",
                 "api.log.20261130T000000.zst", "api.log2.20261201T134015",
                 "xapi.log.20261201T134015"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "api.log.20261202T000000").mkdir()
    got = [(r.stamp, r.seq, os.path.basename(r.path), r.compressed)
           for r in names.rotated_files(str(log))]
    assert got == [("20261130T000000", 0, "api.log.20261130T000000.zst", True),
                   ("20261201T134015", 0, "api.log.20261201T134015", False),
                   ("20261201T134015", 1, "api.log.20261201T134015.1.zst", True)]
    assert names.rotated_files(str(tmp_path / "gone" / "api.log")) == []


def test_file_started_prefers_the_xattr_then_the_first_lines_time(tmp_path: Path) -> None:
    """``file_started``: the creation xattr when set (or the newest rotated name's stamp,
    whichever is later), else the first line's ``time``; None for a file that says nothing."""
    from logpipe.rotate import names

    log = tmp_path / "api.log"
    log.write_bytes(b'{"time": "2026-12-01T13:40:15Z", "message": "m"}\n')
    assert names.file_started(str(log)) == 1_796_132_415.0
    fd = os.open(log, os.O_RDONLY)
    try:
        names.mark_created(fd, 1_796_150_000.0)
    finally:
        os.close(fd)
    try:
        os.getxattr(log, names.CREATED_XATTR)
    except OSError:
        pass  # no user xattrs on this filesystem: the first line's time stays the answer
    else:
        assert names.file_started(str(log)) == 1_796_150_000.0
    plain = tmp_path / "plain.log"
    plain.write_bytes(b"no time here\n")
    assert names.file_started(str(plain)) is None
