"""``--run`` children: environment, instances, restart backoff, --once, SIGTERM drain, tracebacks."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from logpipe.errors import UsageError
from logpipe.pipeline import Batch
from logpipe.sources.children import ChildrenSource, command_argv, parse_runs
from tests._collect_helpers import Collector, pid_alive, python_cmd, run_collect
from tests.helpers import wait_for

PRINT_ENV = (
    "import os, json\n"
    "print(json.dumps({'message': 'env', 'svc': os.environ['LOGPIPE_SERVICE'],"
    " 'inst': os.environ['LOGPIPE_INSTANCE_ID'], 'mypid': os.getpid()}))\n"
)


def test_env_vars_and_instances() -> None:
    """Each child gets LOGPIPE_SERVICE=NAME and LOGPIPE_INSTANCE_ID (0, 1 for a repeated NAME);
    its records carry source run:<name>, service, instance_id, host and the child's pid."""
    rc, recs, err = run_collect(["--once", "--run", f"api={python_cmd(PRINT_ENV)}",
                                 "--run", f"api={python_cmd(PRINT_ENV)}",
                                 "--run", f"worker={python_cmd(PRINT_ENV)}"])
    assert rc == 0, err
    envs = [r for r in recs if r.get("message") == "env"]
    assert sorted((r["svc"], r["inst"]) for r in envs) == [("api", "0"), ("api", "1"), ("worker", "0")]
    for r in envs:
        assert r["service"] == r["svc"]
        assert r["instance_id"] == r["inst"]
        assert r["source"] == f"run:{r['svc']}"
        assert r["pid"] == r["mypid"]
        assert r["host"]
        assert r["level"] == "info"


def test_once_runs_children_to_exit_without_restart() -> None:
    """--once: the child runs to its exit, every line arrives in order, exactly one exit
    record follows (exit code 0, no restart), and the collector exits 0."""
    code = "for i in range(300): print(f'line {i}')\n"
    t0 = time.monotonic()
    rc, recs, err = run_collect(["--once", "--run", f"count={python_cmd(code)}"])
    assert rc == 0, err
    lines = [r["message"] for r in recs if not r.get("child_exit")]
    assert lines == [f"line {i}" for i in range(300)]
    exits = [r for r in recs if r.get("child_exit")]
    assert len(exits) == 1 and exits[0]["exit_code"] == 0 and "restart_in" not in exits[0]
    assert recs[-1] is exits[0] or recs[-1] == exits[0]
    assert time.monotonic() - t0 < 20


def test_stderr_plain_lines_are_errors_and_traceback_is_one_record() -> None:
    """A plain stderr line is level error; an uncaught exception on stderr becomes exactly one
    record holding the whole traceback; stdout JSON lines keep their own fields."""
    code = (
        "import sys, json\n"
        "print(json.dumps({'message': 'hello', 'level': 'info', 'k': 1}), flush=True)\n"
        "print('plain warning text', file=sys.stderr, flush=True)\n"
        "def inner():\n    raise RuntimeError('kaboom')\n"
        "def outer():\n    inner()\n"
        "outer()\n"
    )
    rc, recs, err = run_collect(["--once", "--run", f"crash={python_cmd(code)}"])
    assert rc == 0, err
    hello = [r for r in recs if r.get("message") == "hello"]
    assert len(hello) == 1 and hello[0]["k"] == 1 and hello[0]["level"] == "info"
    plain = [r for r in recs if r.get("message") == "plain warning text"]
    assert len(plain) == 1 and plain[0]["level"] == "error"
    tbs = [r for r in recs if "Traceback" in r.get("message", "") or "kaboom" in r.get("message", "")]
    assert len(tbs) == 1, tbs
    msg = tbs[0]["message"]
    assert msg.startswith("Traceback (most recent call last):")
    assert "in outer" in msg and "in inner" in msg and msg.endswith("RuntimeError: kaboom")
    assert tbs[0]["level"] == "error"
    exits = [r for r in recs if r.get("child_exit")]
    assert len(exits) == 1 and exits[0]["exit_code"] == 1 and exits[0]["level"] == "error"


def test_restart_with_exponential_backoff() -> None:
    """A child that keeps exiting is reported each time (exit record, level error, exit code)
    and restarted after 1 s, then 2 s (doubling backoff)."""
    code = "import time; print('start', time.time(), flush=True); raise SystemExit(3)\n"
    col = Collector(["--run", f"flaky={python_cmd(code)}"])
    try:
        starts = col.wait_records(lambda r: str(r.get("message", "")).startswith("start"), n=3,
                                  timeout=30)
        exits = col.wait_records(lambda r: r.get("child_exit"), n=2)
    finally:
        rc = col.terminate()
    assert rc == 0, col.stderr
    t = [float(r["message"].split()[1]) for r in starts[:3]]
    gap1, gap2 = t[1] - t[0], t[2] - t[1]
    assert 0.9 <= gap1 < 2.5, (gap1, gap2)
    assert gap2 >= 1.9 and gap2 > gap1, (gap1, gap2)
    assert exits[0]["exit_code"] == 3 and exits[0]["level"] == "error"
    assert exits[0]["restart_in"] == 1 and exits[1]["restart_in"] == 2
    assert len({r["pid"] for r in starts[:3]}) == 3


def test_sigterm_drains_last_lines_and_leaves_no_orphan(tmp_path: Path) -> None:
    """SIGTERM to the collector: each child's process group gets SIGTERM, the lines a child
    writes while shutting down still arrive, the collector exits 0, and neither the child nor
    a grandchild it started is left running."""
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import signal, subprocess, sys, time\n"
        f"g = subprocess.Popen(['sleep', '300'])\n"  # a grandchild that lives on unless killed
        f"open({str(pidfile)!r}, 'w').write(str(g.pid))\n"
        "def bye(*a):\n"
        "    for i in range(50): print(f'last words {i}', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)  # the scenario: stay alive until signalled\n"
    )
    col = Collector(["--run", f"svc={python_cmd(code)}"])
    try:
        ready = col.wait_records(lambda r: r.get("message") == "ready")[0]
        child = ready["pid"]
        grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text()))
        assert pid_alive(child) and pid_alive(grandchild)
    finally:
        rc = col.terminate()
    assert rc == 0, col.stderr
    msgs = [r.get("message") for r in col.records]
    assert [m for m in msgs if str(m).startswith("last words")] == [f"last words {i}" for i in range(50)]
    exits = [r for r in col.records if r.get("child_exit")]
    assert len(exits) == 1 and "stopped by logpipe" in exits[0]["message"]
    wait_for(lambda: not pid_alive(child) and not pid_alive(grandchild), timeout=5,
             message="child and grandchild gone")


def test_stop_escalates_to_sigkill_for_a_child_ignoring_sigterm() -> None:
    """A child that ignores SIGTERM is killed with SIGKILL after stop_timeout; run() returns
    and the exit record names SIGKILL."""
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n" \
           "while True: time.sleep(1)  # the scenario: stay alive until signalled\n"
    spec = parse_runs([f"stubborn={python_cmd(code)}"])
    src = ChildrenSource(spec, stop_timeout=0.5)
    got: list[dict[str, object]] = []

    async def main() -> float:
        async def emit(batch: Batch) -> None:
            got.extend(batch.records)
            if any(r.get("message") == "up" for r in batch.records):
                src.stop()

        t0 = time.monotonic()
        await asyncio.wait_for(src.run(emit), 20)
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    exits = [r for r in got if r.get("child_exit")]
    assert len(exits) == 1 and exits[0]["signal"] == "SIGKILL"
    assert not pid_alive(int(exits[0]["pid"]))  # type: ignore[arg-type]
    assert elapsed < 10


def test_command_splitting_rules() -> None:
    """Plain commands are exec'd directly (shlex split, quotes honoured); shell syntax outside
    quotes runs under /bin/sh -c; bad quoting is a UsageError."""
    assert command_argv("python -c 'print(1 | 2)'") == ["python", "-c", "print(1 | 2)"]
    assert command_argv("a | b") == ["/bin/sh", "-c", "a | b"]
    assert command_argv("echo $HOME") == ["/bin/sh", "-c", "echo $HOME"]
    assert command_argv('echo "$HOME"') == ["/bin/sh", "-c", 'echo "$HOME"']
    assert command_argv("FOO=1 prog") == ["/bin/sh", "-c", "FOO=1 prog"]
    assert command_argv("prog --opt=1") == ["prog", "--opt=1"]
    with pytest.raises(UsageError):
        command_argv("echo 'unbalanced")


def test_shell_command_runs_under_sh() -> None:
    """A command with a pipe runs through /bin/sh and its output is collected."""
    rc, recs, err = run_collect(["--once", "--run", "sh1=printf 'a\\nb\\n' | tr a-z A-Z"])
    assert rc == 0, err
    assert [r["message"] for r in recs if not r.get("child_exit")] == ["A", "B"]


@pytest.mark.parametrize(("arg", "needle"), [
    ("noequals", "NAME=COMMAND"),
    ("=cmd", "NAME=COMMAND"),
    ("name=", "NAME=COMMAND"),
    ("bad name=true", "NAME may hold"),
    ("x=/nonexistent/prog", "command not found"),
    ("x=no-such-command-xyz", "command not found"),
])
def test_bad_run_arguments_are_one_line_errors(arg: str, needle: str) -> None:
    """Bad --run syntax or an unknown command: exit 2 and one ``logpipe: …`` line, no traceback."""
    rc, recs, err = run_collect(["--once", "--run", arg])
    assert rc == 2
    assert recs == []
    text = err.decode()
    assert text.startswith("logpipe: ") and needle in text
    assert "Traceback" not in text and text.count("\n") == 1


def test_child_keeps_python_unbuffered_default() -> None:
    """PYTHONUNBUFFERED=1 is set for children (unless the user set it), so a Python child's
    print() to the pipe is not held in a block buffer."""
    code = "import os; print(os.environ.get('PYTHONUNBUFFERED'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    rc, recs, _ = run_collect(["--once", "--run", f"u={python_cmd(code)}"], env=env)
    assert rc == 0
    assert [r["message"] for r in recs if not r.get("child_exit")] == ["1"]
    assert sys.executable


def test_reader_going_away_stops_children_and_exits() -> None:
    """``collect --run y=yes | head -1``: when stdout's reader goes away the collector says so
    in one line, exits non-zero promptly, and stops the child instead of hanging on it."""
    import subprocess

    from tests.helpers import LOGPIPE

    proc = subprocess.Popen([*LOGPIPE, "collect", "--run", "y=yes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert b'"message":"y"' in first
    pid = int(__import__("json").loads(first)["pid"])
    proc.stdout.close()
    try:
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert rc != 0
    assert "logpipe: " in err and "broken pipe" in err and "Traceback" not in err
    wait_for(lambda: not pid_alive(pid), timeout=5, message="child stopped")


def test_child_killed_from_outside_is_reported_and_restarted() -> None:
    """``kill -9`` of a child by someone else: an error record names SIGKILL, and the child
    is started again (a new pid) after the first backoff step."""
    import signal as sig

    code = "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)  # stay alive until killed\n"
    col = Collector(["--run", f"victim={python_cmd(code)}"])
    try:
        first = col.wait_records(lambda r: r.get("message") == "up")[0]
        os.kill(first["pid"], sig.SIGKILL)
        exit_rec = col.wait_records(lambda r: r.get("child_exit"))[0]
        ups = col.wait_records(lambda r: r.get("message") == "up", n=2)
    finally:
        rc = col.terminate()
    assert rc == 0, col.stderr
    assert exit_rec["signal"] == "SIGKILL" and exit_rec["level"] == "error"
    assert exit_rec["pid"] == first["pid"] and exit_rec["restart_in"] == 1
    assert ups[1]["pid"] != first["pid"]
    assert not pid_alive(ups[1]["pid"])


def test_logpipe_logger_in_child_binds_name_and_instance() -> None:
    """Children using logpipe's own logger pick service and instance_id up from the
    environment the collector sets; their JSON lines pass the fast path: their own keys and
    values come through unchanged, only ``source`` is spliced onto their bytes."""
    import json
    import subprocess

    from tests.helpers import LOGPIPE

    code = "from logpipe import logger\nlogger.info('hi', k=1)\n"
    proc = subprocess.run([*LOGPIPE, "collect", "--once", "--run", f"api={python_cmd(code)}",
                           "--run", f"api={python_cmd(code)}"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if b'"message":"hi"' in x]
    recs = [json.loads(x) for x in lines]
    assert sorted(r["instance_id"] for r in recs) == ["0", "1"]
    for line, rec in zip(lines, recs, strict=True):
        assert (rec["service"], rec["message"], rec["k"], rec["source"]) == ("api", "hi", 1, "run:api")
        assert line.endswith(b',"source":"run:api"}')


def test_over_long_lines_are_truncated_and_flagged() -> None:
    """Lines over --max-line-bytes are cut, marked and flagged ``truncated: true`` — also a
    last line without a newline — and the lines around them arrive intact."""
    code = (
        "import sys\n"
        "w = sys.stdout.write\n"
        "w('before\\n' + 'x' * 5000 + '\\nafter\\n' + 'y' * 3000)\n"
    )
    rc, recs, err = run_collect(["--once", "--max-line-bytes", "1K", "--run", f"long={python_cmd(code)}"])
    assert rc == 0, err
    lines = [r for r in recs if not r.get("child_exit")]
    assert [r["message"][:6] for r in lines] == ["before", "x" * 6, "after", "y" * 6]
    assert [bool(r.get("truncated")) for r in lines] == [False, True, False, True]
    assert all(len(r["message"]) < 1100 for r in lines)
