"""The README's first command: ``examples/demo.py`` runs the real pipeline (two API instances
and a worker under ``logpipe collect``), fans out to the console and to rotated zstd files,
and reports each file with a record count that is true."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zstandard

from tests.helpers import wait_for

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(120)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
REPORT_LINE = re.compile(r"^  (\S+)\s+(\d+) records$")


def raw_bytes(path: Path) -> bytes:
    """A log file's content, decompressing ``.zst``."""
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    return data


def records_in(path: Path) -> list[dict[str, object]]:
    """The NDJSON records of a log file, decompressing ``.zst``."""
    return [json.loads(line) for line in raw_bytes(path).splitlines()]


def parse_report(stdout: str) -> tuple[list[str], dict[str, int]]:
    """Split the demo's stdout into console lines (before the report) and the report's counts."""
    head, sep, report = stdout.partition("\ndemo: the records are also in ")
    assert sep, stdout[-2000:]
    counts = {}
    for line in report.splitlines():
        m = REPORT_LINE.match(line)
        if m:
            counts[m[1]] = int(m[2])
    return head.splitlines(), counts


def test_demo_fans_out_to_console_and_rotated_files(tmp_path: Path) -> None:
    """Run in an empty directory, the demo writes nothing outside it (not even $HOME's state
    dir) and exits 0 after showing records of api[0], api[1] and
    worker[0] on the console (the worker's exception indented below its line); it leaves
    ./demo-logs/ with api.log, worker.log and at least one rotated .zst file, none holding over
    64 KiB of records; its report names every file with its exact record count, and the files hold
    exactly the records the console showed."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOGPIPE_STATE_DIR", "XDG_STATE_HOME", "NO_COLOR", "FORCE_COLOR")}
    env["HOME"] = str(home)
    res = subprocess.run([sys.executable, str(DEMO), "--interval", "0.001"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    console, counts = parse_report(res.stdout)
    record_lines = [line for line in console if line and not line.startswith(" ")]
    for who in (" api[0] ", " api[1] ", " worker[0] "):
        assert any(who in line for line in record_lines), who
    assert any(line.startswith("    Traceback (most recent call last):") for line in console)

    assert list(home.iterdir()) == []  # nothing written outside the current directory
    assert [p.name for p in work.iterdir()] == ["demo-logs"]
    out = work / "demo-logs"
    files = {p.name: p for p in out.iterdir() if not p.name.startswith(".")}
    assert {"api.log", "worker.log"} <= set(files)
    assert any(name.endswith(".zst") for name in files)
    assert set(counts) == set(files) | {"total"}
    all_records = []
    for name, path in files.items():
        recs = records_in(path)
        assert counts[name] == len(recs), name
        assert len(raw_bytes(path)) <= 64 * 1024  # cut at line boundaries, never over --max-size
        all_records.extend(recs)
    assert counts["total"] == len(all_records) == len(record_lines)
    assert {r["service"] for r in all_records} == {"api", "worker"}
    assert {(r["service"], r["instance_id"]) for r in all_records} == {
        ("api", "0"), ("api", "1"), ("worker", "0")}


def test_demo_closing_hint_reads_every_record_back(tmp_path: Path) -> None:
    """The demo's last line is a ``logpipe logs --dir demo-logs`` command; run as printed, in
    the same directory, it prints every record the report counted (live and rotated files)."""
    res = subprocess.run([sys.executable, str(DEMO), "--count", "60", "--interval", "0.001"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    _, counts = parse_report(res.stdout)
    hint = res.stdout.rstrip().splitlines()[-1]
    assert hint.startswith("Read them back") and hint.endswith(" -m logpipe logs --dir demo-logs")
    cmd = shlex.split(hint.split(":  ", 1)[1])
    shown = subprocess.run([*cmd, "--format", "json"], cwd=tmp_path, capture_output=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert len(shown.stdout.splitlines()) == counts["total"] > 0


def test_ctrl_c_stops_the_demo_and_still_reports(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a long demo
    stops it within seconds; the collector drains and the report still lists the files, with
    counts equal to what they hold."""
    proc = subprocess.Popen([sys.executable, str(DEMO), "--count", "1000000", "--interval", "0.01"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    # read the output while it runs, as a terminal does: an unread pipe would fill and hold the
    # whole pipeline back (back-pressure), and the files would stop growing
    out_parts: list[str] = []
    err_parts: list[str] = []
    readers = [threading.Thread(target=lambda s=stream, parts=parts: parts.append(s.read()), daemon=True)
               for stream, parts in ((proc.stdout, out_parts), (proc.stderr, err_parts))]
    for r in readers:
        r.start()
    try:
        wait_for(lambda: (tmp_path / "demo-logs" / "worker.log").exists()
                 and (tmp_path / "demo-logs" / "worker.log").stat().st_size > 0,
                 message="the demo writing its files")
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for r in readers:
            r.join(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    stdout, stderr = "".join(out_parts), "".join(err_parts)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 0, stderr[-3000:]  # everything read was delivered
    _, counts = parse_report(stdout)
    out = tmp_path / "demo-logs"
    for name, n in counts.items():
        if name != "total":
            assert len(records_in(out / name)) == n
    assert counts["total"] == sum(n for name, n in counts.items() if name != "total") > 0
