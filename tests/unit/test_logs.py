"""``logpipe logs`` in-process (``logs.run``): what is printed from a log whose history and
live file change while it is being read."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from logpipe import logs
from logpipe.rotate import rotated_files


def _write(path: Path, first: int, count: int) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(orjson.dumps({"time": f"2026-12-04T17:00:{i:02d}.000Z", "service": "api",
                                        "level": "info", "message": f"m{i}"}) + b"\n"
                          for i in range(first, first + count)))


def test_logs_prints_a_file_rotated_after_listing_before_opening(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation between listing the history and opening the live file loses no record: all
    ten are printed once, in order."""
    live = tmp_path / "api.log"
    _write(live, 0, 4)
    live.rename(tmp_path / "api.log.20261204T170001")
    _write(live, 4, 3)
    real = logs.select_logs

    def listed_then_rotated(opts: logs.LogsOptions, rescan: bool = False) -> list[logs.Log]:
        found = real(opts, rescan)
        live.rename(tmp_path / "api.log.20261204T170002")  # after the listing
        _write(live, 7, 3)
        return found

    monkeypatch.setattr(logs, "select_logs", listed_then_rotated)
    out = io.BytesIO()
    assert logs.run(logs.LogsOptions(directory=str(tmp_path), fmt="json"), out) == 0
    assert [orjson.loads(x)["message"] for x in out.getvalue().splitlines()] == [
        f"m{i}" for i in range(10)]
    assert len(rotated_files(str(live))) == 2
