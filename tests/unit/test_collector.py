"""``logpipe collect`` end to end: stdin, files with --once and checkpoints, usage errors,
back-pressure from a slow reader, --to sinks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from logpipe.collector import CollectOptions, file_origin, plan
from logpipe.errors import UsageError
from tests._collect_helpers import Collector, python_cmd, rss_kib, run_collect
from tests.helpers import LOGPIPE


def test_stdin_with_service() -> None:
    """``collect - --service NAME``: each stdin line becomes a record with that service and
    source stdin; a JSON line's own service wins over --service."""
    data = b'plain one\n{"message": "j", "service": "own"}\nplain two'
    rc, recs, err = run_collect(["-", "--service", "billing"], input=data)
    assert rc == 0, err
    assert [r["message"] for r in recs] == ["plain one", "j", "plain two"]
    assert [r["service"] for r in recs] == ["billing", "own", "billing"]
    assert {r["source"] for r in recs} == {"stdin"}
    assert {r["host"] for r in recs} == {socket.gethostname()}


def test_nothing_to_collect_is_a_usage_error() -> None:
    """No paths, no --pm2, no --run, no '-': exit 2 with one clear line."""
    rc, recs, err = run_collect([])
    assert rc == 2 and recs == []
    assert err.decode().startswith("logpipe: nothing to collect")


def test_plan_validation(tmp_path: Path) -> None:
    """A directory given as a path and a doubled '-' are usage errors; a missing file is
    accepted (watched, like Vector) with a warning."""
    with pytest.raises(UsageError, match="is a directory"):
        plan(CollectOptions(paths=[str(tmp_path)], state_dir=str(tmp_path / "s")))
    with pytest.raises(UsageError, match="more than once"):
        plan(CollectOptions(paths=["-", "-"]))
    p = plan(CollectOptions(paths=[str(tmp_path / "later.log")], state_dir=str(tmp_path / "s")))
    assert p.patterns == [str(tmp_path / "later.log")]


def test_two_double_stars_are_a_usage_error(tmp_path: Path) -> None:
    """``a/**/b/**/*.log``: exit 2 with one clear ``logpipe:`` line naming the rule, no
    traceback; one ``**`` is accepted."""
    rc, recs, err = run_collect(["--once", f"{tmp_path}/**/b/**/*.log"])
    assert rc == 2 and recs == []
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logpipe: ") and "at most one '**'" in lines[0]
    assert b"Traceback" not in err
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.log").write_text("deep\n")
    rc, recs, err = run_collect(["--once", f"{tmp_path}/**/*.log"])
    assert rc == 0 and [r["message"] for r in recs] == ["deep"], err


def test_unwritable_state_dir_is_a_usage_error(tmp_path: Path) -> None:
    """A state dir that cannot be created is a one-line usage error."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / "a.log").write_text("x\n")
    rc, _, err = run_collect(["--once", "--state-dir", str(blocker / "sub"), str(tmp_path / "a.log")])
    assert rc == 2
    assert err.decode().startswith("logpipe: state dir")


def test_unknown_sink_is_a_usage_error() -> None:
    """``--to nosuch``: exit 2 naming the choices, nothing started."""
    rc, _, err = run_collect(["--once", "--to", "nosuch", "-"], input=b"x\n")
    assert rc == 2
    assert "unknown sink" in err.decode()


def test_file_origin_from_names() -> None:
    """Service and pm_id come from file names: api.log → api; api-out-3.log → api, pm_id 3,
    instance 3; worker-error.log plain lines are errors."""
    d, lvl = file_origin("/x/api.log")
    assert d["service"] == "api" and d["source"] == "/x/api.log" and lvl == "info"
    d, lvl = file_origin("/x/api-out-3.log")
    assert (d["service"], d["pm_id"], d["instance_id"], lvl) == ("api", 3, "3", "info")
    d, lvl = file_origin("/x/worker-error.log")
    assert d["service"] == "worker" and lvl == "error"


def _write_lines(path: Path, start: int, n: int) -> None:
    with open(path, "a") as f:
        for i in range(start, start + n):
            # the file name is in each line: files with identical content would be taken for
            # copies of each other (copytruncate detection), as Vector's checksum would
            f.write(orjson.dumps({"message": f"m{i}", "seq": i, "f": path.name}).decode() + "\n")


def test_once_commits_checkpoints(tmp_path: Path) -> None:
    """``--once`` on files exits 0 after emitting every line once; a second ``--once`` emits
    nothing new; lines appended later come out once on the third run."""
    logs = tmp_path / "logs"
    logs.mkdir()
    _write_lines(logs / "api.log", 0, 100)
    _write_lines(logs / "worker-out-2.log", 0, 10)
    glob = str(logs / "*.log")
    rc, recs, err = run_collect(["--once", glob])
    assert rc == 0, err
    api = [r for r in recs if r["service"] == "api"]
    assert [r["seq"] for r in api] == list(range(100))
    worker = [r for r in recs if r["service"] == "worker"]
    assert len(worker) == 10 and {(r["pm_id"], r["instance_id"]) for r in worker} == {(2, "2")}
    assert {r["source"] for r in api} == {str(logs / "api.log")}
    rc, recs, err = run_collect(["--once", glob])
    assert rc == 0, err
    assert recs == []
    _write_lines(logs / "api.log", 100, 5)
    rc, recs, err = run_collect(["--once", glob])
    assert rc == 0, err
    assert [r["seq"] for r in recs] == list(range(100, 105))


def test_file_traceback_is_joined(tmp_path: Path) -> None:
    """A Python traceback written to a tailed file becomes one record (multiline join)."""
    log = tmp_path / "job.log"
    log.write_text(
        "starting\n"
        "Traceback (most recent call last):\n"
        '  File "job.py", line 3, in <module>\n'
        "    main()\n"
        "KeyError: 'x'\n"
        '{"message": "after"}\n'
    )
    rc, recs, err = run_collect(["--once", str(log)])
    assert rc == 0, err
    assert [r["message"].splitlines()[0] for r in recs] == [
        "starting", "Traceback (most recent call last):", "after"]
    assert recs[1]["message"].endswith("KeyError: 'x'")


def test_stdin_uncaught_exception_is_one_record() -> None:
    """``app 2>&1 | logpipe collect -``: a real interpreter's uncaught exception piped in
    becomes exactly one record (joined, as for files and children); the line before it and
    the JSON line after it stay records of their own."""
    app = subprocess.run(
        [sys.executable, "-c",
         "import json, sys\n"
         "print('starting', flush=True)\n"
         "def f():\n    raise ValueError('boom')\n"
         "try:\n    f()\n"
         "except ValueError:\n    import traceback; traceback.print_exc(file=sys.stdout)\n"
         "print(json.dumps({'message': 'after'}), flush=True)\n"
         "f()\n"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert app.returncode == 1 and app.stdout.count(b"Traceback") == 2
    rc, recs, err = run_collect(["-", "--service", "app"], input=app.stdout)
    assert rc == 0, err
    firsts = [r["message"].splitlines()[0] for r in recs]
    assert firsts == ["starting", "Traceback (most recent call last):", "after",
                      "Traceback (most recent call last):"], recs
    for tb in (recs[1], recs[3]):
        assert tb["message"].endswith("ValueError: boom") and 'line 4, in f' in tb["message"]
    assert {r["service"] for r in recs} == {"app"}


def test_stdin_held_traceback_is_flushed_while_stdin_stays_open() -> None:
    """A traceback piped in and then silence (stdin still open, no EOF): the joiner's idle
    flush (≤ 1 s) delivers it as one record without waiting for more input or EOF."""
    c = Collector(["-", "--service", "w"], stdin=subprocess.PIPE)
    try:
        assert c.proc.stdin is not None
        c.proc.stdin.write(b"Traceback (most recent call last):\n"
                           b'  File "w.py", line 1, in <module>\n'
                           b"KeyError: 'k'\n")
        c.proc.stdin.flush()
        t0 = time.monotonic()
        got = c.wait_records(lambda r: "KeyError" in r["message"], timeout=10)
        waited = time.monotonic() - t0
        assert c.proc.poll() is None  # stdin is still open: this was the idle flush, not EOF
        assert got[0]["message"].splitlines()[0] == "Traceback (most recent call last):"
        print(f"\nidle flush after {waited:.2f} s")
        c.proc.stdin.write(b"next\n")
        c.proc.stdin.close()
        assert c.wait() == 0
    finally:
        c.kill()
    assert [r["message"].splitlines()[0] for r in c.records] == [
        "Traceback (most recent call last):", "next"]


def test_to_file_sink_in_process(tmp_path: Path) -> None:
    """``--to file:DIR`` delivers in-process to the file sink instead of stdout."""
    src = tmp_path / "api.log"
    _write_lines(src, 0, 20)
    out_dir = tmp_path / "out"
    proc = subprocess.run([*LOGPIPE, "collect", "--once", str(src), "--to", f"file:{out_dir}"],
                          capture_output=True, timeout=60)
    if b"unknown sink" in proc.stderr or b"No module named" in proc.stderr:
        pytest.skip("file sink not built yet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    text = (out_dir / "api.log").read_bytes()
    assert [orjson.loads(x)["seq"] for x in text.splitlines()] == list(range(20))


def test_slow_reader_back_pressure_bounds_memory() -> None:
    """A child writing ~50 MB as fast as it can while the collector's stdout is read slowly:
    the collector's RSS stays bounded (readers pause: the pipeline's queues are bounded, the
    child blocks on its pipe) and every line arrives once, in order."""
    n = 250_000
    code = (
        "import sys\n"
        "pad = 'x' * 150\n"
        "w = sys.stdout.write\n"
        f"for i in range({n}): w('{{\"message\": \"%d\", \"pad\": \"%s\"}}\\n' % (i, pad))\n"
    )
    proc = subprocess.Popen([*LOGPIPE, "collect", "--once", "--run", f"flood={python_cmd(code)}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    peak = 0
    got = 0
    expect = 0
    buf = b""
    slow_until = time.monotonic() + 3.0
    try:
        while True:
            chunk = proc.stdout.read1(1 << 16)
            if not chunk:
                break
            buf += chunk
            lines = buf.split(b"\n")
            buf = lines.pop()
            for line in lines:
                rec = orjson.loads(line)
                if rec.get("child_exit"):
                    continue
                assert rec["message"] == str(expect)
                expect += 1
                got += 1
            if time.monotonic() < slow_until:
                time.sleep(0.01)  # a slow reader for the first seconds: ~6 MB/s at most
                with contextlib.suppress(OSError):
                    peak = max(peak, rss_kib(proc.pid))
    finally:
        proc.stdout.close()
        err = proc.stderr.read() if proc.stderr else b""
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0, err
    assert got == n
    # Unbounded buffering of 50 MB of lines as dicts would need several hundred MB.
    print(f"peak RSS {peak} KiB")
    assert 0 < peak < 160 * 1024, f"peak RSS {peak} KiB"
    assert os.cpu_count()


def test_instances_with_identical_banners_are_both_read(tmp_path: Path) -> None:
    """Two PM2 instance files (different inodes, both live) that start with the same 2 KiB
    banner are two files: the lines after the banner arrive from both."""
    head = b"".join(b'{"message": "starting worker, loading config section %d"}\n' % i for i in range(40))
    (tmp_path / "w-out-1.log").write_bytes(head + b'{"message": "only in 1"}\n')
    (tmp_path / "w-out-2.log").write_bytes(head + b'{"message": "only in 2"}\n')
    rc, recs, err = run_collect(["--once", str(tmp_path / "*.log")])
    assert rc == 0, err
    assert sorted(r["message"] for r in recs if r["message"].startswith("only")) == ["only in 1", "only in 2"]
    assert len(recs) == 82


def test_pm2_jlist_never_runs_without_a_live_daemon(tmp_path: Path) -> None:
    """``--pm2`` with a PM2 home whose daemon is gone (stale rpc.sock, dead pid): ``pm2
    jlist`` is not run (it would start a daemon); files are still collected with the pm_id
    from the file name and no instance_id (a pm_id is not an instance number), and one
    warning says so."""
    home = tmp_path / "pm2"
    (home / "logs").mkdir(parents=True)
    (home / "rpc.sock").write_text("")
    (home / "pm2.pid").write_text("999999999")
    (home / "logs" / "api-out-4.log").write_text('{"message": "x"}\n')
    called = tmp_path / "pm2-was-called"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pm2"
    fake.write_text(f"#!/bin/sh\ntouch {called}\necho '[]'\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    rc, recs, err = run_collect(["--once", "--pm2", str(home)], env=env)
    assert rc == 0, err
    assert [(r["service"], r["pm_id"], r.get("instance_id")) for r in recs] == [("api", 4, None)]
    assert not called.exists()
    warned = [ln for ln in err.decode().splitlines() if "api-out-4.log: its plain lines" in ln]
    assert len(warned) == 1 and "no instance_id" in warned[0], err


def test_help_states_copytruncate_loss_and_pm2_formats() -> None:
    """``logpipe collect --help`` tells the operator where copytruncate can lose lines and what
    to do (a glob matching the copies, or rename rotation), and that PM2's date prefixes and
    JSON chunk records are unwrapped."""
    out = subprocess.run([*LOGPIPE, "collect", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "copytruncate" in text and "'app.log*'" in text and "rename" in text
    assert "log_date_format" in text and "log_type json" in text
    assert "'**'" in text and "8 directory levels" in text
