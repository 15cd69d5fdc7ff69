"""_openfiles.py: which other process holds a file open, and whether for writing (/proc fds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_HOLD = """
import sys
f = open(sys.argv[1], sys.argv[2])
print("open", flush=True)
sys.stdin.read()  # the scenario: hold the file until the test closes our stdin
"""


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino)


def test_writer_and_reader_are_found_and_own_fds_are_not(tmp_path: Path) -> None:
    """A real process holding one file for appending is reported as a writer, another holding a
    second file read-only as a reader (pid included); a file only this process has open, and
    an empty key set, give nothing."""
    w, r, mine = tmp_path / "w.log", tmp_path / "r.log", tmp_path / "mine.log"
    for p in (w, r, mine):
        p.write_bytes(b"x\n")
    procs = [subprocess.Popen([sys.executable, "-c", _HOLD, str(p), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE) for p, mode in ((w, "ab"), (r, "rb"))]
    from logpipe._openfiles import open_by_others

    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
        with open(mine, "ab"):
            found = open_by_others({_key(w), _key(r), _key(mine)})
        assert found == {_key(w): (procs[0].pid, True), _key(r): (procs[1].pid, False)}
        assert open_by_others(set()) == {}
    finally:
        for proc in procs:
            proc.communicate(timeout=10)
    assert open_by_others({_key(w), _key(r)}) == {}
    assert os.getpid() not in {pid for pid, _ in found.values()}
