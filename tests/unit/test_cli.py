"""The ``logpipe`` command as a new user meets it: real processes, every kind of user mistake.

Each mistake must give ONE clear line (``logpipe: …``, or click's usage error with its single
``Error:`` line), a non-zero exit and never a Python traceback; Ctrl-C, an early-closing reader
(``| head -1``), empty, binary and huge input are handled without losing what was read; the
Splunk token never appears in any output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from logpipe import __version__
from tests.helpers import LOGPIPE, wait_for

#: a hang must fail fast, not eat the suite's budget
pytestmark = pytest.mark.timeout(60)

TOKEN = "11111111-2222-3333-4444-SECRETTOKEN0"


def run(args: list[str], cwd: Path, stdin: bytes = b"", env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """``logpipe ARGS`` as a real process in ``cwd``; stdout and stderr captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*LOGPIPE, *args], cwd=cwd, input=stdin, capture_output=True,
                          env=full_env, timeout=timeout, check=False)


def is_diagnostic(line: str) -> bool:
    """A JSON line marked as logpipe's own diagnostic (the summary, warnings)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("logpipe") == "diagnostic"


def assert_clean(proc: subprocess.CompletedProcess[bytes]) -> str:
    """No traceback anywhere; returns stderr as text."""
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert "Traceback" not in proc.stdout.decode("utf-8", "replace")
    return err


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], code: int, fragment: str) -> None:
    """Exit ``code``; exactly one human error line containing ``fragment`` (``logpipe: …`` or
    click's ``Error: …``); anything else on stderr is click's usage header or a JSON diagnostic;
    nothing on stdout."""
    err = assert_clean(proc)
    assert proc.returncode == code, (proc.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("logpipe: ", "Error: "))]
    assert len(errors) == 1, err
    assert fragment in errors[0], err
    others = [ln for ln in lines if ln not in errors]
    for ln in others:
        assert ln.startswith(("Usage: ", "Try ", "\t")) or is_diagnostic(ln), err
    assert proc.stdout == b""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory with a log file, a sub-directory and token files, as a user would have."""
    (tmp_path / "app.log").write_text("hello\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "empty.tok").write_text("")
    (tmp_path / "good.tok").write_text(TOKEN + "\n")
    (tmp_path / "blocker").write_text("a file where a directory is expected\n")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


# (args, exit code, fragment of the one error line)
MISTAKES: list[tuple[list[str], int, str]] = [
    (["collect", "--bogus"], 2, "No such option '--bogus'"),
    (["--bogus"], 2, "No such option"),
    (["nonsense-command"], 2, "No such command"),
    (["collect"], 2, "nothing to collect"),
    (["collect", "--once", "adir"], 2, "adir is a directory"),
    (["collect", "--once", "app.log", "--to", "file:out", "--max-size", "10X"], 2, "not a size"),
    (["collect", "--once", "--run", "api"], 2, "expected NAME=COMMAND"),
    (["collect", "--once", "--run", "api="], 2, "expected NAME=COMMAND"),
    (["collect", "--once", "--run", "api=no-such-command-xyz"], 2, "command not found"),
    (["collect", "--once", "app.log", "--to", "nonsense"], 2, "unknown sink 'nonsense'"),
    (["collect", "--once", "app.log", "--to", "file"], 2, "needs a directory"),
    (["collect", "--once", "app.log", "--to", "console:x"], 2, "takes no ':' argument"),
    (["collect", "--once", "-", "-"], 2, "given more than once"),
    (["collect", "--once", "app.log", "--state-dir", "blocker/state"], 2, "state dir"),
    (["collect", "--once", "app.log", "--max-line-bytes", "0"], 2, "greater than zero"),
    (["sink"], 2, "name at least one sink: console, file, splunk or ndjson"),
    (["sink", "nonsense"], 2, "'nonsense' is not one of"),
    (["sink", "file"], 2, "needs a directory"),
    (["sink", "file", "--dir", "blocker"], 2, "is a file"),
    (["sink", "console", "--format", "xml"], 2, "'xml' is not one of"),
    (["sink", "splunk"], 2, "no HEC URL"),
    (["sink", "splunk", "--url", "http://127.0.0.1:1"], 2, "no HEC token"),
    (["sink", "splunk", "--url", "http://127.0.0.1:1", "--token-file", "missing.tok"], 2,
     "cannot read --token-file missing.tok"),
    (["sink", "splunk", "--url", "http://127.0.0.1:1", "--token-file", "empty.tok"], 2, "is empty"),
    (["sink", "splunk", "--url", "ftp://127.0.0.1:1", "--token-file", "good.tok"], 2,
     "is not an http(s) URL"),
    (["sink", "splunk", "--url", "https://127.0.0.1:1", "--token-file", "good.tok",
      "--ca-file", "app.log"], 2, "--ca-file app.log"),
    (["rotate"], 2, "Missing argument"),
    (["rotate", "adir/*.log"], 2, "no file matches"),
    (["rotate", "missing.log"], 2, "no such file"),
    (["rotate", "adir"], 2, "is a directory"),
    (["rotate", "app.log", "--max-size", "10X"], 2, "not a size"),
    (["rotate", "app.log", "--retain", "-1"], 2, "not in the range"),
    # found by trying logpipe as a new user (each failed before its fix):
    # a sink named twice delivered every record twice
    (["sink", "console", "console"], 2, "sink 'console' named twice"),
    (["collect", "--once", "app.log", "--to", "console", "--to", "console"], 2, "named twice"),
    (["collect", "--once", "app.log", "--to", "file:out", "--to", "file", "--dir", "out"], 2,
     "named twice"),
    # --pm2 takes an optional PM2_HOME: a path after it was swallowed as the home, silently
    (["collect", "--once", "--pm2", "app.log"], 2, "PM2_HOME must be a directory"),
    (["collect", "--once", "--pm2", "-"], 2, "PM2_HOME must be a directory"),
    (["collect", "--once", "--pm2", "adir/*.log"], 2, "logpipe collect 'adir/*.log' --pm2"),
    # the tailer reads regular files only: these collected nothing, silently
    (["collect", "--once", "/dev/stdin"], 2, "/dev/stdin is not a regular file"),
    (["collect", "--once", "fifo"], 2, "for a pipe or stdin write '-': cmd | logpipe collect -"),
    # an option of a sink that is not used was silently ignored
    (["sink", "console", "--dir", "out"], 2, "--dir is a file sink option, but no file sink"),
    (["sink", "file", "--dir", "out", "--format", "json"], 2, "--format is a console sink option"),
    (["sink", "console", "--url", "http://127.0.0.1:1"], 2, "--url is a splunk sink option"),
    (["collect", "--once", "app.log", "--max-size", "10M"], 2, "(add --to file:DIR)"),
    (["collect", "--once", "app.log", "--to", "console", "--retain", "3"], 2,
     "--retain is a file sink option"),
    (["collect", "--once", "app.log", "--to", "file:out", "--dir", "other"], 2,
     "--dir is not used: each --to file:DIR names its own directory"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), MISTAKES,
                         ids=[" ".join(a) for a, _, _ in MISTAKES])
def test_user_mistake_is_one_clear_line(work: Path, args: list[str], code: int,
                                        fragment: str) -> None:
    """Each user mistake exits non-zero with one clear error line naming the problem, no
    traceback, no records on stdout, and leaves the input file untouched."""
    proc = run(args, cwd=work, env={"LOGPIPE_SPLUNK_TOKEN": ""})
    assert_one_line_error(proc, code, fragment)
    assert (work / "app.log").read_text() == "hello\n"
    assert not (work / "out").exists() or not any((work / "out").iterdir())


def test_two_file_sinks_in_different_dirs_are_fine(work: Path) -> None:
    """The duplicate-sink check refuses only the same sink twice: two file sinks writing to
    different directories both get every record."""
    proc = run(["collect", "--once", "app.log", "--to", "file:a", "--to", "file:b"], cwd=work)
    assert_clean(proc)
    assert proc.returncode == 0
    for d in ("a", "b"):
        assert [json.loads(x)["message"] for x in (work / d / "app.log").read_text().splitlines()] \
            == ["hello"]


def test_sink_options_from_the_environment_stay_defaults(work: Path) -> None:
    """A ``LOGPIPE_*`` variable for a sink that is not used is not an error (it is a default for
    whichever command names that sink), and ``--dir`` serves a bare ``--to file``."""
    proc = run(["collect", "--once", "app.log", "--to", "console", "--to", "file", "--dir", "out"],
               cwd=work, env={"LOGPIPE_SPLUNK_URL": "http://127.0.0.1:1", "LOGPIPE_FILE_RETAIN": "2"})
    assert_clean(proc)
    assert proc.returncode == 0
    assert b"hello" in proc.stdout
    assert (work / "out" / "app.log").exists()


def test_pm2_home_directory_is_still_accepted(work: Path) -> None:
    """``--pm2 DIR`` with a real directory keeps working: its logs/ files are collected."""
    logs = work / "pm2home" / "logs"
    logs.mkdir(parents=True)
    (logs / "api-out.log").write_text('{"message": "from pm2"}\n')
    proc = run(["collect", "--once", "--pm2", str(work / "pm2home")], cwd=work)
    assert_clean(proc)
    assert proc.returncode == 0
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(r["message"], r["service"]) for r in recs] == [("from pm2", "api")]


def test_version_and_python_m(work: Path) -> None:
    """``--version``/``-V`` print the package version; ``python -m logpipe`` is the same CLI."""
    for flag in ("--version", "-V"):
        proc = run([flag], cwd=work)
        assert proc.returncode == 0
        assert proc.stdout.decode().strip() == f"logpipe, version {__version__}"
    proc = subprocess.run([sys.executable, "-m", "logpipe", "--help"], capture_output=True,
                          check=False, timeout=30)
    assert proc.returncode == 0
    assert b"collect" in proc.stdout and b"rotate" in proc.stdout


def test_every_sink_option_names_its_environment_variable(work: Path) -> None:
    """README: every sink option can come from the environment, see ``logpipe sink --help``:
    each option with a variable names it there, and setting it really takes effect."""
    from logpipe.cli import sink as sink_cmd

    proc = run(["sink", "--help"], cwd=work, env={"COLUMNS": "300"})
    help_text = " ".join(proc.stdout.decode().split())
    envvars = [p.envvar for p in sink_cmd.params if isinstance(p.envvar, str)]
    assert len(envvars) >= 20
    for var in envvars:
        assert f"[env {var}]" in help_text or f"${var}" in help_text, var
    # a variable the help names is really read (here a bad value is reported against its option)
    bad = run(["sink", "file", "--dir", "out"], cwd=work, env={"LOGPIPE_FILE_RETAIN": "abc"})
    assert_one_line_error(bad, 2, "'--retain'")
    nocomp = run(["sink", "file", "--dir", "out", "--max-size", "1"], cwd=work,
                 stdin=b"a\nb\n", env={"LOGPIPE_FILE_NO_COMPRESS": "1"})
    assert nocomp.returncode == 0, nocomp.stderr
    assert not list((work / "out").glob("*.zst"))


def test_empty_stdin(work: Path) -> None:
    """Empty input is not an error: ``sink`` and ``collect -`` exit 0 and write nothing."""
    for args in (["sink", "console"], ["sink", "ndjson"], ["collect", "-", "--once"]):
        proc = run(args, cwd=work)
        assert_clean(proc)
        assert proc.returncode == 0
        assert proc.stdout == b""


def test_binary_garbage_on_stdin_becomes_records(work: Path) -> None:
    """Random bytes (NULs, invalid UTF-8, escape codes) are never fatal: one valid JSON record
    per input line, in order, invalid UTF-8 replaced."""
    no_newline = bytes(b for b in range(256) if b != 0x0A)
    # the random line starts with "x": an indented line is a continuation and joins the record
    # before it (multiline, as documented), which would make the count depend on chance
    garbage = no_newline * 4 + b"\n\xff\xfe\x00\x1b[2J\nx" + os.urandom(5000).replace(b"\n", b"")
    n_lines = garbage.count(b"\n") + 1  # the last, unterminated line is delivered too
    for args in (["sink", "ndjson"], ["collect", "-", "--once"]):
        proc = run(args, cwd=work, stdin=garbage)
        assert_clean(proc)
        assert proc.returncode == 0
        recs = [json.loads(x) for x in proc.stdout.splitlines()]
        assert len(recs) == n_lines
        assert recs[1]["message"] == "\ufffd\ufffd\x00\x1b[2J"


def test_huge_line_on_stdin_is_truncated_and_flagged(work: Path) -> None:
    """A 3 MB line is cut to --max-line-bytes (1 MiB) and flagged, and the next line still
    arrives whole."""
    data = b"x" * 3_000_000 + b"\nafter\n"
    proc = run(["collect", "-", "--once"], cwd=work, stdin=data)
    assert_clean(proc)
    assert proc.returncode == 0
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r.get("truncated") for r in recs] == [True, None]
    assert 1_000_000 <= len(recs[0]["message"]) <= (1 << 20) + 64  # the limit plus a marker
    assert recs[1]["message"] == "after"


def _start(args: list[str], cwd: Path, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*LOGPIPE, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def test_ctrl_c_collect_tailing_a_file(work: Path) -> None:
    """Ctrl-C (SIGINT to the process group) while ``collect`` tails a file: exit 0 with every
    line of the file delivered, and no traceback."""
    out = work / "out.ndjson"
    with out.open("wb") as fh:
        proc = subprocess.Popen([*LOGPIPE, "collect", "app.log"], cwd=work, stdout=fh,
                                stderr=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: out.stat().st_size > 0, message="the line collected")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
    assert proc.returncode == 0
    assert [json.loads(x)["message"] for x in out.read_bytes().splitlines()] == ["hello"]


def test_ctrl_c_collect_running_children(work: Path) -> None:
    """Ctrl-C to the terminal's process group while ``collect --run`` runs a Python child: the
    child is stopped by logpipe (no KeyboardInterrupt traceback from it), exit 0."""
    child = work / "child.py"
    child.write_text("import time\nwhile True:\n    print('tick', flush=True)\n"
                     "    time.sleep(0.05)  # pacing\n")
    out = work / "out.ndjson"
    with out.open("wb") as fh:
        proc = subprocess.Popen([*LOGPIPE, "collect", "--run", f"c={sys.executable} {child}"],
                                cwd=work, stdout=fh, stderr=subprocess.PIPE,
                                start_new_session=True)
    wait_for(lambda: out.read_bytes().count(b"tick") >= 3, message="the child's ticks")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err
    assert proc.returncode == 0
    text = out.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    recs = [json.loads(x) for x in text.splitlines()]
    assert recs[-1].get("child_exit") is True


def test_ctrl_c_sink_with_open_stdin(work: Path) -> None:
    """Ctrl-C while ``sink console`` waits on an open pipe: what was read is printed, exit 0."""
    proc = subprocess.Popen([*LOGPIPE, "sink", "console"], cwd=work, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b'{"message": "before ctrl-c", "service": "api"}\n')
    proc.stdin.flush()
    first = proc.stdout.readline()
    assert b"before ctrl-c" in first
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
    assert proc.returncode == 0
    assert rest == b""


@pytest.mark.parametrize("args", [["collect", "--once", "many.log"],
                                  ["collect", "--once", "many.log", "--to", "console"],
                                  ["sink", "console"], ["sink", "ndjson"]],
                         ids=lambda a: " ".join(a))
def test_reader_that_goes_away_like_head_1(work: Path, args: list[str]) -> None:
    """``logpipe … | head -1``: once the reader closes the pipe, logpipe stops with exit 1 and
    one ``logpipe: … broken pipe`` line, never a traceback."""
    lines = b"".join(b"line %d\n" % i for i in range(20000))
    (work / "many.log").write_bytes(lines)
    with subprocess.Popen([*LOGPIPE, *args], cwd=work, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        if args[0] == "sink":
            proc.stdin.write(lines)
        proc.stdin.close()
        assert b"line 0" in proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does after its line
        proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    assert "Traceback" not in err
    assert proc.returncode == 1
    human = [ln for ln in err.splitlines() if not is_diagnostic(ln)]
    assert len(human) == 1 and human[0].startswith("logpipe: ") and "broken pipe" in human[0], err


def test_rotate_dry_run_into_head_1(work: Path) -> None:
    """``logpipe rotate --dry-run | head -1`` over many files: no traceback, first plan line."""
    logs = work / "logs"
    logs.mkdir()
    names = sorted(f"f{i}.log" for i in range(800))  # a plan larger than the pipe's buffer
    for name in names:
        (logs / name).write_text("x\n")
    with subprocess.Popen([*LOGPIPE, "rotate", "logs/*.log", "--dry-run"], cwd=work,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert first.startswith(b"would rotate ")
        assert b"(forced: no --max-size or --daily) by rename" in first  # was "(forced (…))"
        proc.stdout.close()
        proc.wait(timeout=30)
        assert b"Traceback" not in proc.stderr.read()
    assert sorted(p.name for p in logs.iterdir()) == names


def _no_dac() -> list[str]:
    """A command prefix under which file permissions apply (root bypasses them): as root,
    drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH with setpriv; skip where that is not possible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"] if setpriv else []
    if not prefix or subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode:
        pytest.skip("running as root without a way to drop CAP_DAC_OVERRIDE")
    return [str(x) for x in prefix]


def test_unreadable_file_and_unwritable_dirs(work: Path) -> None:
    """Permissions a user gets wrong: an unreadable log is one warning while the readable one is
    still collected (exit 0); an unwritable state dir, file-sink dir or rotate dir is one line."""
    prefix = _no_dac()
    (work / "secret.log").write_text("hidden\n")
    (work / "secret.log").chmod(0)
    ro = work / "ro"
    ro.mkdir()
    (ro / "a.log").write_text("x\n")
    (ro / "a.log").chmod(0o666)
    ro.chmod(0o555)
    try:
        def go(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([*prefix, *LOGPIPE, *args], cwd=work, input=stdin,
                                  capture_output=True, timeout=30, check=False)

        proc = go(["collect", "--once", "secret.log", "app.log"])
        err = assert_clean(proc)
        assert proc.returncode == 0
        assert [json.loads(x)["message"] for x in proc.stdout.splitlines()] == ["hello"]
        assert "secret.log: Permission denied" in err
        assert_one_line_error(go(["collect", "--once", "app.log", "--state-dir", "ro/state"]), 2,
                              "state dir")
        assert_one_line_error(go(["sink", "file", "--dir", "ro"], b"x\n"), 1,
                              "cannot write in")
        assert_one_line_error(go(["rotate", "ro/a.log"]), 1, "Permission denied")
        assert (ro / "a.log").read_text() == "x\n"
        # nothing lost: the line a failed file sink could not take is delivered by the next run
        (work / "later.log").write_text("kept\n")
        assert_one_line_error(go(["collect", "--once", "later.log", "--to", "file:ro"]), 1,
                              "cannot write in")
        fixed = go(["collect", "--once", "later.log", "--to", "file:good"])
        assert fixed.returncode == 0, fixed.stderr
        assert [json.loads(x)["message"] for x in (work / "good" / "later.log").read_text()
                .splitlines()] == ["kept"]
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(("url", "shown"), [
    ("ftp://127.0.0.1:1", "--url 'ftp://127.0.0.1:1' is not an http(s) URL"),
    ("https://user:SECRETTOKEN@hec:99999/x?token=SECRETTOKEN", "--url 'https://hec:99999/x': bad port"),
    ("https://hec:abc", "--url 'https://hec:abc': bad port"),
])
def test_bad_url_is_echoed_as_typed_without_secrets(work: Path, url: str, shown: str) -> None:
    """A bad --url is one line that shows the URL as typed — port and path included (it was
    shown without its port) — but never its user info or query, where a token may sit."""
    proc = run(["sink", "splunk", "--url", url, "--token-file", "good.tok"], cwd=work)
    assert_one_line_error(proc, 2, shown)
    assert b"SECRETTOKEN" not in proc.stdout + proc.stderr


def test_splunk_token_never_printed(work: Path) -> None:
    """The HEC token (from the environment or --token-file) appears in no output: not in
    errors, not in --help, not in the summary of a HEC that refuses it."""
    from tests.doubles.hec_double import HecDouble

    outputs: list[bytes] = []
    with HecDouble(token="the-right-token") as hec:
        cases = [
            (["sink", "splunk", "--url", hec.url], {"LOGPIPE_SPLUNK_TOKEN": TOKEN}),
            (["sink", "splunk", "--url", hec.url, "--token-file", "good.tok"], {}),
            (["sink", "splunk", "--url", "ftp://x", "--token-file", "good.tok"], {}),
            (["sink", "splunk", "--url", "ftp://x"], {"LOGPIPE_SPLUNK_TOKEN": TOKEN}),
            (["collect", "-", "--once", "--to", "splunk", "--url", hec.url],
             {"LOGPIPE_SPLUNK_TOKEN": TOKEN}),
            (["sink", "--help"], {"LOGPIPE_SPLUNK_TOKEN": TOKEN}),
        ]
        for args, env in cases:
            proc = run(args, cwd=work, stdin=b'{"message": "m"}\n', env=env)
            assert_clean(proc)
            outputs += [proc.stdout, proc.stderr]
            if args[0] != "collect" and "--help" not in args:
                assert proc.returncode != 0  # refused token / bad URL
    everything = b"".join(outputs)
    assert TOKEN.encode() not in everything
    assert b"SECRETTOKEN" not in everything


def test_tilde_in_file_sink_dir_and_rotate_glob(work: Path) -> None:
    """``--to file:~/logs`` and a quoted ``'~/logs/*.log'`` mean the home directory, as they do
    for ``collect`` paths: the shell leaves ~ alone inside a word or quotes. Before the fix the
    sink wrote into a directory literally named ``~`` and rotate found no such directory."""
    home = work / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    proc = run(["collect", "--once", "app.log", "--to", "file:~/logs"], cwd=work, env=env)
    assert_clean(proc)
    assert proc.returncode == 0
    assert not (work / "~").exists()
    assert [json.loads(x)["message"] for x in (home / "logs" / "app.log").read_text().splitlines()] \
        == ["hello"]
    proc = run(["rotate", "~/logs/*.log", "--retain", "1"], cwd=work, env=env)
    assert_clean(proc)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"logpipe rotate: rotated 1")
    assert len(list((home / "logs").glob("app.log.*.zst"))) == 1
    dup = run(["collect", "--once", "app.log", "--to", "file:~/logs", "--to", f"file:{home}/logs"],
              cwd=work, env=env)
    assert_one_line_error(dup, 2, "named twice")


def test_second_collect_once_says_it_resumes(work: Path) -> None:
    """Running ``collect --once app.log`` again prints no records (the checkpoint says they were
    delivered) and says so on stderr, instead of a silent nothing that puzzles a new user."""
    first = run(["collect", "--once", "app.log"], cwd=work)
    assert [json.loads(x)["message"] for x in first.stdout.splitlines()] == ["hello"]
    assert "resuming" not in first.stderr.decode()
    again = run(["collect", "--once", "app.log"], cwd=work)
    err = assert_clean(again)
    assert again.returncode == 0
    assert again.stdout == b""
    notes = [json.loads(ln)["message"] for ln in err.splitlines() if is_diagnostic(ln)]
    assert f"{work / 'app.log'}: resuming at byte 6 from the checkpoint " \
           "(lines before it were delivered already)" in notes


def test_tilde_where_no_shell_expands_it(work: Path) -> None:
    """``--dir=~/lg`` and ``LOGPIPE_STATE_DIR=~/st`` (as systemd's Environment= passes it) mean
    the home directory: no literal ``./~`` directory is created; the checkpoint is in ~/st."""
    home = work / "home"
    home.mkdir()
    proc = run(["collect", "--once", "app.log", "--to", "file", "--dir=~/lg"], cwd=work,
               env={"HOME": str(home), "LOGPIPE_STATE_DIR": "~/st"})
    assert_clean(proc)
    assert proc.returncode == 0, proc.stderr
    assert not (work / "~").exists()
    assert (home / "lg" / "app.log").read_text().count("hello") == 1
    assert any((home / "st").iterdir())
    proc = run(["rotate", "--dry-run", "--state-dir=~/st", "app.log"], cwd=work,
               env={"HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert not (work / "~").exists()


def test_pm2_logs_dir_given_as_pm2_home_names_the_fix(work: Path) -> None:
    """``--pm2 ~/.pm2/logs`` (the logs directory instead of PM2_HOME) collects nothing; the
    warning says which --pm2 was meant, and with that one the records arrive."""
    logs = work / "pm2home" / "logs"
    logs.mkdir(parents=True)
    (logs / "api-out.log").write_text('{"message": "from pm2"}\n')
    proc = run(["collect", "--once", "--pm2", str(logs)], cwd=work)
    err = assert_clean(proc)
    assert proc.returncode == 0 and proc.stdout == b""
    warnings = [json.loads(ln)["message"] for ln in err.splitlines() if is_diagnostic(ln)
                and json.loads(ln)["level"] == "warning"]
    assert warnings == [f"PM2 log directory {logs}/logs does not exist yet; watching it (PM2_HOME "
                        f"is the directory that holds logs/: did you mean --pm2 {work / 'pm2home'}?)"]
    right = run(["collect", "--once", "--pm2", str(work / "pm2home")], cwd=work)
    assert [json.loads(x)["message"] for x in right.stdout.splitlines()] == ["from pm2"]


def test_console_never_writes_terminal_control_characters(work: Path) -> None:
    """Binary garbage or a hostile record (ESC sequences that clear the screen or retitle the
    terminal, BEL, a carriage return hiding text) reaches the terminal escaped as ``\\x1b``…,
    in the message, service, level, time (kept as ``time_original``: it is no time) and exception
    alike; tab and newline stay."""
    hostile = [
        b"plain \x1b[2J clear\x07 bell\rhidden\ttab",
        json.dumps({"message": "m\x1b]0;title\x07", "service": "api\x1b[8m", "instance_id": "0\r",
                    "level": "x\x1b[5m", "time": "t\x1b[1m",
                    "exception": "Oops\x1b[2J\nValueError: x\x9b31m"}).encode(),
    ]
    data = b"\n".join(hostile) + b"\n" + os.urandom(4000).replace(b"\n", b"") + b"\n"
    proc = run(["sink", "console"], cwd=work, stdin=data, env={"FORCE_COLOR": "0"})
    assert_clean(proc)
    assert proc.returncode == 0
    out = proc.stdout.decode("utf-8")
    bad = [c for c in out if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert not bad, sorted(set(bad))
    lines = out.splitlines()
    assert "plain \\x1b[2J clear\\x07 bell\\x0dhidden\ttab" in lines[0]
    assert "api\\x1b[8m[0\\x0d] m\\x1b]0;title\\x07" in lines[1]
    # a hostile time is no time (#9 part 7): the read time is shown, the original kept, escaped
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z X\\x1b\[5M ", lines[1]), lines[1]
    assert 'time_original="t\\u001b[1m"' in lines[1]
    assert lines[2:4] == ["    Oops\\x1b[2J", "    ValueError: x\\x9b31m"]


def test_mistyped_splunk_host_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --url whose host name does not resolve is reported with the resolver's reason (``Name
    or service not known``), not ``Unknown error -2`` (os.strerror of an EAI_* code). The
    resolver error is a real one (getaddrinfo of an empty name fails locally, no network),
    chained the way httpx chains it."""
    import httpx

    from logpipe import sinks
    from logpipe.sinks import SinkOptions
    from logpipe.sinks.splunk import Endpoint

    try:
        socket.getaddrinfo("", None)
    except socket.gaierror as gai:
        resolver_error = gai
    else:  # pragma: no cover - a resolver that answers for "" cannot give this test its error
        pytest.skip("getaddrinfo('') resolved")
    try:
        try:
            raise resolver_error
        except socket.gaierror as exc:
            raise httpx.ConnectError(str(exc)) from exc
    except httpx.ConnectError as exc:
        chained = exc
    monkeypatch.setenv("LOGPIPE_SPLUNK_TOKEN", TOKEN)
    sink = sinks.build("splunk", SinkOptions(state_dir=str(tmp_path / "state"),
                                             splunk_urls=["https://splunk.example:8088"]))
    verdict = sink._error_verdict(chained, Endpoint("https://splunk.example:8088",
                                                    "https://splunk.example:8088"))
    assert verdict.text == resolver_error.strerror
    assert "Unknown error" not in verdict.text


def test_demo_report_lists_files_oldest_first(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's closing report lists each log's rotated files in the order they were written
    (``NAME.<stamp>.zst`` before ``NAME.<stamp>.1.zst``, the live file last), with their counts;
    it listed ``….1.zst`` before ``….zst``, by name."""
    import zstandard

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    monkeypatch.chdir(tmp_path)
    try:
        import demo  # examples/demo.py
    finally:
        sys.path.pop(0)
    out = tmp_path / "demo-logs"
    out.mkdir()
    files = {"api.log.20261123T171651.zst": 1, "api.log.20261123T171652.zst": 2,
             "api.log.20261123T171652.1.zst": 3, "api.log": 4, "worker.log": 5}
    for name, n in files.items():
        data = b"{}\n" * n
        (out / name).write_bytes(zstandard.ZstdCompressor().compress(data)
                                 if name.endswith(".zst") else data)
    assert demo.report(out) == 15
    listed = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.endswith(" records")]
    assert listed == [[name, str(n), "records"] for name, n in files.items()] + \
        [["total", "15", "records"]]
