"""The feedback guard: logpipe never ingests what logpipe itself writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logpipe import feedback
from tests._collect_helpers import Collector
from tests.helpers import LOGPIPE, wait_for

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Every test starts without cached /proc scans or marker lookups."""
    feedback.refresh()


def test_cmdline_recognition() -> None:
    """The logpipe console script and ``python -m logpipe`` are recognised; other programs,
    including ones that merely mention logpipe in an argument, are not."""
    assert feedback.is_logpipe_cmdline([b"/usr/bin/python3", b"/venv/bin/logpipe", b"sink", b"console"])
    assert feedback.is_logpipe_cmdline([b"logpipe", b"collect"])
    assert feedback.is_logpipe_cmdline([b"python", b"-m", b"logpipe", b"collect"])
    assert feedback.is_logpipe_cmdline([b"python", b"-mlogpipe"])
    assert not feedback.is_logpipe_cmdline([b"python", b"-m", b"pytest", b"tests/logpipe"])
    assert not feedback.is_logpipe_cmdline([b"grep", b"-r", b"x", b"y", b"logpipe"])
    assert not feedback.is_logpipe_cmdline([b"vim", b"logpipe.py"])


def test_own_stdout_and_stderr_targets(tmp_path: Path) -> None:
    """In a process whose stdout and stderr are redirected to files, those files (by
    dev+inode, also through a hard link) are its own output; an unrelated file is not."""
    out, err, other = tmp_path / "out.log", tmp_path / "err.log", tmp_path / "other.log"
    other.write_text("x\n")
    code = (
        "import os, sys\n"
        "from logpipe import feedback\n"
        "os.link(sys.argv[1], sys.argv[1] + '.hard')\n"
        "res = [feedback.is_own_output(p, os.stat(p)) for p in sys.argv[1:]]\n"
        "res.append(feedback.is_own_output(sys.argv[1] + '.hard', os.stat(sys.argv[1] + '.hard')))\n"
        "open(sys.argv[3] + '.result', 'w').write(repr(res))\n"
    )
    with open(out, "wb") as fo, open(err, "wb") as fe:
        subprocess.run([sys.executable, "-c", code, str(out), str(err), str(other)],
                       stdout=fo, stderr=fe, check=True, timeout=30)
    assert (tmp_path / "other.log.result").read_text() == "[True, True, False, True]"


def test_file_sink_marker_directory(tmp_path: Path) -> None:
    """Any file in a directory holding the file sink's marker is logpipe's own output, also
    when reached through a symlink from another directory."""
    sink_dir = tmp_path / "sink"
    sink_dir.mkdir()
    (sink_dir / feedback.SINK_DIR_MARKER).write_text("")
    log = sink_dir / "api.log"
    log.write_text("{}\n")
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    link = plain_dir / "api.log"
    link.symlink_to(log)
    mine = plain_dir / "mine.log"
    mine.write_text("x\n")
    assert feedback.is_own_output(str(log), log.stat())
    assert feedback.is_own_output(str(link), link.stat())
    assert not feedback.is_own_output(str(mine), mine.stat())


def _wait_own_output(path: Path, message: str) -> None:
    """Wait (rescanning /proc each time) until ``path`` is recognised as logpipe's own output."""

    def seen() -> bool:
        feedback.refresh()
        return feedback.is_own_output(str(path), path.stat())

    wait_for(seen, timeout=20, message=message)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Close the logpipe child's stdin (its input ends) and wait for it to exit."""
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


@needs_proc
def test_other_running_logpipe_process_output(tmp_path: Path) -> None:
    """A file that another running logpipe process's stdout points at is own output while
    that process runs (found through /proc), and no longer once it has exited."""
    target = tmp_path / "x.log"
    with open(target, "ab") as fo:
        proc = subprocess.Popen([*LOGPIPE, "sink", "ndjson"], stdin=subprocess.PIPE, stdout=fo,
                                stderr=subprocess.DEVNULL)
    try:
        _wait_own_output(target, "the sink process's stdout target recognised")
        unrelated = tmp_path / "y.log"
        unrelated.write_text("y\n")
        assert not feedback.is_own_output(str(unrelated), unrelated.stat())
    finally:
        _end(proc)
    feedback.refresh()
    assert not feedback.is_own_output(str(target), target.stat())


@needs_proc
def test_proc_scan_is_cached() -> None:
    """Repeated checks within the TTL reuse one /proc scan (cheap enough for every rescan)."""
    feedback.other_logpipe_keys()
    t0 = time.perf_counter()
    for _ in range(1000):
        feedback.other_logpipe_keys()
    assert time.perf_counter() - t0 < 0.1


def _line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _stable(path: Path, expect: int, settle: float = 2.5) -> bool:
    """True once ``path`` holds ``expect`` lines and its size has not changed for ``settle`` s."""
    deadline = time.monotonic() + 30
    last = -1
    since = time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else -1
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= settle and _line_count(path) == expect:
            return True
        time.sleep(0.1)  # the poll interval of a deadline poll; `settle` is an observation window
    return False


N = 50


@needs_proc
def test_collector_stdout_redirected_into_tailed_dir(tmp_path: Path) -> None:
    """``logpipe collect 'dir/*.log' > dir/all.log``: the N input lines come out once each and
    all.log stops growing (the collector never re-reads its own stdout); lines appended
    later come out once too."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text("".join(f'{{"message": "m{i}"}}\n' for i in range(N)))
    out = logs / "all.log"
    with open(out, "wb") as fo:
        proc = subprocess.Popen([*LOGPIPE, "collect", str(logs / "*.log")], stdout=fo,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert _stable(out, N), f"{_line_count(out)} lines in all.log"
        with open(app, "a") as f:
            f.write("".join(f'{{"message": "late{i}"}}\n' for i in range(N)))
        assert _stable(out, 2 * N), f"{_line_count(out)} lines in all.log"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _line_count(out) == 2 * N


@needs_proc
def test_collect_piped_into_sink_appending_to_tailed_dir(tmp_path: Path) -> None:
    """``logpipe collect 'dir/*.log' | logpipe sink console >> dir/x.log``: another logpipe
    process writes into the tailed directory; N lines in, N lines out, x.log stops growing."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f'{{"message": "m{i}"}}\n' for i in range(N)))
    out = logs / "x.log"
    lp = " ".join(LOGPIPE)
    cmd = f"{lp} collect '{logs}/*.log' | {lp} sink console >> '{out}'"
    proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert _stable(out, N), f"{_line_count(out)} lines in x.log"
    finally:
        os.killpg(proc.pid, 15)
        proc.communicate(timeout=30)
    text = out.read_text()
    assert text.count("\n") == N
    assert all(f"m{i}" in text for i in range(N))


def test_collector_inside_sink_dir_is_skipped(tmp_path: Path) -> None:
    """A glob that covers a file sink's directory never yields its files (with --once)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text('{"message": "a"}\n')
    sub = tmp_path / "logs" / "sinkdir"
    sub.mkdir()
    (sub / feedback.SINK_DIR_MARKER).write_text("")
    (sub / "app.log").write_text('{"message": "from sink"}\n')
    col = Collector(["--once", str(tmp_path / "logs" / "*.log"), str(sub / "*.log")])
    assert col.wait() == 0, col.stderr
    assert [r["message"] for r in col.records] == ["a"]


def test_file_sink_into_the_tailed_directory(tmp_path: Path) -> None:
    """``collect --once 'logs/*.log' --to file:logs``: the file sink marks logs/ as its own,
    so nothing there is collected back: the input file is not doubled, the run ends (exit 0)
    and stderr says why the file was skipped."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text("".join(f'{{"message": "m{i}"}}\n' for i in range(N)))
    before = app.read_bytes()
    proc = subprocess.run([*LOGPIPE, "collect", "--once", str(logs / "*.log"), "--to", f"file:{logs}"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert app.read_bytes() == before
    assert b"feedback guard" in proc.stderr


def test_diagnostics_are_marked_json_and_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """logpipe's own diagnostics are JSON lines marked as logpipe's (service logpipe, the own
    marker) that the normaliser drops; a repeated key is written once per rate-limit window,
    and the next line after the window says how many were suppressed."""
    import io

    import orjson

    from logpipe import diagnostics, record

    monkeypatch.setattr(diagnostics, "RATE_LIMIT_SECONDS", 0.3)
    buf = io.BytesIO()
    diagnostics.set_stream(buf)
    try:
        for i in range(100):
            diagnostics.warning(f"disk trouble {i}", key="disk")
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 0.3, 5, interval=0.05, message="window over")
        diagnostics.warning("disk trouble again", key="disk")
    finally:
        diagnostics.set_stream(None)
    lines = buf.getvalue().splitlines()
    recs = [orjson.loads(x) for x in lines]
    assert [r["message"] for r in recs] == ["disk trouble 0", "disk trouble again"]
    assert recs[1]["suppressed"] == 99 and "suppressed" not in recs[0]
    assert all(r["service"] == "logpipe" and r[record.OWN_MARK_KEY] == record.OWN_MARK_VALUE
               for r in recs)
    norm = record.LineNormaliser({record.SOURCE: "x"})
    assert [norm(x, record.now()) for x in lines] == [None, None]  # never re-ingested


@needs_proc
def test_collector_stderr_into_tailed_dir_is_not_ingested(tmp_path: Path) -> None:
    """``logpipe collect --once 'dir/*.log' 2> dir/err.log``: the collector's diagnostics land
    in err.log (JSON, marked as logpipe's — here the feedback guard's own notice about
    err.log), and stdout holds exactly the N input records, none of them logpipe's own."""
    import orjson

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f'{{"message": "m{i}"}}\n' for i in range(N)))
    err = logs / "err.log"
    with open(err, "wb") as fe:
        proc = subprocess.run([*LOGPIPE, "collect", "--once", str(logs / "*.log")],
                              stdout=subprocess.PIPE, stderr=fe, stdin=subprocess.DEVNULL,
                              timeout=60)
    assert proc.returncode == 0, err.read_text()
    recs = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert [r["message"] for r in recs] == [f"m{i}" for i in range(N)]
    diags = [orjson.loads(x) for x in err.read_bytes().splitlines()]
    assert diags and all(d["service"] == "logpipe" and d["logpipe"] == "diagnostic" for d in diags)
    assert any("feedback guard" in d["message"] and str(err) in d["message"] for d in diags)


@needs_proc
def test_pm2_app_tree_running_logpipe_is_own_output(tmp_path: Path) -> None:
    """A process tree whose environment carries PM2's log paths (as PM2 spawns its apps) and
    that runs logpipe below a shell (``bash -c "logpipe …"``) makes those files own output —
    out and err by inode, a merged ``pm_log_path`` created only later and a pm2-logrotate
    copy by path — while an
    unrelated file is not; once the tree has exited its files stay excluded (a PM2 restart
    or a rotation must not let them in)."""
    out, err, merged = tmp_path / "ship-out.log", tmp_path / "ship-error.log", tmp_path / "ship.log"
    out.write_text("")
    err.write_text("")
    env = dict(os.environ, pm_id="7", name="ship", pm_out_log_path=str(out),
               pm_err_log_path=str(err), pm_log_path=str(merged))
    cmd = " ".join(LOGPIPE) + " sink ndjson; true"
    proc = subprocess.Popen(["bash", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_own_output(out, "the PM2-style tree running logpipe recognised")
        assert feedback.is_own_output(str(err), err.stat())
        merged.write_text("created after the scan\n")
        assert feedback.is_own_output(str(merged), merged.stat())
        copy = tmp_path / "ship-out__2026-12-01_00-00-00.log"  # pm2-logrotate's copy
        copy.write_text("a copy\n")
        assert feedback.is_own_output(str(copy), copy.stat())
        unrelated = tmp_path / "api-out.log"
        unrelated.write_text("y\n")
        assert not feedback.is_own_output(str(unrelated), unrelated.stat())
    finally:
        _end(proc)
    feedback.refresh()
    assert feedback.is_own_output(str(out), out.stat())
    assert feedback.is_own_output(str(err), err.stat())
