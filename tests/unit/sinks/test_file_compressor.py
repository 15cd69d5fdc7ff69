"""sinks/_file_compressor.py: the file sink's background thread compresses a log's rotated
files and applies --retain, under the rotation lock, and says what it could not do."""

from __future__ import annotations

import io
import os
from pathlib import Path

import zstandard

from logpipe import diagnostics, rotate
from logpipe.sinks._file_compressor import Compressor


def _rotated(log: Path, stamps: list[str], data: bytes) -> None:
    log.write_bytes(b"live\n")
    for s in stamps:
        Path(f"{log}.{s}").write_bytes(data)


def test_compresses_rotated_files_and_keeps_the_newest(tmp_path: Path) -> None:
    """``submit`` + ``finish``: every rotated file not doomed by ``--retain 2`` becomes a .zst
    of the same bytes, the older ones are deleted, the live file is untouched, and the counters
    say so."""
    log = tmp_path / "api.log"
    data = b'{"message": "x"}\n' * 2000
    _rotated(log, ["20261201T000000", "20261202T000000", "20261203T000000", "20261204T000000"],
             data)
    comp = Compressor(compress=True, retain=2, state_dir=str(tmp_path / "state"))
    comp.submit(str(log))
    comp.submit(str(log))  # already queued: one pass
    comp.finish()
    kept = rotate.rotated_files(str(log))
    assert [(r.stamp, r.compressed) for r in kept] == [("20261203T000000", True),
                                                      ("20261204T000000", True)]
    for r in kept:
        assert zstandard.ZstdDecompressor().decompress(Path(r.path).read_bytes()) == data
    assert (comp.compressed, comp.deleted, comp.bytes_in) == (2, 2, 2 * len(data))
    assert 0 < comp.bytes_out < comp.bytes_in
    assert log.read_bytes() == b"live\n"


def test_without_compression_only_retention_runs(tmp_path: Path) -> None:
    """``--no-compress``: rotated files stay plain; retention still deletes beyond ``retain``."""
    log = tmp_path / "api.log"
    _rotated(log, ["20261201T000000", "20261202T000000"], b"a\n")
    comp = Compressor(compress=False, retain=1, state_dir=str(tmp_path / "state"))
    comp.submit(str(log))
    comp.finish()
    assert [(r.stamp, r.compressed) for r in rotate.rotated_files(str(log))] == [
        ("20261202T000000", False)]
    assert (comp.compressed, comp.deleted) == (0, 1)


def test_a_failure_is_said_and_the_thread_goes_on(tmp_path: Path) -> None:
    """A log whose directory cannot be locked (it is gone) gives one warning naming it; the
    thread still serves the next log."""
    good = tmp_path / "api.log"
    _rotated(good, ["20261201T000000"], b"a\n")
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        comp = Compressor(compress=True, retain=None, state_dir=str(tmp_path / "state"))
        comp.submit(str(tmp_path / "gone" / "x.log"))
        comp.submit(str(good))
        comp.finish()
    finally:
        diagnostics.set_stream(None)
    assert b"file sink: cannot compress/retain " + os.fsencode(tmp_path / "gone" / "x.log") \
        in buf.getvalue()
    assert [r.compressed for r in rotate.rotated_files(str(good))] == [True]
